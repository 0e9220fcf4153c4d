"""Slice metrics and fairness gaps: pure functions that return data, never plots.

Fairness (:func:`assess_fairness`) follows AIF360's signed, two-group conventions, with
``favourable_label=1``: the favourable outcome is the *positive prediction* ``y_pred == 1`` (here: the
transaction is flagged), exactly as AIF360 treats label 1. ``privileged`` names one value (or a list of
values) of ``sensitive``; every other non-missing value is unprivileged.

* ``statistical_parity_difference`` (SPD) = P(ŷ=1 | unpriv) - P(ŷ=1 | priv)
* ``equal_opportunity_difference`` (EOD) = TPR_unpriv - TPR_priv
* ``average_odds_difference`` (AOD) = ½[(FPR_unpriv - FPR_priv) + (TPR_unpriv - TPR_priv)]
* ``disparate_impact`` (DI) = P(ŷ=1 | unpriv) / P(ŷ=1 | priv)
* ``theil_index`` = generalized entropy index with alpha=1 over the benefits b_i = ŷ_i - y_i + 1 of *all*
  individuals (not per group): (1/n) Σ (b_i/μ) ln(b_i/μ), with 0·ln 0 = 0.

So a positive difference (or DI > 1) means the unprivileged group gets *more* positive predictions (or a
higher TPR/FPR) than the privileged group. fairlearn's own ``demographic_parity_difference``,
``equal_opportunity_difference`` and ``demographic_parity_ratio`` are unsigned max-min (or min/max) over all
groups, so they are not used for these signed values; ``MetricFrame`` only supplies the per-group rates.

Missing values (None/NaN) in ``sensitive`` belong to *neither* group: a missing attribute is not evidence of
being unprivileged, and counting it either way would bias both rates. Those rows still count in the Theil
index, which is an individual-level index that never looks at the groups.

A metric that cannot be computed is NaN, never an error: an empty group (SPD, EOD, AOD, DI), a group without
actual positives (EOD, AOD) or actual negatives (AOD), a privileged selection rate of 0 (DI), or a mean
benefit of 0 (Theil: every individual is a false negative). :func:`fairness_violations` reports a NaN as a
violation, since fairness could not be shown.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud_detection.evaluation.metrics import average_precision, roc_auc

FAIRNESS_METRICS = (
    "statistical_parity_difference",
    "equal_opportunity_difference",
    "average_odds_difference",
    "disparate_impact",
    "theil_index",
)
DIFFERENCE_METRICS = FAIRNESS_METRICS[:3]

# Why a NaN can appear, per metric, so a violation line can say so (the metrics dict carries only numbers).
_NAN_REASONS = {
    "statistical_parity_difference": "the privileged or the unprivileged group is empty",
    "equal_opportunity_difference": (
        "the privileged or the unprivileged group is empty or has no actual positives (y_true == 1), "
        "so its true positive rate is undefined"
    ),
    "average_odds_difference": (
        "the privileged or the unprivileged group is empty or lacks actual positives or actual negatives, "
        "so its true or false positive rate is undefined"
    ),
    "disparate_impact": ("a group is empty or the privileged group's selection rate is 0 (division by zero)"),
    "theil_index": "there are no rows, or every individual is a false negative (mean benefit 0)",
}

# Comparisons allow for float rounding, so a gap of 0.4 - 0.3 = 0.10000000000000003 passes a 0.1 limit.
_TOL = 1e-12

_PRIV, _UNPRIV = "privileged", "unprivileged"


# --------------------------------------------------------------------------------------------- fairness


def _binary(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    bad = ~np.isin(array, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must hold only 0 and 1, got {array[bad][:5].tolist()!r}")
    return array.astype(np.int64)


def _group_masks(sensitive: Any, privileged: Any) -> tuple[np.ndarray, np.ndarray]:
    """(privileged, unprivileged) boolean masks; missing attribute values are in neither."""
    values = pd.Series(np.asarray(sensitive, dtype=object))
    missing = values.isna().to_numpy()
    if isinstance(privileged, str) or not isinstance(privileged, Sequence | np.ndarray | pd.Index | set):
        privileged = [privileged]
    privileged_mask = values.isin(list(privileged)).to_numpy() & ~missing
    return privileged_mask, ~privileged_mask & ~missing


def _group_rates(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Selection rate, TPR and FPR per group (rows: privileged, unprivileged), NaN where undefined."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    rows = pd.DataFrame(
        np.nan, index=[_PRIV, _UNPRIV], columns=["selection_rate", "tpr", "fpr", "n_pos", "n_neg"]
    )
    if groups.size == 0:  # MetricFrame cannot stack zero rows
        return rows
    frame = MetricFrame(
        metrics={
            "selection_rate": selection_rate,
            "tpr": lambda t, p: true_positive_rate(t, p, pos_label=1),
            "fpr": lambda t, p: false_positive_rate(t, p, pos_label=1),
            "n_pos": lambda t, p: int(np.sum(np.asarray(t) == 1)),
            "n_neg": lambda t, p: int(np.sum(np.asarray(t) == 0)),
            "n": count,
        },
        y_true=y_true,
        y_pred=y_pred,
        sensitive_features=pd.Series(groups, name="group"),
    )
    # An absent group (no rows) is missing from by_group; reindexing leaves it NaN.
    by_group = frame.by_group.reindex([_PRIV, _UNPRIV])
    # fairlearn returns TPR 0 for a group without positives (and FPR 0 without negatives); both are undefined.
    by_group.loc[~(by_group["n_pos"] > 0), "tpr"] = np.nan
    by_group.loc[~(by_group["n_neg"] > 0), "fpr"] = np.nan
    return by_group[rows.columns].astype(np.float64)


def theil_index(y_true: Any, y_pred: Any) -> float:
    """AIF360's Theil index: generalized entropy (alpha=1) of the benefits b = ŷ - y + 1 over all individuals.

    0 when every prediction is correct (all benefits equal 1); NaN for no rows or a mean benefit of 0.
    """
    y_true, y_pred = _binary("y_true", y_true), _binary("y_pred", y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.size} and {y_pred.size}")
    benefit = (y_pred - y_true + 1).astype(np.float64)
    if benefit.size == 0 or benefit.mean() == 0:
        return float("nan")
    ratio = benefit / benefit.mean()
    # 0·ln 0 = 0: the zero-benefit terms (false negatives) contribute nothing.
    terms = np.where(ratio > 0, ratio * np.log(np.where(ratio > 0, ratio, 1.0)), 0.0)
    return float(terms.mean())


def assess_fairness(y_true: Any, y_pred: Any, sensitive: Any, privileged: Any) -> dict[str, float]:
    """Signed AIF360-style fairness metrics of binary predictions between two groups.

    Parameters
    ----------
    y_true, y_pred : array-like of 0/1
        Actual labels and predicted labels (1 = flagged as fraud, AIF360's favourable label).
    sensitive : array-like
        The protected attribute per row. Missing values (None/NaN) are in neither group (but count in the
        Theil index).
    privileged : scalar or list of scalars
        The value(s) of ``sensitive`` forming the privileged group; every other non-missing value is
        unprivileged.

    Returns
    -------
    dict with exactly the keys ``statistical_parity_difference``, ``equal_opportunity_difference``,
    ``average_odds_difference``, ``disparate_impact`` and ``theil_index`` (see the module docstring for the
    formulas). Differences are unprivileged minus privileged and DI is unprivileged over privileged, so a
    positive difference / DI > 1 means the unprivileged group gets more positive predictions. These are not
    fairlearn's unsigned max-min ``demographic_parity_difference``. Undefined values are NaN.
    """
    y_true, y_pred = _binary("y_true", y_true), _binary("y_pred", y_pred)
    n_sensitive = len(sensitive)
    if not (y_true.size == y_pred.size == n_sensitive):
        raise ValueError(
            f"y_true, y_pred and sensitive must have the same length, got {y_true.size}, {y_pred.size} "
            f"and {n_sensitive}"
        )
    privileged_mask, unprivileged_mask = _group_masks(sensitive, privileged)
    in_group = privileged_mask | unprivileged_mask
    groups = np.where(privileged_mask, _PRIV, _UNPRIV)[in_group]
    rates = _group_rates(y_true[in_group], y_pred[in_group], groups)
    priv, unpriv = rates.loc[_PRIV], rates.loc[_UNPRIV]

    tpr_gap = unpriv["tpr"] - priv["tpr"]
    fpr_gap = unpriv["fpr"] - priv["fpr"]
    # DI: NaN (not inf) when the privileged selection rate is 0; NaN propagates from an empty group.
    disparate_impact = (
        unpriv["selection_rate"] / priv["selection_rate"] if priv["selection_rate"] != 0 else math.nan
    )
    return {
        "statistical_parity_difference": float(unpriv["selection_rate"] - priv["selection_rate"]),
        "equal_opportunity_difference": float(tpr_gap),
        "average_odds_difference": float(0.5 * (fpr_gap + tpr_gap)),
        "disparate_impact": float(disparate_impact),
        "theil_index": theil_index(y_true, y_pred),
    }


class FairnessThresholds(BaseModel):
    """Allowed ranges for :func:`assess_fairness` metrics (bounds inclusive)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_abs_difference: float = Field(0.1, ge=0, description="Limit on |SPD|, |EOD| and |AOD|.")
    disparate_impact_range: tuple[float, float] = Field(
        (0.8, 1.25),
        description="Allowed [low, high] disparate impact (the four-fifths rule and its inverse).",
    )
    max_theil_index: float | None = Field(
        None, ge=0, description="Upper limit on the Theil index; None skips it."
    )

    @model_validator(mode="after")
    def _ordered_range(self) -> FairnessThresholds:
        low, high = self.disparate_impact_range
        if not (0 <= low <= high):
            raise ValueError(
                f"disparate_impact_range must satisfy 0 <= low <= high, got {self.disparate_impact_range}"
            )
        return self


def fairness_violations(
    metrics: Mapping[str, float],
    thresholds: FairnessThresholds,
    intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """One readable line per violated threshold (empty when fair); a NaN metric is a violation.

    With ``intervals`` (:func:`fairness_intervals`), a metric violates only when its whole
    confidence interval lies outside the allowed range: with rare frauds a week's group rates are
    noisy, and a point estimate outside the range by chance is not evidence of unfairness. The
    Theil index is checked only when ``thresholds.max_theil_index`` is set.
    """
    limit = thresholds.max_abs_difference
    ranges: dict[str, tuple[float, float]] = dict.fromkeys(DIFFERENCE_METRICS, (-limit, limit))
    ranges["disparate_impact"] = thresholds.disparate_impact_range
    if thresholds.max_theil_index is not None:
        ranges["theil_index"] = (0.0, thresholds.max_theil_index)
    absent = [name for name in ranges if name not in metrics]
    if absent:
        raise ValueError(f"metrics lacks {absent}; expected the keys returned by assess_fairness")

    violations = []
    for name, (low, high) in ranges.items():
        value = float(metrics[name])
        allowed = f"[{low:.3g}, {high:.3g}]"
        if math.isnan(value):
            violations.append(f"{name} could not be computed (NaN): {_NAN_REASONS[name]}; allowed {allowed}")
        elif intervals is not None and name in intervals:
            ci_low, ci_high = intervals[name]
            if ci_low > high + _TOL or ci_high < low - _TOL:
                violations.append(
                    f"{name} = {value:.4f} (95% CI [{ci_low:.4f}, {ci_high:.4f}]) is outside the allowed range {allowed}"
                )
        elif not (low - _TOL <= value <= high + _TOL):
            violations.append(f"{name} = {value:.4f} is outside the allowed range {allowed}")
    return violations


def fairness_intervals(
    y_true: Any,
    y_pred: Any,
    sensitive: Any,
    privileged: Any,
    *,
    n_boot: int = 1_000,
    alpha: float = 0.05,
    random_state: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of the five :func:`assess_fairness` metrics.

    Every metric depends on the rows only through the counts of 12 cells (privileged, unprivileged
    or missing group x label x decision), so resampling rows is a multinomial draw of those counts:
    ``n_boot`` resamples cost one ``multinomial`` call, whatever the number of rows. Resamples where
    a metric is undefined (an empty group) are left out of its interval.
    """
    y = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    if len(y) != len(p) or len(y) != len(np.asarray(sensitive, dtype=object)):
        raise ValueError(f"y_true, y_pred and sensitive have lengths {len(y)}, {len(p)}, {len(sensitive)}")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValueError(f"alpha must be in (0, 1) and n_boot >= 1, got alpha={alpha}, n_boot={n_boot}")
    privileged_mask, unprivileged_mask = _group_masks(sensitive, privileged)
    group = np.where(privileged_mask, 0, np.where(unprivileged_mask, 1, 2))
    cells = np.bincount(group * 4 + y * 2 + p, minlength=12)
    draws = np.random.default_rng(random_state).multinomial(len(y), cells / len(y), size=n_boot)
    c = draws.reshape(n_boot, 3, 2, 2).astype(np.float64)  # [resample, group, label, decision]
    with np.errstate(divide="ignore", invalid="ignore"):
        selection = c[:, :, :, 1].sum(axis=2) / c.sum(axis=(2, 3))
        tpr = c[:, :, 1, 1] / c[:, :, 1, :].sum(axis=2)
        fpr = c[:, :, 0, 1] / c[:, :, 0, :].sum(axis=2)
        # Theil over everyone: benefit b = decision - label + 1 is 0, 1 or 2.
        n = c.sum(axis=(1, 2, 3))
        twos = c[:, :, 0, 1].sum(axis=1)
        ones = n - twos - c[:, :, 1, 0].sum(axis=1)
        mean = (ones + 2 * twos) / n
        theil = (ones * (1 / mean) * np.log(1 / mean) + twos * (2 / mean) * np.log(2 / mean)) / n
        values = {
            "statistical_parity_difference": selection[:, 1] - selection[:, 0],
            "equal_opportunity_difference": tpr[:, 1] - tpr[:, 0],
            "average_odds_difference": 0.5 * ((fpr[:, 1] - fpr[:, 0]) + (tpr[:, 1] - tpr[:, 0])),
            "disparate_impact": selection[:, 1] / selection[:, 0],
            "theil_index": theil,
        }
    intervals = {}
    for name, samples in values.items():
        finite = samples[np.isfinite(samples)]
        if finite.size == 0:
            intervals[name] = (math.nan, math.nan)
        else:
            low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
            intervals[name] = (float(low), float(high))
    return intervals


# --------------------------------------------------------------------------------------------- segments

SEGMENT_COLUMNS = (
    "n",
    "n_positive",
    "positive_rate",
    "n_flagged",
    "too_small",
    "roc_auc",
    "average_precision",
    "average_precision_ci_low",
    "average_precision_ci_high",
    "precision",
    "recall",
    "recall_ci_low",
    "recall_ci_high",
)

# Bootstrap work is chunked so a large segment never needs more than this many cells per array.
_MAX_BOOT_CELLS = 4_000_000


def _bootstrap_average_precision(y_sorted: np.ndarray, blocks: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average precision of each bootstrap replicate (row of ``idx``), as sklearn computes it.

    ``y_sorted`` holds the labels in descending score order and ``blocks`` numbers the runs of tied scores in
    that order. Sorting each row of indices therefore orders the replicate by descending score for free.
    AP = (1/P) Σ_i y_i · precision(end of i's tie block), i.e. sklearn's step sum over distinct thresholds.
    """
    idx = np.sort(idx, axis=1)
    n_rows, m = idx.shape
    labels = y_sorted[idx]
    cum_tp = np.cumsum(labels, axis=1)
    precision = cum_tp / np.arange(1, m + 1)
    # A key that is sorted over the flattened matrix (rows ascending, blocks non-decreasing within a row),
    # so one searchsorted finds the last position of every position's tie block.
    key = (np.arange(n_rows)[:, None] * (blocks[-1] + 1) + blocks[idx]).ravel()
    block_end = np.searchsorted(key, key, side="right") - 1
    at_end = precision.ravel()[block_end].reshape(n_rows, m)
    n_pos = cum_tp[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, (labels * at_end).sum(axis=1) / n_pos, np.nan)


def _percentile_ci(values: np.ndarray) -> tuple[float, float]:
    finite = values[~np.isnan(values)]  # replicates without positives have no AP / recall
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _segment_row(
    y_true: np.ndarray,
    y_score: np.ndarray,
    *,
    threshold: float,
    too_small: bool,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    n = y_true.size
    n_positive = int(y_true.sum())
    flagged = y_score >= threshold
    row: dict[str, Any] = dict.fromkeys(SEGMENT_COLUMNS, math.nan)
    row.update(
        n=n,
        n_positive=n_positive,
        positive_rate=n_positive / n if n else math.nan,
        n_flagged=int(flagged.sum()),
        too_small=too_small,
    )
    if too_small:
        return row

    true_positives = int((flagged & (y_true == 1)).sum())
    row.update(
        roc_auc=roc_auc(y_true, y_score),
        average_precision=average_precision(y_true, y_score),
        precision=true_positives / flagged.sum() if flagged.any() else math.nan,
        recall=true_positives / n_positive if n_positive else math.nan,
    )
    if n_boot > 0:
        order = np.argsort(-y_score, kind="stable")
        y_sorted, score_sorted = y_true[order], y_score[order]
        blocks = np.concatenate([[0], np.cumsum(score_sorted[1:] != score_sorted[:-1])])
        flagged_sorted = flagged[order]
        ap, recall = np.empty(n_boot), np.empty(n_boot)
        chunk = max(1, _MAX_BOOT_CELLS // n)
        for start in range(0, n_boot, chunk):
            stop = min(start + chunk, n_boot)
            idx = rng.integers(0, n, size=(stop - start, n))
            ap[start:stop] = _bootstrap_average_precision(y_sorted, blocks, idx)
            labels = y_sorted[idx]
            positives = labels.sum(axis=1)
            hits = (labels * flagged_sorted[idx]).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                recall[start:stop] = np.where(positives > 0, hits / positives, np.nan)
        row["average_precision_ci_low"], row["average_precision_ci_high"] = _percentile_ci(ap)
        row["recall_ci_low"], row["recall_ci_high"] = _percentile_ci(recall)
    return row


def evaluate_by_segment(
    y_true: Any,
    y_score: Any,
    segments: pd.Series | np.ndarray,
    *,
    threshold: float,
    min_size: int = 100,
    n_boot: int = 200,
    random_state: int = 0,
) -> pd.DataFrame:
    """Per-segment performance with bootstrap 95% CIs: one row per segment value.

    Columns (``SEGMENT_COLUMNS``): ``n``, ``n_positive``, ``positive_rate``, ``n_flagged`` (scores
    ``>= threshold``), ``too_small`` (``n < min_size``), ``roc_auc``, ``average_precision``, ``precision`` and
    ``recall`` at the threshold, and percentile 95% CIs (``*_ci_low``/``*_ci_high``) for average precision and
    recall from ``n_boot`` resamples of the segment's rows. Undefined values are NaN (no positives: AP, recall;
    nothing flagged: precision; one class: ROC AUC). Segments smaller than ``min_size`` keep their counts but
    get NaN metrics rather than being dropped; so do the unused categories of a categorical ``segments``
    (``n = 0``), so every band of :func:`amount_band` is listed. Rows with a missing segment value form their
    own row (index NaN).

    The index (named ``segment``) follows category order for a categorical, else sorted values. Each segment
    draws from its own generator spawned from ``random_state``, so results are deterministic.
    """
    y_true = _binary("y_true", y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    seg = pd.Series(segments).reset_index(drop=True)  # positional, like the arrays
    if not (y_true.size == y_score.size == len(seg)):
        raise ValueError(
            f"y_true, y_score and segments must have the same length, got {y_true.size}, {y_score.size} "
            f"and {len(seg)}"
        )
    n_missing = int(np.isnan(y_score).sum())
    if n_missing:
        raise ValueError(f"y_score has {n_missing} NaN value(s); every row needs a score")
    if min_size < 1 or n_boot < 0:
        raise ValueError(f"min_size must be >= 1 and n_boot >= 0, got min_size={min_size}, n_boot={n_boot}")

    if isinstance(seg.dtype, pd.CategoricalDtype):
        labels: list[Any] = list(seg.cat.categories)
        codes = seg.cat.codes.to_numpy()
    else:
        codes, uniques = pd.factorize(seg, sort=True)
        labels = list(uniques)
    if (codes == -1).any():  # missing segment values: their own row rather than silently dropped
        codes = np.where(codes == -1, len(labels), codes)
        labels.append(np.nan)

    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(random_state).spawn(len(labels))]
    rows = []
    for code, rng in enumerate(rngs):
        member = codes == code
        rows.append(
            _segment_row(
                y_true[member],
                y_score[member],
                threshold=threshold,
                too_small=int(member.sum()) < min_size,
                n_boot=n_boot,
                rng=rng,
            )
        )
    table = pd.DataFrame(rows, columns=list(SEGMENT_COLUMNS), index=pd.Index(labels, name="segment"))
    return table.astype({"n": np.int64, "n_positive": np.int64, "n_flagged": np.int64, "too_small": bool})


# ------------------------------------------------------------------------------------------------ bands


def risk_band(values: Any, edges: Sequence[float], *, name: str = "risk_band") -> pd.Series:
    """Label each value with its half-open band ``"[low, high)"`` (an ordered categorical).

    Values outside ``[edges[0], edges[-1])`` and missing values get NaN. A pandas Series keeps its index.
    """
    edges = [float(edge) for edge in edges]
    if len(edges) < 2 or any(high <= low for low, high in itertools.pairwise(edges)):
        raise ValueError(f"edges must be at least two strictly increasing numbers, got {edges}")
    index = values.index if isinstance(values, pd.Series) else None
    labels = [f"[{low:g}, {high:g})" for low, high in itertools.pairwise(edges)]
    bands = pd.cut(np.asarray(values, dtype=np.float64), bins=edges, right=False, labels=labels, ordered=True)
    return pd.Series(bands, index=index, name=name)


def amount_band(amount: Any, edges: Sequence[float] = (0, 20, 50, 100, 220, math.inf)) -> pd.Series:
    """Amount bands such as ``"[20, 50)"`` for :func:`evaluate_by_segment`; see :func:`risk_band`."""
    return risk_band(amount, edges, name="amount_band")
