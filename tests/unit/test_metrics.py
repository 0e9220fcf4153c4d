"""Fraud metrics on hand-computed cases, against the handbook's reference code and against slow loops."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from fraud_detection.evaluation.metrics import (
    ClassificationMetrics,
    CostModel,
    average_precision,
    bootstrap_ci,
    brier_score,
    calibration_table,
    card_precision_at_k,
    card_precision_at_k_per_day,
    cost_curve,
    expected_cost,
    fraud_metrics,
    precision_at_k,
    roc_auc,
    select_threshold_by_alert_budget,
    select_threshold_by_cost,
)

pytestmark = pytest.mark.unit


def _handbook_card_precision_top_k(predictions_df: pd.DataFrame, top_k: int, remove_detected: bool) -> float:
    """The handbook's card_precision_top_k / card_precision_top_k_day, kept deliberately literal (and slow)."""

    def card_precision_top_k_day(df_day: pd.DataFrame, top_k: int) -> tuple[list, float]:
        df_day = (
            df_day.groupby("CUSTOMER_ID")
            .max()
            .sort_values(by="predictions", ascending=False)
            .reset_index(drop=False)
        )
        df_day_top_k = df_day.head(top_k)
        detected_cards = list(df_day_top_k[df_day_top_k.TX_FRAUD == 1].CUSTOMER_ID)
        return detected_cards, len(detected_cards) / top_k

    list_days = sorted(predictions_df["TX_TIME_DAYS"].unique())
    detected: list = []
    per_day: list[float] = []
    for day in list_days:
        df_day = predictions_df[predictions_df["TX_TIME_DAYS"] == day][
            ["predictions", "CUSTOMER_ID", "TX_FRAUD"]
        ]
        df_day = df_day[~df_day.CUSTOMER_ID.isin(detected)]
        cards, cp = card_precision_top_k_day(df_day, top_k)
        per_day.append(cp)
        if remove_detected:
            detected.extend(cards)
    return float(np.mean(per_day))


# Two days, k = 2. Columns: day, card, score, label.
#   day 0: card A has a genuine tx scored 0.9 and a fraud scored 0.2 -> card A: score 0.9, label 1 (max of each
#          column separately); B: 0.8 / 0; C: 0.3 / 1.  Top 2 = A (fraud), B (genuine) -> 1/2 = 0.5.
#          Detected: {A}. C is compromised but outside the top 2, so it is not "detected".
#   day 1: A 0.95 / 1, C 0.7 / 1, D 0.6 / 0, E 0.1 / 1.
#          With removal A is gone: top 2 = C (fraud), D (genuine) -> 0.5.   Mean = (0.5 + 0.5) / 2 = 0.5.
#          Without removal: top 2 = A, C, both fraud -> 1.0.                  Mean = (0.5 + 1.0) / 2 = 0.75.
_TWO_DAYS = pd.DataFrame(
    [
        (0, "A", 0.9, 0),
        (0, "A", 0.2, 1),
        (0, "B", 0.8, 0),
        (0, "C", 0.3, 1),
        (1, "A", 0.95, 1),
        (1, "C", 0.7, 1),
        (1, "D", 0.6, 0),
        (1, "E", 0.1, 1),
    ],
    columns=["day", "card", "score", "label"],
)


def _cp(frame: pd.DataFrame, **kwargs) -> float:
    return card_precision_at_k(
        frame["label"], frame["score"], cards=frame["card"], days=frame["day"], **kwargs
    )


def test_card_precision_removes_cards_detected_on_earlier_days():
    per_day = card_precision_at_k_per_day(
        _TWO_DAYS["label"], _TWO_DAYS["score"], cards=_TWO_DAYS["card"], days=_TWO_DAYS["day"], k=2
    )
    assert per_day.to_dict() == {0: 0.5, 1: 0.5}
    assert per_day.index.name == "day"
    assert _cp(_TWO_DAYS, k=2) == 0.5


def test_card_precision_without_removal_counts_detected_cards_again():
    assert _cp(_TWO_DAYS, k=2, remove_detected=False) == 0.75


def test_card_precision_is_independent_of_row_order():
    shuffled = _TWO_DAYS.sample(frac=1.0, random_state=3)
    assert _cp(shuffled, k=2) == 0.5


