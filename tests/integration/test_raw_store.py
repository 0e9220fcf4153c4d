"""Immutable raw datasets: same seed same bytes, no-op re-runs, refusals, manifests and atomic writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fraud_detection.data.ingest import simulate_to_folder, validate_dataset
from fraud_detection.data.raw_store import (
    MANIFEST_NAME,
    content_digest,
    parquet_bytes,
    write_immutable,
    write_raw_dataset,
)
from fraud_detection.data.simulator import SimulatorConfig, simulate
from fraud_detection.errors import DataIntegrityError
from fraud_detection.utils.io import atomic_write
from tests.conftest import AS_OF, make_transactions

pytestmark = pytest.mark.integration

CONFIG = SimulatorConfig(n_customers=200, n_terminals=400, n_days=20)


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones included), by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _identities(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: an atomic rewrite, even of the same bytes, changes the inode."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


# --- determinism, idempotence, immutability -------------------------------------------------------


def test_same_seed_gives_byte_identical_datasets_in_different_folders(tmp_path: Path) -> None:
    first = simulate_to_folder(CONFIG, tmp_path / "a")
    second = simulate_to_folder(CONFIG, tmp_path / "b")

    files_a, files_b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    n_days = simulate(CONFIG).transactions["event_timestamp"].dt.normalize().nunique()
    assert MANIFEST_NAME in files_a
    assert {"reference/customers.parquet", "reference/terminals.parquet"} <= set(files_a)
    assert sum(name.startswith("transactions/") for name in files_a) == n_days
    assert files_a == files_b
    assert first.files_written == second.files_written == len(files_a) - 1  # everything but the manifest

    # The comparison can fail: another seed gives other bytes.
    other = _snapshot(
        simulate_to_folder(CONFIG.model_copy(update={"seed": 1}), tmp_path / "c").manifest_path.parent
    )
    assert other[MANIFEST_NAME] != files_a[MANIFEST_NAME]


def test_rerun_into_the_same_folder_is_a_no_op(tmp_path: Path) -> None:
    first = simulate_to_folder(CONFIG, tmp_path)
    before, identities = _snapshot(tmp_path), _identities(tmp_path)

    second = simulate_to_folder(CONFIG, tmp_path)

    assert second.files_written == 0
    assert second.files_unchanged == first.files_written
    assert second.manifest.model_dump(mode="json", exclude_none=True) == first.manifest.model_dump(
        mode="json", exclude_none=True
    )
    assert _snapshot(tmp_path) == before
    assert _identities(tmp_path) == identities  # nothing rewritten, not even the manifest


@pytest.mark.parametrize("change", [{"seed": 1}, {"n_days": 21}], ids=["other-seed", "more-days"])
def test_a_different_config_is_refused_before_anything_is_written(tmp_path: Path, change: dict) -> None:
    simulate_to_folder(CONFIG, tmp_path)
    before, identities = _snapshot(tmp_path), _identities(tmp_path)

    with pytest.raises(DataIntegrityError, match="already holds a raw dataset made with") as info:
        simulate_to_folder(CONFIG.model_copy(update=change), tmp_path)

    assert str(tmp_path) in str(info.value)
    assert _snapshot(tmp_path) == before  # no file changed, none added (no temp files either)
    assert _identities(tmp_path) == identities


def test_write_immutable_writes_once_then_is_a_no_op_for_the_same_bytes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "part.parquet"

    assert write_immutable(path, b"first bytes") is True
    assert path.read_bytes() == b"first bytes"
    inode = path.stat().st_ino

    assert write_immutable(path, b"first bytes") is False
    assert path.stat().st_ino == inode


def test_write_immutable_refuses_other_bytes_and_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "part.parquet"
    path.write_bytes(b"original")

    with pytest.raises(DataIntegrityError, match="immutable") as info:
        write_immutable(path, b"tampered")

    assert str(path) in str(info.value)
    assert path.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


# --- manifest and content digest ------------------------------------------------------------------


def test_manifest_lists_every_file_with_its_sha256_and_rows(tmp_path: Path) -> None:
    data = simulate(CONFIG)
    result = simulate_to_folder(CONFIG, tmp_path)
    manifest = json.loads((tmp_path / MANIFEST_NAME).read_text())

    assert manifest == result.manifest.model_dump(mode="json", exclude_none=True)
    assert manifest["contract"] == "simulator"
    assert manifest["generator"] == {"simulator": CONFIG.model_dump(mode="json")}

    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "transactions").iterdir())
    assert [entry["path"] for entry in manifest["partitions"]] == on_disk
    for entry in manifest["partitions"]:
        path = tmp_path / entry["path"]
        part = pd.read_parquet(path)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), entry["path"]
        assert entry["rows"] == len(part), entry["path"]
        assert set(part["event_timestamp"].dt.strftime("%Y-%m-%d")) == {entry["date"]}
    assert manifest["rows"] == sum(e["rows"] for e in manifest["partitions"]) == len(data.transactions)

    references = {entry["name"]: entry for entry in manifest["references"]}
    assert set(references) == {"customers", "terminals"}
    for name, table in (("customers", data.customers), ("terminals", data.terminals)):
        path = tmp_path / references[name]["path"]
        assert references[name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert references[name]["rows"] == len(table)

    assert manifest["content_digest"] == content_digest(data.transactions)


def test_manifest_digest_matches_what_validation_reports(tmp_path: Path, simulator_contract) -> None:
    manifest = simulate_to_folder(CONFIG, tmp_path).manifest.model_dump(mode="json", exclude_none=True)

    report = validate_dataset(tmp_path, simulator_contract, as_of=AS_OF).report

    assert report.passed, report.critical_issues
    assert report.content_digest is not None
    assert report.content_digest == manifest["content_digest"]


def test_content_digest_ignores_row_order_column_order_and_index() -> None:
    frame = make_transactions(300, seed=3)
    expected = content_digest(frame)

    shuffled = frame.sample(frac=1.0, random_state=7)
    assert not shuffled["transaction_id"].is_monotonic_increasing
    assert content_digest(shuffled) == expected
    assert content_digest(shuffled.reset_index(drop=True)) == expected
    assert content_digest(frame[list(reversed(frame.columns))]) == expected


def test_content_digest_ignores_how_the_frame_is_split_into_partitions(tmp_path: Path) -> None:
    frame = make_transactions(300, seed=4, n_days=5)
    result = write_raw_dataset(tmp_path, frame, contract_name="simulator")
    assert len(result.manifest.model_dump(mode="json", exclude_none=True)["partitions"]) == 5

    parts = [
        pd.read_parquet(tmp_path / entry["path"])
        for entry in reversed(result.manifest.model_dump(mode="json", exclude_none=True)["partitions"])
    ]
    rejoined = pd.concat(parts, ignore_index=True)

    assert result.manifest.model_dump(mode="json", exclude_none=True)["content_digest"] == content_digest(
        frame
    )
    assert content_digest(rejoined) == content_digest(frame)
    assert content_digest(pd.concat([frame.iloc[170:], frame.iloc[:170]])) == content_digest(frame)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("amount", 12345.67),
        ("customer_age_band", "65+"),
        ("event_timestamp", pd.Timestamp("2024-01-03 12:00:01")),
        ("is_fraud", 1),
    ],
)
def test_content_digest_changes_when_one_value_changes(column: str, value: object) -> None:
    frame = make_transactions(300, seed=5)
    changed = frame.copy()
    row = 42
    assert changed.at[row, column] != value
    changed.at[row, column] = value

    assert changed.dtypes.equals(frame.dtypes)
    assert content_digest(changed) != content_digest(frame)


def test_parquet_bytes_are_deterministic() -> None:
    frame = make_transactions(200, seed=6)
    assert parquet_bytes(frame) == parquet_bytes(frame.copy())
    assert parquet_bytes(frame) != parquet_bytes(frame.iloc[1:])


def test_parquet_bytes_encodings_change_the_layout_not_the_values() -> None:
    frame = make_transactions(500, seed=7)
    plain = parquet_bytes(frame)
    tuned = parquet_bytes(frame, dictionary=["customer_age_band"], delta=["transaction_id"])
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(tuned)), pd.read_parquet(io.BytesIO(plain)))

    def encodings(data: bytes) -> dict[str, set[str]]:
        group = pq.ParquetFile(io.BytesIO(data)).metadata.row_group(0)
        columns = (group.column(i) for i in range(group.num_columns))
        return {c.path_in_schema: set(c.encodings) for c in columns}

    tuned_encodings, plain_encodings = encodings(tuned), encodings(plain)
    assert "DELTA_BINARY_PACKED" in tuned_encodings["transaction_id"]
    assert "RLE_DICTIONARY" in tuned_encodings["customer_age_band"]
    assert "RLE_DICTIONARY" not in tuned_encodings["amount"]
    assert "RLE_DICTIONARY" in plain_encodings["amount"]  # the default: dictionary pages everywhere


# --- atomic writes --------------------------------------------------------------------------------

# Writes 4 MiB in chunks through atomic_write, signals the parent, then blocks mid-write.
_BLOCKED_WRITER = """
import sys, time
from pathlib import Path
from fraud_detection.utils.io import atomic_write

