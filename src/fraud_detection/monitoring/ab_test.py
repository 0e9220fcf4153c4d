"""A/B comparison of a champion and a challenger scored on the same transactions (shadow mode), once the
delayed labels have arrived: is the challenger's average precision / card precision@k really higher?

**Design: a paired, card-clustered bootstrap.**

* *Paired*: both models scored the same transactions, so each resample takes the same rows for both and the
  statistic is the difference ``metric(challenger) - metric(champion)`` on that resample. Pairing cancels
  the day-to-day and card-to-card variation both models share, which an unpaired comparison would count as
  noise.
* *Resampling unit = the card* (``customer_id``), not the transaction and not the day. Frauds cluster on
  compromised cards (several frauds per card), so transactions are not independent and a transaction
  bootstrap gives intervals that are too narrow. CP@k's own unit is the card-day. Days would be the other
  natural block, but a week of shadow traffic is only 7 blocks: a percentile interval from 7 units is too
  coarse to decide anything. Cards number in the hundreds to millions, and a card drawn ``m`` times enters as
  ``m`` distinct cards (copies), so CP@k keeps its meaning (top-k cards per day, detected cards removed on
  later days, divisor k) on every resample.
* *Seeded*: ``random_state`` fixes every resample; the same inputs give the same result.

**Result.** For each metric: the observed difference, the percentile confidence interval at ``1 - alpha``,
and a two-sided bootstrap p-value (the interval inverted: ``2 * min(share of resampled differences <= 0,
share >= 0)``, with the usual +1 correction). ``significant_win`` is True when the primary metric's
interval lies entirely above ``min_improvement`` with ``p < alpha`` **and** the other metric's interval is not entirely below
zero (a challenger must not buy AP with worse card precision, which is what investigators see).

Metrics are exactly :mod:`fraud_detection.evaluation.metrics`'s (checked in the tests): AP computed from
sorted cumulative sums with resample weights (ties grouped as sklearn does), CP@k per day over card
copies. Rows without a label are dropped before anything is computed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.errors import ConfigError, DataContractError, ModelGateFailed
from fraud_detection.monitoring.performance import CARD, LABEL, TIMESTAMP, TRANSACTION_ID

Metric = Literal["average_precision", "card_precision_at_k"]


class ABTestConfig(BaseModel):
    """How the comparison decides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_resamples: int = Field(1000, ge=100, le=100_000)
    alpha: float = Field(0.05, gt=0, lt=0.5, description="1 - confidence of the interval")
    k: int = Field(100, ge=1, description="k of card precision@k")
    primary: Metric = "average_precision"
    min_improvement: float = Field(0.0, ge=0, description="the primary difference's CI must clear this")
    random_state: int = 0


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    champion: float
    challenger: float
    difference: float  # challenger - champion
    ci_low: float
    ci_high: float
    p_value: float


@dataclass(frozen=True)
class ABTestResult:
    average_precision: MetricComparison
    card_precision_at_k: MetricComparison
    significant_win: bool
    reason: str
    n_transactions: int
    n_cards: int
    n_days: int
    n_frauds: int
    config: ABTestConfig

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            return None if isinstance(value, float) and not math.isfinite(value) else value

        return {
            "significant_win": self.significant_win,
            "reason": self.reason,
            "n_transactions": self.n_transactions,
            "n_cards": self.n_cards,
            "n_days": self.n_days,
            "n_frauds": self.n_frauds,
            "config": self.config.model_dump(),
            **{
                comparison.metric: {
                    key: clean(value) for key, value in vars(comparison).items() if key != "metric"
                }
                for comparison in (self.average_precision, self.card_precision_at_k)
            },
        }


# --------------------------------------------------------------------------------------------- metrics


class _APScorer:
    """Average precision of one score vector under row weights, with the sort done once."""

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        order = np.argsort(-scores, kind="stable")
        self.order = order
        self.labels = labels[order].astype(np.float64)
        sorted_scores = scores[order]
        # The last row of each run of equal scores: one threshold per distinct score, as sklearn.
        self.ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])

    def __call__(self, weights: np.ndarray) -> float:
        w = weights[self.order]
        tp = np.cumsum(w * self.labels)[self.ends]
        fp = np.cumsum(w * (1.0 - self.labels))[self.ends]
        positives = tp[-1]
        if positives <= 0:
            return math.nan
        precision = tp / np.maximum(tp + fp, 1e-300)
        recall_steps = np.diff(np.r_[0.0, tp]) / positives
        return float(np.sum(recall_steps * precision))


