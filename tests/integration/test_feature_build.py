"""`fraud features build`: raw → validated → features → parquet tables that carry transaction_id."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.cli import app
from fraud_detection.data.ingest import simulate_to_folder
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.simulator import SimulatorConfig
from fraud_detection.features.engineering import build_features, load_feature_config
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

FEATURE_CONFIG = REPO_ROOT / "configs" / "features" / "default.yaml"


def test_build_writes_every_table_with_transaction_id(
    tmp_path: Path, monkeypatch, simulator_contract
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    raw, out = tmp_path / "raw", tmp_path / "features"
    simulate_to_folder(SimulatorConfig(n_customers=300, n_terminals=600, n_days=40), raw)

    result = CliRunner().invoke(
        app, ["features", "build", "--raw", str(raw), "--out", str(out), "--as-of", "2019-01-01"]
    )

    assert result.exit_code == 0, result.output
    config = load_feature_config(FEATURE_CONFIG)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["feature_names"] == config.feature_names
    assert (
        manifest["input_content_digest"] == json.loads((raw / "manifest.json").read_text())["content_digest"]
    )
    expected = build_features(read_transactions(str(raw), simulator_contract)[0], config)
    for name in ("transaction", "customer", "terminal", "customer_terminal"):
        table = pd.read_parquet(out / f"{name}_features.parquet")
        assert manifest["files"][f"{name}_features.parquet"]["rows"] == len(table) == len(expected)
        assert table["transaction_id"].tolist() == expected["transaction_id"].tolist()
    transaction = pd.read_parquet(out / "transaction_features.parquet")
    pd.testing.assert_frame_equal(transaction, expected)


def test_build_refuses_data_that_fails_the_gate(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    path = tmp_path / "tx.parquet"
    from tests.conftest import make_transactions

    make_transactions(200).assign(amount=-1.0).to_parquet(path)
    result = CliRunner().invoke(app, ["features", "build", "--raw", str(path), "--out", str(tmp_path / "f")])
    assert result.exit_code == 1
    assert "greater_than_or_equal_to(0.0)" in result.output
    assert not (tmp_path / "f").exists()


def test_build_apply_materialize_online_from_the_cli(tmp_path: Path, monkeypatch) -> None:
    """The demo's chain: the online vector of an entity's latest transaction is its offline row."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("FRAUD_FEATURE_STORE_DIR", str(tmp_path / "store"))
    raw, features = tmp_path / "raw", tmp_path / "features"
    simulate_to_folder(SimulatorConfig(n_customers=200, n_terminals=400, n_days=30), raw)
    runner = CliRunner()

    def ok(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    ok("features", "build", "--raw", str(raw), "--out", str(features), "--as-of", "2019-01-01")
    ok("features", "apply", "--features-dir", str(features))
    ok(
        "features",
        "materialize",
        "--start",
        "2018-03-01",
        "--end",
        "2018-06-01",
        "--features-dir",
        str(features),
    )

    table = pd.read_parquet(features / "transaction_features.parquet")
    ts = table["event_timestamp"]
    latest = table[
        (ts == ts.groupby(table["customer_id"]).transform("max"))
        & (ts == ts.groupby(table["terminal_id"]).transform("max"))
        & (ts == ts.groupby([table["customer_id"], table["terminal_id"]]).transform("max"))
    ].iloc[0]
    output = ok(
        "features", "online",
        "--customer-id", str(int(latest["customer_id"])),
        "--terminal-id", str(int(latest["terminal_id"])),
        "--amount", repr(float(latest["amount"])),
        "--timestamp", latest["event_timestamp"].isoformat(),
        "--features-dir", str(features),
    )  # fmt: skip
    served = json.loads(output[output.index("{") :])
    assert served["degraded"] is False
    config = load_feature_config(FEATURE_CONFIG)
    assert list(served["features"]) == config.feature_names
    for name in config.feature_names:
        assert served["features"][name] == pytest.approx(float(latest[name]), abs=1e-9), name
