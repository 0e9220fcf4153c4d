"""Post-processing fairness mitigation: per-group decision thresholds, and the trade-off they cost.

When a model fails the fairness gate (:func:`~fraud_detection.evaluation.analysis.fairness_violations`),
:func:`mitigate_thresholds` chooses one decision threshold per value of the protected attribute so that the
unprivileged groups' rates match the privileged group's rates at the model's own threshold, and
:func:`mitigation_report` measures the fairness metrics and the performance (precision, recall, alert share,
expected cost) before and after, preferably on rows the thresholds were not fitted on.

Why not fairlearn's ``ThresholdOptimizer``
------------------------------------------
``ThresholdOptimizer`` (fairlearn 0.15) reaches its constraint by *randomising*: for every group it stores
two operating points and flips a coin (``p0``/``p1`` in ``_interpolated_thresholder.py``) between them, for
every constraint including demographic parity, and its ``predict`` takes a ``random_state``. A fraud
decision that depends on a coin flip cannot be explained to a customer or an auditor, the same transaction
scored twice may get two decisions, and the result is not a set of plain numbers a model bundle can store.
It also picks a *new* operating point for everybody (maximising e.g. balanced accuracy), so the alert volume
moves far from the one the threshold was chosen for. Here instead:

* privileged groups keep the model's threshold, so their decisions do not change;
* each unprivileged group gets the one deterministic threshold whose rate on the fit rows is closest to the
  privileged group's rate at the model's threshold (ties: the threshold nearest the original, then the
  higher one, i.e. fewer alerts);
* the result, :class:`GroupThresholds`, is a ``{group: threshold}`` dict plus a default for unseen groups
  and missing values: JSON-serialisable, storable in a bundle, applied as ``score >= threshold[group]``.

Constraints (rates at ``score >= t``; "privileged" pools every privileged value, as
:func:`~fraud_detection.evaluation.analysis.assess_fairness` does):

* ``"true_positive_rate_parity"`` (equal opportunity, the default): match the TPR. Candidates are the
  group's fraud scores, so each TPR level is reached with the fewest false alerts.
* ``"demographic_parity"``: match the selection (alert) rate; this is what disparate impact and
  statistical parity measure.
* ``"equalized_odds"``: minimise ``max(|TPR gap|, |FPR gap|)``; one deterministic threshold can rarely
  close both gaps, so this is a compromise, not exact equalised odds.

Every unprivileged value is matched to the privileged target on its own, so the pooled unprivileged rate
(the one ``assess_fairness`` reports) matches it too. A group lacking the rows its rate needs (no frauds for
a TPR, no genuine rows for an FPR) keeps the model's threshold. Rates of small groups are noisy: fit on
enough rows and judge the result out of sample (``fit_mask``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.evaluation.analysis import FairnessThresholds, assess_fairness, fairness_violations
from fraud_detection.evaluation.metrics import CostModel, expected_cost

logger = logging.getLogger(__name__)

Constraint = Literal["equalized_odds", "true_positive_rate_parity", "demographic_parity"]
CONSTRAINTS: tuple[str, ...] = ("equalized_odds", "true_positive_rate_parity", "demographic_parity")
# Thresholds are stored in bundles as JSON, which has no inf/NaN.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PERFORMANCE_METRICS = ("precision", "recall", "alerts_share", "expected_cost")

# Rates are ratios of counts; gaps that differ by less than this are ties (broken towards the original threshold).
_GAP_TOL = 1e-12


# --------------------------------------------------------------------------------------------- inputs


def _labels_scores(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1:
        raise ValueError(f"y_true and y_score must be 1-D, got shapes {labels.shape} and {scores.shape}")
    if labels.size != scores.size:
        raise ValueError(f"y_true and y_score must have the same length, got {labels.size} and {scores.size}")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 and 1, got {np.unique(labels)[:5].tolist()!r}")
    if not np.isfinite(scores).all():
        raise ValueError(f"y_score has {int((~np.isfinite(scores)).sum())} NaN or infinite value(s)")
    return labels.astype(np.int64), scores


def _sensitive_keys(sensitive: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(group key per row as ``str(value)``, missing mask); missing values (None/NaN) get key ``""``."""
    values = pd.Series(np.asarray(sensitive, dtype=object))
    if values.size != n:
        raise ValueError(f"sensitive must have one value per score ({n}), got {values.size}")
    missing = values.isna().to_numpy()
    keys = values.astype(str).to_numpy(dtype=object)
    keys[missing] = ""
    return keys, missing