def test_card_precision_divides_by_k_when_fewer_cards_than_k():
    # One day, two cards (one compromised), k = 3: 1 compromised card / k = 1/3, not 1/2.
    frame = pd.DataFrame({"day": [0, 0, 0], "card": [1, 1, 2], "score": [0.1, 0.4, 0.2], "label": [0, 1, 0]})
    assert _cp(frame, k=3) == pytest.approx(1 / 3)


def test_card_precision_day_with_only_detected_cards_counts_as_zero():
    # Day 0: card 7 (fraud) is top 1 -> 1.0 and detected. Day 1: only card 7 transacts, it is removed -> 0.
    frame = pd.DataFrame({"day": [0, 1], "card": [7, 7], "score": [0.9, 0.9], "label": [1, 1]})
    per_day = card_precision_at_k_per_day(
        frame["label"], frame["score"], cards=frame["card"], days=frame["day"], k=1
    )
    assert per_day.to_dict() == {0: 1.0, 1: 0.0}


@pytest.mark.parametrize(("fraud_card", "expected"), [(3, 1.0), (5, 0.0)])
def test_card_precision_ties_keep_ascending_card_id_order(fraud_card, expected):
    # Cards 5 and 3 share the max score 0.5; k = 1 takes the lower card ID, 3, whatever the row order.
    frame = pd.DataFrame({"day": [0, 0], "card": [5, 3], "score": [0.5, 0.5], "label": [0, 0]})
    frame.loc[frame["card"] == fraud_card, "label"] = 1
    assert _cp(frame, k=1) == expected
    assert _cp(frame.iloc[::-1], k=1) == expected


def test_card_precision_uses_calendar_day_of_datetimes():
    # The same two days as _TWO_DAYS, with times of day (and a tz-aware variant); results must not change.
    base = pd.Timestamp("2018-08-08")
    hours = [1, 23, 5, 12, 0, 8, 16, 23]
    times = pd.Series(
        [base + pd.Timedelta(days=int(d), hours=h) for d, h in zip(_TWO_DAYS["day"], hours, strict=True)]
    )
    frame = _TWO_DAYS.assign(day=times)
    assert _cp(frame, k=2) == 0.5
    per_day = card_precision_at_k_per_day(
        frame["label"], frame["score"], cards=frame["card"], days=frame["day"], k=2
    )
    assert list(per_day.index) == [base, base + pd.Timedelta(days=1)]
    assert _cp(frame.assign(day=times.dt.tz_localize("UTC")), k=2) == 0.5
    dates = [t.date() for t in times]  # plain datetime.date objects
    assert isinstance(dates[0], dt.date)
    assert _cp(frame.assign(day=dates), k=2) == 0.5


@pytest.mark.parametrize("k", [1, 3, 10, 50])
@pytest.mark.parametrize("remove_detected", [True, False])
def test_card_precision_matches_handbook_reference_on_random_data(k, remove_detected):
    rng = np.random.default_rng(k)
    n = 3_000
    frame = pd.DataFrame(
        {
            "TX_TIME_DAYS": rng.integers(0, 7, size=n),
            "CUSTOMER_ID": rng.integers(0, 150, size=n),
            "TX_FRAUD": (rng.random(n) < 0.08).astype(np.int64),
            # Continuous scores: no ties, so the handbook's unstable sort order is unambiguous.
            "predictions": rng.random(n),
        }
    )
    assert frame["predictions"].is_unique
    expected = _handbook_card_precision_top_k(frame, k, remove_detected)
    actual = card_precision_at_k(
        frame["TX_FRAUD"],
        frame["predictions"],
        cards=frame["CUSTOMER_ID"],
        days=frame["TX_TIME_DAYS"],
        k=k,
        remove_detected=remove_detected,
    )
    assert actual == pytest.approx(expected, abs=1e-12)
    assert 0 < actual < 1  # the case is not degenerate


def test_card_precision_accepts_plain_arrays_and_rejects_bad_input():
    labels, scores, cards, days = [0, 1], [0.2, 0.7], np.array([1, 2]), np.array([0, 0])
    assert card_precision_at_k(labels, scores, cards=cards, days=days, k=2) == 0.5
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        card_precision_at_k(labels, scores, cards=cards, days=days, k=0)
    with pytest.raises(ValueError, match="same length"):
        card_precision_at_k(labels, scores, cards=cards[:1], days=days, k=2)
    with pytest.raises(ValueError, match="1 NaN"):
        card_precision_at_k(labels, [0.2, np.nan], cards=cards, days=days, k=2)


