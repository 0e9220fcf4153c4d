"""Drift pass: our summary-based ``detect_drift`` vs Evidently 0.7 ``DataDriftPreset``, side by side.

Usage: ``.venv/bin/python bench/bench_drift.py [--rows 1000000] [--columns 20] [--big-rows 10000000]``

Data: float64 standard normal columns, ``--rows`` reference and ``--rows`` current rows; in the current
frame ``x00`` has a mean shift (+0.3 sd) and ``x01`` a variance-only shift (1.5x sd), the case where PSI
misses one of the two (STACK-NOTES, Evidently section). Timed in one process, in this order:

1. ours, whole pass from raw frames: layout (edges from a 100k-row seeded sample) + reference summary +
   current summary + comparison; then the same with the stored reference (current summary + comparison);
2. Evidently: ``Dataset.from_pandas`` x2 + ``Report([DataDriftPreset()]).run(current, reference)``, warm
   (a 2,000-row run first pays the lazy imports);
3. ours on ``--big-rows`` current rows, summarised in 1M-row chunks and merged (plain loop), and the
   same frame as a Dask DataFrame (threads scheduler) through ``summarise_dask``.

Prints one JSON object: times, the ratio, both decisions (asserted equal) and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import time

import numpy as np
import pandas as pd


def make_frames(rows: int, columns: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = [f"x{i:02d}" for i in range(columns)]
    reference = pd.DataFrame({name: rng.standard_normal(rows) for name in names})
    current = pd.DataFrame({name: rng.standard_normal(rows) for name in names})
    current["x00"] += 0.3
    current["x01"] *= 1.5
    return reference, current


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evidently_pass(
    reference: pd.DataFrame, current: pd.DataFrame
) -> tuple[list[str], float, dict[str, float]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(reference.columns))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    cur = Dataset.from_pandas(current, data_definition=definition)
    ref = Dataset.from_pandas(reference, data_definition=definition)
    timings["from_pandas_s"] = time.perf_counter() - start
    start = time.perf_counter()
    snapshot = Report([DataDriftPreset()], include_tests=True).run(cur, ref)
    timings["run_s"] = time.perf_counter() - start
    result = snapshot.dict()
    drifted = sorted(
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["name"].startswith("Value Drift for column") and t["status"].value == "FAIL"
    )
    return drifted, float(result["metrics"][0]["value"]["share"]), timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=20)
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=1_000_000)
    parser.add_argument("--skip-evidently", action="store_true")
    args = parser.parse_args()

    from fraud_detection.evaluation import detect_drift
    from fraud_detection.evaluation.drift import (
        compare_summaries,
        merge_summaries,
        summarise,
        summarise_dask,
        summarise_reference,
    )

    out: dict[str, object] = {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "load_avg_at_start": os.getloadavg(),
        "rows": args.rows,
        "columns": args.columns,
    }
    reference, current = make_frames(args.rows, args.columns, seed=0)

    start = time.perf_counter()
    ours = detect_drift(reference, current)
    out["ours_full_pass_s"] = time.perf_counter() - start
    start = time.perf_counter()
    stored = summarise_reference(reference)
    out["ours_reference_summary_s"] = time.perf_counter() - start
    start = time.perf_counter()
    with_stored = compare_summaries(stored, summarise(current, stored.layout, role="current"))
    out["ours_current_only_s"] = time.perf_counter() - start
    assert with_stored.drifted_columns == ours.drifted_columns
    out["ours_drifted"] = ours.drifted_columns
    out["ours_scores"] = {name: round(c.score or 0.0, 5) for name, c in ours.columns.items() if c.drifted}
    out["peak_rss_mb_after_ours"] = peak_rss_mb()

    if not args.skip_evidently:
        small_ref, small_cur = make_frames(2_000, args.columns, seed=1)
        start = time.perf_counter()
        evidently_pass(small_ref, small_cur)  # imports and warm-up
        out["evidently_import_and_warmup_s"] = time.perf_counter() - start
        start = time.perf_counter()
        drifted, share, timings = evidently_pass(reference, current)
        out["evidently_total_s"] = time.perf_counter() - start
        out.update({f"evidently_{k}": v for k, v in timings.items()})
        out["evidently_drifted"] = drifted
        out["evidently_share"] = share
        out["decisions_agree"] = drifted == sorted(ours.drifted_columns) and share == ours.drift_share
        out["ratio_full_pass"] = out["evidently_total_s"] / out["ours_full_pass_s"]  # type: ignore[operator]
        out["ratio_current_only"] = out["evidently_total_s"] / out["ours_current_only_s"]  # type: ignore[operator]
        out["peak_rss_mb_after_evidently"] = peak_rss_mb()
        assert out["decisions_agree"], (drifted, ours.drifted_columns)
    del current

    if args.big_rows:
        chunks = []
        for i, begin in enumerate(range(0, args.big_rows, args.chunk_rows)):
            rows = min(args.chunk_rows, args.big_rows - begin)
            chunks.append(make_frames(rows, args.columns, seed=100 + i)[1])
        start = time.perf_counter()
        merged = merge_summaries(summarise(chunk, stored.layout, role="current") for chunk in chunks)
        big = compare_summaries(stored, merged)
        out["ours_big_chunks_s"] = time.perf_counter() - start
        out["big_rows"] = merged.n_rows
        out["big_drifted"] = big.drifted_columns
        import dask
        import dask.dataframe as dd

        frame = dd.from_pandas(pd.concat(chunks, ignore_index=True), npartitions=len(chunks))
        del chunks
        start = time.perf_counter()
        with dask.config.set(scheduler="threads"):
            big_dask = compare_summaries(stored, summarise_dask(frame, stored.layout, role="current"))
        out["ours_big_dask_threads_s"] = time.perf_counter() - start
        assert big_dask.drifted_columns == big.drifted_columns
        out["peak_rss_mb_end"] = peak_rss_mb()

    out["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
