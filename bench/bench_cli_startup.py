"""Start-up time of ``fraud --help`` against a bare interpreter start, both as fresh processes.

Usage: ``.venv/bin/python bench/bench_cli_startup.py [--repeat N]``. Target: ``fraud --help`` under
2 s on a 2-core machine (the CLI imports heavy libraries only inside the commands that use them).
Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _median_seconds(command: list[str], repeat: int) -> float:
    subprocess.run(command, check=True, capture_output=True)  # warm-up: .pyc files, page cache
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    fraud = str(Path(sys.executable).parent / "fraud")
    bare = _median_seconds([sys.executable, "-c", "pass"], args.repeat)
    help_seconds = _median_seconds([fraud, "--help"], args.repeat)
    validate_help = _median_seconds([fraud, "validate", "--help"], args.repeat)
    print(
        json.dumps(
            {
                "benchmark": "fraud --help start-up vs bare python",
                "command": f"python bench/bench_cli_startup.py --repeat {args.repeat}",
                "bare_python_seconds": round(bare, 3),
                "fraud_help_seconds": round(help_seconds, 3),
                "fraud_validate_help_seconds": round(validate_help, 3),
                "ratio_vs_bare_python": round(help_seconds / bare, 1),
                "python": platform.python_version(),
                "machine": f"{platform.platform()} ({platform.machine()}, {os.cpu_count()} cpus)",
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
