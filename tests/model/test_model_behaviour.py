"""Behavioural tests of a trained model: the promotion gate.

``pytest tests/model --model-uri models:/NAME@challenger [--champion-uri models:/NAME@champion]``
checks a registered model (or a bundle folder); without ``--model-uri`` a small model is trained on
the test data (see ``conftest.py``), so ``make test`` always runs them. The checks themselves live in
:mod:`fraud_detection.evaluation.behaviour`, where the gate can run them without pytest.
"""

from __future__ import annotations

import pytest

from fraud_detection.evaluation.behaviour import (
    AMOUNT_RATIO_FEATURE,
    RISK_INCREASING,
    BehaviourResult,
    check_deterministic,
    check_directional,
    check_minimum_functionality,
    check_no_regression,
    check_probability_range,
    check_protected_invariance,
    model_metrics,
)
from fraud_detection.models.bundle import ModelBundle
from tests.model.conftest import PROTECTED, EvaluationRows

pytestmark = pytest.mark.model


def _assert(result: BehaviourResult) -> None:
    assert result.passed, f"{result.name}: {result.detail}"


def test_predictions_are_deterministic(model: ModelBundle, evaluation: EvaluationRows) -> None:
    _assert(check_deterministic(model, evaluation.rows))


def test_predictions_are_finite_probabilities(model: ModelBundle, evaluation: EvaluationRows) -> None:
    _assert(check_probability_range(model, evaluation.rows))


@pytest.mark.parametrize("feature", list(RISK_INCREASING))
def test_risk_never_decreases_when_a_risk_feature_rises(
    model: ModelBundle, evaluation: EvaluationRows, feature: str
) -> None:
    """Raising a declared risk feature (terminal fraud rates, earlier outlier amounts, known-fraud
    streak, amount ratio) by its step on every row never lowers a score.

    Strict for every feature: the training config enforces these directions with XGBoost monotone
    constraints (``model.xgboost.monotone_increasing``, the fallback model included), so any drop is
    a real failure. Without them the check is not vacuous: the same small model trained
    unconstrained lowered the score after +2 on the amount ratio for 19 of ~16k rows (worst drop
    0.27), on terminals already at a 7-day risk of 1.0 and at ratios the 7-day window barely covers.
    """
    if feature not in model.feature_names:
        pytest.skip(f"{feature} is not an input of this model")
    _assert(check_directional(model, evaluation.rows, {feature: RISK_INCREASING[feature]}))


def test_scores_do_not_depend_on_the_protected_attribute(
    model: ModelBundle, evaluation: EvaluationRows
) -> None:
    """Counterfactual flip: the age band is no input, so flipping or shuffling it moves no score."""
    _assert(check_protected_invariance(model, evaluation.rows, PROTECTED))


def test_an_amount_far_above_the_customers_history_scores_higher(
    model: ModelBundle, evaluation: EvaluationRows
) -> None:
    _assert(check_minimum_functionality(model, evaluation.rows, AMOUNT_RATIO_FEATURE))


def test_no_regression_against_the_champion(
    model: ModelBundle, champion: ModelBundle, evaluation: EvaluationRows
) -> None:
    """Average precision and ROC AUC on the evaluation rows, against ``--champion-uri`` (or, by
    default, the fallback model retrained with another seed and row subsampling)."""
    candidate = model_metrics(model, evaluation.rows, evaluation.labels)
    reference = model_metrics(champion, evaluation.rows, evaluation.labels)
    _assert(check_no_regression(candidate, reference, tolerance=0.02))
