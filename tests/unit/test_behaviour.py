"""The behaviour checks on hand-built models whose right answers are known."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fraud_detection.evaluation.behaviour import (
    BehaviourResult,
    check_deterministic,
    check_directional,
    check_minimum_functionality,
    check_no_regression,
    check_probability_range,
    check_protected_invariance,
    directional_violations,
    model_metrics,
    run_behaviour_suite,
)
from fraud_detection.models.bundle import LinearModel, ModelBundle, TrainingWindow

pytestmark = pytest.mark.unit

RATIO = "customer_amount_ratio_30d"
FEATURES = ("amount", RATIO, "terminal_risk_7d")


def linear(coef: tuple[float, ...], features: tuple[str, ...] = FEATURES) -> ModelBundle:
    n = len(features)
    return ModelBundle(
        model_type="logistic_regression",
        feature_names=features,
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=TrainingWindow(dt.datetime(2018, 4, 1), dt.datetime(2018, 4, 8)),
        metadata={},
        linear=LinearModel(mean=np.zeros(n), scale=np.ones(n), coef=np.array(coef), intercept=-3.0),
    )


class Scripted:
    """A stand-in model that returns the scores it is given, one array per call."""

    feature_names = FEATURES

    def __init__(self, *scores: list[float]) -> None:
        self._scores = [np.asarray(s, dtype=np.float64) for s in scores]

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        return self._scores.pop(0) if len(self._scores) > 1 else self._scores[0]


@pytest.fixture
def rows() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 25.0, n),
            RATIO: rng.uniform(0.6, 1.6, n),
            "terminal_risk_7d": rng.uniform(0.0, 0.3, n),
            "customer_age_band": rng.choice(["18-25", "26-35", "65+"], n),
        }
    )


def test_a_sensible_model_passes_every_check(rows: pd.DataFrame) -> None:
    model = linear((0.01, 0.5, 2.0))
    labels = (rows["terminal_risk_7d"] > 0.2).astype(int)
    results = run_behaviour_suite(
        model, rows, protected_column="customer_age_band", labels=labels, champion=linear((0.01, 0.5, 1.9))
    )
    assert [r.name for r in results] == [
        "deterministic",
        "probability_range",
        "directional",
        "minimum_functionality",
        "protected_invariance",
        "no_regression",
    ]
    assert all(r.passed for r in results), [r for r in results if not r.passed]


def test_nondeterministic_and_out_of_range_scores_fail() -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0]})
    assert not check_deterministic(Scripted([0.1, 0.2], [0.1, 0.2000001]), frame).passed  # type: ignore[arg-type]
    # -0.0 == 0.0 numerically, but bitwise they differ: "identical" means identical.
    signed_zero = check_deterministic(Scripted([0.0, 0.2], [-0.0, 0.2]), frame)  # type: ignore[arg-type]
    assert not signed_zero.passed and "1 of 2 rows" in signed_zero.detail
    assert check_deterministic(Scripted([np.nan, 0.2], [np.nan, 0.2]), frame).passed  # type: ignore[arg-type]
    bad = check_probability_range(Scripted([0.1, 1.5, np.nan, -0.1]), frame)  # type: ignore[arg-type]
    assert not bad.passed and "1 non-finite and 2 out-of-range" in bad.detail


def test_directional_names_the_feature_that_lowers_risk_and_skips_non_inputs(rows: pd.DataFrame) -> None:
    model = linear((0.01, -0.5, 2.0))  # the amount ratio pulls the wrong way
    result = check_directional(model, rows, {RATIO: 1.0, "terminal_risk_7d": 0.2, "streak_count": 1.0})
    assert not result.passed
    assert f"{RATIO} +1: {len(rows)} of {len(rows)} rows score lower" in result.detail
    assert "terminal_risk_7d +0.2: no row scores lower" in result.detail
    assert "skipped: ['streak_count']" in result.detail
    violations = directional_violations(model, rows, RATIO, 1.0)
    assert violations.share == 1.0 and violations.worst_drop > 0
    with pytest.raises(ValueError, match="must be positive"):
        directional_violations(model, rows, RATIO, 0.0)
    assert check_directional(model, rows, {"streak_count": 1.0}).passed  # nothing to check


def test_protected_invariance_fails_when_the_attribute_is_an_input_or_missing(rows: pd.DataFrame) -> None:
    model = linear((0.01, 0.5, 2.0))
    assert check_protected_invariance(model, rows, "customer_age_band").passed
    missing = check_protected_invariance(model, rows.drop(columns="customer_age_band"), "customer_age_band")
    assert not missing.passed and "lack the protected column" in missing.detail
    as_input = linear((0.01, 0.5, 2.0, 1.0), (*FEATURES, "age"))
    result = check_protected_invariance(as_input, rows.assign(age=30.0), "age")
    assert not result.passed and "is a model input" in result.detail


def test_protected_invariance_catches_a_model_that_reads_the_attribute(rows: pd.DataFrame) -> None:
    class ReadsAge(Scripted):
        def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
            return (features["customer_age_band"] == "65+").to_numpy(dtype=np.float64) * 0.5

    result = check_protected_invariance(ReadsAge(), rows, "customer_age_band")  # type: ignore[arg-type]
    assert not result.passed and "when flipped" in result.detail and "when shuffled" in result.detail


def test_minimum_functionality_needs_large_amounts_to_score_higher(rows: pd.DataFrame) -> None:
    passed = check_minimum_functionality(linear((0.01, 0.5, 2.0)), rows, RATIO)
    assert passed.passed and "(100.0%)" in passed.detail
    backwards = check_minimum_functionality(linear((-0.01, -0.5, 2.0)), rows, RATIO)
    assert not backwards.passed and f"0 of {len(rows)} ordinary rows" in backwards.detail
    unusual = check_minimum_functionality(linear((0.01, 0.5, 2.0)), rows.assign(**{RATIO: 9.0}), RATIO)
    assert not unusual.passed and "no row has" in unusual.detail


@pytest.mark.parametrize(
    ("candidate", "champion", "passed", "named"),
    [
        ({"average_precision": 0.60, "roc_auc": 0.90}, {"average_precision": 0.61, "roc_auc": 0.91}, True, []),
        ({"average_precision": 0.58, "roc_auc": 0.95}, {"average_precision": 0.61, "roc_auc": 0.91}, False, ["average_precision"]),
        ({"average_precision": 0.50, "roc_auc": 0.80}, {"average_precision": 0.61, "roc_auc": 0.91}, False, ["average_precision", "roc_auc"]),
        ({"average_precision": 0.70, "roc_auc": float("nan")}, {"average_precision": 0.61, "roc_auc": 0.91}, False, ["roc_auc"]),
        ({"average_precision": 0.70}, {"average_precision": 0.61, "roc_auc": 0.91}, False, ["roc_auc"]),
    ],
)  # fmt: skip
def test_no_regression_fails_beyond_the_tolerance_on_any_metric(
    candidate: dict[str, float], champion: dict[str, float], passed: bool, named: list[str]
) -> None:
    result = check_no_regression(candidate, champion, tolerance=0.02)
    assert result == BehaviourResult("no_regression", passed, result.detail)
    for key in named:
        assert key in result.detail
    if not passed and len(named) == 1:
        other = {"average_precision", "roc_auc"} - set(named)
        assert not any(f"{key}:" in result.detail for key in other)


def test_no_regression_tolerance_and_keys_are_honoured() -> None:
    worse = {"average_precision": 0.55, "roc_auc": 0.90}
    champion = {"average_precision": 0.61, "roc_auc": 0.90}
    assert check_no_regression(worse, champion, tolerance=0.1).passed
    assert check_no_regression(worse, champion, keys=("roc_auc",)).passed


def test_suite_needs_labels_to_compare_with_a_champion(rows: pd.DataFrame) -> None:
    model = linear((0.01, 0.5, 2.0))
    with pytest.raises(ValueError, match="needs the labels"):
        run_behaviour_suite(model, rows, champion={"average_precision": 0.5, "roc_auc": 0.5})
    with pytest.raises(ValueError, match="labels have 3 values"):
        model_metrics(model, rows, [0, 1, 0])


def test_checks_on_no_rows_fail_rather_than_pass_vacuously(rows: pd.DataFrame) -> None:
    model = linear((0.01, 0.5, 2.0))
    results = run_behaviour_suite(model, rows.iloc[:0], protected_column="customer_age_band")
    assert not any(r.passed for r in results), results


def test_the_gate_checks_the_directions_the_default_training_enforces() -> None:
    """The behaviour gate and the monotone constraints of the default config must not drift apart."""
    from pathlib import Path

    from fraud_detection.evaluation.behaviour import RISK_INCREASING
    from fraud_detection.training.config import load_training_config

    config = load_training_config(
        Path(__file__).resolve().parents[2] / "configs" / "training" / "default.yaml"
    )
    assert sorted(config.model.xgboost.monotone_increasing) == sorted(RISK_INCREASING)
