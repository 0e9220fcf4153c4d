"""Fraud metrics with scikit-learn signatures ``(y_true, y_score, *, ...)``, so ``make_scorer`` can wrap them.

Definitions (Le Borgne et al., Fraud Detection Handbook, §4.2-4.3):

* ``roc_auc``: area under the ROC curve (``sklearn.metrics.roc_auc_score``). Reported, never optimised.
  NaN when ``y_true`` holds fewer than two classes (a quiet test day is not an error).
* ``average_precision``: ``sklearn.metrics.average_precision_score``, the optimisation target. NaN when
  ``y_true`` holds no positive.
* ``card_precision_at_k`` (CP@k): for each day, ascending,

  1. drop the cards detected on earlier days (only when ``remove_detected``; "detected" means the card was in
     that day's top k and its label max was 1);
  2. aggregate to one row per card: score = max score of its transactions that day, label = max label;
  3. sort cards by score descending; **ties keep ascending card-ID order** (a stable, documented rule, so the
     result is deterministic; the handbook's unstable sort leaves tie order unspecified);
  4. precision = compromised cards among the top k / k. The divisor is k even when fewer than k cards
     transacted that day, as in the handbook, so a day with few cards cannot reach 1.0.

  CP@k is the mean of the daily values over every day present in the input (a day whose cards were all
  detected earlier counts as 0). ``days`` may be datetimes (their calendar day is used; tz-aware values are
  converted to UTC) or integer day numbers.

Threshold metrics. A row is **alerted** (predicted fraud) when ``y_score >= threshold``, the convention of
``sklearn.metrics.precision_recall_curve``. With TP, FP, FN, TN the confusion counts at the threshold and
n = TP + FP + FN + TN:

* ``ClassificationMetrics``: accuracy = (TP + TN) / n; precision = TP / (TP + FP), **0.0 when nothing is
  alerted** (sklearn's ``zero_division=0``); recall = TP / (TP + FN) and f1 = 2TP / (2TP + FP + FN), both **NaN
  when y_true holds no positive** (undefined, like ``average_precision``); roc_auc and pr_auc (= average
  precision) as above, threshold-free.
* ``precision_at_k``: transaction-level precision among the k highest scores. Ties keep row order (a stable
  sort: the earlier row wins). When k > n the divisor is n, the precision of alerting every row (unlike CP@k,
  whose handbook definition divides by k).
* ``brier_score``: mean of (y_score - y_true)^2, equal to ``sklearn.metrics.brier_score_loss``.
* ``calibration_table``: ``sklearn.calibration.calibration_curve`` (same bin edges, empty bins dropped) plus
  the number of rows in each bin.

Cost. Every alert costs a review, a missed fraud costs its loss and a true negative costs nothing:

* ``expected_cost`` = (FN * false_negative_cost + FP * false_positive_cost + TP * true_positive_cost) / n,
  the cost per transaction at a threshold (a mean over rows, so windows of different sizes compare).
* ``cost_curve``: ``expected_cost`` and the alert rate (alerts / n) at many thresholds at once.
* ``select_threshold_by_cost``: the distinct score with the lowest expected cost; ties go to the higher
  threshold (fewer alerts). "Alert nothing" is not a candidate; pass ``np.inf`` to ``cost_curve`` to price it.
* ``select_threshold_by_alert_budget``: the lowest distinct score whose alerts, over the rows given, number
  at most ``alerts_per_day`` times the number of days present (an average, not a cap on each day).

``bootstrap_ci``: a percentile bootstrap over rows (seeded); resamples where the metric is NaN are dropped.

The threshold, calibration, cost and bootstrap functions validate their input (labels 0/1, scores finite, equal
lengths, at least one row) and raise a ValueError that names the bad value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from numbers import Real
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score


def roc_auc(y_true: Any, y_score: Any) -> float:
    """ROC AUC, or NaN when ``y_true`` does not hold both classes."""
    y_true = np.asarray(y_true)
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision, or NaN when ``y_true`` holds no positive (sklearn would warn and return 0)."""
    y_true = np.asarray(y_true)
    if not (y_true == 1).any():
        return float("nan")
    return float(average_precision_score(y_true, y_score))


