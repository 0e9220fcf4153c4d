"""The data quality gate: each injected corruption trips its own check and no other (plan D2)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.contract import Contract
from fraud_detection.data.ingest import simulate_to_folder
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.quality import QualityReport, gate, population_stability_index, run_quality_checks
from fraud_detection.data.simulator import SimulatorConfig
from fraud_detection.errors import DataQualityError

pytestmark = pytest.mark.integration

GOLDEN = SimulatorConfig(n_customers=500, n_terminals=1000, n_days=40, seed=11)


@pytest.fixture(scope="module")
def golden(tmp_path_factory, simulator_contract) -> tuple[pd.DataFrame, str]:
    folder = tmp_path_factory.mktemp("golden")
    simulate_to_folder(GOLDEN, folder)
    frame, _ = read_transactions(str(folder), simulator_contract)
    return frame, str(folder)


def _as_of(frame: pd.DataFrame) -> dt.datetime:
    return (frame["event_timestamp"].max() + pd.Timedelta(hours=12)).to_pydatetime()


def _failed(
    frame: pd.DataFrame,
    contract: Contract,
    root: str,
    *,
    as_of: dt.datetime | None = None,
    n_input: int | None = None,
) -> set[str]:
    results = run_quality_checks(
        frame,
        contract,
        as_of=as_of or _as_of(frame),
        n_input_rows=n_input or len(frame),
        reference_root=root,
    )
    return {r.name for r in results if not r.passed}


def _day(frame: pd.DataFrame, day: int) -> pd.Series:
    first = frame["event_timestamp"].min().normalize()
    return frame["event_timestamp"].dt.normalize() == first + pd.Timedelta(days=day)


def _null_spike(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.sample(frac=0.1, random_state=0).index
    frame.loc[rows, "customer_age_band"] = None
    return frame


def _missing_day(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.loc[~_day(frame, 20)].reset_index(drop=True)


def _volume_drop(frame: pd.DataFrame) -> pd.DataFrame:
    day = _day(frame, 25)
    dropped = frame.loc[day].sample(frac=0.8, random_state=0).index
    return frame.drop(index=dropped).reset_index(drop=True)


def _fraud_rate_jump(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame.loc[_day(frame, 25)].sample(frac=0.15, random_state=0).index
    frame.loc[rows, "is_fraud"] = 1
    return frame


def _amount_shift(frame: pd.DataFrame) -> pd.DataFrame:
    day = _day(frame, 25)
    frame.loc[day, "amount"] = frame.loc[day, "amount"] * 4
    return frame


def _unknown_entity(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[:5], "customer_id"] = 10**6
    return frame


INJECTIONS: list[tuple[Callable[[pd.DataFrame], pd.DataFrame], str]] = [
    (_null_spike, "completeness"),
    (_missing_day, "missing_days"),
    (_volume_drop, "volume"),
    (_fraud_rate_jump, "fraud_rate"),
    (_amount_shift, "amount_distribution"),
    (_unknown_entity, "referential(customer_id)"),
]


def test_the_golden_dataset_passes_every_check(golden, simulator_contract):
    frame, root = golden
    assert _failed(frame, simulator_contract, root) == set()


@pytest.mark.parametrize(("inject", "check"), INJECTIONS, ids=[check for _, check in INJECTIONS])
def test_each_injection_trips_its_own_check_and_no_other(golden, simulator_contract, inject, check):
    frame, root = golden
    assert _failed(inject(frame.copy()), simulator_contract, root) == {check}


def test_stale_data_trips_freshness_only(golden, simulator_contract):
    frame, root = golden
    stale = _as_of(frame) + dt.timedelta(days=10)
    assert _failed(frame, simulator_contract, root, as_of=stale) == {"freshness"}


def test_a_large_quarantine_trips_the_quarantine_check_only(golden, simulator_contract):
    frame, root = golden
    assert _failed(frame, simulator_contract, root, n_input=int(len(frame) * 1.05)) == {"quarantine"}


def test_a_leaky_model_input_trips_label_leakage_only(golden, simulator_contract):
    frame, root = golden
    raw = simulator_contract.model_dump()
    raw["columns"].append({"name": "risk_hint", "dtype": "float64", "role": "feature"})
    contract = Contract.model_validate(raw)
    noise = np.random.default_rng(0).normal(0, 0.1, size=len(frame))
    leaky = frame.assign(risk_hint=frame["is_fraud"] + noise)
    assert _failed(leaky, contract, root) == {"label_leakage"}


def test_a_missing_reference_table_fails_the_referential_check(golden, simulator_contract, tmp_path):
    frame, _ = golden
    assert _failed(frame, simulator_contract, str(tmp_path)) == {
        "referential(customer_id)",
        "referential(terminal_id)",
    }


@pytest.mark.parametrize("seed", range(100, 108))
def test_no_false_positives_on_clean_resampled_data(tmp_path, simulator_contract, seed):
    # 8 more seeds x 40 days: every judged day of clean data must pass every check.
    simulate_to_folder(GOLDEN.model_copy(update={"seed": seed}), tmp_path)
    frame, _ = read_transactions(str(tmp_path), simulator_contract)
    assert _failed(frame, simulator_contract, str(tmp_path)) == set()


def _report(frame: pd.DataFrame, contract: Contract, root: str) -> QualityReport:
    checks = run_quality_checks(
        frame, contract, as_of=_as_of(frame), n_input_rows=len(frame), reference_root=root
    )
    return QualityReport(
        source=root,
        contract=contract.name,
        as_of=_as_of(frame),
        n_input_rows=len(frame),
        n_valid_rows=len(frame),
        n_quarantined_rows=0,
        violations=[],
        checks=checks,
    )


def test_gate_lists_every_critical_issue(golden, simulator_contract):
    frame, root = golden
    broken = _unknown_entity(_fraud_rate_jump(frame.copy()))
    with pytest.raises(DataQualityError) as excinfo:
        gate(_report(broken, simulator_contract, root))
    assert len(excinfo.value.issues) == 2
    assert "fraud_rate" in str(excinfo.value)
    assert "referential(customer_id)" in str(excinfo.value)
    assert "10**6" not in str(excinfo.value) and "1000000" in str(excinfo.value)


def test_gate_lets_warnings_through(golden, simulator_contract):
    frame, root = golden
    report = _report(_amount_shift(frame.copy()), simulator_contract, root)
    assert report.warnings and not report.critical_issues
    gate(report)  # does not raise
    assert report.passed


def test_psi_is_zero_for_identical_and_large_for_disjoint_distributions():
    same = np.array([10.0, 20.0, 30.0])
    assert population_stability_index(same, same * 3) == pytest.approx(0.0, abs=1e-12)
    disjoint = population_stability_index(np.array([100.0, 0.0]), np.array([0.0, 100.0]))
    assert disjoint > 5
