"""Time the transaction simulator at its default (handbook) size, against a per-row loop baseline.

Usage: ``.venv/bin/python bench/bench_simulator.py [--repeat N] [--baseline-customers N]``.

* ``simulate``: ``simulate(SimulatorConfig())``, in memory (median of N runs);
* ``simulate_to_folder``: the same plus writing 183 daily partitions and the manifest, i.e. what
  ``fraud simulate`` does (median of N runs, each into a fresh temporary folder);
* ``baseline``: the straightforward implementation the handbook's notebook uses (a Python loop
  over customers, days and transactions) for the first ``--baseline-customers`` customers, with
  the same profiles and reachable terminals; its rows per second are the reference for the ratio.
  It covers transaction generation only (no fraud scenarios), so the ratio understates our lead.

Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data.ingest import simulate_to_folder
from fraud_detection.data.simulator import SimulatorConfig, simulate


def _loop_baseline(data, n_customers: int, n_days: int, radius: float, seed: int = 0) -> int:
    """Per-customer, per-day, per-transaction Python loop (the handbook's structure). Returns rows."""
    customers = data.customers.head(n_customers)
    terminals = data.terminals[["x", "y"]].to_numpy()
    rows = []
    for customer in customers.itertuples(index=False):
        rng = np.random.default_rng(seed + customer.customer_id)
        distance = np.sqrt(((terminals - np.array([customer.x, customer.y])) ** 2).sum(axis=1))
        reachable = np.flatnonzero(distance < radius)
        if len(reachable) == 0:
            continue
        for day in range(n_days):
            for _ in range(rng.poisson(customer.mean_nb_tx_per_day)):
                seconds = int(rng.normal(86_400 / 2, 20_000))
                if 0 < seconds < 86_400:
                    amount = rng.normal(customer.mean_amount, customer.std_amount)
                    if amount < 0:
                        amount = rng.uniform(0, customer.mean_amount * 2)
                    terminal = int(rng.choice(reachable))
                    rows.append(
                        [seconds + day * 86_400, day, customer.customer_id, terminal, round(amount, 2)]
                    )
    frame = pd.DataFrame(rows, columns=["seconds", "day", "customer_id", "terminal_id", "amount"])
    return len(frame.sort_values("seconds"))


def _median_seconds(action, repeat: int) -> tuple[float, list[float]]:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), timings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="number of timed runs (median is reported)")
    parser.add_argument(
        "--baseline-customers", type=int, default=250, help="customers the loop baseline simulates"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    config = SimulatorConfig()
    data = simulate(config)  # warm-up, and the rows we report
    rows = len(data.transactions)
    seconds, timings = _median_seconds(lambda: simulate(config), args.repeat)

    def write_once() -> None:
        with tempfile.TemporaryDirectory() as folder:
            simulate_to_folder(config, Path(folder) / "raw")

    write_seconds, _ = _median_seconds(write_once, args.repeat)

    start = time.perf_counter()
    baseline_rows = _loop_baseline(data, args.baseline_customers, config.n_days, config.radius)
    baseline_seconds = time.perf_counter() - start
    baseline_rate = baseline_rows / baseline_seconds

    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    print(
        json.dumps(
            {
                "benchmark": "simulate(SimulatorConfig()) vs a per-row Python loop",
                "command": f"python bench/bench_simulator.py --repeat {args.repeat}",
                "rows": rows,
                "repeat": args.repeat,
                "simulate_seconds": round(seconds, 3),
                "simulate_seconds_all": [round(t, 3) for t in timings],
                "simulate_rows_per_second": round(rows / seconds),
                "simulate_to_folder_seconds": round(write_seconds, 3),
                "simulate_to_folder_rows_per_second": round(rows / write_seconds),
                "baseline_loop_rows": baseline_rows,
                "baseline_loop_seconds": round(baseline_seconds, 3),
                "baseline_loop_rows_per_second": round(baseline_rate),
                "speedup_vs_loop": round((rows / seconds) / baseline_rate, 1),
                "peak_rss_mib": round(peak_mib, 1),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "pandas": pd.__version__,
                "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cpus)",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