class _CPKScorer:
    """Card precision@k (detected cards removed on later days) over card copies, ranking done once."""

    def __init__(
        self, scores: np.ndarray, labels: np.ndarray, cards: np.ndarray, days: np.ndarray, k: int
    ) -> None:
        units = (
            pd.DataFrame({"day": days, "card": cards, "score": scores, "label": labels})
            .groupby(["day", "card"], sort=True)
            .agg(score=("score", "max"), label=("label", "max"))
            .reset_index()
            .sort_values(["day", "score", "card"], ascending=[True, False, True], kind="stable")
        )
        self.k = k
        self.day = units["day"].to_numpy()
        self.card = units["card"].to_numpy()
        self.compromised = units["label"].to_numpy() == 1
        self.n_days = len(np.unique(self.day))

    def __call__(self, multiplicity: np.ndarray) -> float:
        counts = multiplicity[self.card]
        index = np.repeat(np.arange(len(self.card)), counts)
        if index.size == 0:
            return math.nan
        starts = np.cumsum(counts) - counts
        copy = np.arange(index.size) - np.repeat(starts, counts)
        width = int(multiplicity.max()) + 1
        ids = self.card[index] * width + copy
        days = self.day[index]
        compromised = self.compromised[index]
        bounds = np.flatnonzero(np.r_[True, days[1:] != days[:-1], True])
        detected = np.zeros(int(ids.max()) + 1, dtype=bool)
        total = 0.0
        for begin, end in itertools.pairwise(bounds):
            day_ids = ids[begin:end]
            keep = ~detected[day_ids]
            top_ids = day_ids[keep][: self.k]
            top_hit = compromised[begin:end][keep][: self.k]
            total += top_hit.sum() / self.k
            detected[top_ids[top_hit]] = True
        # Days present in the sample: a day whose cards were all drawn 0 times is absent, as in the handbook.
        return total / (len(bounds) - 1)


# --------------------------------------------------------------------------------------------- test


def _check(frame: pd.DataFrame, champion: str, challenger: str) -> pd.DataFrame:
    needed = [TIMESTAMP, CARD, LABEL, champion, challenger]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise DataContractError(
            f"the A/B frame lacks column(s) {missing}; expected {needed}, it has {[str(c) for c in frame.columns]}"
        )
    if champion == challenger:
        raise DataContractError(f"champion and challenger are the same column {champion!r}; expected two")
    frame = frame[frame[LABEL].notna()]
    if frame.empty:
        raise DataContractError(
            "the A/B frame has no labelled row; expected transactions whose labels arrived"
        )
    for column in (champion, challenger):
        bad = int((~np.isfinite(frame[column].to_numpy(dtype=np.float64))).sum())
        if bad:
            raise DataContractError(
                f"score column {column!r} has {bad} NaN/infinite value(s); expected finite scores"
            )
    if int(frame[LABEL].sum()) == 0:
        raise DataContractError(
            "the labelled A/B rows hold no fraud; average precision is undefined, nothing to compare"
        )
    return frame


def _comparison(
    metric: str, champion: float, challenger: float, differences: np.ndarray, alpha: float
) -> MetricComparison:
    finite = differences[np.isfinite(differences)]
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    n = finite.size
    below = (np.sum(finite <= 0) + 1) / (n + 1)
    above = (np.sum(finite >= 0) + 1) / (n + 1)
    return MetricComparison(
        metric=metric,
        champion=float(champion),
        challenger=float(challenger),
        difference=float(challenger - champion),
        ci_low=float(low),
        ci_high=float(high),
        p_value=float(min(1.0, 2 * min(below, above))),
    )