def _calendar_days(days: Any) -> pd.Series:
    series = pd.Series(days).reset_index(drop=True)  # positional, like the other inputs
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series
    if not pd.api.types.is_datetime64_any_dtype(series):
        try:  # datetime.date / datetime objects arrive as object dtype
            series = pd.Series(pd.to_datetime(series))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"days must be datetimes or integer day numbers, got dtype {series.dtype}"
            ) from err
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.dt.normalize()


def _check_same_length(**arrays: Any) -> None:
    lengths = {name: len(value) for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"y_true, y_score, cards and days must have the same length, got {lengths}")


def card_precision_at_k_per_day(
    y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100, remove_detected: bool = True
) -> pd.Series:
    """Daily card precision@k (index: the day, ascending); see the module docstring for the definition."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    _check_same_length(y_true=y_true, y_score=y_score, cards=cards, days=days)
    frame = pd.DataFrame(
        {
            "label": np.asarray(y_true),
            "score": np.asarray(y_score, dtype=np.float64),
            "card": np.asarray(cards),
        }
    )
    n_missing = int(frame["score"].isna().sum())
    if n_missing:
        raise ValueError(f"y_score has {n_missing} NaN value(s); every transaction needs a score")
    frame["day"] = _calendar_days(days).to_numpy()
    name = f"card_precision_at_{k}"
    if frame.empty:
        return pd.Series([], index=pd.Index([], name="day"), dtype=np.float64, name=name)

    # One row per (day, card): max score and max label, as the handbook's groupby(...).max().
    per_card = frame.groupby(["day", "card"], sort=True).agg(score=("score", "max"), label=("label", "max"))
    per_card = per_card.reset_index()
    # Rank within a day by score descending; the stable sort keeps the (ascending) card order among ties.
    per_card = per_card.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    per_card["compromised"] = per_card["label"].to_numpy() == 1

    values: dict[Any, float] = {}
    detected: set[Any] = set()
    for day, day_cards in per_card.groupby("day", sort=True):
        if detected:
            day_cards = day_cards[~day_cards["card"].isin(detected)]
        top = day_cards.head(k)
        hits = top["card"][top["compromised"]]
        values[day] = len(hits) / k
        if remove_detected:
            detected.update(hits.tolist())
    return pd.Series(values, name=name, dtype=np.float64).rename_axis("day")


def card_precision_at_k(
    y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100, remove_detected: bool = True
) -> float:
    """Card precision@k: the mean over days of :func:`card_precision_at_k_per_day` (NaN on empty input)."""
    per_day = card_precision_at_k_per_day(
        y_true, y_score, cards=cards, days=days, k=k, remove_detected=remove_detected
    )
    return float(per_day.mean()) if len(per_day) else float("nan")


def fraud_metrics(y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100) -> dict[str, float]:
    """ROC AUC, average precision and card precision@k (detected cards removed) in one dict."""
    return {
        "roc_auc": roc_auc(y_true, y_score),
        "average_precision": average_precision(y_true, y_score),
        f"card_precision_at_{k}": card_precision_at_k(y_true, y_score, cards=cards, days=days, k=k),
    }


# --- validation helpers for the threshold, cost and calibration metrics -------------------------------------


def _check_scores(y_score: Any) -> np.ndarray:
    """Finite 1-D float scores, at least one."""
    try:
        scores = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"y_score must be numeric, got {np.asarray(y_score).dtype}") from err
    if scores.ndim != 1:
        raise ValueError(f"y_score must be 1-D, got shape {scores.shape}")
    if len(scores) == 0:
        raise ValueError("y_score is empty; need at least one row")
    bad = ~np.isfinite(scores)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"y_score has {int(bad.sum())} NaN or infinite value(s) (first: {scores[first]} at position "
            f"{first}); every row needs a finite score"
        )
    return scores


def _check_labels_scores(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """1-D 0/1 labels (as int64) and finite float scores of one equal, non-zero length."""
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(f"y_true must be 1-D, got shape {labels.shape}")
    scores = _check_scores(y_score)
    if len(labels) != len(scores):
        raise ValueError(f"y_true and y_score must have the same length, got {len(labels)} and {len(scores)}")
    if labels.dtype.kind not in "biuf":  # strings/objects: isin would compare element-wise and warn
        raise ValueError(f"y_true must hold 0/1 labels, got dtype {labels.dtype}")
    bad_labels = np.unique(labels[~np.isin(labels, [0, 1])])
    if bad_labels.size:
        raise ValueError(f"y_true must hold only 0 and 1, got {bad_labels[:5].tolist()}")
    return labels.astype(np.int64), scores


def _check_threshold(threshold: Any, name: str = "threshold") -> float:
    # inf is allowed: it is the "alert nothing" threshold.
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or math.isnan(threshold):
        raise ValueError(f"{name} must be a real number, got {threshold!r}")
    return float(threshold)


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_probabilities(scores: np.ndarray) -> None:
    if scores.min() < 0 or scores.max() > 1:
        raise ValueError(
            f"y_score must be probabilities in [0, 1], got values from {scores.min()} to {scores.max()}"
        )


# --- threshold metrics ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClassificationMetrics:
    """Threshold and ranking metrics of one scored set; see the module docstring for each definition."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    pr_auc: float
    threshold: float
    n: int
    n_positive: int

    @classmethod
    def compute(cls, y_true: Any, y_score: Any, threshold: float) -> ClassificationMetrics:
        """Metrics of alerting every row with ``y_score >= threshold``."""
        labels, scores = _check_labels_scores(y_true, y_score)
        threshold = _check_threshold(threshold)
        alerted = scores >= threshold
        positive = labels == 1
        tp = int(np.count_nonzero(alerted & positive))
        fp = int(np.count_nonzero(alerted & ~positive))
        fn = int(np.count_nonzero(~alerted & positive))
        n, n_positive = len(labels), int(np.count_nonzero(positive))
        has_positive = n_positive > 0
        return cls(
            accuracy=(n - fp - fn) / n,
            precision=tp / (tp + fp) if tp + fp else 0.0,  # sklearn's zero_division=0
            recall=tp / n_positive if has_positive else math.nan,
            f1=2 * tp / (2 * tp + fp + fn) if has_positive else math.nan,
            roc_auc=roc_auc(labels, scores),
            pr_auc=average_precision(labels, scores),
            threshold=threshold,
            n=n,
            n_positive=n_positive,
        )

    def as_dict(self) -> dict[str, float | int]:
        """The fields in declaration order (e.g. for ``mlflow.log_metrics``)."""
        return dataclasses.asdict(self)


