"""Fairness metrics: hand-computed two-group cases, AIF360 sign conventions, NaN handling, violations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from pydantic import ValidationError

from fraud_detection.evaluation import FairnessThresholds, assess_fairness, fairness_violations
from fraud_detection.evaluation.analysis import FAIRNESS_METRICS, theil_index

pytestmark = pytest.mark.unit

# Case A: 10 people, privileged "m" (rows 0-4) and unprivileged "f" (rows 5-9).
#   m: y = 1 1 0 0 0, y_hat = 1 1 1 0 0 -> selection 3/5 = 0.6, TPR 2/2 = 1, FPR 1/3
#   f: y = 1 1 0 0 0, y_hat = 1 0 0 0 0 -> selection 1/5 = 0.2, TPR 1/2,     FPR 0/3 = 0
Y_A = [1, 1, 0, 0, 0, 1, 1, 0, 0, 0]
P_A = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
S_A = ["m"] * 5 + ["f"] * 5
# Benefits b = y_hat - y + 1: m -> 1 1 2 1 1, f -> 1 0 1 1 1; sum 10, mean 1, so b/mu = b and
# T = (1/10) * sum b ln b = (2 ln 2) / 10 (the 1s give ln 1 = 0, the 0 gives 0 ln 0 = 0).
THEIL_A = 2 * math.log(2) / 10


def slow_theil(y_true, y_pred) -> float:
    """The generalized entropy index (alpha=1) written out term by term."""
    benefits = [p - t + 1 for t, p in zip(y_true, y_pred, strict=True)]
    mu = sum(benefits) / len(benefits)
    return sum((b / mu) * math.log(b / mu) for b in benefits if b > 0) / len(benefits)


def test_returns_exactly_the_five_keys():
    assert tuple(assess_fairness(Y_A, P_A, S_A, "m")) == FAIRNESS_METRICS


def test_privileged_favoured_gives_negative_gaps_and_di_below_one():
    metrics = assess_fairness(Y_A, P_A, S_A, privileged="m")
    assert metrics["statistical_parity_difference"] == pytest.approx(0.2 - 0.6)  # -0.4
    assert metrics["equal_opportunity_difference"] == pytest.approx(0.5 - 1.0)  # -0.5
    # AOD = 1/2 [(FPR_f - FPR_m) + (TPR_f - TPR_m)] = 1/2 [(0 - 1/3) + (1/2 - 1)] = -5/12
    assert metrics["average_odds_difference"] == pytest.approx(-5 / 12)
    assert metrics["disparate_impact"] == pytest.approx(0.2 / 0.6)  # 1/3
    assert metrics["theil_index"] == pytest.approx(THEIL_A)


def test_unprivileged_favoured_gives_positive_gaps_and_di_above_one():
    # Same data, "f" is now privileged, so "m" (the favoured group) is unprivileged: every sign flips.
    metrics = assess_fairness(Y_A, P_A, S_A, privileged="f")
    assert metrics["statistical_parity_difference"] == pytest.approx(0.6 - 0.2)  # +0.4
    assert metrics["equal_opportunity_difference"] == pytest.approx(1.0 - 0.5)  # +0.5
    assert metrics["average_odds_difference"] == pytest.approx(5 / 12)  # 1/2 [(1/3 - 0) + (1 - 1/2)]
    assert metrics["disparate_impact"] == pytest.approx(0.6 / 0.2)  # 3 > 1
    assert metrics["theil_index"] == pytest.approx(THEIL_A)  # individual-level: unchanged by groups


def test_list_valued_privileged_pools_the_listed_values():
    # privileged = a and b together, unprivileged = c.
    #   a: y = 1 0,       y_hat = 1 0
    #   b: y = 1 0 0,     y_hat = 0 1 0
    #   c: y = 1 1 0 0 0, y_hat = 1 1 1 1 0
    # a+b: y = 1 0 1 0 0, y_hat = 1 0 0 1 0 -> selection 2/5 = 0.4, TPR 1/2, FPR 1/3
    # c:                                      selection 4/5 = 0.8, TPR 2/2 = 1, FPR 2/3
    y = [1, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    p = [1, 0, 0, 1, 0, 1, 1, 1, 1, 0]
    s = ["a", "a", "b", "b", "b", "c", "c", "c", "c", "c"]
    metrics = assess_fairness(y, p, s, privileged=["a", "b"])
    assert metrics["statistical_parity_difference"] == pytest.approx(0.8 - 0.4)
    assert metrics["equal_opportunity_difference"] == pytest.approx(1.0 - 0.5)
    assert metrics["average_odds_difference"] == pytest.approx(0.5 * ((2 / 3 - 1 / 3) + (1.0 - 0.5)))  # 5/12
    assert metrics["disparate_impact"] == pytest.approx(0.8 / 0.4)  # 2
    # b = 1 1 | 0 2 1 | 1 1 2 2 1: sum 12, mu = 1.2; six 1s, three 2s, one 0 (contributes 0).
    expected_theil = (6 * (1 / 1.2) * math.log(1 / 1.2) + 3 * (2 / 1.2) * math.log(2 / 1.2)) / 10
    assert metrics["theil_index"] == pytest.approx(expected_theil)  # 0.16425...
    # A tuple and a numpy array of values mean the same as the list.
    assert assess_fairness(y, p, s, privileged=("a", "b")) == metrics
    assert assess_fairness(y, p, np.array(s), privileged=np.array(["a", "b"])) == metrics


def test_magnitudes_match_fairlearns_unsigned_two_group_differences():
    from fairlearn.metrics import demographic_parity_difference, equal_opportunity_difference

    metrics = assess_fairness(Y_A, P_A, S_A, privileged="m")
    assert abs(metrics["statistical_parity_difference"]) == pytest.approx(
        demographic_parity_difference(Y_A, P_A, sensitive_features=S_A)
    )
    assert abs(metrics["equal_opportunity_difference"]) == pytest.approx(
        equal_opportunity_difference(Y_A, P_A, sensitive_features=S_A)
    )


def test_missing_sensitive_values_are_in_neither_group_but_count_in_theil():
    # Two extra rows with a missing attribute, both flagged false positives; were they unprivileged, the
    # unprivileged selection rate and FPR would change.
    y = [*Y_A, 0, 0]
    p = [*P_A, 1, 1]
    metrics = assess_fairness(y, p, [*S_A, None, np.nan], privileged="m")
    reference = assess_fairness(Y_A, P_A, S_A, privileged="m")
    for name in FAIRNESS_METRICS[:4]:
        assert metrics[name] == pytest.approx(reference[name])
    # Theil over all 12: b = case A's benefits plus two 2s.
    assert metrics["theil_index"] == pytest.approx(slow_theil(y, p))
    assert metrics["theil_index"] != pytest.approx(reference["theil_index"])


def test_group_without_positives_gives_nan_eod_and_aod_and_a_violation_line():
    # Unprivileged "f" has no actual fraud: its TPR is undefined (fairlearn itself would report 0).
    #   m: y = 1 1 0 0 0, y_hat = 1 0 0 0 0 -> selection 0.2, TPR 1/2, FPR 0
    #   f: y = 0 0 0 0 0, y_hat = 1 0 0 0 0 -> selection 0.2, TPR undefined, FPR 1/5
    y = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    p = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]
    metrics = assess_fairness(y, p, S_A, privileged="m")
    assert metrics["statistical_parity_difference"] == pytest.approx(0.0)
    assert metrics["disparate_impact"] == pytest.approx(1.0)
    assert math.isnan(metrics["equal_opportunity_difference"])
    assert math.isnan(metrics["average_odds_difference"])

    lines = fairness_violations(metrics, FairnessThresholds())
    assert len(lines) == 2
    assert lines[0].startswith("equal_opportunity_difference could not be computed (NaN)")
    assert "no actual positives" in lines[0]
    assert lines[1].startswith("average_odds_difference could not be computed (NaN)")


def test_empty_privileged_group_and_zero_privileged_rate_give_nan_not_inf():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero warning leaks out
        absent = assess_fairness(Y_A, P_A, S_A, privileged="x")  # nobody is privileged
        # Privileged "m" is never flagged: DI = 0.2 / 0 is undefined; SPD is still 0.2 - 0 = 0.2.
        zero_rate = assess_fairness(Y_A, [0, 0, 0, 0, 0, 1, 0, 0, 0, 0], S_A, privileged="m")
    assert all(math.isnan(absent[name]) for name in FAIRNESS_METRICS[:4])
    assert absent["theil_index"] == pytest.approx(THEIL_A)
    assert math.isnan(zero_rate["disparate_impact"])
    assert zero_rate["statistical_parity_difference"] == pytest.approx(0.2)


def test_invalid_inputs_name_the_bad_values():
    with pytest.raises(ValueError, match=r"y_pred must hold only 0 and 1, got \[2\]"):
        assess_fairness([0, 1], [0, 2], ["a", "b"], "a")
    with pytest.raises(ValueError, match="same length, got 2, 2 and 3"):
        assess_fairness([0, 1], [0, 1], ["a", "b", "c"], "a")


# ----------------------------------------------------------------------------------------- Theil index


def test_theil_index_known_values():
    assert theil_index([0, 1, 1, 0], [0, 1, 1, 0]) == 0.0  # all correct: every benefit is 1
    assert theil_index([0, 0, 0], [1, 1, 1]) == 0.0  # all benefits 2: equal, so no inequality
    # b = 2, 0 (one false positive, one false negative): all benefit on one of n = 2 people -> ln n.
    assert theil_index([0, 1], [1, 0]) == pytest.approx(math.log(2))
    assert math.isnan(theil_index([1, 1], [0, 0]))  # every benefit 0: mean 0, undefined
    assert math.isnan(theil_index([], []))


def test_theil_index_matches_the_direct_formula_on_random_predictions():
    rng = np.random.default_rng(7)
    for _ in range(5):
        y = rng.integers(0, 2, size=200)
        p = rng.integers(0, 2, size=200)
        assert theil_index(y, p) == pytest.approx(slow_theil(y.tolist(), p.tolist()), rel=1e-12)


# -------------------------------------------------------------------------------------------- violations


def test_no_violations_when_fair():
    metrics = {
        "statistical_parity_difference": 0.05,
        "equal_opportunity_difference": -0.1,  # the bound itself is allowed
        "average_odds_difference": 0.4 - 0.3,  # 0.10000000000000003: float noise is not a violation
        "disparate_impact": 0.8,
        "theil_index": 5.0,  # not checked: max_theil_index is None
    }
    assert fairness_violations(metrics, FairnessThresholds()) == []


def test_each_violated_threshold_gets_one_readable_line():
    lines = fairness_violations(
        assess_fairness(Y_A, P_A, S_A, privileged="m"), FairnessThresholds(max_theil_index=0.1)
    )
    assert lines == [
        "statistical_parity_difference = -0.4000 is outside the allowed range [-0.1, 0.1]",
        "equal_opportunity_difference = -0.5000 is outside the allowed range [-0.1, 0.1]",
        "average_odds_difference = -0.4167 is outside the allowed range [-0.1, 0.1]",
        "disparate_impact = 0.3333 is outside the allowed range [0.8, 1.25]",
        "theil_index = 0.1386 is outside the allowed range [0, 0.1]",
    ]


def test_custom_thresholds_and_missing_keys():
    metrics = assess_fairness(Y_A, P_A, S_A, privileged="m")
    loose = FairnessThresholds(max_abs_difference=0.5, disparate_impact_range=(0.3, 3.0), max_theil_index=0.2)
    assert fairness_violations(metrics, loose) == []
    with pytest.raises(ValueError, match="disparate_impact"):
        fairness_violations({"statistical_parity_difference": 0.0}, FairnessThresholds())


def test_thresholds_are_frozen_strict_and_validated():
    thresholds = FairnessThresholds()
    assert thresholds.disparate_impact_range == (0.8, 1.25)
    with pytest.raises(ValidationError):
        thresholds.max_abs_difference = 0.2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        FairnessThresholds(max_abs_diff=0.2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="low <= high"):
        FairnessThresholds(disparate_impact_range=(1.25, 0.8))
    with pytest.raises(ValidationError):
        FairnessThresholds(max_abs_difference=-0.1)


def test_fairness_intervals_contain_the_estimate_and_are_seeded() -> None:
    from fraud_detection.evaluation.analysis import fairness_intervals

    rng = np.random.default_rng(3)
    n = 20_000
    sensitive = rng.choice(["a", "b", "c"], size=n)
    y_true = (rng.random(n) < 0.05).astype(int)
    y_pred = np.where(y_true == 1, rng.random(n) < 0.7, rng.random(n) < 0.02).astype(int)
    point = assess_fairness(y_true, y_pred, sensitive, ["a"])
    intervals = fairness_intervals(y_true, y_pred, sensitive, ["a"], n_boot=400)
    for name, value in point.items():
        low, high = intervals[name]
        assert low <= value <= high, name
    assert intervals == fairness_intervals(y_true, y_pred, sensitive, ["a"], n_boot=400)


def test_a_noisy_point_violation_is_not_gated_but_a_clear_one_is() -> None:
    from fraud_detection.evaluation.analysis import fairness_intervals

    thresholds = FairnessThresholds()
    # Few frauds: the unprivileged group's TPR 1/3 against 2/3 looks unfair, the interval is wide.
    y_true = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0] * 3)
    y_pred = np.array([1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0] * 3)
    sensitive = np.array(["u"] * 6 + ["p"] * 6).tolist() * 3
    point = assess_fairness(y_true, y_pred, sensitive, "p")
    assert fairness_violations(point, thresholds)  # the point estimate is outside
    intervals = fairness_intervals(y_true, y_pred, sensitive, "p", n_boot=500)
    noisy = [
        line for line in fairness_violations(point, thresholds, intervals) if "equal_opportunity" in line
    ]
    assert noisy == []
    # Thousands of rows with the same gap: the interval excludes the range and the gate fails.
    big_true, big_pred, big_groups = np.tile(y_true, 400), np.tile(y_pred, 400), sensitive * 400
    big_point = assess_fairness(big_true, big_pred, big_groups, "p")
    big_intervals = fairness_intervals(big_true, big_pred, big_groups, "p", n_boot=500)
    lines = fairness_violations(big_point, thresholds, big_intervals)
    assert any(line.startswith("equal_opportunity_difference") and "95% CI" in line for line in lines)
