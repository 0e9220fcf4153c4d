"""Fraud metrics: card precision@k on hand-computed cases and against the handbook's reference code."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_detection.evaluation.metrics import (
    average_precision,
    card_precision_at_k,
    card_precision_at_k_per_day,
    fraud_metrics,
    roc_auc,
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
