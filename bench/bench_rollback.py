"""Rollback time: from `fraud rollback` (the registry alias moves back) until a running server answers
with the previous model, while a client scores without pause (issue 8).

A real ``fraud serve`` process on the small served world of the tests (``tests/serving_support.py``:
200 customers, 40 days, a 30-tree booster, SQLite online store), serving
``models:/NAME@champion`` from a temporary MLflow registry with two versions. For each alias poll
interval (``FRAUD_SERVE_RELOAD_INTERVAL_S``) and for the explicit reload endpoint it promotes v2,
waits until v2 answers, rolls back, and measures the seconds until v1 answers and the failed
requests meanwhile. The expected time is up to one poll interval plus the load (resolve, verify,
warm up); the endpoint reloads at once.

    .venv/bin/python bench/bench_rollback.py [--intervals 1,10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.serving_support import (  # noqa: E402  (the tests' world and client)
    MODEL_NAME,
    Stream,
    build_world,
    mlflow_registry,
    register,
    running_server,
    wait_until,
)

LOAD = f"/v2/repository/models/{MODEL_NAME}/load"


def measure(world, name: str, handle, interval_s: float, rounds: int, endpoint: bool) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from fraud_detection.models import registry

    env = {
        "FRAUD_MLFLOW_TRACKING_URI": handle.tracking_uri,
        "FRAUD_MLFLOW_ARTIFACT_ROOT": handle.artifact_root,
        "FRAUD_SERVE_RELOAD_INTERVAL_S": str(interval_s),
        "FRAUD_SERVE_REQUEST_TIMEOUT_S": "5",
    }
    registry.promote(name, "1")
    times = []
    with running_server(world, model=f"models:/{name}@champion", env=env) as server:
        with Stream(server.port, world.rows(1)[0], pause_s=0.005) as stream:
            assert wait_until(lambda: len(stream.answers) >= 5, 30)
            for _ in range(rounds):
                registry.promote(name, "2")
                if endpoint:
                    server.request("POST", LOAD, timeout=30)
                assert stream.wait_for_version("2", time.monotonic() - 60, interval_s + 30) is not None
                moved = time.monotonic()
                registry.rollback(name)
                if endpoint:
                    server.request("POST", LOAD, timeout=30)
                seconds = stream.wait_for_version("1", moved, interval_s + 30)
                assert seconds is not None, "v1 never answered after the rollback"
                times.append(seconds)
        failed = len(stream.failures())
        answered = len(stream.answers)
    how = "POST .../load after the rollback" if endpoint else f"alias poll every {interval_s:g} s"
    return {"how": how, "times": times, "failed": failed, "answered": answered}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intervals", default="1,10", help="alias poll intervals to measure, seconds")
    parser.add_argument("--rounds", type=int, default=3, help="promote/rollback rounds per setting")
    args = parser.parse_args()

    from fraud_detection.models.bundle import load_bundle, save_bundle

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = build_world(root / "world")
        v1 = load_bundle(world.bundle_dir)
        v2_dir = root / "bundle-v2"
        save_bundle(dataclasses.replace(v1, threshold=0.35), v2_dir)
        name = "fraud-rollback-bench"
        results = []
        with mlflow_registry(root / "mlflow") as handle:
            register(handle, name, world.bundle_dir, v1)
            register(handle, name, v2_dir, v1)
            for interval in (float(x) for x in args.intervals.split(",")):
                results.append(measure(world, name, handle, interval, args.rounds, endpoint=False))
            results.append(measure(world, name, handle, 30.0, args.rounds, endpoint=True))

    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}")
    print(
        "| how the server learns of the rollback | rollback → previous model answers (s): median [min, max] | requests | failed |"
    )
    print("|---|---:|---:|---:|")
    for r in results:
        times = r["times"]
        print(
            f"| {r['how']} | {statistics.median(times):.2f} [{min(times):.2f}, {max(times):.2f}] "
            f"| {r['answered']} | {r['failed']} |"
        )


if __name__ == "__main__":
    main()