def test_card_precision_on_empty_input_is_nan():
    assert math.isnan(card_precision_at_k([], [], cards=[], days=[], k=5))
    assert card_precision_at_k_per_day([], [], cards=[], days=[], k=5).empty


def test_roc_auc_and_average_precision_match_sklearn():
    y_true = np.array([0, 0, 1, 1, 0, 1])
    y_score = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    assert roc_auc(y_true, y_score) == pytest.approx(roc_auc_score(y_true, y_score))
    assert average_precision(y_true, y_score) == pytest.approx(average_precision_score(y_true, y_score))


def test_roc_auc_is_nan_with_one_class():
    assert math.isnan(roc_auc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_average_precision_is_nan_without_positives():
    assert math.isnan(average_precision([0, 0, 0], [0.1, 0.2, 0.3]))
    assert average_precision([1, 1], [0.1, 0.2]) == 1.0  # only positives is well defined


def test_fraud_metrics_reports_the_three_metrics():
    result = fraud_metrics(
        _TWO_DAYS["label"], _TWO_DAYS["score"], cards=_TWO_DAYS["card"], days=_TWO_DAYS["day"], k=2
    )
    assert list(result) == ["roc_auc", "average_precision", "card_precision_at_2"]
    assert result["card_precision_at_2"] == 0.5
    assert result["roc_auc"] == pytest.approx(roc_auc_score(_TWO_DAYS["label"], _TWO_DAYS["score"]))
    assert all(isinstance(value, float) for value in result.values())
    default = fraud_metrics([0, 1], [0.3, 0.6], cards=[1, 2], days=[0, 0])
    assert set(default) == {"roc_auc", "average_precision", "card_precision_at_100"}
    assert default["card_precision_at_100"] == 0.01


# --- threshold, calibration, cost and bootstrap metrics ---------------------------------------------------------

# Six rows, scores descending; frauds at 0.9, 0.8 and 0.3.
_Y = np.array([1, 1, 0, 0, 1, 0])
_S = np.array([0.9, 0.8, 0.7, 0.4, 0.3, 0.1])


def test_classification_metrics_hand_computed():
    # threshold 0.35 alerts 0.9, 0.8, 0.7, 0.4 -> TP 2 (0.9, 0.8), FP 2 (0.7, 0.4), FN 1 (0.3), TN 1 (0.1).
    #   accuracy = (2 + 1) / 6 = 0.5; precision = 2 / 4 = 0.5; recall = 2 / 3; f1 = 2*2 / (2*2 + 2 + 1) = 4/7.
    # roc_auc: fraud 0.9 and 0.8 outrank all 3 genuine rows, 0.3 outranks only 0.1 -> (3 + 3 + 1) / 9 = 7/9.
    # pr_auc: ranks 1, 2, 5 are frauds -> mean of precisions (1/1 + 2/2 + 3/5) / 3 = 13/15.
    result = ClassificationMetrics.compute(_Y, _S, 0.35)
    assert result.as_dict() == pytest.approx(
        {
            "accuracy": 0.5,
            "precision": 0.5,
            "recall": 2 / 3,
            "f1": 4 / 7,
            "roc_auc": 7 / 9,
            "pr_auc": 13 / 15,
            "threshold": 0.35,
            "n": 6,
            "n_positive": 3,
        }
    )
    assert list(result.as_dict()) == [field.name for field in dataclasses.fields(ClassificationMetrics)]
    # sklearn agrees on the thresholded metrics.
    y_pred = (_S >= 0.35).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(_Y, y_pred, average="binary")
    assert (result.precision, result.recall, result.f1) == pytest.approx((precision, recall, f1))
    assert result.accuracy == pytest.approx(accuracy_score(_Y, y_pred))
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.f1 = 1.0  # type: ignore[misc]


def test_classification_metrics_alerts_scores_equal_to_the_threshold():
    # score >= threshold: 0.4 is alerted at threshold 0.4, so the counts equal those at 0.35.
    at_score = ClassificationMetrics.compute(_Y, _S, 0.4)
    assert dataclasses.replace(at_score, threshold=0.35) == ClassificationMetrics.compute(_Y, _S, 0.35)


def test_classification_metrics_zero_division_rules():
    # Nothing alerted (threshold above every score): TP = FP = 0 -> precision 0.0; recall 0/3; f1 0/(0+0+3).
    nothing = ClassificationMetrics.compute(_Y, _S, 0.95)
    assert (nothing.precision, nothing.recall, nothing.f1, nothing.accuracy) == (0.0, 0.0, 0.0, 0.5)
    # No fraud in y_true: recall, f1 and the ranking metrics are undefined (NaN); precision is 0 / 2 alerts.
    quiet = ClassificationMetrics.compute([0, 0, 0], [0.9, 0.6, 0.1], 0.5)
    assert quiet.precision == 0.0
    assert quiet.accuracy == pytest.approx(1 / 3)
    assert all(math.isnan(value) for value in (quiet.recall, quiet.f1, quiet.roc_auc, quiet.pr_auc))
    assert quiet.n_positive == 0


@pytest.mark.parametrize(("k", "expected"), [(1, 1.0), (2, 1.0), (3, 2 / 3), (5, 3 / 5), (6, 0.5), (10, 0.5)])
def test_precision_at_k_hand_computed(k, expected):
    # Top rows by score: fraud, fraud, genuine, genuine, fraud, genuine; k > n = 6 divides by n -> 3/6.
    assert precision_at_k(_Y, _S, k) == pytest.approx(expected)


def test_precision_at_k_ties_keep_row_order():
    # Rows 0 and 1 share the top score; the earlier row (index 0) wins the single slot.
    assert precision_at_k([0, 1, 1], [0.5, 0.5, 0.2], 1) == 0.0
    assert precision_at_k([1, 0, 1], [0.5, 0.5, 0.2], 1) == 1.0
    assert precision_at_k(pd.Series([1, 0]), pd.Series([0.5, 0.5], index=[7, 3]), 1) == 1.0  # positional


def test_brier_score_hand_computed_and_matches_sklearn():
    # Squared errors: 0.1^2, 0.2^2, 0.7^2, 0.4^2, 0.7^2, 0.1^2 = .01 + .04 + .49 + .16 + .49 + .01 = 1.2 -> / 6.
    assert brier_score(_Y, _S) == pytest.approx(0.2)
    assert brier_score(_Y, _S) == pytest.approx(brier_score_loss(_Y, _S))
    assert brier_score([0, 0], [0.0, 0.5]) == pytest.approx(0.125)  # one class is fine


def test_calibration_table_quantile_hand_computed():
    # Sorted scores .1 .3 .4 .7 .8 .9; the 1/3 and 2/3 quantiles (linear interpolation) are 0.3667 and 0.7333,
    # so the bins are {.1, .3}, {.4, .7}, {.8, .9} with labels {0, 1}, {0, 0}, {1, 1}.
    table = calibration_table(_Y, _S, n_bins=3)
    assert list(table.columns) == [
        "bin",
        "bin_lower",
        "bin_upper",
        "mean_predicted",
        "observed_rate",
        "count",
    ]
    assert table["bin"].tolist() == [0, 1, 2]
    assert table["count"].tolist() == [2, 2, 2]
    assert table["mean_predicted"].to_numpy() == pytest.approx([0.2, 0.55, 0.85])
    assert table["observed_rate"].to_numpy() == pytest.approx([0.5, 0.0, 1.0])
    assert table["bin_lower"].to_numpy() == pytest.approx([0.1, 0.3 + 0.1 * 2 / 3, 0.7 + 0.1 / 3])
    assert table["bin_upper"].iloc[-1] == 0.9


def test_calibration_table_uniform_drops_empty_bins_but_keeps_their_index():
    # Edges 0, .2, .4, .6, .8, 1: 0.05 and 0.15 fall in bin 0 (labels 0, 1), 0.95 in bin 4; bins 1-3 are empty.
    table = calibration_table([0, 1, 1], [0.05, 0.15, 0.95], n_bins=5, strategy="uniform")
    assert table["bin"].tolist() == [0, 4]
    assert table["count"].tolist() == [2, 1]
    assert table["mean_predicted"].to_numpy() == pytest.approx([0.1, 0.95])
    assert table["observed_rate"].to_numpy() == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_calibration_table_matches_sklearn_and_counts_every_row(strategy):
    rng = np.random.default_rng(11)
    scores = np.round(rng.random(500) ** 2, 2)  # skewed and tied, like fraud scores
    labels = (rng.random(500) < scores).astype(int)
    table = calibration_table(labels, scores, n_bins=10, strategy=strategy)
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10, strategy=strategy)
    np.testing.assert_allclose(table["observed_rate"], prob_true)
    np.testing.assert_allclose(table["mean_predicted"], prob_pred)
    assert table["count"].sum() == 500
    assert (table["count"] > 0).all()


