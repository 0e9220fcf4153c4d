"""Unit tests of the transaction simulator at small sizes (each simulation well under a second)."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from fraud_detection.data.simulator import (
    AGE_BANDS,
    SimulatedData,
    SimulatorConfig,
    simulate,
)

pytestmark = pytest.mark.unit

SMALL: dict[str, Any] = {"n_customers": 200, "n_terminals": 400, "n_days": 40, "seed": 7}

TRANSACTION_DTYPES = {
    "transaction_id": "int64",
    "event_timestamp": "datetime64[us]",
    "customer_id": "int64",
    "terminal_id": "int64",
    "amount": "float64",
    "is_fraud": "int64",
    "fraud_scenario": "int64",
    "customer_age_band": "object",
}
CUSTOMER_DTYPES = {
    "customer_id": "int64",
    "x": "float64",
    "y": "float64",
    "mean_amount": "float64",
    "std_amount": "float64",
    "mean_nb_tx_per_day": "float64",
    "age_band": "object",
}
TERMINAL_DTYPES = {"terminal_id": "int64", "x": "float64", "y": "float64"}


@pytest.fixture(scope="module")
def small() -> SimulatedData:
    return simulate(SimulatorConfig(**SMALL))


def _day(tx: pd.DataFrame, start: datetime.date = datetime.date(2018, 4, 1)) -> pd.Series:
    return (tx["event_timestamp"] - pd.Timestamp(start)).dt.days


def _hash(df: pd.DataFrame) -> int:
    return int(pd.util.hash_pandas_object(df, index=True).sum())


# --- determinism -------------------------------------------------------------------------------


def test_same_config_gives_identical_output(small: SimulatedData) -> None:
    again = simulate(SimulatorConfig(**SMALL))
    for name in ("transactions", "customers", "terminals"):
        first, second = getattr(small, name), getattr(again, name)
        pd.testing.assert_frame_equal(first, second, check_exact=True)
        assert _hash(first) == _hash(second)


def test_different_seed_gives_different_output(small: SimulatedData) -> None:
    other = simulate(SimulatorConfig(**{**SMALL, "seed": 8}))
    assert _hash(other.transactions) != _hash(small.transactions)
    assert _hash(other.customers) != _hash(small.customers)
    assert _hash(other.terminals) != _hash(small.terminals)


def test_profiles_do_not_depend_on_n_days(small: SimulatedData) -> None:
    longer = simulate(SimulatorConfig(**{**SMALL, "n_days": 55}))
    pd.testing.assert_frame_equal(longer.customers, small.customers, check_exact=True)
    pd.testing.assert_frame_equal(longer.terminals, small.terminals, check_exact=True)


# --- schema ------------------------------------------------------------------------------------


def test_columns_and_dtypes(small: SimulatedData) -> None:
    tx, customers, terminals = small.transactions, small.customers, small.terminals
    assert {c: str(t) for c, t in tx.dtypes.items()} == TRANSACTION_DTYPES
    assert list(tx.columns) == list(TRANSACTION_DTYPES)
    assert {c: str(t) for c, t in customers.dtypes.items()} == CUSTOMER_DTYPES
    assert list(customers.columns) == list(CUSTOMER_DTYPES)
    assert {c: str(t) for c, t in terminals.dtypes.items()} == TERMINAL_DTYPES
    assert list(terminals.columns) == list(TERMINAL_DTYPES)
    for df in (tx, customers, terminals):
        assert isinstance(df.index, pd.RangeIndex)
        assert df.index.start == 0
    assert len(tx) > 1000
    assert len(customers) == SMALL["n_customers"]
    assert len(terminals) == SMALL["n_terminals"]
    assert customers["customer_id"].tolist() == list(range(SMALL["n_customers"]))
    assert terminals["terminal_id"].tolist() == list(range(SMALL["n_terminals"]))


def test_age_bands_are_python_strings_matching_the_customer(small: SimulatedData) -> None:
    tx, customers = small.transactions, small.customers
    assert all(type(v) is str for v in tx["customer_age_band"])
    assert set(customers["age_band"]) <= set(AGE_BANDS)
    expected = customers["age_band"].to_numpy()[tx["customer_id"].to_numpy()]
    assert (tx["customer_age_band"].to_numpy() == expected).all()


def test_customer_profiles_follow_the_handbook_ranges(small: SimulatedData) -> None:
    c = small.customers
    assert c["x"].between(0, 100).all() and c["y"].between(0, 100).all()
    assert c["mean_amount"].between(5, 100).all()
    assert np.allclose(c["std_amount"], c["mean_amount"] / 2)
    assert c["mean_nb_tx_per_day"].between(0, 4).all()
    assert small.terminals[["x", "y"]].stack().between(0, 100).all()


# --- ordering and time -------------------------------------------------------------------------


def test_transaction_ids_follow_time_order(small: SimulatedData) -> None:
    tx = small.transactions
    assert (tx["transaction_id"].to_numpy() == np.arange(len(tx))).all()
    assert tx["event_timestamp"].is_monotonic_increasing
    # Ties are broken by customer then terminal.
    keys = tx[["event_timestamp", "customer_id", "terminal_id"]]
    assert keys.equals(keys.sort_values(list(keys.columns), kind="stable").reset_index(drop=True))


def test_timestamps_are_whole_seconds_within_the_horizon(small: SimulatedData) -> None:
    ts = small.transactions["event_timestamp"]
    assert (ts.astype("int64") % 1_000_000 == 0).all()
    assert ts.min() >= pd.Timestamp("2018-04-01")
    assert ts.max() < pd.Timestamp("2018-04-01") + pd.Timedelta(days=SMALL["n_days"])
    # Times are drawn strictly inside (0, 86400) seconds, floored: never exactly midnight.
    assert (ts.dt.floor("D") != ts).all()


def test_start_date_moves_the_timestamps() -> None:
    cfg = {**SMALL, "n_days": 5}
    a = simulate(SimulatorConfig(**cfg)).transactions
    b = simulate(SimulatorConfig(**cfg, start_date=datetime.date(2020, 1, 1))).transactions
    shift = pd.Timestamp("2020-01-01") - pd.Timestamp("2018-04-01")
    assert (b["event_timestamp"] - a["event_timestamp"] == shift).all()


# --- labels ------------------------------------------------------------------------------------


def test_is_fraud_matches_scenario(small: SimulatedData) -> None:
    tx = small.transactions
    assert (tx["is_fraud"] == (tx["fraud_scenario"] > 0).astype("int64")).all()
    assert set(tx["is_fraud"].unique()) <= {0, 1}
    assert set(tx["fraud_scenario"].unique()) <= {0, 1, 2, 3}


def test_amount_invariants(small: SimulatedData) -> None:
    tx = small.transactions
    genuine = tx[tx["is_fraud"] == 0]
    assert (genuine["amount"] <= 220).all()
    assert (tx["amount"] >= 0).all()
    # Scenario 3 inflates amounts but relabels what it picks, so rows still labelled 1 kept their
    # original amount, which was above the threshold.
    assert (tx.loc[tx["fraud_scenario"] == 1, "amount"] > 220).all()
    assert np.allclose(tx["amount"], tx["amount"].round(2), rtol=0, atol=1e-9)


def test_every_fraud_scenario_occurs() -> None:
    tx = simulate(SimulatorConfig(n_customers=300, n_terminals=600, n_days=60, seed=3)).transactions
    counts = tx["fraud_scenario"].value_counts()
    assert all(counts.get(s, 0) > 0 for s in (1, 2, 3))


def test_scenario2_marks_whole_terminal_days(small: SimulatedData) -> None:
    # A compromised terminal-day makes all its transactions fraud; only scenario 3 may relabel
    # some of them, so no genuine transaction shares a terminal-day with a scenario-2 one.
    tx = small.transactions.assign(day=_day(small.transactions))
    s2 = set(map(tuple, tx.loc[tx["fraud_scenario"] == 2, ["terminal_id", "day"]].to_numpy()))
    genuine = map(tuple, tx.loc[tx["fraud_scenario"] == 0, ["terminal_id", "day"]].to_numpy())
    assert s2
    assert not any(key in s2 for key in genuine)


def test_terminals_are_within_radius(small: SimulatedData) -> None:
    tx = small.transactions
    c = small.customers.set_index("customer_id").loc[tx["customer_id"], ["x", "y"]].to_numpy()
    t = small.terminals.set_index("terminal_id").loc[tx["terminal_id"], ["x", "y"]].to_numpy()
    assert (np.hypot(*(c - t).T) < SimulatorConfig().radius).all()


def test_no_transactions_without_reachable_terminals() -> None:
    data = simulate(SimulatorConfig(n_customers=20, n_terminals=5, n_days=10, radius=1e-6))
    assert data.transactions.empty
    assert list(data.transactions.columns) == list(TRANSACTION_DTYPES)


# --- config validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"n_customers": 0}, "n_customers"),
        ({"n_terminals": -1}, "n_terminals"),
        ({"n_days": 0}, "n_days"),
        ({"radius": 0.0}, "radius"),
        ({"seed": -1}, "seed"),
        ({"bias_factor": 0.0}, "bias_factor"),
        ({"drift_amount_factor": -1.0}, "drift_amount_factor"),
        ({"drift_start_day": -1}, "drift_start_day"),
        ({"n_days": 30, "drift_start_day": 30}, "drift_start_day 30 must be < n_days 30"),
        ({"bias_age_band": "99+"}, "'99+'"),
        ({"drift_kind": "sudden"}, "drift_kind"),
        ({"n_customer": 10}, "n_customer"),
    ],
)
def test_invalid_config_is_rejected(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        SimulatorConfig(**overrides)
    assert fragment in str(excinfo.value)


def test_config_is_frozen() -> None:
    cfg = SimulatorConfig()
    with pytest.raises(ValidationError):
        cfg.n_days = 10  # type: ignore[misc]


# --- injected bias -----------------------------------------------------------------------------


def test_bias_raises_the_band_share_among_scenario3_customers() -> None:
    # Many customers for few compromise draws (3 x 89), so repeated picks of the same over-weighted
    # customers do not hide the bias in the distinct-customer share.
    base = {"n_customers": 1000, "n_terminals": 1000, "n_days": 90, "seed": 11}

    def share(data: SimulatedData) -> float:
        s3 = data.transactions[data.transactions["fraud_scenario"] == 3]
        return float((s3.groupby("customer_id")["customer_age_band"].first() == "65+").mean())

    unbiased = simulate(SimulatorConfig(**base))
    biased = simulate(SimulatorConfig(**base, bias_age_band="65+", bias_factor=5.0))
    population = float((unbiased.customers["age_band"] == "65+").mean())
    assert abs(share(unbiased) - population) < 0.06
    # Expected ≈ 5p / (5p + 1 - p) ≈ 0.36 for p ≈ 0.1, a little less once repeats are merged.
    assert share(biased) > 0.2
    assert share(biased) > share(unbiased) + 0.10
    # The bias only changes who is compromised, never the profiles.
    pd.testing.assert_frame_equal(biased.customers, unbiased.customers)


# --- drift -------------------------------------------------------------------------------------

DRIFT: dict[str, Any] = {"n_customers": 200, "n_terminals": 400, "n_days": 40, "seed": 5}
DRIFT_DAY = 20


def _before(tx: pd.DataFrame, day: int) -> pd.DataFrame:
    return tx[_day(tx) < day].reset_index(drop=True)


def test_amount_shift_drift_starts_on_the_drift_day() -> None:
    base = simulate(SimulatorConfig(**DRIFT)).transactions
    drifted = simulate(
        SimulatorConfig(**DRIFT, drift_start_day=DRIFT_DAY, drift_amount_factor=1.5)
    ).transactions
    pd.testing.assert_frame_equal(_before(drifted, DRIFT_DAY), _before(base, DRIFT_DAY))
    assert len(drifted) == len(base)

    after_base = base[_day(base) >= DRIFT_DAY]
    after_drift = drifted[_day(drifted) >= DRIFT_DAY]
    ratio = after_drift["amount"].mean() / after_base["amount"].mean()
    assert ratio == pytest.approx(1.5, abs=0.02)
    # The amount > 220 rule sees the shifted amounts, so scenario 1 grows; genuine stays <= 220.
    assert (after_drift["fraud_scenario"] == 1).sum() > (after_base["fraud_scenario"] == 1).sum()
    assert (drifted.loc[drifted["is_fraud"] == 0, "amount"] <= 220).all()


def test_new_fraud_pattern_drift_adds_scenario4_from_the_drift_day() -> None:
    base = simulate(SimulatorConfig(**DRIFT)).transactions
    drifted = simulate(
        SimulatorConfig(**DRIFT, drift_start_day=DRIFT_DAY, drift_kind="new_fraud_pattern")
    ).transactions
    assert (base["fraud_scenario"] != 4).all()

    s4 = drifted[drifted["fraud_scenario"] == 4]
    days = _day(s4)
    assert days.min() >= DRIFT_DAY
    # The handbook's 3 a day per 5,000 customers, scaled: 200 customers give 0.12 a day.
    n_compromised = s4.groupby(days)["customer_id"].nunique().sum()
    expected = (DRIFT["n_days"] * 3 * DRIFT["n_customers"]) // 5000 - (
        DRIFT_DAY * 3 * DRIFT["n_customers"]
    ) // 5000
    assert n_compromised == expected
    assert (s4["event_timestamp"].dt.hour < 6).all()
    assert s4["amount"].between(1, 5).all()
    assert (s4["is_fraud"] == 1).all()
    per_customer_day = s4.groupby([days, s4["customer_id"]]).size()
    assert per_customer_day.between(5, 15).all()

    # Everything else is exactly the un-drifted simulation.
    rest = drifted[drifted["fraud_scenario"] != 4].drop(columns="transaction_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(rest, base.drop(columns="transaction_id"))
    assert (drifted["transaction_id"].to_numpy() == np.arange(len(drifted))).all()
    assert drifted["event_timestamp"].is_monotonic_increasing