def compare_models(
    frame: pd.DataFrame,
    *,
    champion: str = "score",
    challenger: str = "challenger_score",
    config: ABTestConfig | None = None,
) -> ABTestResult:
    """Paired card-bootstrap comparison of two score columns of ``frame`` (labelled rows: ``is_fraud``)."""
    config = config or ABTestConfig()
    frame = _check(frame, champion, challenger)
    labels = frame[LABEL].to_numpy().astype(np.int64)
    card_codes, card_index = np.unique(frame[CARD].to_numpy(), return_inverse=True)
    days = pd.to_datetime(frame[TIMESTAMP]).dt.floor("D").to_numpy()
    scorers = {}
    for role, column in (("champion", champion), ("challenger", challenger)):
        scores = frame[column].to_numpy(dtype=np.float64)
        scorers[role] = (_APScorer(scores, labels), _CPKScorer(scores, labels, card_index, days, config.k))

    n_cards = len(card_codes)
    ones = np.ones(n_cards, dtype=np.int64)
    observed = {
        role: (ap(ones[card_index].astype(np.float64)), cpk(ones)) for role, (ap, cpk) in scorers.items()
    }
    rng = np.random.default_rng(config.random_state)
    differences = np.empty((config.n_resamples, 2))
    for index in range(config.n_resamples):
        multiplicity = np.bincount(rng.integers(0, n_cards, size=n_cards), minlength=n_cards)
        weights = multiplicity[card_index].astype(np.float64)
        values = {role: (ap(weights), cpk(multiplicity)) for role, (ap, cpk) in scorers.items()}
        differences[index] = np.subtract(values["challenger"], values["champion"])
    ap_result = _comparison(
        "average_precision",
        observed["champion"][0],
        observed["challenger"][0],
        differences[:, 0],
        config.alpha,
    )
    cpk_result = _comparison(
        f"card_precision_at_{config.k}",
        observed["champion"][1],
        observed["challenger"][1],
        differences[:, 1],
        config.alpha,
    )
    primary, other = (
        (ap_result, cpk_result) if config.primary == "average_precision" else (cpk_result, ap_result)
    )
    confidence = f"{1 - config.alpha:.0%}"
    if primary.ci_low <= config.min_improvement or primary.p_value >= config.alpha:
        win = False
        reason = (
            f"{primary.metric} difference {primary.difference:+.4f} (CI {confidence} [{primary.ci_low:+.4f}, "
            f"{primary.ci_high:+.4f}], p={primary.p_value:.3g}) does not clear {config.min_improvement}"
        )
    elif other.ci_high < 0:
        win = False
        reason = (
            f"{primary.metric} improves but {other.metric} is significantly worse ({other.difference:+.4f}, "
            f"CI {confidence} [{other.ci_low:+.4f}, {other.ci_high:+.4f}])"
        )
    else:
        win = True
        reason = (
            f"{primary.metric} improves by {primary.difference:+.4f} (CI {confidence} [{primary.ci_low:+.4f}, "
            f"{primary.ci_high:+.4f}], p={primary.p_value:.3g}); {other.metric} {other.difference:+.4f} not significantly worse"
        )
    return ABTestResult(
        average_precision=ap_result,
        card_precision_at_k=cpk_result,
        significant_win=win,
        reason=reason,
        n_transactions=len(frame),
        n_cards=n_cards,
        n_days=len(np.unique(days)),
        n_frauds=int(labels.sum()),
        config=config,
    )


def paired_scores(
    events: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    champion_version: str | None = None,
    challenger_version: str | None = None,
) -> pd.DataFrame:
    """One row per transaction scored by both models, from the server's event log: ``score`` (the answer,
    ``shadow`` false), ``challenger_score`` (the shadow model's row, ``shadow`` true) and ``is_fraud`` from
    ``labels``; unlabelled rows dropped. The versions, when given, narrow each side to one model version
    (a promotion or a reload during the period changes them)."""
    needed = [TRANSACTION_ID, TIMESTAMP, CARD, "score", "model_version", "shadow"]
    missing = [column for column in needed if column not in events.columns]
    if missing:
        raise DataContractError(f"the events lack column(s) {missing}; expected {needed}")
    versions = events["model_version"].astype(str)
    shadow = events["shadow"].astype(bool)
    keys = [TRANSACTION_ID, TIMESTAMP, CARD]
    sides = {}
    for role, is_shadow, version in (
        ("champion", False, champion_version),
        ("challenger", True, challenger_version),
    ):
        mask = shadow == is_shadow
        if version is not None:
            mask &= versions == str(version)
        rows = events.loc[mask]
        if rows.empty:
            raise DataContractError(
                f"no {role} event ({'shadow' if is_shadow else 'answer'} rows"
                f"{'' if version is None else f' of model version {version!r}'}); the events hold versions "
                f"{sorted(versions[shadow == is_shadow].unique())} for that role"
            )
        sides[role] = rows.drop_duplicates(TRANSACTION_ID, keep="last")
    paired = sides["champion"][[*keys, "score"]].merge(
        sides["challenger"][[TRANSACTION_ID, "score"]].rename(columns={"score": "challenger_score"}),
        on=TRANSACTION_ID,
        how="inner",
    )
    labelled = paired.merge(
        labels[[TRANSACTION_ID, LABEL]].drop_duplicates(TRANSACTION_ID), on=TRANSACTION_ID
    )
    return labelled.reset_index(drop=True)


