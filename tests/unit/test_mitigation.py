"""Per-group threshold mitigation on hand-made data: applying, fitting, determinism, the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from fraud_detection.evaluation.analysis import assess_fairness
from fraud_detection.evaluation.metrics import expected_cost
from fraud_detection.evaluation.mitigation import (
    GroupThresholds,
    decision_performance,
    mitigate_thresholds,
    mitigation_report,
)

pytestmark = pytest.mark.unit

# Privileged "p" at threshold 0.5: frauds scored 0.9 0.8 0.6 | 0.2 -> TPR 3/4; alerts 0.9 0.8 0.6 0.7 -> 4/6.
# Unprivileged "u" is scored lower: at 0.5 nothing is alerted (TPR 0, selection 0).
Y = [*[1, 1, 1, 1, 0, 0], *[1, 1, 1, 1, 0, 0, 0]]
SCORES = [*[0.9, 0.8, 0.6, 0.2, 0.7, 0.1], *[0.45, 0.4, 0.35, 0.3, 0.38, 0.2, 0.1]]
GROUPS = ["p"] * 6 + ["u"] * 7


def test_apply_alerts_scores_at_or_above_each_groups_threshold() -> None:
    thresholds = GroupThresholds(thresholds={"a": 0.5, "b": 0.3}, default=0.7)
    decisions = thresholds.apply([0.5, 0.49, 0.3, 0.29, 0.7], ["a", "a", "b", "b", "a"])
    assert decisions.tolist() == [1, 0, 1, 0, 1]
    assert decisions.dtype == np.int64


def test_unseen_and_missing_groups_use_the_default() -> None:
    thresholds = GroupThresholds(thresholds={"a": 0.2}, default=0.6)
    groups = np.array(["a", "z", None, np.nan], dtype=object)
    assert thresholds.row_thresholds(groups).tolist() == [0.2, 0.6, 0.6, 0.6]
    assert thresholds.apply([0.5, 0.5, 0.5, 0.7], groups).tolist() == [1, 0, 0, 1]


def test_group_keys_are_the_string_form_of_the_values() -> None:
    thresholds = GroupThresholds(thresholds={"1": 0.1}, default=0.9)
    assert thresholds.apply([0.5, 0.5], [1, 2]).tolist() == [1, 0]


def test_thresholds_round_trip_through_json_and_refuse_non_finite_values() -> None:
    thresholds = GroupThresholds(thresholds={"a": 0.25}, default=0.5, constraint="demographic_parity")
    restored = GroupThresholds.model_validate(json.loads(json.dumps(thresholds.model_dump())))
    assert restored == thresholds
    with pytest.raises(ValidationError):
        GroupThresholds(thresholds={"a": math.inf}, default=0.5)
    with pytest.raises(ValidationError):
        GroupThresholds(thresholds={}, default=math.nan)


def test_apply_refuses_misaligned_inputs() -> None:
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        GroupThresholds(default=0.5).apply([0.1, 0.2], ["a"])


def test_tpr_parity_gives_the_unprivileged_group_the_privileged_tpr() -> None:
    # u's frauds score 0.45 0.4 0.35 0.3: TPR 3/4 needs the threshold 0.35 (the highest reaching it).
    fitted = mitigate_thresholds(Y, SCORES, GROUPS, privileged="p", threshold=0.5)
    assert fitted.thresholds == {"p": 0.5, "u": 0.35}
    assert fitted.default == 0.5 and fitted.constraint == "true_positive_rate_parity"
    before = assess_fairness(Y, (np.asarray(SCORES) >= 0.5).astype(int), GROUPS, "p")
    after = assess_fairness(Y, fitted.apply(SCORES, GROUPS), GROUPS, "p")
    assert before["equal_opportunity_difference"] == pytest.approx(-0.75)
    assert after["equal_opportunity_difference"] == pytest.approx(0.0)


def test_demographic_parity_matches_the_selection_rate_as_closely_as_possible() -> None:
    # Target 4/6; u can reach 4/7 (gap 0.095) or 5/7 (gap 0.048): five alerts, threshold 0.3.
    fitted = mitigate_thresholds(
        Y, SCORES, GROUPS, privileged="p", threshold=0.5, constraint="demographic_parity"
    )
    assert fitted.thresholds["u"] == 0.3
    assert fitted.apply(SCORES, GROUPS)[6:].sum() == 5


def test_equalized_odds_minimises_the_larger_of_the_tpr_and_fpr_gaps() -> None:
    # Target TPR 3/4, FPR 1/2. u at 0.35: TPR 3/4, FPR 1/3 (max gap 1/6); at 0.3: TPR 1, FPR 1/3 (1/4);
    # at 0.2: TPR 1, FPR 2/3 (1/4); at 0.38: TPR 1/2, FPR 1/3 (1/4). So 0.35.
    fitted = mitigate_thresholds(
        Y, SCORES, GROUPS, privileged="p", threshold=0.5, constraint="equalized_odds"
    )
    assert fitted.thresholds["u"] == 0.35


def test_ties_go_to_the_threshold_nearest_the_original() -> None:
    # Target selection 1/4. u alerts nothing (just above every score: gap 1/4) or 1 of 2 at 0.55 (gap 1/4):
    # a tie, and 0.55 is nearer the model's 0.5, so it changes fewer decisions.
    fitted = mitigate_thresholds(
        [1, 0, 0, 0, 1, 0],  # p p p p | u u
        [0.6, 0.1, 0.1, 0.1, 0.55, 0.45],
        ["p"] * 4 + ["u"] * 2,
        privileged="p",
        threshold=0.5,
        constraint="demographic_parity",
    )
    assert fitted.thresholds["u"] == 0.55


def test_alerting_nothing_is_a_finite_threshold_above_every_score() -> None:
    # Privileged TPR 0 at 0.95: u must alert none of its frauds.
    fitted = mitigate_thresholds(
        [1, 0, 1, 0], [0.9, 0.1, 0.8, 0.2], ["p", "p", "u", "u"], privileged="p", threshold=0.95
    )
    assert 0.9 < fitted.thresholds["u"] < 0.9 + 1e-9
    assert fitted.apply([0.9, 0.8], ["u", "u"]).tolist() == [0, 0]


def test_fitting_is_deterministic_and_ignores_row_order() -> None:
    first = mitigate_thresholds(Y, SCORES, GROUPS, privileged="p", threshold=0.5, constraint="equalized_odds")
    again = mitigate_thresholds(Y, SCORES, GROUPS, privileged="p", threshold=0.5, constraint="equalized_odds")
    order = np.random.default_rng(0).permutation(len(Y))
    shuffled = mitigate_thresholds(
        np.asarray(Y)[order],
        np.asarray(SCORES)[order],
        np.asarray(GROUPS)[order],
        privileged="p",
        threshold=0.5,
        constraint="equalized_odds",
    )
    assert first == again == shuffled


def test_a_group_without_frauds_keeps_the_model_threshold_and_missing_values_are_ignored() -> None:
    y = [*Y, 0, 0, 1]
    scores = [*SCORES, 0.9, 0.1, 0.3]
    groups = [*GROUPS, "w", "w", None]
    fitted = mitigate_thresholds(y, scores, groups, privileged="p", threshold=0.5)
    assert fitted.thresholds == {"p": 0.5, "u": 0.35, "w": 0.5}


def test_privileged_list_pools_its_values() -> None:
    groups = ["p1", "p2", "p1", "p2", "p1", "p2"] + ["u"] * 7
    fitted = mitigate_thresholds(Y, SCORES, groups, privileged=["p1", "p2"], threshold=0.5)
    assert fitted.thresholds == {"p1": 0.5, "p2": 0.5, "u": 0.35}


def test_bad_inputs_are_refused_with_the_offending_value() -> None:
    with pytest.raises(ValueError, match="constraint must be one of"):
        mitigate_thresholds(Y, SCORES, GROUPS, privileged="p", threshold=0.5, constraint="parity")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be finite"):
        mitigate_thresholds(Y, SCORES, GROUPS, privileged="p", threshold=math.inf)
    with pytest.raises(ValueError, match=r"privileged group \['x'\] has no defined \['tpr'\]"):
        mitigate_thresholds(Y, SCORES, GROUPS, privileged="x", threshold=0.5)
    with pytest.raises(ValueError, match="y_true must hold only 0 and 1"):
        mitigate_thresholds([2] * len(Y), SCORES, GROUPS, privileged="p", threshold=0.5)
    with pytest.raises(ValueError, match="one value per score"):
        mitigate_thresholds(Y, SCORES, GROUPS[:-1], privileged="p", threshold=0.5)


def test_decision_performance_by_hand() -> None:
    # 2 frauds, 3 alerts, 1 caught: precision 1/3, recall 1/2, alerts 3/5.
    y, pred = [1, 1, 0, 0, 0], [1, 0, 1, 1, 0]
    performance = decision_performance(y, pred)
    assert performance["precision"] == pytest.approx(1 / 3)
    assert performance["recall"] == pytest.approx(0.5)
    assert performance["alerts_share"] == pytest.approx(0.6)
    # CostModel(): FN 100, FP 5, TP 5 -> (100 + 2 * 5 + 5) / 5.
    assert performance["expected_cost"] == pytest.approx(23.0)
    assert performance["expected_cost"] == expected_cost(y, pred, 0.5)


def test_report_in_sample_lists_both_sides_and_the_deltas() -> None:
    report = mitigation_report(Y, SCORES, GROUPS, privileged="p", threshold=0.5)
    assert report.in_sample and report.n_fit == report.n_eval == len(Y)
    assert report.thresholds.thresholds["u"] == 0.35
    assert not report.passes_before and report.before["equal_opportunity_difference"] == pytest.approx(-0.75)
    assert report.after["equal_opportunity_difference"] == pytest.approx(0.0)
    assert set(report.performance_delta) == {"precision", "recall", "alerts_share", "expected_cost"}
    # u's three caught frauds: recall 3/8 -> 6/8; one genuine alert (0.38) added.
    assert report.performance_delta["recall"] == pytest.approx(3 / 8)
    assert report.expected_cost_delta == pytest.approx(
        report.performance_after["expected_cost"] - report.performance_before["expected_cost"]
    )
    json.dumps(report.model_dump())  # storable as it is (no NaN here)


def test_report_with_fit_mask_evaluates_only_the_other_rows() -> None:
    y, scores, groups = Y * 2, SCORES * 2, GROUPS * 2
    fit = np.arange(len(y)) < len(Y)
    report = mitigation_report(y, scores, groups, privileged="p", threshold=0.5, fit_mask=fit)
    assert not report.in_sample and report.n_fit == report.n_eval == len(Y)
    assert report.after["equal_opportunity_difference"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="fit_mask must be a boolean array"):
        mitigation_report(y, scores, groups, privileged="p", threshold=0.5, fit_mask=fit.astype(int))
    with pytest.raises(ValueError, match="rows on both sides, got 26 fit and 0"):
        mitigation_report(y, scores, groups, privileged="p", threshold=0.5, fit_mask=np.ones(len(y), bool))
