"""The exactly-once commit protocol (``utils/commit.py``) and I/O retries (``utils/retry.py``)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.errors import DataIntegrityError, FeatureStoreError, StorageError
from fraud_detection.utils import commit
from fraud_detection.utils.retry import RetryPolicy, with_retries

pytestmark = pytest.mark.unit


def _files(n_rows: int = 10) -> list[commit.FileToCommit]:
    part = parquet_bytes(pd.DataFrame({"transaction_id": range(n_rows), "score": [0.5] * n_rows}))
    quarantine = parquet_bytes(pd.DataFrame({"transaction_id": [99], "quarantine_reasons": ["amount:ge"]}))
    return [
        commit.FileToCommit("part-00000.parquet", part, n_rows),
        commit.FileToCommit("quarantine.parquet", quarantine, 1, "quarantine"),
    ]


def test_commit_publishes_every_file_with_the_manifest_and_the_reader_verifies(tmp_path: Path) -> None:
    final = tmp_path / "out" / "date=2018-09-30"
    manifest = commit.commit_folder(final, _files(), kind="test", inputs={"digest": "a"})
    assert sorted(p.name for p in final.iterdir()) == [
        "manifest.json",
        "part-00000.parquet",
        "quarantine.parquet",
    ]
    assert manifest.rows == 10 and [f.role for f in manifest.files] == ["part", "quarantine"]
    assert not commit.staging_path(final).exists()
    read, contents = commit.read_committed(final, role="part")
    assert read == manifest and list(contents) == ["part-00000.parquet"]

    # a flipped byte, a missing part: the reader refuses
    part = final / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="changed after the commit"):
        commit.read_committed(final)
    part.unlink()
    with pytest.raises(DataIntegrityError, match="is missing"):
        commit.read_committed(final)


def test_a_committed_folder_is_immutable(tmp_path: Path) -> None:
    final = tmp_path / "date=2018-09-30"
    commit.commit_folder(final, _files(), kind="test", inputs={})
    before = {p.name: p.read_bytes() for p in final.iterdir()}
    with pytest.raises(DataIntegrityError, match="already committed"):
        commit.commit_folder(final, _files(20), kind="test", inputs={})
    assert {p.name: p.read_bytes() for p in final.iterdir()} == before


@pytest.mark.parametrize(
    "step", ["file:0:partial", "file:1:written", "files:written", "manifest:partial", "manifest:written"]
)
def test_a_failure_at_any_step_leaves_no_final_folder_and_no_staging(tmp_path: Path, step: str) -> None:
    final = tmp_path / "date=2018-09-30"

    def fail(at: str) -> None:
        if at == step:
            raise RuntimeError(f"stopped at {at}")

    with pytest.raises(RuntimeError, match=step):
        commit.commit_folder(final, _files(), kind="test", inputs={}, checkpoint=fail)
    assert not final.exists()
    assert not commit.staging_path(final).exists()


def test_disk_full_is_a_storage_error_with_nothing_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / "date=2018-09-30"

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StorageError, match="No space left on device"):
        commit.commit_folder(final, _files(), kind="test", inputs={})
    monkeypatch.undo()
    assert not final.exists() and not commit.staging_path(final).exists()


def test_the_audit_refuses_a_part_whose_footer_disagrees_with_its_rows(tmp_path: Path) -> None:
    final = tmp_path / "date=2018-09-30"
    wrong = commit.FileToCommit("part-00000.parquet", _files(10)[0].data, 11)
    with pytest.raises(DataIntegrityError, match="holds 10 rows, expected 11"):
        commit.commit_folder(final, [wrong], kind="test", inputs={})
    assert not final.exists() and not commit.staging_path(final).exists()


def test_a_second_writer_is_refused_or_waits(tmp_path: Path) -> None:
    final = tmp_path / "date=2018-09-30"
    waited: list[float] = []

    def waiter() -> None:
        started = time.perf_counter()
        with commit.commit_lock(final, wait=True, poll_s=0.01):
            waited.append(time.perf_counter() - started)

    with commit.commit_lock(final):
        with pytest.raises(DataIntegrityError, match="another run is writing"), commit.commit_lock(final):
            pass
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.2)
    thread.join(5)
    assert waited and waited[0] >= 0.15
    assert not final.exists()  # the lock lives beside the final folder, never in it


def test_retries_back_off_then_succeed_and_finally_fail_loudly() -> None:
    sleeps: list[float] = []
    calls = []

    def flaky(failures: int):  # type: ignore[no-untyped-def]
        def call() -> str:
            calls.append(1)
            if len(calls) <= failures:
                raise OSError(errno.EIO, "I/O error")
            return "ok"

        return call

    policy = RetryPolicy(attempts=4, backoff_s=0.5, factor=2)
    assert with_retries("reading", flaky(2), policy, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and sleeps == [0.5, 1.0]

    calls.clear()
    sleeps.clear()
    with pytest.raises(FeatureStoreError, match="reading failed after 4 attempt") as info:
        with_retries("reading", flaky(5), policy, error=FeatureStoreError, sleep=sleeps.append)
    assert len(calls) == 4 and sleeps == [0.5, 1.0, 2.0]
    assert isinstance(info.value.__cause__, OSError)


def test_integrity_errors_are_never_retried() -> None:
    calls = []

    def tampered() -> None:
        calls.append(1)
        raise DataIntegrityError("sha256 mismatch")

    with pytest.raises(DataIntegrityError):
        with_retries("reading", tampered, RetryPolicy(attempts=4, backoff_s=0), sleep=lambda s: None)
    assert len(calls) == 1
