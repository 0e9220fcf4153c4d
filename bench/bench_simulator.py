"""Time the transaction simulator at its default (handbook) size.

Usage: ``.venv/bin/python bench/bench_simulator.py [--repeat N]``. Prints one JSON object with the
median wall time of N runs; makes no assertion on time (machines differ).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import statistics
import sys
import time

import numpy as np
import pandas as pd

from fraud_detection.data.simulator import SimulatorConfig, simulate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="number of timed runs (median is reported)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    config = SimulatorConfig()
    timings: list[float] = []
    rows = 0
    for _ in range(args.repeat):
        start = time.perf_counter()
        data = simulate(config)
        timings.append(time.perf_counter() - start)
        rows = len(data.transactions)
        del data  # keep peak RSS to one run's worth

    seconds = statistics.median(timings)
    # ru_maxrss is KiB on Linux, bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    print(
        json.dumps(
            {
                "benchmark": "simulate(SimulatorConfig())",
                "rows": rows,
                "repeat": args.repeat,
                "seconds": round(seconds, 4),
                "seconds_all": [round(t, 4) for t in timings],
                "rows_per_second": round(rows / seconds),
                "peak_rss_mib": round(peak_mib, 1),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "pandas": pd.__version__,
                "machine": platform.platform(),
                "processor": platform.machine(),
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            }
        )
    )


if __name__ == "__main__":
    main()