# --------------------------------------------------------------------------------------------- promotion


def load_ab_config(path: Path) -> ABTestConfig:
    """An :class:`ABTestConfig` from YAML (``ConfigError`` naming the file and the bad key)."""
    from fraud_detection.config import load_yaml_config

    return load_yaml_config(path, ABTestConfig)


def require_significant_win(
    events: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    champion_version: str,
    challenger_version: str,
    config: ABTestConfig | None = None,
) -> ABTestResult:
    """The promotion gate of ``fraud promote --require-ab-win``, without I/O.

    Pairs the champion's answers with the challenger's shadow scores in ``events`` (each narrowed to its
    version), joins the delayed ``labels`` and runs :func:`compare_models`. Returns the result when the
    challenger is a significant win; otherwise raises :class:`ModelGateFailed` with the test's reason
    (nothing is promoted).
    """
    if str(champion_version) == str(challenger_version):
        raise ModelGateFailed(
            f"version {challenger_version}",
            [f"ab_test: version {challenger_version} is already the champion; expected another version"],
        )
    paired = paired_scores(
        events, labels, champion_version=str(champion_version), challenger_version=str(challenger_version)
    )
    result = compare_models(paired, config=config)
    if not result.significant_win:
        raise ModelGateFailed(
            f"version {challenger_version} (challenger) against version {champion_version} (champion)",
            [f"ab_test: {result.reason} on {result.n_transactions} labelled transactions"],
        )
    return result


@dataclass(frozen=True)
class ABGateOutcome:
    """What the A/B promotion gate compared and found (the gate passed)."""

    champion_version: str
    challenger_version: str
    result: ABTestResult


def check_ab_win(
    name: str,
    version: str | None,
    events_dir: Path,
    labels_path: Path,
    *,
    config: ABTestConfig | None = None,
) -> ABGateOutcome:
    """Before ``fraud promote``: the registered model ``name``'s champion against ``version`` (default its
    challenger) on the server's prediction events (the challenger logged as shadow) and the delayed labels.

    Raises :class:`ModelGateFailed` unless the challenger is a significant win, :class:`ConfigError` when the
    model has no champion (a first promotion has nothing to be compared with). MLflow must be pointed at the
    registry already (the caller's tracking).
    """
    from fraud_detection.models import registry
    from fraud_detection.monitoring.performance import load_labels
    from fraud_detection.monitoring.run import load_prediction_events

    challenger = str(version or registry.alias_version(name, registry.CHALLENGER))
    try:
        champion = registry.alias_version(name, registry.CHAMPION)
    except ConfigError as err:
        raise ConfigError(
            f"registered model {name!r} has no champion to A/B-test version {challenger} against; "
            "expected a champion (promote the first version without --require-ab-win)"
        ) from err
    events = load_prediction_events(Path(events_dir), _EVENTS_FROM, _EVENTS_TO)
    result = require_significant_win(
        events,
        load_labels(Path(labels_path)),
        champion_version=champion,
        challenger_version=challenger,
        config=config,
    )
    return ABGateOutcome(champion_version=champion, challenger_version=challenger, result=result)


# Every event the folder holds: the A/B test uses all the shadow period the labels cover.
_EVENTS_FROM = dt.datetime(1970, 1, 1)
_EVENTS_TO = dt.datetime(2200, 1, 1)