def test_cost_model_defaults_validation_and_immutability():
    cost = CostModel()
    assert (cost.false_negative_cost, cost.false_positive_cost, cost.true_positive_cost) == (100.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="input_value=-1"):
        CostModel(false_positive_cost=-1)
    with pytest.raises(ValueError, match="false_negative_cost"):
        CostModel(false_negative_cost=float("inf"))
    with pytest.raises(ValueError, match="fn_cost"):
        CostModel(fn_cost=1.0)  # a misspelled field fails instead of being ignored
    with pytest.raises(ValueError, match="frozen"):
        cost.false_negative_cost = 1.0  # type: ignore[misc]


# Costs: missed fraud 100, false alarm 5, reviewed fraud 5; a true negative costs nothing.
# Cost per transaction at each distinct score of _Y/_S (alerted = score >= t), TP/FP/FN -> total / 6:
#   t=0.1: 3/3/0 -> 15 + 15       = 30  -> 5.0
#   t=0.3: 3/2/0 -> 15 + 10       = 25  -> 4.1667   <- minimum
#   t=0.4: 2/2/1 -> 10 + 10 + 100 = 120 -> 20.0
#   t=0.7: 2/1/1 -> 10 +  5 + 100 = 115 -> 19.1667
#   t=0.8: 2/0/1 -> 10      + 100 = 110 -> 18.3333
#   t=0.9: 1/0/2 ->  5      + 200 = 205 -> 34.1667
_HAND_COST = CostModel(false_negative_cost=100.0, false_positive_cost=5.0, true_positive_cost=5.0)
_HAND_CURVE = {0.1: 30 / 6, 0.3: 25 / 6, 0.4: 120 / 6, 0.7: 115 / 6, 0.8: 110 / 6, 0.9: 205 / 6}


