"""B1 (kill -9 at random and forced points, then rerun) and B3 (two concurrent runs) of
RELIABILITY.md 6.3, on a 200k-row partition.

Runs are child processes forked from a fork server that has already imported the package, so a
child starts in milliseconds and a random kill lands inside the run, not in its imports. Every
killed run is rerun and compared with a golden run: same rows, no duplicate or missing
``transaction_id``, bitwise-equal scores, byte-identical parts. A watcher thread reads the output
path throughout and fails the test if it ever shows a partition that does not verify.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fraud_detection.inference import batch
from fraud_detection.models.registry import resolve_model
from fraud_detection.utils import commit
from tests import batch_support
from tests.batch_support import BatchWorld

pytestmark = pytest.mark.integration

DAY = dt.date(2018, 9, 30)
ROWS = 200_000
ROWS_PER_PART = 50_000  # 4 parts: file:3 is the last one
N_RANDOM_TRIALS = 5
FORCED = ["file:3:partial", "files:written", "manifest:partial"]


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory, serving_world) -> BatchWorld:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("batch_big")
    return batch_support.write_batch_inputs(
        root, batch_support.one_day_transactions(ROWS), serving_world.bundle_dir
    )


@pytest.fixture(scope="module")
def model(big: BatchWorld):  # type: ignore[no-untyped-def]
    return resolve_model(str(big.bundle_dir))


@pytest.fixture(scope="module")
def golden(big: BatchWorld, model, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("golden")
    result = batch.run_batch(big.spec(out, DAY, rows_per_part=ROWS_PER_PART), model, batch_support.contract())
    assert result.committed and result.rows == ROWS
    return result


@pytest.fixture(scope="module")
def forkserver():  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.batch_support", "fraud_detection.inference.batch"])
    return context


def _start(forkserver, spec: batch.BatchSpec, bundle_dir: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    process = forkserver.Process(
        target=batch_support.run_child, args=(spec.model_dump_json(), str(bundle_dir)), kwargs=kwargs
    )
    process.start()
    return process


class Watcher:
    """Reads the partition folder in a loop: whenever it exists, it must verify completely."""

    def __init__(self, partition: Path) -> None:
        self.partition = partition
        self.problems: list[str] = []
        self.seen_complete = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            if self.partition.exists():
                try:
                    manifest, _ = commit.read_committed(self.partition)
                    assert sum(f.rows for f in manifest.role("part")) == ROWS
                    self.seen_complete += 1
                except Exception as err:  # any failure to verify is a torn or partial output
                    self.problems.append(repr(err))
            time.sleep(0.002)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.problems


def _parts(partition: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(partition.glob("part-*.parquet"))}


def _assert_equals_golden(result: batch.BatchResult, golden: batch.BatchResult) -> None:
    got, expected = batch.read_predictions(result.partition_dir), batch.read_predictions(golden.partition_dir)
    assert len(got) == len(expected) == ROWS
    assert got["transaction_id"].is_unique
    assert set(got["transaction_id"]) == set(expected["transaction_id"])  # none missing
    assert np.array_equal(got["score"].to_numpy(), expected["score"].to_numpy())  # bitwise
    assert _parts(result.partition_dir) == _parts(golden.partition_dir)
    assert result.manifest.files == golden.manifest.files and result.manifest.inputs == golden.manifest.inputs


def test_b2_rerun_no_op_costs_under_5_percent_of_the_run(big: BatchWorld, model, golden) -> None:  # type: ignore[no-untyped-def]
    spec = big.spec(golden.partition_dir.parents[2], DAY, rows_per_part=ROWS_PER_PART)
    rerun = batch.run_batch(spec, model, batch_support.contract())
    assert not rerun.committed and rerun.manifest == golden.manifest
    assert rerun.seconds <= 0.05 * golden.seconds, (rerun.seconds, golden.seconds)


def test_b1_kill_9_at_random_and_forced_points_then_rerun_equals_golden(
    big: BatchWorld,
    model,
    golden,
    forkserver,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    contract = batch_support.contract()
    # one clean child run times the run, so the random kills spread over all of it
    clean_spec = big.spec(tmp_path / "clean", DAY, rows_per_part=ROWS_PER_PART)
    started = time.perf_counter()
    child = _start(forkserver, clean_spec, big.bundle_dir)
    child.join(120)
    run_s = time.perf_counter() - started
    assert child.exitcode == 0
    _assert_equals_golden(batch.run_batch(clean_spec, model, contract), golden)

    rng = random.Random(7)
    trials = [("random", rng.uniform(0.0, run_s)) for _ in range(N_RANDOM_TRIALS)]
    trials += [("forced", step) for step in FORCED]
    outcomes = []
    for i, (kind, point) in enumerate(trials):
        spec = big.spec(tmp_path / f"trial{i}", DAY, rows_per_part=ROWS_PER_PART)
        partition = batch.partition_dir(spec.out_dir, model, DAY)
        watcher = Watcher(partition)
        if kind == "random":
            child = _start(forkserver, spec, big.bundle_dir)
            time.sleep(float(point))  # type: ignore[arg-type]
            child.kill()
        else:
            child = _start(forkserver, spec, big.bundle_dir, crash_at=point)
        child.join(120)
        killed = child.exitcode == -signal.SIGKILL
        if kind == "forced":  # the forced points are inside the commit: nothing may be published
            assert killed and not partition.exists(), (point, child.exitcode)
            assert list(commit.staging_path(partition).iterdir())  # the crash left a staging folder
        rerun = batch.run_batch(spec, model, contract)
        assert not commit.staging_path(partition).exists()
        problems = watcher.stop()
        assert problems == [], (kind, point, problems[:3])
        _assert_equals_golden(rerun, golden)
        outcomes.append((kind, point, killed, rerun.committed))
    # the random kills did interrupt runs (a kill after the commit makes the rerun a no-op)
    assert sum(killed and committed for _, _, killed, committed in outcomes) >= len(FORCED) + 1, outcomes


def test_b3_two_concurrent_runs_commit_exactly_once(
    big: BatchWorld, model, golden, forkserver, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    spec = big.spec(tmp_path / "out", DAY, rows_per_part=ROWS_PER_PART)
    partition = batch.partition_dir(spec.out_dir, model, DAY)
    staging = commit.staging_path(partition)

    def race(second: batch.BatchSpec, release: Path) -> tuple[int | None, int | None]:
        first = _start(forkserver, spec, big.bundle_dir, hold_at="files:written", release=str(release))
        deadline = time.monotonic() + 60
        while not (staging / "part-00003.parquet").exists() and time.monotonic() < deadline:
            time.sleep(0.005)  # the first run holds the lock and is committing
        other = _start(forkserver, second, big.bundle_dir)
        other.join(1.0 if second.wait_for_lock else 30.0)  # refused at once, or (told to wait) waiting
        refused_at_once = not other.is_alive()
        release.touch()
        first.join(120)
        other.join(120)
        assert refused_at_once != second.wait_for_lock
        return first.exitcode, other.exitcode

    # the second run is refused while the first holds the lock: it exits non-zero
    assert race(spec, tmp_path / "release-1") == (0, 1)
    _assert_equals_golden(batch.run_batch(spec, model, batch_support.contract()), golden)
    assert {p.name for p in partition.iterdir()} == {*_parts(partition), "manifest.json"}

    # told to wait, the second run waits for the first and then finds the partition committed
    spec = big.spec(tmp_path / "waiting", DAY, rows_per_part=ROWS_PER_PART)
    partition = batch.partition_dir(spec.out_dir, model, DAY)
    staging = commit.staging_path(partition)
    assert race(spec.model_copy(update={"wait_for_lock": True}), tmp_path / "release-2") == (0, 0)
    manifest_stat = (partition / "manifest.json").stat()
    result = batch.run_batch(spec, model, batch_support.contract())
    assert not result.committed and (partition / "manifest.json").stat() == manifest_stat
    _assert_equals_golden(result, golden)
