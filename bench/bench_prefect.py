"""Prefect's overhead per flow and per task on this machine, against calling the same functions directly.

Usage: .venv/bin/python bench/bench_prefect.py [--tasks 20] [--repeats 10] [--work-ms 5]

Each task does ``--work-ms`` of real work (a sleep-free busy loop), so the ratio says what share of a
small step the orchestration costs. Measured in one process, same run:

* direct: a plain function calling the task bodies (``task.fn``) in turn;
* the first flow call of the process (Prefect's ephemeral server starts: subprocess + migrations);
* steady-state flows with 0 and with ``--tasks`` tasks, heartbeats on (the default) and off
  (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY=None``): the wall time of a flow, the median task call as the
  flow sees it (minus the direct call: the per-task overhead) and the mean cost per task
  ((t(N tasks) - t(0)) / N, which includes the slow tail).

``PREFECT_HOME`` is a fresh tmp folder (a cold server database), telemetry is off.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time


def _busy(ms: float) -> float:
    end = time.perf_counter() + ms / 1000
    x = 0.0
    while time.perf_counter() < end:
        x += 1.0
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--work-ms", type=float, default=5.0)
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="bench_prefect_home_")
    os.environ.update(
        {
            "PREFECT_HOME": home,
            "DO_NOT_TRACK": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    started = time.perf_counter()
    import prefect
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    import_s = time.perf_counter() - started

    @task(cache_policy=NO_CACHE, persist_result=False)
    def step(i: int) -> float:
        return _busy(args.work_ms) + i

    call_seconds: list[float] = []  # each task call as the flow sees it

    @flow(persist_result=False)
    def chain(n: int) -> int:
        for i in range(n):
            t0 = time.perf_counter()
            step(i)
            call_seconds.append(time.perf_counter() - t0)
        return n

    def direct(n: int) -> int:
        for i in range(n):
            t0 = time.perf_counter()
            step.fn(i)
            call_seconds.append(time.perf_counter() - t0)
        return n

    def timed(call, *call_args) -> float:  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        call(*call_args)
        return time.perf_counter() - t0

    def measure(call, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
        """Median wall time of the whole call, and median time of one task call inside it."""
        call_seconds.clear()
        total = statistics.median(timed(call, n) for _ in range(args.repeats))
        return total, statistics.median(call_seconds) if call_seconds else 0.0

    n = args.tasks
    first_flow_s = timed(chain, 0)  # starts the ephemeral server
    timed(chain, n)  # warm the task path once
    rows: dict[str, tuple[float, float]] = {"direct": measure(direct, n)}
    for label, updates in (
        ("heartbeats on (default)", {}),
        ("heartbeats off", {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        with temporary_settings(updates=updates):
            rows[f"empty flow, {label}"] = measure(chain, 0)
            rows[f"flow of {n} tasks, {label}"] = measure(chain, n)

    direct_total, direct_task = rows["direct"]
    print(
        f"prefect {prefect.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{n} tasks x {args.work_ms} ms work, median of {args.repeats}"
    )
    print(
        f"import prefect: {import_s:.2f} s; first flow of the process (ephemeral server start): {first_flow_s:.2f} s"
    )
    print(
        f"{'':42s} {'wall s':>8s} {'x direct':>9s} {'task call ms':>13s} {'task overhead ms':>17s} "
        f"{'(wall - empty)/n ms':>20s}"
    )
    for label, (total, per_task) in rows.items():
        tasks = "tasks" in label or label == "direct"
        ratio = f"{total / direct_total:.1f}" if tasks else "-"
        overhead = f"{(per_task - direct_task) * 1000:.1f}" if per_task else "-"
        per = f"{per_task * 1000:.1f}" if per_task else "-"
        empty = rows.get(label.replace(f"flow of {n} tasks", "empty flow"), (0.0, 0.0))[0] if tasks else None
        spread = f"{(total - empty) / n * 1000:.1f}" if empty is not None and label != "direct" else "-"
        print(f"{label:42s} {total:8.3f} {ratio:>9s} {per:>13s} {overhead:>17s} {spread:>20s}")
    # Let the server's event recorder drain before the interpreter stops it (else cancelled-task noise).
    time.sleep(2)


if __name__ == "__main__":
    main()