def test_expected_cost_hand_computed():
    for threshold, cost in _HAND_CURVE.items():
        assert expected_cost(_Y, _S, threshold, _HAND_COST) == pytest.approx(cost)
    assert expected_cost(_Y, _S, 0.5, _HAND_COST) == pytest.approx(115 / 6)  # between scores: as at 0.7
    assert expected_cost(_Y, _S, 0.5) == expected_cost(_Y, _S, 0.5, CostModel())  # default cost model
    assert expected_cost(_Y, _S, math.inf, _HAND_COST) == pytest.approx(300 / 6)  # no alerts: 3 missed frauds


def test_cost_curve_hand_computed_and_threshold_at_its_minimum():
    curve = cost_curve(_Y, _S, _HAND_COST)
    assert list(curve.columns) == ["threshold", "cost_per_transaction", "alerts_per_transaction"]
    assert curve["threshold"].tolist() == list(_HAND_CURVE)
    assert curve["cost_per_transaction"].to_numpy() == pytest.approx(list(_HAND_CURVE.values()))
    assert curve["alerts_per_transaction"].to_numpy() == pytest.approx(
        [6 / 6, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]
    )
    assert select_threshold_by_cost(_Y, _S, _HAND_COST) == 0.3


def test_cost_curve_at_explicit_thresholds_keeps_their_order():
    # -inf alerts everything (as t=0.1), inf nothing (3 missed frauds: 300 / 6), 0.5 as t=0.7.
    curve = cost_curve(_Y, _S, _HAND_COST, thresholds=[np.inf, 0.5, -np.inf])
    assert curve["threshold"].tolist() == [np.inf, 0.5, -np.inf]
    assert curve["cost_per_transaction"].to_numpy() == pytest.approx([300 / 6, 115 / 6, 30 / 6])
    assert curve["alerts_per_transaction"].to_numpy() == pytest.approx([0.0, 0.5, 1.0])


def test_select_threshold_by_cost_breaks_ties_towards_fewer_alerts():
    # y = 1 0 1 0 at scores .8 .6 .4 .2; a miss and a false alarm both cost 1, a reviewed fraud 0:
    #   t=.2: FP 2 -> 2;  t=.4: FP 1 -> 1;  t=.6: FP 1 + FN 1 -> 2;  t=.8: FN 1 -> 1.  Tie .4 / .8 -> .8.
    cost = CostModel(false_negative_cost=1.0, false_positive_cost=1.0, true_positive_cost=0.0)
    assert select_threshold_by_cost([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2], cost) == 0.8
    # Make false alarms dearer than misses: alert only the top row (t=.8 still costs 1, t=.4 now 2).
    dear_alarms = cost.model_copy(update={"false_positive_cost": 2.0})
    assert select_threshold_by_cost([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2], dear_alarms) == 0.8


