"""Two costs on the serving path that the HTTP benchmark hides, each against its baseline in the same run.

Usage: ``.venv/bin/python bench/bench_serving_internals.py [--trees 300] [--rounds 5]
[--bundle DIR --features PARQUET]`` (``--bundle bench/serving/artifacts/fraud/bundle --features
bench/serving/artifacts/fraud/features/transaction_features.parquet``: the serving benchmark's
model on real feature rows instead of the synthetic booster)
(pin it as the server is pinned: ``taskset -c 1 .venv/bin/python bench/bench_serving_internals.py``)

1. **The model call.** Median µs per call for 1, 4, 16, 32, 64 and 1,000 rows of a booster of
   ``--trees`` trees, depth 6, 28 features, one thread, three ways: ``Booster.inplace_predict``
   (XGBoost's Python wrapper, the baseline), XGBoost's C predict called directly (an unprepared
   ``ModelBundle.predict_proba``), and the numba-compiled bit-vector trees of
   :mod:`fraud_detection.models.tree_arrays` (what a prepared bundle, i.e. the server, uses). The
   answers are checked bit for bit.
2. **The event writer's longest stall.** The writer thread shares the server's core and holds the
   GIL while it builds an Arrow table. A probe thread sleeps 1 ms in a loop and records how late
   it wakes while the writer turns 60,000 one-row events (a minute of c=1 traffic) into a file:
   built as one table at the roll (the baseline, the writer's former way) against one table per
   0.2 s poll (``PredictionSink``'s way). Max and p99.9 lateness in ms.

Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _median_us(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    for _ in range(min(200, reps)):
        fn()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1e6, 1)


def _synthetic_bundle(trees: int) -> tuple[Any, np.ndarray]:
    """A booster of ``trees`` full depth-6 trees on 28 normal features, and rows like its training rows."""
    import xgboost

    from fraud_detection.models.bundle import ModelBundle, TrainingWindow

    rng = np.random.default_rng(0)
    names = tuple(f"f{i}" for i in range(28))
    x = rng.normal(size=(20_000, len(names))).astype(np.float32)
    y = (x[:, 0] + x[:, 1] * x[:, 2] + rng.normal(size=len(x)) > 1).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(x, y, feature_names=list(names)), trees)
    window = TrainingWindow(dt.datetime(2024, 1, 1), dt.datetime(2024, 2, 1))
    return ModelBundle("xgboost", names, 0.5, "fraud_v1", window, {}, booster=booster), x


def _real_bundle(bundle_dir: Path, features: Path) -> tuple[Any, np.ndarray]:
    """A saved bundle, and the newest 20,000 rows of a feature table in its feature order."""
    import pyarrow.parquet as pq

    from fraud_detection.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    assert bundle.booster is not None
    bundle.booster.set_param({"nthread": 1})
    table = pq.read_table(features, columns=list(bundle.feature_names))
    x = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in bundle.feature_names])
    return bundle, np.ascontiguousarray(x[-20_000:], dtype=np.float32)


def model_call(trees: int, rounds: int, bundle_dir: Path | None, features: Path | None) -> dict[str, object]:
    import dataclasses

    if bundle_dir is not None and features is not None:
        bundle, x = _real_bundle(bundle_dir, features)
    else:
        bundle, x = _synthetic_bundle(trees)
    booster = bundle.booster
    prepared = dataclasses.replace(bundle)  # a second bundle over the same booster, then prepared
    assert prepared.prepare_compiled_trees(), "the compiled trees did not reproduce XGBoost"
    compiled = prepared._compiled_trees
    assert compiled is not None
    result: dict[str, object] = {}
    for rows in (1, 4, 16, 32, 64, 1000):
        matrix = np.ascontiguousarray(x[:rows])
        wrapper = booster.inplace_predict(matrix).astype(np.float64)
        assert np.array_equal(bundle.predict_proba(matrix), wrapper), "the answers differ"
        assert np.array_equal(compiled.predict_proba(matrix), wrapper), "the compiled trees' answers differ"
        reps = 3000 if rows < 1000 else 300
        per_round = [
            (
                _median_us(lambda m=matrix: booster.inplace_predict(m), reps),
                _median_us(lambda m=matrix: bundle.predict_proba(m), reps),
                _median_us(lambda m=matrix: compiled.predict_proba(m), reps),
            )
            for _ in range(rounds)
        ]
        wrapper_us = statistics.median(w for w, _, _ in per_round)
        direct_us = statistics.median(d for _, d, _ in per_round)
        compiled_us = statistics.median(c for _, _, c in per_round)
        result[f"{rows}_rows"] = {
            "inplace_predict_us": wrapper_us,
            "xgboost_c_predict_us": direct_us,
            "compiled_trees_us": compiled_us,
            "c_predict_over_wrapper": round(direct_us / wrapper_us, 3),
            "compiled_trees_over_c_predict": round(compiled_us / direct_us, 3),
        }
    return result


def _probe_lateness(work) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Run ``work`` in a thread while this thread sleeps 1 ms at a time; ms of lateness per wake."""
    late: list[float] = []
    thread = threading.Thread(target=work)
    thread.start()
    while thread.is_alive():
        started = time.perf_counter()
        time.sleep(0.001)
        late.append((time.perf_counter() - started - 0.001) * 1e3)
    thread.join()
    values = np.array(late)
    return {"max_ms": round(float(values.max()), 2), "p999_ms": round(float(np.quantile(values, 0.999)), 2)}


