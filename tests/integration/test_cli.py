"""The installed ``fraud`` entry point, run as a subprocess from the repository root.

Commands that touch data import pandas and pandera, so each run costs a few seconds: those tests
are marked ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data.ingest import simulate_to_folder
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.simulator import SimulatorConfig
from fraud_detection.utils.io import sha256_bytes
from tests.conftest import REPO_ROOT, make_transactions

pytestmark = pytest.mark.integration

FRAUD = Path(sys.executable).parent / "fraud"
# Small enough to be quick, big enough for the quality gate: with seed 0 its fraud rate (0.23%)
# sits inside the simulator contract's [0.1%, 5%]. (15 days with seed 0 gives 0.097%: gate fails.)
DAYS, CUSTOMERS, TERMINALS = 20, 200, 400
AS_OF = "2019-01-01"  # after the simulated days (from 2018-04-01); staleness is only a warning


def fraud(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRAUD_")}
    return subprocess.run(
        [str(FRAUD), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture
def corrupted() -> pd.DataFrame:
    """Valid rows except one negative amount and one repeated transaction id."""
    frame = make_transactions(300, seed=2)
    frame.loc[5, "amount"] = -5.0
    frame.loc[7, "transaction_id"] = 6
    return frame


# --- help and usage -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ([], ["simulate", "validate"]),
        (["simulate"], ["--out", "--days"]),
        (["validate"], ["--on-error", "--as-of"]),
    ],
    ids=["fraud", "simulate", "validate"],
)
def test_help_exits_zero(args: list[str], mentions: list[str]) -> None:
    result = fraud(*args, "--help")
    assert result.returncode == 0, _explain(result)
    for word in ["Usage", *mentions]:
        assert word in result.stdout


def test_a_bad_option_value_is_a_usage_error(tmp_path: Path) -> None:
    out = tmp_path / "raw"
    result = fraud("simulate", "--out", str(out), "--days", "0")
    assert result.returncode == 2, _explain(result)
    assert "--days" in result.stderr
    assert not out.exists()


# --- the happy path -------------------------------------------------------------------------------


@pytest.mark.slow
def test_simulate_then_validate_writes_the_validated_dataset(tmp_path: Path) -> None:
    raw, processed = tmp_path / "raw", tmp_path / "processed"

    simulated = fraud(
        "simulate",
        "--out",
        str(raw),
        "--days",
        str(DAYS),
        "--customers",
        str(CUSTOMERS),
        "--terminals",
        str(TERMINALS),
    )
    assert simulated.returncode == 0, _explain(simulated)
    raw_manifest = json.loads((raw / "manifest.json").read_text())
    assert len(raw_manifest["partitions"]) == DAYS
    assert f"in {DAYS} daily partitions" in simulated.stdout

    validated = fraud("validate", str(raw), "--out", str(processed), "--as-of", AS_OF)
    assert validated.returncode == 0, _explain(validated)

    for name in ("transactions.parquet", "quality_report.json", "quality_report.html", "manifest.json"):
        assert (processed / name).is_file(), name
    assert not (processed / "quarantine.parquet").exists()
    report = json.loads((processed / "quality_report.json").read_text())
    assert report["passed"] is True
    assert report["n_valid_rows"] == raw_manifest["rows"]
    assert "fraud_rate" in (processed / "quality_report.html").read_text()

    manifest = json.loads((processed / "manifest.json").read_text())
    assert manifest["rows"] == raw_manifest["rows"]
    assert manifest["kind"] == "validated"
    assert manifest["partitions"][0]["path"] == "transactions.parquet"
    assert manifest["partitions"][0]["sha256"] == sha256_bytes(
        (processed / "transactions.parquet").read_bytes()
    )
    assert len(pd.read_parquet(processed / "transactions.parquet")) == raw_manifest["rows"]
    # Lineage: the validated data carries the digest of the raw data it came from.
    assert manifest["content_digest"] == report["content_digest"] == raw_manifest["content_digest"]


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_corrupted_data_fails_with_one_error_line_and_no_traceback(
    tmp_path: Path, corrupted: pd.DataFrame
) -> None:
    path = tmp_path / "bad.csv"
    corrupted.to_csv(path, index=False)

    result = fraud("validate", str(path), "--as-of", AS_OF)

    assert result.returncode == 1, _explain(result)
    errors = _error_lines(result)
    assert len(errors) == 1, _explain(result)
    error = errors[0]
    for part in ("amount", "greater_than_or_equal_to", "-5.0", "transaction_id", "field_uniqueness"):
        assert part in error, (part, error)
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path: Path, corrupted: pd.DataFrame) -> None:
    path = tmp_path / "bad.parquet"
    corrupted.to_parquet(path, index=False)

    result = fraud("--debug", "validate", str(path), "--as-of", AS_OF)

    assert result.returncode == 1, _explain(result)
    assert "Traceback (most recent call last)" in result.stderr
    assert "DataContractError" in result.stderr


@pytest.mark.slow
def test_quarantine_sets_the_bad_row_aside_and_passes(tmp_path: Path, simulator_contract) -> None:
    raw, incoming, out = tmp_path / "raw", tmp_path / "incoming", tmp_path / "out"
    simulate_to_folder(SimulatorConfig(n_customers=CUSTOMERS, n_terminals=TERMINALS, n_days=DAYS), raw)
    frame, _ = read_transactions(str(raw), simulator_contract)
    bad_id = int(frame.loc[100, "transaction_id"])
    frame.loc[100, "amount"] = -5.0
    incoming.mkdir()
    frame.to_parquet(incoming / "transactions.parquet", index=False)
    shutil.copytree(raw / "reference", incoming / "reference")  # for the referential checks

    result = fraud(
        "validate",
        str(incoming / "transactions.parquet"),
        "--on-error",
        "quarantine",
        "--out",
        str(out),
        "--as-of",
        AS_OF,
    )

    assert result.returncode == 0, _explain(result)
    quarantine = pd.read_parquet(out / "quarantine.parquet")
    assert quarantine["transaction_id"].tolist() == [bad_id]
    assert quarantine["amount"].tolist() == [-5.0]
    reasons = quarantine["quarantine_reasons"].iloc[0]
    assert isinstance(reasons, str) and "amount" in reasons
    valid = pd.read_parquet(out / "transactions.parquet")
    assert len(valid) == len(frame) - 1 and bad_id not in set(valid["transaction_id"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quarantine"]["rows"] == 1


@pytest.mark.slow
def test_an_unknown_contract_lists_the_available_ones(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    make_transactions(50).to_parquet(path, index=False)

    result = fraud("validate", str(path), "--contract", "no-such-contract")

    assert result.returncode == 2, _explain(result)
    errors = _error_lines(result)
    assert len(errors) == 1, _explain(result)
    for part in ("'no-such-contract'", "'handbook'", "'simulator'"):
        assert part in errors[0], (part, errors[0])


def test_quarantine_without_an_output_folder_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    make_transactions(50).to_parquet(path, index=False)

    result = fraud("validate", str(path), "--on-error", "quarantine")

    assert result.returncode == 2, _explain(result)
    errors = _error_lines(result)
    assert len(errors) == 1 and "--out" in errors[0], _explain(result)


@pytest.mark.slow
def test_a_missing_input_path_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.parquet"

    result = fraud("validate", str(missing))

    assert result.returncode == 2, _explain(result)
    errors = _error_lines(result)
    assert len(errors) == 1 and str(missing) in errors[0], _explain(result)
    assert "Traceback" not in result.stderr


# --- import hygiene -------------------------------------------------------------------------------

_IMPORT_PROBE = """
import json, logging, sys
import fraud_detection, fraud_detection.cli
loggers = [logging.getLogger()] + [
    logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
]
structlog = sys.modules.get("structlog")
print(json.dumps({
    "heavy": sorted(name for name in ("pandas", "numpy", "pandera", "pyarrow") if name in sys.modules),
    "handlers": {lg.name: [type(h).__name__ for h in lg.handlers] for lg in loggers if lg.handlers},
    "structlog_configured": bool(structlog and structlog.is_configured()),
}))
"""


def test_importing_the_package_and_cli_is_light_and_side_effect_free(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FRAUD_")}
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, _explain(result)
    probe = json.loads(result.stdout)

    assert probe["heavy"] == []
    assert probe["handlers"] == {}
    assert probe["structlog_configured"] is False
    assert list(tmp_path.iterdir()) == []