def _privileged_keys(privileged: Any) -> set[str]:
    if isinstance(privileged, str) or not isinstance(privileged, Sequence | np.ndarray | pd.Index | set):
        privileged = [privileged]
    keys = {str(value) for value in privileged}
    if not keys:
        raise ValueError("privileged must name at least one value of the sensitive attribute")
    return keys


def _finite_threshold(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------- thresholds


class GroupThresholds(BaseModel):
    """One decision threshold per value of the protected attribute: alert when ``score >= threshold``.

    ``thresholds`` is keyed by ``str(value)`` (so ``1`` and ``"1"`` are the same group, and the dict is
    JSON-ready); ``default`` applies to values not in it and to missing values. Store it with
    ``model_dump()`` and restore it with ``GroupThresholds.model_validate(data)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    thresholds: dict[str, FiniteFloat] = Field(default_factory=dict)
    default: FiniteFloat
    constraint: Constraint | None = Field(None, description="The constraint these thresholds were fit for.")

    def row_thresholds(self, sensitive: Any) -> np.ndarray:
        """The threshold that applies to each row (``default`` for unseen or missing values)."""
        values = pd.Series(np.asarray(sensitive, dtype=object))
        missing = values.isna().to_numpy()
        mapped = values.astype(str).map(self.thresholds).to_numpy(dtype=np.float64, na_value=np.nan)
        return np.where(missing | np.isnan(mapped), self.default, mapped)

    def apply(self, y_score: Any, sensitive: Any) -> np.ndarray:
        """0/1 decisions (int64): ``y_score >= `` the threshold of each row's group."""
        scores = np.asarray(y_score, dtype=np.float64)
        if scores.ndim != 1:
            raise ValueError(f"y_score must be 1-D, got shape {scores.shape}")
        if len(sensitive) != scores.size:
            raise ValueError(
                f"y_score and sensitive must have the same length, got {scores.size} and {len(sensitive)}"
            )
        return (scores >= self.row_thresholds(sensitive)).astype(np.int64)


def _rates_at(labels: np.ndarray, scores: np.ndarray, candidates: np.ndarray) -> dict[str, np.ndarray]:
    """Selection rate, TPR and FPR of alerting ``scores >= t`` for every candidate t (NaN where undefined)."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    positives_below = np.concatenate(([0], np.cumsum(labels[order])))
    first_alerted = np.searchsorted(sorted_scores, candidates, side="left")
    n, n_pos = scores.size, int(positives_below[-1])
    alerts = n - first_alerted
    tp = n_pos - positives_below[first_alerted]
    fp = alerts - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "selection_rate": alerts / n if n else np.full(candidates.size, np.nan),
            "tpr": tp / n_pos if n_pos else np.full(candidates.size, np.nan),
            "fpr": fp / (n - n_pos) if n - n_pos else np.full(candidates.size, np.nan),
        }


def _gaps(rates: dict[str, np.ndarray], target: dict[str, float], constraint: str) -> np.ndarray:
    if constraint == "demographic_parity":
        return np.abs(rates["selection_rate"] - target["selection_rate"])
    if constraint == "true_positive_rate_parity":
        return np.abs(rates["tpr"] - target["tpr"])
    return np.maximum(np.abs(rates["tpr"] - target["tpr"]), np.abs(rates["fpr"] - target["fpr"]))


def _needed_rates(constraint: str) -> tuple[str, ...]:
    return {
        "demographic_parity": ("selection_rate",),
        "true_positive_rate_parity": ("tpr",),
        "equalized_odds": ("tpr", "fpr"),
    }[constraint]


def mitigate_thresholds(
    y_true: Any,
    y_score: Any,
    sensitive: Any,
    *,
    privileged: Any,
    threshold: float,
    constraint: Constraint = "true_positive_rate_parity",
) -> GroupThresholds:
    """Per-group thresholds that give every unprivileged group the privileged group's rate (see module doc).

    Parameters
    ----------
    y_true, y_score : array-like
        0/1 labels and finite scores of the rows to fit on (out-of-sample scores of the model).
    sensitive : array-like
        The protected attribute per row; missing values are ignored for fitting and get ``threshold``.
    privileged : scalar or list of scalars
        The privileged value(s), as in :func:`~fraud_detection.evaluation.analysis.assess_fairness`; they keep
        ``threshold``.
    threshold : float
        The model's decision threshold: the privileged operating point, and the default for unseen groups.
    constraint : {"true_positive_rate_parity", "demographic_parity", "equalized_odds"}
        Which rate to equalise.

    Deterministic: no randomness, so no ``random_state``; the same inputs always give the same thresholds.
    """
    if constraint not in CONSTRAINTS:
        raise ValueError(f"constraint must be one of {list(CONSTRAINTS)}, got {constraint!r}")
    threshold = _finite_threshold(threshold, "threshold")
    labels, scores = _labels_scores(y_true, y_score)
    keys, missing = _sensitive_keys(sensitive, scores.size)
    privileged_keys = _privileged_keys(privileged)
    is_privileged = np.isin(keys, list(privileged_keys)) & ~missing
    needed = _needed_rates(constraint)

    at_threshold = np.array([threshold])
    target = {
        name: float(rate[0])
        for name, rate in _rates_at(labels[is_privileged], scores[is_privileged], at_threshold).items()
    }
    undefined = [name for name in needed if math.isnan(target[name])]
    if undefined:
        raise ValueError(
            f"the privileged group {sorted(privileged_keys)} has no defined {undefined} on these rows "
            f"({int(is_privileged.sum())} rows, {int(labels[is_privileged].sum())} frauds); "
            "fit on rows where it has frauds and genuine transactions"
        )

    # "Alert nothing" as a finite number just above every fit score, so the result stays JSON-safe.
    above_all = float(np.nextafter(scores.max(), np.inf))
    fitted: dict[str, float] = dict.fromkeys(sorted(privileged_keys & set(keys[~missing])), threshold)
    for group in sorted(set(keys[~missing & ~is_privileged])):
        member = keys == group
        group_labels, group_scores = labels[member], scores[member]
        pool = group_scores[group_labels == 1] if constraint == "true_positive_rate_parity" else group_scores
        candidates = np.append(np.unique(pool), above_all)
        rates = _rates_at(group_labels, group_scores, candidates)
        if any(np.isnan(rates[name]).all() for name in needed):
            logger.info(
                "group %r lacks the rows for %s; it keeps the threshold %s", group, constraint, threshold
            )
            fitted[group] = threshold
            continue
        gaps = _gaps(rates, target, constraint)
        best = np.flatnonzero(gaps <= gaps.min() + _GAP_TOL)
        # Among equally good thresholds: the one changing fewest decisions (nearest the original), then the
        # higher one (fewer alerts). lexsort sorts by its last key first.
        chosen = best[np.lexsort((-candidates[best], np.abs(candidates[best] - threshold)))[0]]
        fitted[group] = float(candidates[chosen])
    return GroupThresholds(thresholds=fitted, default=threshold, constraint=constraint)


# --------------------------------------------------------------------------------------------- report


def decision_performance(y_true: Any, y_pred: Any, cost: CostModel | None = None) -> dict[str, float]:
    """Precision, recall, share of rows alerted and expected cost per transaction of 0/1 decisions.

    Precision is 0 when nothing is alerted (sklearn's ``zero_division=0``) and recall NaN without frauds.
    The cost is :func:`~fraud_detection.evaluation.metrics.expected_cost` of the decisions themselves
    (alerting ``y_pred >= 0.5``), so per-group thresholds are priced by exactly the same rule.
    """
    labels, decisions = _labels_scores(y_true, y_pred)
    if not np.isin(decisions, (0, 1)).all():
        raise ValueError("y_pred must hold only 0 and 1")
    alerted, positive = decisions == 1, labels == 1
    tp = int(np.count_nonzero(alerted & positive))
    n_alerts, n_positive = int(alerted.sum()), int(positive.sum())
    return {
        "precision": tp / n_alerts if n_alerts else 0.0,
        "recall": tp / n_positive if n_positive else math.nan,
        "alerts_share": n_alerts / labels.size,
        "expected_cost": expected_cost(labels, decisions, 0.5, cost),
    }


class MitigationReport(BaseModel):
    """Fairness and performance of the model's threshold (before) and the per-group thresholds (after).

    Every ``*_before``/``*_after`` value is measured on the evaluation rows: the rows outside ``fit_mask``
    when one was given (``in_sample`` False), else the fit rows themselves (optimistic).
    ``performance_delta`` is after minus before, so a positive ``expected_cost`` delta is the extra cost per
    transaction the fairness fix costs, and a negative ``recall`` delta the frauds it gives up.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    constraint: Constraint
    threshold: float
    thresholds: GroupThresholds
    in_sample: bool
    n_fit: int
    n_eval: int
    before: dict[str, float]
    after: dict[str, float]
    violations_before: list[str]
    violations_after: list[str]
    performance_before: dict[str, float]
    performance_after: dict[str, float]
    performance_delta: dict[str, float]

    @property
    def passes_before(self) -> bool:
        return not self.violations_before

    @property
    def passes_after(self) -> bool:
        return not self.violations_after

    @property
    def expected_cost_delta(self) -> float:
        return self.performance_delta["expected_cost"]


def mitigation_report(
    y_true: Any,
    y_score: Any,
    sensitive: Any,
    *,
    privileged: Any,
    threshold: float,
    thresholds_config: FairnessThresholds | None = None,
    constraint: Constraint = "true_positive_rate_parity",
    fit_mask: Any = None,
    cost: CostModel | None = None,
) -> MitigationReport:
    """Fit :func:`mitigate_thresholds` and report the fairness/performance trade-off.

    With ``fit_mask`` (boolean, one per row) the thresholds are fit on the masked rows and every metric is
    measured on the others, so the report shows what the mitigation does on data it has not seen (in time
    order, make the fit rows the earlier ones). Without it, fit and evaluation share the rows and the
    "after" fairness is optimistic. ``thresholds_config`` defaults to ``FairnessThresholds()`` and ``cost`` to
    ``CostModel()``.
    """
    thresholds_config = thresholds_config or FairnessThresholds()
    labels, scores = _labels_scores(y_true, y_score)
    values = np.asarray(sensitive, dtype=object)
    if values.shape != scores.shape:
        raise ValueError(f"sensitive must have one value per score ({scores.size}), got shape {values.shape}")
    if fit_mask is None:
        fit_rows = eval_rows = np.ones(scores.size, dtype=bool)
    else:
        fit_rows = np.asarray(fit_mask)
        if fit_rows.dtype != bool or fit_rows.shape != scores.shape:
            raise ValueError(
                f"fit_mask must be a boolean array with one value per row ({scores.size}), "
                f"got dtype {fit_rows.dtype} and shape {fit_rows.shape}"
            )
        eval_rows = ~fit_rows
        if not fit_rows.any() or not eval_rows.any():
            raise ValueError(
                f"fit_mask must leave rows on both sides, got {int(fit_rows.sum())} fit and "
                f"{int(eval_rows.sum())} evaluation rows"
            )

    group_thresholds = mitigate_thresholds(
        labels[fit_rows],
        scores[fit_rows],
        values[fit_rows],
        privileged=privileged,
        threshold=threshold,
        constraint=constraint,
    )
    y_eval, s_eval, groups_eval = labels[eval_rows], scores[eval_rows], values[eval_rows]
    pred_before = (s_eval >= threshold).astype(np.int64)
    pred_after = group_thresholds.apply(s_eval, groups_eval)
    before = assess_fairness(y_eval, pred_before, groups_eval, privileged)
    after = assess_fairness(y_eval, pred_after, groups_eval, privileged)
    performance_before = decision_performance(y_eval, pred_before, cost)
    performance_after = decision_performance(y_eval, pred_after, cost)
    return MitigationReport(
        constraint=constraint,
        threshold=float(threshold),
        thresholds=group_thresholds,
        in_sample=fit_mask is None,
        n_fit=int(fit_rows.sum()),
        n_eval=int(eval_rows.sum()),
        before=before,
        after=after,
        violations_before=fairness_violations(before, thresholds_config),
        violations_after=fairness_violations(after, thresholds_config),
        performance_before=performance_before,
        performance_after=performance_after,
        performance_delta={
            name: performance_after[name] - performance_before[name] for name in PERFORMANCE_METRICS
        },
    )