def precision_at_k(y_true: Any, y_score: Any, k: int) -> float:
    """Fraction of frauds among the k highest-scored rows (ties: earlier row first; k > n uses n)."""
    k = _check_positive_int(k, "k")
    labels, scores = _check_labels_scores(y_true, y_score)
    # argsort of the negated scores with a stable sort: descending, equal scores keep their row order.
    top = np.argsort(-scores, kind="stable")[:k]
    return float(labels[top].mean())


# --- calibration ---------------------------------------------------------------------------------------------


def brier_score(y_true: Any, y_score: Any) -> float:
    """Mean squared error of the probabilities, ``sklearn.metrics.brier_score_loss``; lower is better."""
    labels, scores = _check_labels_scores(y_true, y_score)
    _check_probabilities(scores)
    # Computed directly: sklearn's version needs pos_label when a window holds only one class.
    return float(np.mean((scores - labels) ** 2))


def calibration_table(
    y_true: Any, y_score: Any, n_bins: int = 10, strategy: Literal["quantile", "uniform"] = "quantile"
) -> pd.DataFrame:
    """Reliability table: one row per non-empty bin with its edges, mean score, fraud rate and row count.

    ``mean_predicted`` and ``observed_rate`` are sklearn's ``calibration_curve`` (``prob_pred``, ``prob_true``);
    the count is what the curve drops, and what tells a reader whether a bin's rate is noise (fraud is rare,
    so the top bins are small). ``bin`` is the bin's index among ``n_bins``, so empty bins leave gaps.
    """
    n_bins = _check_positive_int(n_bins, "n_bins")
    if strategy not in ("quantile", "uniform"):
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    labels, scores = _check_labels_scores(y_true, y_score)
    _check_probabilities(scores)
    observed_rate, mean_predicted = calibration_curve(labels, scores, n_bins=n_bins, strategy=strategy)
    # The same edges and bin assignment as calibration_curve, to count the rows it averages over.
    if strategy == "quantile":
        edges = np.percentile(scores, np.linspace(0, 1, n_bins + 1) * 100)
    else:
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], scores), minlength=n_bins)
    nonempty = np.flatnonzero(counts)
    return pd.DataFrame(
        {
            "bin": nonempty,
            "bin_lower": edges[nonempty],
            "bin_upper": edges[nonempty + 1],
            "mean_predicted": mean_predicted,
            "observed_rate": observed_rate,
            "count": counts[nonempty],
        }
    )


