"""Full-size statistics of the simulator against the handbook's published dataset.

Reference: Le Borgne et al., Reproducible Machine Learning for Credit Card Fraud Detection -
Practical Handbook, §3.2 (5000 customers, 10000 terminals, 183 days from 2018-04-01). The RNG
differs from the handbook's, so figures are compared with tolerances, not exactly.
"""

from __future__ import annotations

import pandas as pd
import pytest

from fraud_detection.data.simulator import (
    AGE_BAND_PROBABILITIES,
    AGE_BANDS,
    SimulatedData,
    SimulatorConfig,
    simulate,
)

pytestmark = pytest.mark.model

HANDBOOK_ROWS = 1_754_155
HANDBOOK_SCENARIO_COUNTS = {1: 973, 2: 9_077, 3: 4_631}
HANDBOOK_TX_PER_DAY = 9_585
HANDBOOK_AMOUNT_MEAN = 53.63
HANDBOOK_AMOUNT_MEDIAN = 44.64
HANDBOOK_TERMINALS_PER_CUSTOMER = 67


@pytest.fixture(scope="module")
def data() -> SimulatedData:
    return simulate(SimulatorConfig())


@pytest.fixture(scope="module")
def tx(data: SimulatedData) -> pd.DataFrame:
    return data.transactions


def test_row_count(tx: pd.DataFrame) -> None:
    assert len(tx) == pytest.approx(HANDBOOK_ROWS, rel=0.03)


def test_fraud_rate(tx: pd.DataFrame) -> None:
    assert 0.0070 <= tx["is_fraud"].mean() <= 0.0100


@pytest.mark.parametrize("scenario", sorted(HANDBOOK_SCENARIO_COUNTS))
def test_scenario_counts(tx: pd.DataFrame, scenario: int) -> None:
    count = int((tx["fraud_scenario"] == scenario).sum())
    assert count == pytest.approx(HANDBOOK_SCENARIO_COUNTS[scenario], rel=0.25)


def test_transactions_per_day(tx: pd.DataFrame) -> None:
    per_day = tx.groupby(tx["event_timestamp"].dt.normalize()).size()
    assert len(per_day) == SimulatorConfig().n_days
    assert per_day.mean() == pytest.approx(HANDBOOK_TX_PER_DAY, rel=0.03)


def test_amount_distribution(tx: pd.DataFrame) -> None:
    assert tx["amount"].mean() == pytest.approx(HANDBOOK_AMOUNT_MEAN, rel=0.05)
    assert tx["amount"].median() == pytest.approx(HANDBOOK_AMOUNT_MEDIAN, rel=0.05)
    assert (tx.loc[tx["is_fraud"] == 0, "amount"] <= 220).all()


def test_distinct_terminals_per_customer(tx: pd.DataFrame) -> None:
    per_customer = tx.groupby("customer_id")["terminal_id"].nunique().mean()
    assert per_customer == pytest.approx(HANDBOOK_TERMINALS_PER_CUSTOMER, rel=0.10)


def test_age_band_shares(data: SimulatedData) -> None:
    shares = data.customers["age_band"].value_counts(normalize=True)
    for band, p in zip(AGE_BANDS, AGE_BAND_PROBABILITIES, strict=True):
        assert shares.get(band, 0.0) == pytest.approx(p, abs=0.02)
