"""Model behaviour checks: the promotion gate's model tests, as library functions.

Each check takes a :class:`~fraud_detection.models.bundle.ModelBundle` and a frame of feature rows
(the model's feature columns; extra columns, such as the raw protected attribute, are ignored by
the model) and returns a :class:`BehaviourResult` instead of raising, so the gate can run the whole
suite outside pytest and report *every* failing check. ``tests/model`` runs the same functions
against a ``--model-uri``.

The checks (Made-With-ML's behavioural tests, applied to fraud scoring):

* :func:`check_deterministic`: the same rows score bitwise the same twice.
* :func:`check_probability_range`: every score is a finite probability in [0, 1].
* :func:`check_directional`: raising a risk feature never lowers the score (directional expectation).
* :func:`check_protected_invariance`: the protected attribute is no input, so changing it changes
  nothing (a counterfactual flip).
* :func:`check_minimum_functionality`: an amount far above the customer's history scores higher.
* :func:`check_no_regression`: the candidate's metrics are not worse than the champion's beyond a
  tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.evaluation.metrics import average_precision, roc_auc
from fraud_detection.models.bundle import ModelBundle

# Features along which fraud risk must not decrease, with the step each is raised by. A higher
# terminal fraud rate, a larger amount relative to the customer's history, more earlier outlier
# amounts and a longer run of known frauds at the terminal all point towards fraud.
RISK_INCREASING: dict[str, float] = {
    "terminal_risk_1d": 0.2,
    "terminal_risk_7d": 0.2,
    "customer_amount_ratio_30d": 2.0,
    "customer_nb_outlier_amounts_7d": 1.0,
    "terminal_known_fraud_streak_count": 1.0,
}
AMOUNT_RATIO_FEATURE = "customer_amount_ratio_30d"
DIRECTION_TOLERANCE = 1e-9  # a score drop below this is float noise, not a violated direction
REGRESSION_KEYS = ("average_precision", "roc_auc")


@dataclass(frozen=True)
class BehaviourResult:
    name: str
    passed: bool
    detail: str


def _scores(bundle: ModelBundle, rows: pd.DataFrame) -> np.ndarray:
    # float64 always: the bitwise comparisons below view the scores as 64-bit integers.
    return np.asarray(bundle.predict_proba(rows), dtype=np.float64).reshape(-1)


def _no_rows(name: str, rows: pd.DataFrame) -> BehaviourResult | None:
    """A check on no rows shows nothing, so it fails rather than passing vacuously."""
    return BehaviourResult(name, False, "no rows to check the model on") if rows.empty else None


def check_deterministic(bundle: ModelBundle, rows: pd.DataFrame) -> BehaviourResult:
    """Scoring the same rows twice gives bitwise identical scores."""
    if (empty := _no_rows("deterministic", rows)) is not None:
        return empty
    first = _scores(bundle, rows)
    second = _scores(bundle, rows)
    # Bytes, not np.array_equal: NaN != NaN and 0.0 == -0.0 would hide or invent differences.
    if first.shape == second.shape and first.tobytes() == second.tobytes():
        return BehaviourResult("deterministic", True, f"{len(first)} rows scored identically twice")
    if first.shape != second.shape:
        return BehaviourResult(
            "deterministic", False, f"a second call returned {second.shape} scores, the first {first.shape}"
        )
    differ = int(np.count_nonzero(first.view(np.uint64) != second.view(np.uint64)))
    return BehaviourResult(
        "deterministic", False, f"{differ} of {len(first)} rows scored differently on a second call"
    )


def check_probability_range(bundle: ModelBundle, rows: pd.DataFrame) -> BehaviourResult:
    """Every score is finite and in [0, 1]."""
    if (empty := _no_rows("probability_range", rows)) is not None:
        return empty
    scores = _scores(bundle, rows)
    finite = np.isfinite(scores)
    outside = finite & ((scores < 0.0) | (scores > 1.0))
    n_bad = int((~finite).sum() + outside.sum())
    if n_bad == 0:
        return BehaviourResult(
            "probability_range",
            True,
            f"{len(scores)} scores in [{scores.min():.3g}, {scores.max():.3g}]",
        )
    examples = scores[~finite | outside][:5].tolist()
    return BehaviourResult(
        "probability_range",
        False,
        f"{int((~finite).sum())} non-finite and {int(outside.sum())} out-of-range scores "
        f"of {len(scores)}, e.g. {examples}",
    )


@dataclass(frozen=True)
class DirectionalViolations:
    """How raising one feature by ``step`` lowered scores: rows that dropped, of how many, worst drop."""

    feature: str
    step: float
    n_violating: int
    n_rows: int
    worst_drop: float

    @property
    def share(self) -> float:
        return self.n_violating / self.n_rows if self.n_rows else 0.0

    def describe(self) -> str:
        if not self.n_violating:
            return f"{self.feature} +{self.step:g}: no row scores lower"
        return (
            f"{self.feature} +{self.step:g}: {self.n_violating} of {self.n_rows} rows score lower, "
            f"worst drop {self.worst_drop:.4g}"
        )


def directional_violations(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    feature: str,
    step: float,
    *,
    tolerance: float = DIRECTION_TOLERANCE,
    base: np.ndarray | None = None,
) -> DirectionalViolations:
    """Raise ``feature`` by ``step`` on every row and count the rows whose score drops by more than
    ``tolerance``. ``base`` is the rows' scores when already known."""
    if feature not in bundle.feature_names:
        raise ValueError(f"{feature!r} is not a model input: {list(bundle.feature_names)}")
    if not step > 0:
        raise ValueError(f"the step for {feature!r} is {step!r}; a directional step must be positive")
    before = _scores(bundle, rows) if base is None else base
    raised = rows.copy()
    raised[feature] = raised[feature].astype(np.float64) + step
    drop = before - _scores(bundle, raised)
    return DirectionalViolations(
        feature, float(step), int((drop > tolerance).sum()), len(drop), float(drop.max(initial=0.0))
    )