# --- cost ----------------------------------------------------------------------------------------------------


class CostModel(BaseModel):
    """Cost of each outcome of an alerting decision, in one currency; a true negative costs nothing.

    The defaults are placeholders of the right shape (a missed fraud costs far more than a review); take real
    values from the business, in config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A missed fraud: the amount lost plus chargeback handling.
    false_negative_cost: float = Field(default=100.0, ge=0, allow_inf_nan=False)
    # A false alarm: the analyst's review plus the friction of a declined or challenged genuine payment.
    false_positive_cost: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    # The review of a real alert: detecting fraud still costs the analyst's time.
    true_positive_cost: float = Field(default=5.0, ge=0, allow_inf_nan=False)


def _costs_at(
    labels: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, cost: CostModel
) -> tuple[np.ndarray, np.ndarray]:
    """Total cost and alert count at every threshold: one sort plus cumulative sums, no loop over thresholds."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    # positives_below[i] = positives among the i lowest scores; the rows alerted at t are those from index
    # searchsorted(sorted_scores, t, "left") on, i.e. every score >= t.
    positives_below = np.concatenate(([0], np.cumsum(labels[order])))
    first_alerted = np.searchsorted(sorted_scores, thresholds, side="left")
    n_positive = positives_below[-1]
    alerts = len(scores) - first_alerted
    tp = n_positive - positives_below[first_alerted]
    fp = alerts - tp
    fn = n_positive - tp
    total = fn * cost.false_negative_cost + fp * cost.false_positive_cost + tp * cost.true_positive_cost
    return total, alerts


def expected_cost(y_true: Any, y_score: Any, threshold: float, cost: CostModel | None = None) -> float:
    """Cost per transaction of alerting every row with ``y_score >= threshold`` (``cost`` default: CostModel())."""
    labels, scores = _check_labels_scores(y_true, y_score)
    threshold = _check_threshold(threshold)
    cost = CostModel() if cost is None else cost
    alerted = scores >= threshold
    positive = labels == 1
    total = (
        np.count_nonzero(~alerted & positive) * cost.false_negative_cost
        + np.count_nonzero(alerted & ~positive) * cost.false_positive_cost
        + np.count_nonzero(alerted & positive) * cost.true_positive_cost
    )
    return float(total / len(labels))


def cost_curve(
    y_true: Any, y_score: Any, cost: CostModel | None = None, thresholds: Any = None
) -> pd.DataFrame:
    """Cost and alerts per transaction at each threshold (default: the distinct scores, ascending).

    Columns: ``threshold``, ``cost_per_transaction`` (= :func:`expected_cost`), ``alerts_per_transaction``.
    Thresholds given explicitly keep their order; ``np.inf`` prices alerting nothing.
    """
    labels, scores = _check_labels_scores(y_true, y_score)
    cost = CostModel() if cost is None else cost
    if thresholds is None:
        grid = np.unique(scores)
    else:
        try:
            grid = np.asarray(thresholds, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"thresholds must be real numbers, got {thresholds!r}") from err
        if grid.size == 0 or np.isnan(grid).any():
            raise ValueError(f"thresholds must be a non-empty sequence without NaN, got {thresholds!r}")
    total, alerts = _costs_at(labels, scores, grid, cost)
    n = len(labels)
    return pd.DataFrame(
        {"threshold": grid, "cost_per_transaction": total / n, "alerts_per_transaction": alerts / n}
    )


