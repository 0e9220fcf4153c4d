"""Point-in-time correctness of ``build_features``, checked against a slow reference written here.

The reference (``tests/feature_reference.py``) loops over rows in plain Python, straight from the
definitions in ``fraud_detection.features.engineering``'s docstring, tie rule included. Every
feature of every row must agree with it, on a dataset built by hand around the rules' edges
(ties, window and label-delay boundaries) and on randomised data with forced ties. On top of
that: appending later transactions or relabelling not-yet-known transactions never changes an
earlier row, and the row order of the input does not matter.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud_detection.features.engineering import KEYS, FeatureConfig, build_features
from tests.conftest import make_transactions
from tests.feature_reference import reference_features

pytestmark = pytest.mark.unit

DEFAULT = FeatureConfig(windows_days=[1, 7, 30], label_delay_days=7, history_days=30)
# Other windows, no labelling delay at all, and a short history: the reference must still agree.
OTHER = FeatureConfig(windows_days=[5, 2], label_delay_days=0, history_days=3)
ATOL = 1e-9

DAY0 = dt.datetime(2024, 3, 1)  # a Friday: day 1 is Saturday, day 15 Saturday, day 16 Sunday
A, B, C = 101, 102, 103  # customers
T10, T20, T30 = 10, 20, 30  # terminals

# (transaction_id, day, time, customer, terminal, amount, is_fraud); comments give the edge tested.
HAND_ROWS = [
    (0, 0, "10:00:00", A, T10, 20.00, 0),
    (1, 0, "12:00:00", B, T10, 100.00, 1),  # a fraud on T10
    (2, 0, "23:30:00", C, T20, 5.00, 0),
    (4, 1, "10:00:00", A, T10, 60.00, 0),  # tie with 3 (listed first on purpose), A reuses T10,
    (3, 1, "10:00:00", A, T20, 40.00, 0),  # ... and exactly 1 day after 0
    (5, 2, "03:00:00", B, T10, 0.00, 1),  # zero amount, a fraud, at night
    (6, 5, "08:00:00", C, T30, 12.50, 0),  # C's first use of T30 happens twice at once:
    (7, 5, "08:00:00", C, T30, 7.50, 0),  # ... both are first uses
    (8, 7, "10:00:00", A, T10, 25.00, 0),  # 0 is exactly 7 days old: in (t-8d, t-7d], its label known
    (9, 7, "12:00:00", C, T30, 70.00, 0),  # C back on T30: not a first use
    (10, 8, "12:00:00", C, T10, 15.00, 0),  # 1 exactly 8 days old: out of the 1d, in the 7d window
    (11, 9, "02:59:59", C, T10, 9.99, 0),  # 5 is 1 s short of 7 days old: its label not known yet
    (12, 9, "03:00:00", A, T10, 45.00, 0),  # 5 exactly 7 days old: known, in the 1d window
    (13, 9, "03:00:00", C, T20, 33.00, 1),  # a fraud on T20, simultaneous with 12 (other customer)
    (14, 14, "18:00:00", A, T20, 80.00, 0),
    (15, 15, "06:59:59", C, T20, 11.00, 0),  # Saturday, still night (hour 6)
    (16, 16, "07:00:00", C, T20, 22.00, 1),  # Sunday, no longer night (hour 7); a fraud on T20,
    (17, 16, "07:00:00", A, T20, 44.00, 0),  # ... simultaneous on the terminal with another customer
    (18, 23, "07:00:00", A, T20, 35.00, 0),  # 16 and 17 exactly 7 days old: both known, both counted
    (19, 30, "10:00:00", A, T10, 50.00, 0),  # 0 exactly 30 days old: out of A's 30d window
    (20, 31, "12:00:00", B, T10, 66.00, 0),  # B's only transaction in (t-30d, t) is 5 (amount 0)
    (21, 37, "12:00:00", B, T10, 10.00, 0),  # 1 exactly 37 days old: out of the 30d terminal window
    (22, 38, "00:00:00", C, T20, 120.00, 0),  # midnight
    (24, 44, "23:59:59", A, T30, 240.00, 1),  # A's first use of T30, twice at once,
    (23, 44, "23:59:59", A, T30, 0.01, 0),  # ... listed out of id order
]

# Values worked out by hand from the definitions, for the rows at the rules' edges.
HAND_EXPECTED = {
    0: {"customer_nb_tx_1d": 1, "customer_seconds_since_prev_tx": -1, "customer_terminal_first_use": 1}
    | {"customer_prior_avg_amount_30d": 0, "customer_amount_ratio_30d": 1.0, "terminal_nb_tx_30d": 0},
    # The tie: both rows see each other in the windows that include t, neither in the earlier ones.
    3: {"customer_nb_tx_1d": 2, "customer_avg_amount_1d": 50.0, "customer_seconds_since_prev_tx": 86_400}
    | {"customer_prior_avg_amount_30d": 20.0, "customer_amount_ratio_30d": 2.0}
    | {"customer_terminal_first_use": 1, "tx_during_weekend": 1, "tx_during_night": 0},
    4: {"customer_nb_tx_1d": 2, "customer_avg_amount_1d": 50.0, "customer_seconds_since_prev_tx": 86_400}
    | {"customer_prior_avg_amount_30d": 20.0, "customer_amount_ratio_30d": 3.0}
    | {"customer_terminal_first_use": 0},
    5: {"customer_nb_tx_1d": 1, "customer_avg_amount_1d": 0.0, "tx_during_night": 1},
    6: {"customer_nb_tx_1d": 2, "customer_avg_amount_1d": 10.0, "customer_terminal_first_use": 1}
    | {"customer_seconds_since_prev_tx": 4 * 86_400 + 8.5 * 3_600},
    7: {"customer_nb_tx_1d": 2, "customer_terminal_first_use": 1},
    8: {"customer_nb_tx_7d": 3, "terminal_nb_tx_1d": 1, "terminal_risk_1d": 0.0, "terminal_nb_tx_7d": 1},
    9: {"customer_terminal_first_use": 0},
    10: {"terminal_nb_tx_1d": 1, "terminal_risk_1d": 0.0, "terminal_nb_tx_7d": 3, "terminal_risk_7d": 1 / 3},
    11: {"terminal_nb_tx_1d": 1, "terminal_risk_1d": 0.0},
    12: {"terminal_nb_tx_1d": 2, "terminal_risk_1d": 0.5},
    15: {"tx_during_weekend": 1, "tx_during_night": 1},
    16: {"tx_during_weekend": 1, "tx_during_night": 0},
    18: {"terminal_nb_tx_1d": 2, "terminal_risk_1d": 0.5},
    19: {"customer_nb_tx_30d": 8, "customer_terminal_first_use": 0},
    20: {"customer_prior_avg_amount_30d": 0.0, "customer_amount_ratio_30d": 1.0},
    21: {"terminal_nb_tx_30d": 7, "terminal_risk_30d": 1 / 7, "customer_amount_ratio_30d": 10 / 66},
    22: {"tx_during_night": 1},
    23: {"customer_terminal_first_use": 1, "customer_nb_tx_1d": 2, "customer_avg_amount_1d": 120.005},
    24: {"customer_terminal_first_use": 1, "customer_nb_tx_1d": 2, "customer_avg_amount_1d": 120.005},
}


def hand_transactions() -> pd.DataFrame:
    records = [
        {
            "transaction_id": tid,
            "event_timestamp": DAY0
            + dt.timedelta(days=day)
            + dt.timedelta(hours=int(time[:2]), minutes=int(time[3:5]), seconds=int(time[6:])),
            "customer_id": customer,
            "terminal_id": terminal,
            "amount": amount,
            "is_fraud": fraud,
        }
        for tid, day, time, customer, terminal, amount, fraud in HAND_ROWS
    ]
    frame = pd.DataFrame.from_records(records)
    return frame.astype({"event_timestamp": "datetime64[us]", "customer_id": "int64", "terminal_id": "int64"})


def random_transactions(seed: int, n: int = 240) -> pd.DataFrame:
    """``make_transactions`` data made dense and edgy: few entities, many ties and exact boundaries.

    Half the timestamps are floored to a 6-hour grid (so 1-, 7-, 30-day and label-delay distances
    hit window edges exactly), some rows copy another row's customer and timestamp (same-customer
    ties), some get microseconds, and the rows come in a shuffled order.
    """
    frame = make_transactions(n, fraud_rate=0.25, seed=seed, n_days=45)
    rng = np.random.default_rng(seed + 10_000)
    frame["customer_id"] %= 4
    frame["terminal_id"] %= 7
    ts = frame["event_timestamp"]
    on_grid = rng.random(n) < 0.5
    ts = ts.where(~on_grid, ts.dt.floor("6h"))
    with_micros = rng.random(n) < 0.1
    ts = ts + pd.to_timedelta(np.where(with_micros, rng.integers(1, 1_000_000, n), 0), unit="us")
    copies = rng.choice(n, size=n // 8, replace=False)
    sources = rng.choice(n, size=n // 8)
    ts = ts.to_numpy().copy()
    ts[copies] = ts[sources]
    frame["event_timestamp"] = ts
    frame.loc[copies, "customer_id"] = frame["customer_id"].to_numpy()[sources]
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def assert_matches_reference(transactions: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    ours = build_features(transactions, config)
    assert list(ours.columns) == [*KEYS, *config.feature_names]
    assert ours["transaction_id"].tolist() == transactions["transaction_id"].tolist()  # input order kept
    expected = reference_features(transactions, config)
    actual = ours[config.feature_names].astype(np.float64).reset_index(drop=True)
    pd.testing.assert_frame_equal(actual, expected, check_exact=False, rtol=0, atol=ATOL)
    return ours


# ------------------------------------------------------------------ reference agreement


def test_hand_dataset_matches_the_slow_reference_on_every_feature_of_every_row():
    assert_matches_reference(hand_transactions(), DEFAULT)


def test_hand_dataset_edge_rows_have_the_hand_computed_values():
    features = build_features(hand_transactions(), DEFAULT).set_index("transaction_id")
    for tid, expected in HAND_EXPECTED.items():
        for name, value in expected.items():
            assert features.at[tid, name] == pytest.approx(value, abs=ATOL), (tid, name)


def test_hand_dataset_matches_the_reference_under_another_config():
    assert_matches_reference(hand_transactions(), OTHER)


@pytest.mark.parametrize("config", [DEFAULT, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_dense_data_with_ties_matches_the_slow_reference(seed, config):
    transactions = random_transactions(seed)
    # The data really exercises the tie rule and the window edges.
    assert transactions.duplicated(["customer_id", "event_timestamp"]).sum() >= 5
    assert_matches_reference(transactions, config)


def test_empty_and_single_row_frames():
    empty = build_features(hand_transactions().iloc[:0], DEFAULT)
    assert list(empty.columns) == [*KEYS, *DEFAULT.feature_names] and len(empty) == 0
    assert_matches_reference(hand_transactions().iloc[[5]].reset_index(drop=True), DEFAULT)


def test_non_default_index_is_kept_and_ignored():
    transactions = hand_transactions()
    transactions.index = transactions.index * 3 + 7  # as after quarantining some rows
    features = build_features(transactions, DEFAULT)
    assert features.index.equals(transactions.index)
    assert_matches_reference(transactions, DEFAULT)


# ------------------------------------------------------------------ no look-ahead


def _split_at(transactions: pd.DataFrame, cutoff: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    early = transactions["event_timestamp"] <= cutoff
    return transactions[early].reset_index(drop=True), transactions[~early].reset_index(drop=True)


@pytest.mark.parametrize("source", ["hand", "random"])
def test_appending_later_transactions_never_changes_an_earlier_row(source):
    transactions = hand_transactions() if source == "hand" else random_transactions(3)
    times = transactions["event_timestamp"].sort_values()
    for cutoff in times.iloc[[len(times) // 4, len(times) // 2, 3 * len(times) // 4]]:
        earlier, later = _split_at(transactions, cutoff)
        # Later rows include new customers and terminals (ids below and above the existing ones).
        extra = later.head(3).assign(customer_id=[-5, 10**6, A], terminal_id=[-7, T10, 10**6])
        extra = extra.assign(transaction_id=extra["transaction_id"] + 10**6)
        before = build_features(earlier, DEFAULT)
        after = build_features(pd.concat([earlier, later, extra], ignore_index=True), DEFAULT)
        pd.testing.assert_frame_equal(after.iloc[: len(earlier)], before, check_exact=True)


def test_a_simultaneous_append_changes_only_what_the_tie_rule_says():
    transactions = hand_transactions()
    last = transactions.loc[transactions["transaction_id"] == 22].iloc[0]  # C on T20, day 38, 00:00
    twin = last.to_frame().T.astype(transactions.dtypes.to_dict())
    twin = twin.assign(transaction_id=99, terminal_id=T30, amount=80.0, is_fraud=1)
    before = build_features(transactions, DEFAULT).set_index("transaction_id")
    after = build_features(pd.concat([transactions, twin], ignore_index=True), DEFAULT)
    after = after.set_index("transaction_id")
    changed = [
        name
        for name in DEFAULT.feature_names
        if not np.array_equal(before[name].to_numpy(), after.loc[before.index, name].to_numpy())
    ]
    # Only row 22 changes: its windows that include t now hold the simultaneous twin ...
    window_features = [
        f"customer_{kind}_{n}d" for n in DEFAULT.windows_days for kind in ("nb_tx", "avg_amount")
    ]
    assert sorted(changed) == sorted(window_features)
    differs = (before != after.loc[before.index]).any(axis=1)
    assert differs[differs].index.tolist() == [22]
    assert after.at[22, "customer_nb_tx_1d"] == before.at[22, "customer_nb_tx_1d"] + 1
    # ... while "strictly earlier" features (gap, prior mean, first use) and the terminal ones do not.
    for name in ("customer_seconds_since_prev_tx", "customer_prior_avg_amount_30d", "terminal_risk_1d"):
        assert after.at[22, name] == before.at[22, name]
    # The twin and row 22 see exactly the same customer windows.
    for name in window_features:
        assert after.at[99, name] == after.at[22, name]


@pytest.mark.parametrize("source", ["hand", "random"])
def test_labels_not_yet_known_never_change_terminal_features(source):
    transactions = hand_transactions() if source == "hand" else random_transactions(4)
    delay = pd.Timedelta(days=DEFAULT.label_delay_days)
    base = build_features(transactions, DEFAULT)
    times = transactions["event_timestamp"]
    rows = range(len(transactions)) if source == "hand" else range(0, len(transactions), 16)
    for row in rows:
        t = times.iloc[row]
        unknown = (times > t - delay) & (times <= t)  # labelled less than the delay before t
        flipped = transactions.assign(
            is_fraud=np.where(unknown, 1 - transactions["is_fraud"], transactions["is_fraud"])
        )
        after = build_features(flipped, DEFAULT)
        pd.testing.assert_series_equal(
            after[DEFAULT.terminal_features].iloc[row],
            base[DEFAULT.terminal_features].iloc[row],
            check_exact=True,
        )


def test_a_label_exactly_delay_old_is_known():
    """The positive control of the test above: at exactly ``t - delay`` the label is used."""
    transactions = hand_transactions()
    flipped = transactions.assign(
        is_fraud=np.where(transactions["transaction_id"] == 5, 0, transactions["is_fraud"])
    )
    before = build_features(transactions, DEFAULT).set_index("transaction_id")
    after = build_features(flipped, DEFAULT).set_index("transaction_id")
    assert before.at[12, "terminal_risk_1d"] == 0.5 and after.at[12, "terminal_risk_1d"] == 0.0
    assert before.at[11, "terminal_risk_1d"] == after.at[11, "terminal_risk_1d"] == 0.0  # 1 s too early


# ------------------------------------------------------------------ order independence


@pytest.mark.parametrize("source", ["hand", "random"])
def test_shuffled_rows_give_the_same_features_per_transaction(source):
    transactions = hand_transactions() if source == "hand" else random_transactions(5)
    base = build_features(transactions, DEFAULT)
    for seed in range(3):
        shuffled = transactions.sample(frac=1.0, random_state=seed)
        features = build_features(shuffled, DEFAULT)
        assert features.index.equals(shuffled.index)  # output row order = input row order
        assert features["transaction_id"].tolist() == shuffled["transaction_id"].tolist()
        # Sums over simultaneous rows may add in another order: equal to rounding, not bit for bit.
        pd.testing.assert_frame_equal(
            features.set_index("transaction_id").sort_index(),
            base.set_index("transaction_id").sort_index(),
            check_exact=False,
            rtol=0,
            atol=ATOL,
        )


# ------------------------------------------------------------------ config validation


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"windows_days": [0, 7]}, "[0, 7]"),
        ({"windows_days": [-1]}, "[-1]"),
        ({"windows_days": [7, 7]}, "[7, 7]"),
        ({"windows_days": []}, "windows_days"),
        ({"label_delay_days": -1}, "-1"),
        ({"history_days": 0}, "history_days"),
        ({"window_days": [1]}, "window_days"),  # a misspelt key is refused, not ignored
    ],
)
def test_feature_config_rejects_bad_values_naming_them(changes, named):
    values = DEFAULT.model_dump() | changes
    with pytest.raises(ValidationError) as info:
        FeatureConfig.model_validate(values)
    assert named in str(info.value)
    field = next(iter(changes))
    assert field in str(info.value)


def test_feature_config_sorts_windows_and_names_features_in_a_fixed_order():
    config = FeatureConfig(windows_days=[30, 1, 7], label_delay_days=7, history_days=30)
    assert config == DEFAULT
    assert config.feature_names[:4] == [
        "amount",
        "tx_during_weekend",
        "tx_during_night",
        "customer_amount_ratio_30d",
    ]
    assert len(config.feature_names) == len(set(config.feature_names)) == 4 + (8 + 2 + 2) + (6 + 5) + 1


def test_known_fraud_features_follow_the_latest_labels_known_at_t_minus_delay():
    """One terminal, hand-computed (delay 7 days): a run of frauds, then a fraud tied with a genuine."""
    rows = [  # (timestamp, is_fraud)
        ("2024-01-01 00:00", 0),
        ("2024-01-02 00:00", 1),
        ("2024-01-03 00:00", 1),
        ("2024-01-10 12:00", 0),  # t - 7d = 01-03 12:00: known run of frauds since 01-02
        ("2024-01-04 00:00", 0),
        ("2024-01-04 00:00", 1),  # simultaneous fraud and genuine: a tie counts as genuine
        ("2024-01-11 12:00", 0),  # t - 7d = 01-04 12:00
        ("2024-01-05 00:00", 1),
        ("2024-01-12 00:00", 0),  # t - 7d = 01-05 00:00 exactly: that fraud is known (<=)
    ]
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(len(rows), dtype=np.int64),
            "event_timestamp": pd.to_datetime([ts for ts, _ in rows]).astype("datetime64[us]"),
            "customer_id": np.arange(len(rows), dtype=np.int64),  # customers play no part here
            "terminal_id": np.ones(len(rows), dtype=np.int64),
            "amount": np.full(len(rows), 10.0),
            "is_fraud": np.array([y for _, y in rows], dtype=np.int64),
        }
    )
    features = assert_matches_reference(frame, DEFAULT).set_index("transaction_id")
    columns = [
        "terminal_last_known_fraud",
        "terminal_days_since_known_fraud",
        "terminal_known_fraud_streak_days",
    ]
    assert features.loc[3, columns].tolist() == [1, 7.5, 8.5]
    assert features.loc[6, columns].tolist() == [0, 7.5, -1.0]
    assert features.loc[8, columns].tolist() == [1, 7.0, 7.0]
    assert features.loc[0, columns].tolist() == [0, -1.0, -1.0]  # nothing known yet


def test_outlier_counts_use_each_earlier_transactions_own_history():
    """A steady customer, then a 5x spike: counted by later transactions, not by itself."""
    amounts = [10.0, 12.0, 8.0, 11.0, 9.0, 50.0, 10.0, 10.0]
    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(len(amounts), dtype=np.int64),
            "event_timestamp": (
                pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(len(amounts)), unit="D")
            ).astype("datetime64[us]"),
            "customer_id": np.zeros(len(amounts), dtype=np.int64),
            "terminal_id": np.arange(len(amounts), dtype=np.int64),
            "amount": amounts,
            "is_fraud": np.zeros(len(amounts), dtype=np.int64),
        }
    )
    features = assert_matches_reference(frame, DEFAULT)
    assert features["customer_nb_outlier_amounts_7d"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]
    assert features["customer_nb_outlier_amounts_14d"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]


def test_keys_the_feature_set_cannot_use_are_refused_by_name():
    from fraud_detection.errors import ConfigError

    frame = make_transactions(20)
    with pytest.raises(ConfigError, match=r"column 'customer_id' has dtype object; .* expect int64 ids"):
        build_features(frame.assign(customer_id="c" + frame["customer_id"].astype(str)), DEFAULT)
    with pytest.raises(
        ConfigError, match=r"need column 'terminal_id' \(the data contract's entity 'terminal'\)"
    ):
        build_features(frame.rename(columns={"terminal_id": "merchant_id"}), DEFAULT)
