"""DelayedTimeSplit: handbook train / delay / test windows, known-compromised cards, sklearn CV protocol."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline

from fraud_detection.errors import FraudDetectionError, SplitError
from fraud_detection.training.splits import DelayedTimeSplit, FoldWindows
from tests.conftest import make_transactions

pytestmark = pytest.mark.unit

# Fold 0 of the hand-built frame: train [01-08, 01-15), delay [01-15, 01-22), test [01-22, 01-29).
LATEST = dt.date(2024, 1, 8)
TEST_DAYS = [dt.date(2024, 1, 22) + dt.timedelta(days=i) for i in range(7)]
GENUINE, TRAIN_FRAUD, EARLY_FRAUD, LATE_FRAUD = 1, 2, 5, 4
DELAY_FRAUD_CARDS = {
    10 + j: dt.date(2024, 1, 15) + dt.timedelta(days=j) for j in range(7)
}  # card -> fraud day


def _day(value: dt.date, hour: int = 12, minute: int = 0, second: int = 0) -> pd.Timestamp:
    return pd.Timestamp(dt.datetime.combine(value, dt.time(hour, minute, second)))


def _frame() -> pd.DataFrame:
    """Cards over 2024-01-01 .. 01-30, one transaction per card per day at noon, rows shuffled.

    * GENUINE (1): never fraud, plus rows at the window edges (23:59:59 / 00:00:00).
    * TRAIN_FRAUD (2): fraud on 01-10, inside fold 0's training window.
    * LATE_FRAUD (4): fraud on 01-21 (last delay day) and 01-23 (a test day): neither is known during the test.
    * EARLY_FRAUD (5): fraud on 01-03, before fold 0's training window: the handbook ignores it.
    * 10 + j (j = 0..6): fraud on delay day j (01-15 + j) only.
    """
    days = [dt.date(2024, 1, 1) + dt.timedelta(days=d) for d in range(30)]
    fraud_days = {
        TRAIN_FRAUD: {dt.date(2024, 1, 10)},
        LATE_FRAUD: {dt.date(2024, 1, 21), dt.date(2024, 1, 23)},
        EARLY_FRAUD: {dt.date(2024, 1, 3)},
        **{card: {day} for card, day in DELAY_FRAUD_CARDS.items()},
    }
    rows = [
        (_day(day), card, int(day in fraud_days.get(card, set())))
        for card in [GENUINE, TRAIN_FRAUD, LATE_FRAUD, EARLY_FRAUD, *DELAY_FRAUD_CARDS]
        for day in days
    ]
    edges = [
        _day(dt.date(2024, 1, 7), 23, 59, 59),  # before train
        _day(dt.date(2024, 1, 8), 0),  # first train second
        _day(dt.date(2024, 1, 14), 23, 59, 59),  # last train second
        _day(dt.date(2024, 1, 15), 0),  # delay
        _day(dt.date(2024, 1, 21), 23, 59, 59),  # delay
        _day(dt.date(2024, 1, 22), 0),  # first test second
        _day(dt.date(2024, 1, 28), 23, 59, 59),  # last test second
        _day(dt.date(2024, 1, 29), 0),  # after test
    ]
    rows += [(ts, GENUINE, 0) for ts in edges]
    frame = pd.DataFrame(rows, columns=["event_timestamp", "customer_id", "is_fraud"])
    frame["amount"] = np.arange(len(frame), dtype=np.float64)
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def _only_fold(splitter: DelayedTimeSplit, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    ((train_idx, test_idx),) = list(splitter.split(frame))
    return frame.iloc[train_idx], frame.iloc[test_idx]


def _test_days_of(test: pd.DataFrame, card: int) -> list[dt.date]:
    return sorted(set(test.loc[test["customer_id"] == card, "event_timestamp"].dt.date))


def test_windows_follow_the_protocol():
    (window,) = DelayedTimeSplit(latest_train_start="2024-01-08").windows()
    assert window == FoldWindows(
        fold=0,
        train_start=dt.datetime(2024, 1, 8),
        train_end=dt.datetime(2024, 1, 15),
        test_start=dt.datetime(2024, 1, 22),
        test_end=dt.datetime(2024, 1, 29),
    )


def test_windows_reproduce_the_handbook_chapter5_fold_starts():
    test_folds = DelayedTimeSplit(latest_train_start=dt.date(2018, 8, 15), n_folds=4).windows()
    validation_folds = DelayedTimeSplit(latest_train_start="2018-07-11", n_folds=4).windows()
    assert [w.train_start.date().isoformat() for w in test_folds] == [
        "2018-08-15",
        "2018-08-08",
        "2018-08-01",
        "2018-07-25",
    ]
    assert [w.train_start.date().isoformat() for w in validation_folds] == [
        "2018-07-11",
        "2018-07-04",
        "2018-06-27",
        "2018-06-20",
    ]


def test_split_respects_windows_and_delay_gap():
    frame = _frame()
    train, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), frame)
    assert train["event_timestamp"].min() == pd.Timestamp("2024-01-08 00:00:00")
    assert train["event_timestamp"].max() == pd.Timestamp("2024-01-14 23:59:59")
    assert test["event_timestamp"].min() == pd.Timestamp("2024-01-22 00:00:00")
    assert test["event_timestamp"].max() == pd.Timestamp("2024-01-28 23:59:59")
    # The delay gap: no test row within 7 days of the end of training.
    assert test["event_timestamp"].min() - train["event_timestamp"].max() > pd.Timedelta(days=7)
    # Every row of the training window is used, and nothing outside it.
    in_train = frame["event_timestamp"].between("2024-01-08", "2024-01-15", inclusive="left")
    assert sorted(train.index) == sorted(frame.index[in_train])


def test_split_yields_ascending_positional_indices():
    frame = _frame().set_index(np.arange(1000, 1000 + len(_frame())))  # a non-positional index
    ((train_idx, test_idx),) = list(DelayedTimeSplit(latest_train_start=LATEST).split(frame))
    for idx in (train_idx, test_idx):
        assert idx.dtype.kind == "i"
        assert np.all(np.diff(idx) > 0)
        assert idx.min() >= 0 and idx.max() < len(frame)
    assert not set(train_idx) & set(test_idx)


def test_card_with_train_window_fraud_is_absent_from_test():
    train, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), _frame())
    assert TRAIN_FRAUD in set(train["customer_id"])
    assert TRAIN_FRAUD not in set(test["customer_id"])


@pytest.mark.parametrize("j", range(7))
def test_delay_day_fraud_removes_card_from_the_matching_test_day_onwards(j):
    # Rule: test day i (0-based) drops cards with a fraud on day train_start + train_days + i - 1 = 01-15 + i - 1,
    # and the handbook accumulates these cards over the test days. Card 10 + j has a fraud on 01-15 + j, i.e. the
    # rule names it for test day i = j + 1: it is kept on test days 0..j and removed from day j + 1 on.
    _, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), _frame())
    assert _test_days_of(test, 10 + j) == TEST_DAYS[: j + 1]


def test_frauds_known_only_after_the_test_day_do_not_remove_the_card():
    _, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), _frame())
    assert _test_days_of(test, LATE_FRAUD) == TEST_DAYS
    # Its fraud on a test day stays in the test set as a positive.
    assert test.loc[test["customer_id"] == LATE_FRAUD, "is_fraud"].sum() == 1
    assert _test_days_of(test, GENUINE) == TEST_DAYS


def test_frauds_before_the_training_window_are_not_used():
    _, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), _frame())
    assert _test_days_of(test, EARLY_FRAUD) == TEST_DAYS


def test_removal_can_be_switched_off():
    frame = _frame()
    _, test = _only_fold(DelayedTimeSplit(latest_train_start=LATEST, remove_known_compromised=False), frame)
    in_test = frame["event_timestamp"].between("2024-01-22", "2024-01-29", inclusive="left")
    assert sorted(test.index) == sorted(frame.index[in_test])


def test_y_overrides_the_label_column():
    frame = _frame()
    no_frauds = np.zeros(len(frame), dtype=np.int64)
    ((_, test_idx),) = list(
        DelayedTimeSplit(latest_train_start=LATEST).split(frame.drop(columns="is_fraud"), no_frauds)
    )
    assert TRAIN_FRAUD in set(frame["customer_id"].iloc[test_idx])
    with pytest.raises(SplitError, match=r"one label per row of X \(" + str(len(frame)) + r"\)"):
        list(DelayedTimeSplit(latest_train_start=LATEST).split(frame, no_frauds[:-1]))


def test_tz_aware_timestamps_use_the_utc_calendar_day():
    frame = _frame()
    # 2024-01-15 00:30 at UTC+01:00 is 2024-01-14 23:30 UTC: a training row.
    local = frame["event_timestamp"].dt.tz_localize("Europe/Brussels")
    frame = frame.assign(event_timestamp=local)
    frame.loc[len(frame)] = [pd.Timestamp("2024-01-15 00:30", tz="Europe/Brussels"), 99, 0, 0.0]
    train, _ = _only_fold(DelayedTimeSplit(latest_train_start=LATEST), frame)
    assert 99 in set(train["customer_id"])


def test_prequential_folds_shift_back_by_step_days():
    frame = _frame()
    splitter = DelayedTimeSplit(latest_train_start=dt.date(2024, 1, 10), n_folds=3, step_days=3)
    assert splitter.get_n_splits() == 3 == splitter.get_n_splits(frame)
    folds = list(splitter.split(frame))
    assert len(folds) == 3
    for k, ((train_idx, test_idx), window) in enumerate(zip(folds, splitter.windows(), strict=True)):
        assert window.fold == k
        train_ts, test_ts = frame["event_timestamp"].iloc[train_idx], frame["event_timestamp"].iloc[test_idx]
        assert train_ts.min().normalize() == pd.Timestamp(2024, 1, 10) - pd.Timedelta(days=3 * k)
        assert train_ts.max().normalize() == pd.Timestamp(2024, 1, 16) - pd.Timedelta(days=3 * k)
        assert test_ts.min().normalize() == pd.Timestamp(2024, 1, 24) - pd.Timedelta(days=3 * k)
        assert test_ts.max().normalize() == pd.Timestamp(2024, 1, 30) - pd.Timedelta(days=3 * k)
        assert window.train_start == dt.datetime(2024, 1, 10) - dt.timedelta(days=3 * k)
    # step_days defaults to test_days.
    default = DelayedTimeSplit(latest_train_start=LATEST, n_folds=2, test_days=4)
    assert default.step_days == 4
    assert default.windows()[1].train_start == dt.datetime(2024, 1, 4)


def test_works_as_cv_in_sklearn_cross_validation():
    frame = make_transactions(3_000, fraud_rate=0.05, seed=1, n_days=20)
    frame["hour"] = frame["event_timestamp"].dt.hour.astype(np.float64)
    model = make_pipeline(
        ColumnTransformer([("numeric", "passthrough", ["amount", "hour"])]),
        LogisticRegression(),
    )
    cv = DelayedTimeSplit(
        latest_train_start="2024-01-11", n_folds=2, train_days=5, delay_days=2, test_days=3, step_days=3
    )
    result = cross_validate(
        model, frame, frame["is_fraud"], cv=cv, scoring="average_precision", return_indices=True
    )
    assert len(result["test_score"]) == 2
    assert np.isfinite(result["test_score"]).all()
    for expected, train_idx, test_idx in zip(
        cv.split(frame), result["indices"]["train"], result["indices"]["test"], strict=True
    ):
        np.testing.assert_array_equal(train_idx, expected[0])
        np.testing.assert_array_equal(test_idx, expected[1])
    scores = cross_val_score(model, frame, frame["is_fraud"], cv=cv, scoring="roc_auc")
    assert scores.shape == (2,)


def test_empty_train_window_raises_naming_fold_and_dates():
    frame = _frame()  # 2024-01-01 .. 01-30
    splitter = DelayedTimeSplit(latest_train_start=LATEST, n_folds=3)  # fold 2 trains from 2023-12-25
    with pytest.raises(SplitError, match=r"fold 2: the train window \[2023-12-25, 2024-01-01\) has no rows"):
        list(splitter.split(frame))


def test_empty_test_window_raises_naming_fold_and_dates():
    with pytest.raises(
        SplitError, match=r"fold 0: the test window \[2024-02-03, 2024-02-10\) has no rows.*2024-01-30"
    ):
        list(DelayedTimeSplit(latest_train_start="2024-01-20").split(_frame()))


def test_test_window_of_only_known_compromised_cards_raises():
    frame = _frame()
    only_train_fraud_card = frame[frame["customer_id"] == TRAIN_FRAUD]
    with pytest.raises(SplitError, match="already known to be compromised"):
        list(DelayedTimeSplit(latest_train_start=LATEST).split(only_train_fraud_card))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_folds": 0}, "n_folds must be a positive integer, got 0"),
        ({"train_days": -1}, "train_days must be a positive integer, got -1"),
        ({"delay_days": 0}, "delay_days must be a positive integer, got 0"),
        ({"test_days": 1.5}, r"test_days must be a positive integer, got 1.5 \(float\)"),
        ({"step_days": 0}, "step_days must be a positive integer, got 0"),
        ({"n_folds": True}, r"n_folds must be a positive integer, got True \(bool\)"),
        ({"latest_train_start": "2024-13-01"}, "ISO date 'YYYY-MM-DD', got '2024-13-01'"),
        ({"latest_train_start": 20240101}, r"datetime.date or an ISO date string, got 20240101 \(int\)"),
        ({"latest_train_start": dt.datetime(2024, 1, 8, 6)}, "calendar date"),
    ],
)
def test_bad_arguments_raise_naming_the_value(kwargs, message):
    with pytest.raises(SplitError, match=message):
        DelayedTimeSplit(**{"latest_train_start": LATEST, **kwargs})


def test_bad_frames_raise_clear_errors():
    splitter = DelayedTimeSplit(latest_train_start=LATEST)
    with pytest.raises(SplitError, match=r"lacks the column\(s\) \['customer_id'\]"):
        list(splitter.split(_frame().drop(columns="customer_id")))
    with pytest.raises(SplitError, match="must be a pandas DataFrame"):
        list(splitter.split(_frame().to_numpy()))
    with pytest.raises(SplitError, match="'event_timestamp' must hold datetimes, got dtype object"):
        list(splitter.split(_frame().assign(event_timestamp="2024-01-08")))


def test_split_error_is_a_package_error_with_exit_code_2():
    assert issubclass(SplitError, FraudDetectionError)
    assert SplitError.exit_code == 2
    assert "latest_train_start='2024-01-08'" in repr(DelayedTimeSplit(latest_train_start=LATEST))