def _slow_cost_per_threshold(labels: np.ndarray, scores: np.ndarray, cost: CostModel) -> dict[float, float]:
    """One pass over the rows per threshold: the obvious, slow definition."""
    result = {}
    for threshold in sorted(set(scores.tolist())):
        tp = fp = fn = 0
        for label, score in zip(labels.tolist(), scores.tolist(), strict=True):
            alerted = score >= threshold
            tp += alerted and label == 1
            fp += alerted and label == 0
            fn += (not alerted) and label == 1
        total = fn * cost.false_negative_cost + fp * cost.false_positive_cost + tp * cost.true_positive_cost
        result[threshold] = total / len(labels)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cost_curve_and_threshold_selection_match_a_slow_loop(seed):
    rng = np.random.default_rng(seed)
    n = 400
    labels = (rng.random(n) < 0.1).astype(int)
    scores = np.round(np.clip(rng.normal(0.3 + 0.3 * labels, 0.2), 0, 1), 2)  # rounded: many ties
    cost = CostModel(false_negative_cost=87.5, false_positive_cost=3.0, true_positive_cost=1.25)
    slow = _slow_cost_per_threshold(labels, scores, cost)

    curve = cost_curve(labels, scores, cost)
    assert curve["threshold"].tolist() == list(slow)
    np.testing.assert_allclose(curve["cost_per_transaction"], list(slow.values()), rtol=1e-12)
    for threshold in list(slow)[::7]:
        assert expected_cost(labels, scores, threshold, cost) == pytest.approx(slow[threshold], rel=1e-12)

    best = min(slow.values())
    expected_threshold = max(t for t, value in slow.items() if value == best)  # ties -> higher threshold
    assert select_threshold_by_cost(labels, scores, cost) == expected_threshold
    assert 0.0 < curve["alerts_per_transaction"][curve["threshold"] == expected_threshold].item() < 1.0


def test_select_threshold_by_alert_budget_on_two_days():
    # Day 0 scores .9 .2 .5; day 1 scores .7 .1 .6 .3. All scores descending: .9 .7 .6 .5 .3 .2 .1.
    scores = [0.9, 0.2, 0.5, 0.7, 0.1, 0.6, 0.3]
    days = [0, 0, 0, 1, 1, 1, 1]
    # 2 alerts/day x 2 days = 4 alerts -> the 4th highest score, 0.5 (alerts .9 .7 .6 .5).
    assert select_threshold_by_alert_budget(scores, alerts_per_day=2, days=days) == 0.5
    # 1 alert/day -> 2 alerts -> 0.7.
    assert select_threshold_by_alert_budget(scores, alerts_per_day=1, days=days) == 0.7
    # A budget larger than the rows alerts every row: the lowest score.
    assert select_threshold_by_alert_budget(scores, alerts_per_day=10, days=days) == 0.1
    # Datetimes count calendar days, whatever the time of day.
    times = pd.to_datetime(
        ["2018-04-01 00:10", "2018-04-01 12:00", "2018-04-01 23:59"] + ["2018-04-02 08:00"] * 4
    )
    assert select_threshold_by_alert_budget(scores, alerts_per_day=2, days=times) == 0.5


def test_select_threshold_by_alert_budget_never_exceeds_the_budget_on_ties():
    # Budget 1 alert/day x 2 days = 2; 0.8 is tied on two rows, so t=0.8 would raise 3 -> 0.9 (1 alert).
    assert select_threshold_by_alert_budget([0.9, 0.8, 0.8, 0.1], alerts_per_day=1, days=[0, 0, 1, 1]) == 0.9
    # The top score itself is tied beyond the budget: a threshold just above it raises no alert.
    threshold = select_threshold_by_alert_budget([0.5, 0.5], alerts_per_day=1, days=[3, 3])
    assert threshold > 0.5
    assert threshold == np.nextafter(0.5, 1.0)


