"""Validation + quality gate on the handbook's 1.75M raw transactions, against a plain read.

Usage: ``.venv/bin/python bench/bench_validation.py [--repeat N] [--path FILE]``.

Each phase runs in its own fresh subprocess, so each peak RSS is that phase's alone; inside it,
one untimed warm-up (imports, page cache) and then N timed runs, of which the median is reported:

* ``baseline``: ``pandas.read_parquet`` of the file (the reference);
* ``read``: our contract-aware reader (``read_transactions``: rename, normalise);
* ``validate``: read + schema validation + quality checks + content digest (``validate_dataset``).

The target is that validation adds at most 2x the read time:
``(validate - baseline) / baseline <= 2``. Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PATH = Path("../shared/datasets/fraud-handbook/raw/transactions_raw.parquet")
CONTRACTS_DIR = Path("configs/contract")
AS_OF = dt.datetime(2018, 10, 1)


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_phase(phase: str, path: Path, repeat: int) -> dict:
    """Run one phase in this process: a warm-up, then ``repeat`` timed runs."""
    import pandas as pd

    from fraud_detection.data.contract import load_contract
    from fraud_detection.data.ingest import validate_dataset
    from fraud_detection.data.loaders import read_transactions

    contract = load_contract("handbook", CONTRACTS_DIR)

    def once() -> dict:
        if phase == "baseline":
            return {"rows": len(pd.read_parquet(path))}
        if phase == "read":
            return {"rows": len(read_transactions(str(path), contract)[0])}
        report = validate_dataset(str(path), contract, as_of=AS_OF).report
        return {"rows": report.n_valid_rows, "passed": report.passed, "digest": report.content_digest}

    once()
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = once()
        timings.append(time.perf_counter() - start)
    return {"seconds": statistics.median(timings), "peak_rss_mib": _peak_rss_mib(), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--phase", choices=["baseline", "read", "validate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.path.is_file():
        parser.error(f"--path {str(args.path)!r} does not exist (the handbook data lives in ../shared)")
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.path, args.repeat)))
        return

    results: dict[str, dict] = {}
    for phase in ("baseline", "read", "validate"):
        command = [
            sys.executable,
            __file__,
            "--phase",
            phase,
            "--path",
            str(args.path),
            "--repeat",
            str(args.repeat),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[phase] = json.loads(output)

    baseline = results["baseline"]["seconds"]
    validate = results["validate"]["seconds"]
    import numpy as np
    import pandas as pd
    import pandera

    print(
        json.dumps(
            {
                "benchmark": "validate_dataset(handbook raw) vs pandas.read_parquet",
                "rows": results["validate"]["rows"],
                "passed": results["validate"]["passed"],
                "content_digest": results["validate"]["digest"],
                "repeat": args.repeat,
                "baseline_read_seconds": round(baseline, 3),
                "contract_read_seconds": round(results["read"]["seconds"], 3),
                "validate_total_seconds": round(validate, 3),
                "validation_added_seconds": round(validate - baseline, 3),
                "added_over_read_ratio": round((validate - baseline) / baseline, 2),
                "peak_rss_mib": {phase: round(run["peak_rss_mib"], 1) for phase, run in results.items()},
                "python": platform.python_version(),
                "pandas": pd.__version__,
                "pandera": pandera.__version__,
                "numpy": np.__version__,
                "machine": f"{platform.platform()} ({platform.machine()}, {__import__('os').cpu_count()} cpus)",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