def check_directional(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    increasing: Mapping[str, float] = RISK_INCREASING,
    *,
    tolerance: float = DIRECTION_TOLERANCE,
) -> BehaviourResult:
    """Raising each declared risk feature by its step (on every row) never lowers a score by more than
    ``tolerance``.

    ``increasing`` maps a feature name to its step; features that are not model inputs are skipped
    (and named in the detail). The detail reports, per feature, how many rows violate the direction
    and the worst drop.

    An unconstrained XGBoost model can legitimately violate these: trees fit local, non-monotone
    steps wherever the training data is thin, so a failure names the features and the size of the
    effect rather than proving a bug. XGBoost's ``monotone_constraints`` parameter (``+1`` per
    feature; the training config's ``model.xgboost.monotone_increasing``) enforces the direction
    during training, and a model trained with it passes by construction.
    """
    if (empty := _no_rows("directional", rows)) is not None:
        return empty
    present = {feature: step for feature, step in increasing.items() if feature in bundle.feature_names}
    skipped = [feature for feature in increasing if feature not in present]
    if not present:
        return BehaviourResult(
            "directional", True, f"none of the declared features {sorted(increasing)} is a model input"
        )
    base = _scores(bundle, rows)
    found = [
        directional_violations(bundle, rows, feature, step, tolerance=tolerance, base=base)
        for feature, step in present.items()
    ]
    detail = "; ".join(violations.describe() for violations in found)
    if skipped:
        detail += f"; not model inputs, skipped: {skipped}"
    return BehaviourResult("directional", not any(v.n_violating for v in found), detail)


def _flipped(values: pd.Series) -> pd.Series:
    """Each row's value replaced by a different one of the column's values (a counterfactual flip)."""
    values = values.astype(object)  # a categorical column would refuse an unseen value
    categories = list(pd.unique(values.dropna()))
    if len(categories) < 2:  # nothing to flip to within the column: use a value it never holds
        return pd.Series("<counterfactual>", index=values.index, dtype=object)
    successor = {value: categories[(i + 1) % len(categories)] for i, value in enumerate(categories)}
    return values.map(successor).where(values.notna(), categories[0])


def check_protected_invariance(
    bundle: ModelBundle, rows: pd.DataFrame, protected_column: str, *, seed: int = 0
) -> BehaviourResult:
    """The protected attribute is not a model input, and changing it leaves every score identical.

    Two counterfactuals: every row's value flipped to another value of the column, and the column
    shuffled across rows. Scores must match bitwise: an input the model ignores cannot move them.
    """
    name = "protected_invariance"
    if protected_column in bundle.feature_names:
        return BehaviourResult(
            name,
            False,
            f"protected attribute {protected_column!r} is a model input: {list(bundle.feature_names)}",
        )
    if protected_column not in rows.columns:
        return BehaviourResult(
            name, False, f"rows lack the protected column {protected_column!r}, so invariance cannot be shown"
        )
    if (empty := _no_rows(name, rows)) is not None:
        return empty
    base = _scores(bundle, rows)
    flipped = rows.assign(**{protected_column: _flipped(rows[protected_column])})
    shuffled = rows.assign(
        **{protected_column: rows[protected_column].sample(frac=1.0, random_state=seed).to_numpy()}
    )
    changed = {
        label: int(np.count_nonzero(base.view(np.uint64) != _scores(bundle, frame).view(np.uint64)))
        for label, frame in (("flipped", flipped), ("shuffled", shuffled))
    }
    if any(changed.values()):
        return BehaviourResult(
            name,
            False,
            f"changing {protected_column!r} changed scores: "
            + ", ".join(f"{n} of {len(base)} rows when {label}" for label, n in changed.items()),
        )
    return BehaviourResult(
        name,
        True,
        f"{protected_column!r} is no input; flipping or shuffling it left {len(base)} scores identical",
    )