def test_bootstrap_ci_is_seeded_and_brackets_the_point_estimate():
    rng = np.random.default_rng(5)
    labels = (rng.random(400) < 0.2).astype(int)
    scores = rng.random(400) + 0.5 * labels
    point, low, high = bootstrap_ci(average_precision, labels, scores, n_boot=100, random_state=3)
    assert point == average_precision(labels, scores)
    assert low < point < high
    assert bootstrap_ci(average_precision, labels, scores, n_boot=100, random_state=3) == (point, low, high)
    assert bootstrap_ci(average_precision, labels, scores, n_boot=100, random_state=4) != (point, low, high)
    # The documented procedure: one (n_boot, n) index draw from default_rng(random_state), percentiles.
    draws = np.random.default_rng(3).integers(0, 400, size=(100, 400))
    values = [average_precision(labels[rows], scores[rows]) for rows in draws]
    assert (low, high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])))


def test_bootstrap_ci_passes_keyword_arguments_and_drops_nan_resamples():
    point, low, high = bootstrap_ci(precision_at_k, _Y, _S, n_boot=50, k=2)
    assert point == 1.0
    assert 0.0 <= low <= high <= 1.0
    # One fraud in 20 rows: about (19/20)^20 = 36% of resamples draw none and give NaN; they are dropped.
    labels = np.zeros(20, dtype=int)
    labels[0] = 1
    scores = np.linspace(1.0, 0.0, 20)
    point, low, high = bootstrap_ci(average_precision, labels, scores, n_boot=100)
    assert (point, low, high) == (1.0, 1.0, 1.0)
    nan_metric = bootstrap_ci(lambda y, s: float("nan"), labels, scores, n_boot=10)
    assert all(math.isnan(value) for value in nan_metric)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ClassificationMetrics.compute([0, 2], [0.1, 0.2], 0.5), r"only 0 and 1, got \[2\]"),
        (lambda: ClassificationMetrics.compute(["a", "b"], [0.1, 0.2], 0.5), "0/1 labels, got dtype <U1"),
        (lambda: ClassificationMetrics.compute([0, 1], [0.1, np.nan], 0.5), "1 NaN or infinite value"),
        (lambda: ClassificationMetrics.compute([0, 1], [0.1], 0.5), "same length, got 2 and 1"),
        (lambda: ClassificationMetrics.compute([0, 1], [0.1, 0.2], float("nan")), "threshold .* got nan"),
        (lambda: ClassificationMetrics.compute([], [], 0.5), "empty"),
        (lambda: ClassificationMetrics.compute([0, 1], ["x", "y"], 0.5), "y_score must be numeric"),
        (lambda: precision_at_k(_Y, _S, 0), "k must be a positive integer, got 0"),
        (lambda: precision_at_k(_Y, _S, 2.5), "k must be a positive integer, got 2.5"),
        (lambda: brier_score([0, 1], [0.2, 1.5]), r"probabilities in \[0, 1\], got values from 0.2 to 1.5"),
        (lambda: calibration_table(_Y, _S, strategy="kmeans"), "got 'kmeans'"),
        (lambda: calibration_table(_Y, _S, n_bins=0), "n_bins must be a positive integer, got 0"),
        (lambda: expected_cost(_Y, _S, "0.5"), "threshold must be a real number, got '0.5'"),
        (lambda: cost_curve(_Y, _S, thresholds=[0.5, np.nan]), "without NaN"),
        (lambda: cost_curve(_Y, _S, thresholds=[]), "non-empty"),
        (lambda: select_threshold_by_cost([0, 1], [np.inf, 0.3]), "first: inf at position 0"),
        (lambda: select_threshold_by_alert_budget(_S, alerts_per_day=0, days=[0] * 6), "got 0"),
        (lambda: select_threshold_by_alert_budget(_S, alerts_per_day=1, days=[0] * 5), "got 6 and 5"),
        (lambda: select_threshold_by_alert_budget([], alerts_per_day=1, days=[]), "empty"),
        (lambda: bootstrap_ci(roc_auc, _Y, _S, alpha=1.5), r"alpha must be in \(0, 1\), got 1.5"),
        (lambda: bootstrap_ci(roc_auc, _Y, _S, n_boot=0), "n_boot must be a positive integer, got 0"),
        (
            lambda: bootstrap_ci(card_precision_at_k, _Y, _S, cards=_Y, days=_Y),
            "'cards' has one value per row",
        ),
    ],
)
def test_new_metrics_reject_bad_input_naming_the_value(call, message):
    with pytest.raises(ValueError, match=message):
        call()
