"""Bad input at the CLI boundary: one clear line, the right exit code, no traceback, nothing torn.

Runs the Typer app in-process (fast); ``test_cli.py`` covers the installed entry point.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.cli import app
from fraud_detection.data.ingest import simulate_to_folder
from fraud_detection.data.simulator import SimulatorConfig
from tests.conftest import REPO_ROOT, make_transactions

pytestmark = pytest.mark.integration

SMALL = ["--days", "20", "--customers", "200", "--terminals", "400"]
NO_REFERENCES = REPO_ROOT / "configs" / "contract" / "handbook.yaml"  # no referential checks


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    for name in ("FRAUD_CONTRACTS_DIR", "FRAUD_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    # A library error must end in a SystemExit from the CLI, never escape as another exception.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def handbook_frame(n: int = 300) -> pd.DataFrame:
    frame = make_transactions(n).drop(columns=["customer_age_band"])
    return frame.assign(tx_time_seconds=0, tx_time_days=0)


def test_a_schema_failure_report_never_says_passed(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    handbook_frame().assign(amount=-1.0).to_parquet(path)
    code, _ = run(
        "validate", path, "--contract", NO_REFERENCES, "--as-of", "2030-01-01", "--out", tmp_path / "o"
    )
    assert code == 1
    report = json.loads((tmp_path / "o" / "quality_report.json").read_text())
    assert report["passed"] is False
    assert report["critical_issues"][0].startswith("schema:")


def test_a_failing_run_withdraws_an_earlier_published_dataset(tmp_path: Path) -> None:
    good, bad, out = tmp_path / "good.parquet", tmp_path / "bad.parquet", tmp_path / "o"
    handbook_frame().to_parquet(good)
    handbook_frame().assign(amount=-1.0).to_parquet(bad)
    assert run("validate", good, "--contract", NO_REFERENCES, "--as-of", "2030-01-01", "--out", out)[0] == 0
    assert (out / "manifest.json").exists()
    assert run("validate", bad, "--contract", NO_REFERENCES, "--as-of", "2030-01-01", "--out", out)[0] == 1
    assert not (out / "manifest.json").exists() and not (out / "transactions.parquet").exists()
    assert json.loads((out / "quality_report.json").read_text())["passed"] is False


def test_out_cannot_be_the_raw_dataset(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    assert run("simulate", "--out", raw, *SMALL)[0] == 0
    before = (raw / "manifest.json").read_bytes()
    code, output = run("validate", raw, "--as-of", "2019-01-01", "--out", raw)
    assert code == 2 and "raw dataset" in error_line(output)
    assert (raw / "manifest.json").read_bytes() == before
    assert run("validate", raw, "--as-of", "2019-01-01")[0] == 0


def test_a_validated_folder_can_be_validated_again(tmp_path: Path) -> None:
    raw, out = tmp_path / "raw", tmp_path / "validated"
    assert run("simulate", "--out", raw, *SMALL)[0] == 0
    assert run("validate", raw, "--as-of", "2019-01-01", "--out", out)[0] == 0
    code, output = run(
        "validate", out, "--contract", NO_REFERENCES.with_name("simulator.yaml"), "--as-of", "2019-01-01"
    )
    # The validated folder has no reference tables: referential integrity is "not verified" (a warning).
    assert code == 0, output


def test_as_of_with_an_offset_is_converted_to_utc(tmp_path: Path) -> None:
    path = tmp_path / "tx.parquet"
    frame = handbook_frame(50)
    frame["event_timestamp"] = pd.Timestamp("2024-01-01 23:00:00")
    frame.to_parquet(path)
    # 23:30+02:00 is 21:30 UTC: the 23:00 UTC events are in the future.
    code, output = run("validate", path, "--contract", NO_REFERENCES, "--as-of", "2024-01-01T23:30:00+02:00")
    assert code == 1 and "not_in_future" in error_line(output)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["validate", "foo://x/y.parquet"], "foo://x/y.parquet"),
        (["validate", "README.md"], "'.md'"),
        (["validate", "configs"], "holds no data files"),
        (["validate", "x.parquet", "--contract", "configs/contract"], "configs/contract"),
        (["validate", "x.parquet", "--on-error", "quarantine"], "--out"),
        (
            ["simulate", "--out", "README.md/x", *SMALL],
            "README.md",
        ),
        (
            ["simulate", "--out", "{tmp}/z", "--days", "1", "--customers", "1", "--terminals", "1"],
            "no transactions",
        ),
        (["simulate", "--out", "{tmp}/z", "--bias-factor", "2"], "--bias-age-band"),
        (["simulate", "--out", "{tmp}/z", "--drift-kind", "amount_shift"], "--drift-day"),
        (
            ["monitor", "--model", "{tmp}/no-bundle", "--start", "2026-11-01", "--end", "2026-11-02"],
            "model bundle '{tmp}/no-bundle' does not exist",
        ),
        (
            ["monitor", "--model", "{tmp}/no-bundle", "--start", "2026-11-02", "--end", "2026-11-01"],
            "--end 2026-11-01T00:00:00 is not after --start 2026-11-02T00:00:00",
        ),
        (["evaluate", "{tmp}/no-bundle"], "model bundle '{tmp}/no-bundle' does not exist"),
        (["report", "{tmp}/no-bundle"], "model bundle '{tmp}/no-bundle' does not exist"),
        (  # offsets are converted to UTC before the two are compared
            [
                "monitor",
                "--model",
                "{tmp}/b",
                "--start",
                "2026-11-01T00:00Z",
                "--end",
                "2026-11-01T05:00+05:30",
            ],
            "--end 2026-10-31T23:30:00 is not after --start 2026-11-01T00:00:00",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    code, output = run(*[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, output
    assert needle.replace("{tmp}", str(tmp_path)) in error_line(output)


@pytest.mark.parametrize(
    ("content", "suffix"),
    [(b"", ".csv"), (b"PAR1 truncated", ".parquet"), (b"\x1f\x8b\x08\x00\xff\xfe garbage", ".csv")],
    ids=["empty-csv", "truncated-parquet", "binary-csv"],
)
def test_unreadable_files_are_data_failures(tmp_path: Path, content: bytes, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    code, output = run("validate", path, "--contract", NO_REFERENCES)
    assert code == 1, output
    line = error_line(output)
    assert str(path) in line and line.isprintable()


def test_a_header_only_csv_trips_not_empty_only(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    handbook_frame(0).rename(columns=str.upper).to_csv(path, index=False)
    code, output = run("validate", path, "--contract", NO_REFERENCES)
    assert code == 1
    assert "no rows" in error_line(output) and "dtype" not in output


def test_a_refused_simulation_writes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "transactions").mkdir(parents=True)
    handbook_frame(5).to_parquet(folder / "transactions" / "2018-04-01.parquet")
    code, output = run("simulate", "--out", folder, *SMALL)
    assert code == 1 and "immutable" in error_line(output)
    assert sorted(p.name for p in folder.rglob("*") if not p.name.startswith(".")) == [
        "2018-04-01.parquet",
        "transactions",
    ]


def test_a_raw_folder_without_its_manifest_is_an_unfinished_write(tmp_path: Path) -> None:
    simulate_to_folder(SimulatorConfig(n_customers=200, n_terminals=400, n_days=20), tmp_path)
    (tmp_path / "manifest.json").unlink()
    code, output = run("validate", tmp_path, "--as-of", "2019-01-01")
    assert code == 1 and "unfinished write" in error_line(output)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("partitions"),
        lambda m: m["partitions"][0].pop("sha256"),
        lambda m: m["partitions"][0].update(path="../escape.parquet"),
        lambda m: m["partitions"][0].update(path="/etc/passwd"),
    ],
    ids=["no-partitions", "no-sha256", "parent-path", "absolute-path"],
)
def test_a_malformed_manifest_is_refused_before_any_file_is_opened(tmp_path: Path, mutate) -> None:
    simulate_to_folder(SimulatorConfig(n_customers=200, n_terminals=400, n_days=20), tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    mutate(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    code, output = run("validate", tmp_path, "--as-of", "2019-01-01")
    assert code == 1 and "manifest" in error_line(output)


def test_two_concurrent_writers_never_both_commit(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    results: dict[int, BaseException | None] = {}

    def write(seed: int) -> None:
        try:
            simulate_to_folder(
                SimulatorConfig(n_customers=300, n_terminals=600, n_days=30, seed=seed), folder
            )
            results[seed] = None
        except BaseException as err:
            results[seed] = err

    threads = [threading.Thread(target=write, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [seed for seed, err in results.items() if err is None]
    assert len(winners) == 1, results
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["generator"]["simulator"]["seed"] == winners[0]
    listed = {entry["path"] for entry in manifest["partitions"] + manifest["references"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet")}
    assert on_disk == listed


def test_serve_reads_its_port_from_the_environment_when_no_flag_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an out-of-range FRAUD_SERVE_PORT is refused: the setting is read, not shadowed by the flag's default
    monkeypatch.setenv("FRAUD_SERVE_PORT", "70000")
    code, output = run("serve", "--model", "models:/fraud-detector@champion")
    assert code == 2
    assert "port='70000'" in error_line(output)


def test_serve_opens_the_feature_tables_of_fraud_features_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # tables built with another feature config: refused, which shows FRAUD_FEATURES_DIR was opened
    (tmp_path / "manifest.json").write_text(json.dumps({"feature_config": {"windows_days": [99]}}))
    monkeypatch.setenv("FRAUD_FEATURES_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUD_FEATURE_STORE_DIR", str(tmp_path / "store"))
    code, output = run("serve", "--model", "models:/fraud-detector@champion")
    assert code != 0
    assert str(tmp_path) in error_line(output) and "feature config" in error_line(output)


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_serve_refuses_a_features_dir_without_its_tables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    # a mistyped path or an empty volume would otherwise skip the feature-config check silently
    folder = tmp_path / "features"
    if where == "empty":
        folder.mkdir()
    monkeypatch.setenv("FRAUD_FEATURES_DIR", str(folder))
    code, output = run("serve", "--model", "models:/fraud-detector@champion")
    assert code == 2
    assert str(folder) in error_line(output) and "neither manifest.json nor feature tables" in error_line(
        output
    )


def test_pipeline_train_on_a_source_defaults_to_its_latest_labelled_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the demo's fixed 2018 window fits only the simulated data; --days sizes only a simulation
    from fraud_detection.pipelines import runtime, training_flow

    asked = []

    def flow(parameters):  # type: ignore[no-untyped-def]
        asked.append(parameters)
        raise RuntimeError("stopped before the flow ran")

    monkeypatch.setattr(runtime, "prepare_flow_process", lambda: None)
    monkeypatch.setattr(training_flow, "training_flow", flow)
    source = tmp_path / "mine.parquet"
    for args, train_start in (
        ([], training_flow.DEFAULT_PARAMETERS.train_start),
        (["--source", str(source)], None),
        (["--source", str(source), "--train-start", "2024-03-04"], pd.Timestamp("2024-03-04").date()),
    ):
        result = CliRunner().invoke(app, ["pipeline", "train", "--data-dir", str(tmp_path), *args])
        assert isinstance(result.exception, RuntimeError), result.output
        assert asked.pop().train_start == train_start
    code, output = run("pipeline", "train", "--source", source, "--days", "30")
    assert code == 2 and "--days 30 sizes the simulation" in error_line(output)
    assert not asked