def check_minimum_functionality(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    amount_ratio_feature: str = AMOUNT_RATIO_FEATURE,
    amount_feature: str = "amount",
    *,
    factor: float = 10.0,
    ordinary: tuple[float, float] = (0.5, 2.0),
    min_share: float = 0.95,
) -> BehaviourResult:
    """An amount ``factor`` times the usual scores higher.

    Ordinary rows (amount ratio to the customer's history within ``ordinary``) get ``factor`` times
    their amount and amount ratio; the check passes when at least ``min_share`` of them score
    strictly higher. Not 100%: a row already at the model's top score for its other features may
    have no room to rise.
    """
    name = "minimum_functionality"
    if amount_feature not in bundle.feature_names:
        return BehaviourResult(
            name, False, f"{amount_feature!r} is not a model input: {list(bundle.feature_names)}"
        )
    if amount_ratio_feature not in rows.columns:
        return BehaviourResult(
            name, False, f"rows lack {amount_ratio_feature!r}, needed to find ordinary amounts"
        )
    low, high = ordinary
    usual = rows[rows[amount_ratio_feature].between(low, high)]
    if usual.empty:
        return BehaviourResult(
            name, False, f"no row has {amount_ratio_feature} in [{low:g}, {high:g}] to check against"
        )
    inflated = usual.copy()
    inflated[amount_feature] = inflated[amount_feature].astype(np.float64) * factor
    # The ratio follows the amount (same customer history); scaled even when the model doesn't use it.
    inflated[amount_ratio_feature] = inflated[amount_ratio_feature].astype(np.float64) * factor
    rose = _scores(bundle, inflated) > _scores(bundle, usual)
    share = float(rose.mean())
    detail = (
        f"{int(rose.sum())} of {len(usual)} ordinary rows ({share:.1%}) score higher with "
        f"{factor:g}x the amount; needs {min_share:.0%}"
    )
    return BehaviourResult(name, share >= min_share, detail)


def model_metrics(
    bundle: ModelBundle, rows: pd.DataFrame, labels: Sequence[int] | np.ndarray | pd.Series
) -> dict[str, float]:
    """Average precision and ROC AUC of ``bundle`` on ``rows`` (the no-regression metrics)."""
    scores = _scores(bundle, rows)
    y = np.asarray(labels)
    if len(y) != len(scores):
        raise ValueError(f"labels have {len(y)} values for {len(scores)} rows")
    return {"average_precision": average_precision(y, scores), "roc_auc": roc_auc(y, scores)}


def check_no_regression(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float],
    *,
    tolerance: float = 0.02,
    keys: Sequence[str] = REGRESSION_KEYS,
) -> BehaviourResult:
    """Fails when the candidate is worse than the champion by more than ``tolerance`` on any key.

    Higher is better for every key. A missing or NaN value also fails: no regression was shown.
    """
    name = "no_regression"
    problems, compared = [], []
    for key in keys:
        candidate, champion = candidate_metrics.get(key), champion_metrics.get(key)
        if candidate is None or champion is None:
            side = "candidate" if candidate is None else "champion"
            problems.append(f"{key}: missing from the {side} metrics")
        elif math.isnan(candidate) or math.isnan(champion):
            problems.append(f"{key}: cannot compare candidate {candidate} with champion {champion}")
        elif candidate < champion - tolerance:
            problems.append(
                f"{key}: candidate {candidate:.4f} < champion {champion:.4f} - tolerance {tolerance:g}"
            )
        else:
            compared.append(f"{key}: candidate {candidate:.4f} vs champion {champion:.4f}")
    if problems:
        return BehaviourResult(name, False, "; ".join(problems))
    return BehaviourResult(name, True, f"within {tolerance:g}: " + "; ".join(compared))


def run_behaviour_suite(
    bundle: ModelBundle,
    rows: pd.DataFrame,
    *,
    protected_column: str | None = None,
    increasing: Mapping[str, float] = RISK_INCREASING,
    amount_ratio_feature: str = AMOUNT_RATIO_FEATURE,
    labels: Sequence[int] | np.ndarray | pd.Series | None = None,
    champion: ModelBundle | Mapping[str, float] | None = None,
    tolerance: float = 0.02,
) -> list[BehaviourResult]:
    """Every check; the protected and no-regression ones only when their inputs are given.

    ``champion`` is a champion bundle (scored on the same ``rows``) or its metrics; comparing needs
    the ``labels`` of ``rows``.
    """
    results = [
        check_deterministic(bundle, rows),
        check_probability_range(bundle, rows),
        check_directional(bundle, rows, increasing),
        check_minimum_functionality(bundle, rows, amount_ratio_feature),
    ]
    if protected_column is not None:
        results.append(check_protected_invariance(bundle, rows, protected_column))
    if champion is not None:
        if labels is None:
            raise ValueError("comparing with a champion needs the labels of rows")
        champion_metrics = (
            model_metrics(champion, rows, labels) if isinstance(champion, ModelBundle) else champion
        )
        results.append(
            check_no_regression(model_metrics(bundle, rows, labels), champion_metrics, tolerance=tolerance)
        )
    return results