def select_threshold_by_cost(y_true: Any, y_score: Any, cost: CostModel | None = None) -> float:
    """The distinct score minimising :func:`expected_cost`; among equal costs, the highest (fewest alerts)."""
    labels, scores = _check_labels_scores(y_true, y_score)
    cost = CostModel() if cost is None else cost
    grid = np.unique(scores)  # ascending, so the last minimum is the highest threshold
    total, _ = _costs_at(labels, scores, grid, cost)
    # Totals are sums of count * cost; a relative tolerance absorbs rounding between equal exact costs.
    is_min = np.isclose(total, total.min(), rtol=1e-12, atol=0.0)
    return float(grid[np.flatnonzero(is_min)[-1]])


def select_threshold_by_alert_budget(y_score: Any, *, alerts_per_day: int, days: Any) -> float:
    """The lowest distinct score raising at most ``alerts_per_day`` alerts per day on average over the rows.

    The budget is ``alerts_per_day`` times the number of distinct days in ``days`` (datetimes or day numbers,
    as in :func:`card_precision_at_k`). Tied scores are alerted together, so the alerts may fall short of the
    budget; when even the top score's ties exceed it, the threshold is just above the top score (no alerts).
    """
    alerts_per_day = _check_positive_int(alerts_per_day, "alerts_per_day")
    scores = _check_scores(y_score)
    if len(days) != len(scores):
        raise ValueError(f"y_score and days must have the same length, got {len(scores)} and {len(days)}")
    day_values = _calendar_days(days)
    if day_values.isna().any():
        raise ValueError(f"days has {int(day_values.isna().sum())} missing value(s)")
    budget = alerts_per_day * day_values.nunique()
    grid = np.unique(scores)
    alerts = len(scores) - np.searchsorted(np.sort(scores), grid, side="left")
    within = np.flatnonzero(alerts <= budget)  # alerts fall as the threshold rises: a suffix of the grid
    if within.size == 0:
        return float(np.nextafter(grid[-1], np.inf))
    return float(grid[within[0]])


# --- uncertainty ---------------------------------------------------------------------------------------------

_MAX_INDICES_PER_DRAW = 1 << 24  # bounds the memory of one vectorised index draw (128 MiB of int64)


def bootstrap_ci(
    metric: Callable[..., float],
    y_true: Any,
    y_score: Any,
    *,
    n_boot: int = 200,
    alpha: float = 0.05,
    random_state: int = 0,
    **kwargs: Any,
) -> tuple[float, float, float]:
    """``(point, low, high)``: ``metric`` on all rows and its (1 - alpha) percentile bootstrap interval.

    Rows are resampled with replacement; ``kwargs`` go unchanged to every call (``threshold``, ``k``,
    ``cost``...). Row-aligned arguments (``cards``, ``days``) would not be resampled with the rows, so they are
    refused. Resamples where the metric is NaN (e.g. no fraud drawn) are dropped; if all are, low and high are
    NaN.
    """
    n_boot = _check_positive_int(n_boot, "n_boot")
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    labels, scores = _check_labels_scores(y_true, y_score)
    n = len(labels)
    for name, value in kwargs.items():
        if isinstance(value, np.ndarray | pd.Series | pd.Index | list | tuple) and n > 1 and len(value) == n:
            raise ValueError(
                f"keyword argument {name!r} has one value per row ({n}); bootstrap_ci resamples only y_true "
                "and y_score, so a row-aligned argument would be misaligned"
            )
    point = float(metric(labels, scores, **kwargs))
    rng = np.random.default_rng(random_state)
    per_draw = max(1, _MAX_INDICES_PER_DRAW // n)
    values = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_draw):  # one draw for all resamples unless n is very large
        indices = rng.integers(0, n, size=(min(per_draw, n_boot - start), n))
        for offset, rows in enumerate(indices):
            values[start + offset] = metric(labels[rows], scores[rows], **kwargs)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return point, math.nan, math.nan
    low, high = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return point, float(low), float(high)
