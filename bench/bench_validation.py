"""Validation + quality gate on the handbook's 1.75M raw transactions, against a plain read.

Usage: ``.venv/bin/python bench/bench_validation.py [--repeat N] [--path FILE]``.

Three phases, timed interleaved in one process (so allocator and page-cache state are shared, and
machine noise hits all three alike), after one untimed warm-up round; medians of N rounds:

* ``baseline``: ``pandas.read_parquet`` of the file (the reference);
* ``read``: our contract-aware reader (``read_transactions``: integrity, rename, normalise);
* ``validate``: read + schema validation + quality checks + content digest (``validate_dataset``).

Peak RSS is measured separately: each phase once in its own fresh subprocess.
The target is that validation adds at most 2x the read time: ``(validate - baseline) / baseline``.
Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_PATH = Path("../shared/datasets/fraud-handbook/raw/transactions_raw.parquet")
CONTRACTS_DIR = Path("configs/contract")
AS_OF = dt.datetime(2018, 10, 1)
PHASES = ("baseline", "read", "validate")


def _phases(path: Path) -> dict[str, Callable[[], object]]:
    import pandas as pd

    from fraud_detection.data.contract import load_contract
    from fraud_detection.data.ingest import validate_dataset
    from fraud_detection.data.loaders import read_transactions

    contract = load_contract("handbook", CONTRACTS_DIR)
    return {
        "baseline": lambda: pd.read_parquet(path),
        "read": lambda: read_transactions(str(path), contract),
        "validate": lambda: validate_dataset(str(path), contract, as_of=AS_OF).report,
    }


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--rss-of", choices=PHASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.path.is_file():
        parser.error(f"--path {str(args.path)!r} does not exist (the handbook data lives in ../shared)")
    if args.rss_of:
        _phases(args.path)[args.rss_of]()
        print(json.dumps({"peak_rss_mib": _peak_rss_mib()}))
        return

    # Peak RSS first, while this process is small: Linux keeps a parent's high-water mark in a
    # child's ru_maxrss across fork and exec.
    rss = {}
    for phase in PHASES:
        command = [sys.executable, __file__, "--rss-of", phase, "--path", str(args.path)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rss[phase] = round(json.loads(output)["peak_rss_mib"], 1)

    phases = _phases(args.path)
    report = phases["validate"]()  # warm-up round, and the result we report on
    for phase in ("baseline", "read"):
        phases[phase]()
    timings: dict[str, list[float]] = {phase: [] for phase in PHASES}
    for _ in range(args.repeat):
        for phase in PHASES:
            start = time.perf_counter()
            phases[phase]()
            timings[phase].append(time.perf_counter() - start)
    seconds = {phase: statistics.median(values) for phase, values in timings.items()}

    import numpy as np
    import pandas as pd
    import pandera

    added = seconds["validate"] - seconds["baseline"]
    print(
        json.dumps(
            {
                "benchmark": "validate_dataset(handbook raw) vs pandas.read_parquet",
                "command": f"python bench/bench_validation.py --repeat {args.repeat}",
                "rows": report.n_valid_rows,
                "passed": report.passed,
                "content_digest": report.content_digest,
                "repeat": args.repeat,
                "baseline_read_seconds": round(seconds["baseline"], 3),
                "contract_read_seconds": round(seconds["read"], 3),
                "validate_total_seconds": round(seconds["validate"], 3),
                "validation_added_seconds": round(added, 3),
                "added_over_read_ratio": round(added / seconds["baseline"], 2),
                "peak_rss_mib": rss,
                "python": platform.python_version(),
                "pandas": pd.__version__,
                "pandera": pandera.__version__,
                "numpy": np.__version__,
                "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cpus)",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