def event_writer_stall(events_n: int) -> dict[str, object]:
    from fraud_detection.data.raw_store import parquet_bytes
    from fraud_detection.inference import events
    from fraud_detection.inference.requests import TransactionBatch
    from fraud_detection.inference.scorer import Scores

    names = tuple(f"f{i}" for i in range(28))
    rng = np.random.default_rng(1)

    def item(k: int) -> events._Item:
        batch = TransactionBatch(
            np.array([k]), np.array([k % 4000]), np.array([k % 8000]), rng.random(1) * 100,
            np.array([1_700_000_000_000_000 + k]), {},
        )  # fmt: skip
        p = rng.random(1)
        scores = Scores(
            batch.transaction_id, p, (p > 0.5).astype(np.int8), np.zeros(1, bool), ((),),
            rng.random((1, len(names))).astype(np.float32),
        )  # fmt: skip
        return events._Item([f"r{k}"], batch, scores, "v1", names, dt.datetime.now(dt.UTC))

    items = [item(k) for k in range(events_n)]

    def one_table_at_the_roll() -> None:
        parquet_bytes(events._table(items), dictionary=events._STRING_COLUMNS)

    def per_poll() -> None:
        with tempfile.TemporaryDirectory() as folder:
            sink = events.PredictionSink(Path(folder), roll_seconds=3600, roll_rows=events_n)
            # the traffic arrives over time: a poll's worth (0.2 s at 1,000 requests/s) at a time
            for start in range(0, events_n, 200):
                for one in items[start : start + 200]:
                    sink._buffer.append(one)  # what submit does, without its queue limit
                time.sleep(0.2)
            sink.close(timeout=60)

    return {
        "events": events_n,
        "one_table_at_the_roll": _probe_lateness(one_table_at_the_roll),
        "a_table_per_poll": _probe_lateness(per_poll),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--bundle", type=Path, help="a saved bundle to time instead of the synthetic booster")
    parser.add_argument(
        "--features", type=Path, help="with --bundle: a feature table (parquet) to take rows from"
    )
    args = parser.parse_args()

    import xgboost

    from fraud_detection.utils.logging import configure_logging

    configure_logging("WARNING", json_logs=True)
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "xgboost": xgboost.__version__,
        "model_call": model_call(args.trees, args.rounds, args.bundle, args.features),
        "event_writer_stall": event_writer_stall(args.events),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