target, marker = Path(sys.argv[1]), Path(sys.argv[2])

def writer(handle):
    chunk = b"n" * (1 << 20)
    for _ in range(4):
        handle.write(chunk)
    handle.flush()
    marker.write_text("written")
    time.sleep(60)

atomic_write(target, writer)
"""


def _kill_during_write(target: Path, marker: Path) -> list[Path]:
    """Start the blocked writer, SIGKILL it once it has written; returns the files seen mid-write."""
    child = subprocess.Popen([sys.executable, "-c", _BLOCKED_WRITER, str(target), str(marker)])
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert child.poll() is None, f"the writer exited early with code {child.returncode}"
            assert time.monotonic() < deadline, "the writer never signalled that it had written"
            time.sleep(0.01)
        in_flight = sorted(p for p in target.parent.iterdir() if p != target)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    return in_flight


def _assert_only_hidden_leftovers(folder: Path, keep: set[str]) -> None:
    # A killed writer may leave its temporary file; it is hidden, so loaders never read it.
    leftovers = [p.name for p in folder.iterdir() if p.name not in keep]
    assert all(name.startswith(".") for name in leftovers), leftovers


def test_a_writer_killed_mid_write_leaves_no_final_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.bin"
    target.parent.mkdir()
    marker = tmp_path / "written.marker"

    in_flight = _kill_during_write(target, marker)

    assert len(in_flight) == 1 and in_flight[0].name.startswith(".data.bin.")
    assert in_flight[0].stat().st_size == 4 << 20  # the bytes went to the temporary file
    assert not target.exists()
    _assert_only_hidden_leftovers(target.parent, keep=set())


def test_a_writer_killed_mid_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "out" / "data.bin"
    target.parent.mkdir()
    old = b"old contents that must survive\n"
    target.write_bytes(old)
    marker = tmp_path / "written.marker"

    in_flight = _kill_during_write(target, marker)

    assert len(in_flight) == 1 and in_flight[0].stat().st_size == 4 << 20
    assert target.read_bytes() == old
    _assert_only_hidden_leftovers(target.parent, keep={"data.bin"})


def _failing_writer(handle) -> None:
    handle.write(b"partial " * 1000)
    raise RuntimeError("writer failed")


def test_an_exception_in_the_writer_leaves_no_final_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, _failing_writer)

    assert list(tmp_path.iterdir()) == []


def test_an_exception_in_the_writer_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    with pytest.raises(RuntimeError, match="writer failed"):
        atomic_write(target, _failing_writer)

    assert [p.name for p in tmp_path.iterdir()] == ["data.bin"]
    assert target.read_bytes() == b"old"
