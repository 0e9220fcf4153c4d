"""Time the Feast feature store: online retrieval of one transaction, and historical retrieval.

Usage: ``.venv/bin/python bench/bench_feature_store.py [--online-calls N] [--historical-rows 100000,1000000]
[--redis HOST:PORT | --no-redis] [--naive-rows N]``.

Data: the simulator at the handbook's size (5,000 customers, 10,000 terminals, 183 days, ~1.76M
transactions), features from ``build_features``, the three entity tables written with UTC event
times into a temporary folder, a fresh registry and online store there too.

* ``online``: ``store.online_features`` for one transaction (customer + terminal + request data,
  through ``fraud_v1``, the on-demand view included, with its worker-thread deadline), N calls on
  transactions drawn at random, after 500 warm-up calls: p50/p99/mean in ms, on the embedded
  SQLite store and on Redis (the production profile; skipped when Redis does not answer). The
  bare ``FeatureStore.get_online_features`` call is timed the same way, to show the wrapper's cost.
* ``historical``: ``store.historical_features`` for N entity rows (random transactions, so no row
  is dropped), for each N in ``--historical-rows``; wall time and rows/s.
* ``naive_timestamps`` (with ``--naive-rows N``): the same historical retrieval of N rows over
  tables whose event times are timezone-naive, as ``fraud features build`` wrote them at the time
  of writing: Feast's file store then converts them row by row in Python.

Prints one JSON object (machine, versions, date, command); asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.data.simulator import SimulatorConfig, simulate
from fraud_detection.features import store
from fraud_detection.features.build import table_file
from fraud_detection.features.engineering import FeatureConfig, build_features, split_feature_tables

FEATURE_CONFIG = FeatureConfig(windows_days=[1, 7, 30], label_delay_days=7, history_days=30)
PROD_PROFILE = Path("deployments/feast/prod/feature_store.yaml")


def _write_tables(features: pd.DataFrame, out_dir: Path, *, utc: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = split_feature_tables(features, FEATURE_CONFIG)
    for name in ("customer", "terminal", "customer_terminal"):
        table = tables[name]
        if utc:
            table = table.assign(event_timestamp=table["event_timestamp"].dt.tz_localize("UTC"))
        (out_dir / table_file(name)).write_bytes(parquet_bytes(table))
    return out_dir


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "calls": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def _time_online(
    handle: store.FeatureStoreHandle, requests: list[store.TransactionRequest], warmup: int
) -> dict[str, object]:
    from fraud_detection.features.repo import definitions as d

    for request in requests[:warmup]:
        store.online_features(handle, request, timeout_s=1.0)
    timings, degraded = [], 0
    for request in requests:
        started = time.perf_counter()
        result = store.online_features(handle, request, timeout_s=1.0)
        timings.append(time.perf_counter() - started)
        degraded += result.degraded
    service = handle.feast.get_feature_service(d.FEATURE_SERVICE_NAME)
    rows = [
        {
            d.CUSTOMER_KEY: r.customer_id,
            d.TERMINAL_KEY: r.terminal_id,
            d.REQUEST_AMOUNT: r.amount,
            d.REQUEST_TIMESTAMP: r.timestamp.replace(tzinfo=datetime.UTC),
        }
        for r in requests
    ]
    raw = []
    for row in rows:
        started = time.perf_counter()
        handle.feast.get_online_features(features=service, entity_rows=[row]).to_dict()
        raw.append(time.perf_counter() - started)
    return {
        "online_features": _percentiles(timings),
        "degraded": degraded,
        "bare_feast_call": _percentiles(raw),
    }


def _time_historical(
    handle: store.FeatureStoreHandle, transactions: pd.DataFrame, n: int, seed: int, chunk_rows: int
) -> dict:
    rows = transactions.sample(n=n, random_state=seed)[list(store.ENTITY_ROW_COLUMNS)]
    started = time.perf_counter()
    out = store.historical_features(handle, rows, chunk_rows=chunk_rows)
    seconds = time.perf_counter() - started
    assert len(out) == n
    return {
        "entity_rows": n,
        "chunk_rows": chunk_rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n / seconds),
        "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> None:
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints materialisation progress
        report = _run(argv)
    print(json.dumps(report, indent=2))


def _run(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--online-calls", type=int, default=10_000)
    parser.add_argument("--historical-rows", default="100000,1000000", help="comma-separated sizes")
    parser.add_argument("--redis", default="127.0.0.1:6379", help="host:port of the Redis to measure")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis measurement")
    parser.add_argument("--naive-rows", type=int, default=0, help="also time N rows over naive timestamps")
    parser.add_argument("--chunk-rows", type=int, default=100_000, help="historical_features chunk size")
    parser.add_argument("--no-online", action="store_true", help="skip the online measurements")
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=183)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.historical_rows.split(",") if size]

    results: dict[str, object] = {}
    started = time.perf_counter()
    config = SimulatorConfig(n_customers=args.customers, n_terminals=args.terminals, n_days=args.days)
    transactions = simulate(config).transactions
    features = build_features(transactions, FEATURE_CONFIG)
    results["data"] = {
        "transactions": len(transactions),
        "prepare_seconds": round(time.perf_counter() - started, 1),
    }
    rng = np.random.default_rng(0)
    picks = transactions.iloc[rng.integers(0, len(transactions), size=args.online_calls)]
    requests = [
        store.TransactionRequest(int(c), int(t), float(a), ts.to_pydatetime())
        for c, t, a, ts in zip(
            picks["customer_id"], picks["terminal_id"], picks["amount"], picks["event_timestamp"], strict=True
        )
    ]
    begin = transactions["event_timestamp"].min() - pd.Timedelta(days=1)
    end = transactions["event_timestamp"].max() + pd.Timedelta(seconds=1)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        feature_dir = _write_tables(features, root / "features", utc=True)
        handle = store.open_store(
            store.FeatureStoreSettings(feature_store_dir=root / "store"), feature_dir, FEATURE_CONFIG
        )
        store.apply(handle)
        started = time.perf_counter()
        store.materialize(handle, begin, end)
        results["materialize_sqlite_seconds"] = round(time.perf_counter() - started, 2)
        if not args.no_online:
            results["online_sqlite"] = _time_online(handle, requests, warmup=500)
        results["historical"] = [
            _time_historical(handle, transactions, n, seed=i, chunk_rows=args.chunk_rows)
            for i, n in enumerate(sizes)
        ]
        handle.close()

        results["online_redis"] = _redis(args, root, feature_dir, requests, begin, end)

        if args.naive_rows:
            naive_dir = _write_tables(features, root / "naive", utc=False)
            naive = store.open_store(
                store.FeatureStoreSettings(feature_store_dir=root / "naive_store"), naive_dir, FEATURE_CONFIG
            )
            store.apply(naive)
            results["naive_timestamps"] = _time_historical(
                naive, transactions, args.naive_rows, seed=99, chunk_rows=args.chunk_rows
            )
            naive.close()

    return {
        "benchmark": "feature_store",
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "versions": {
            name: version(name) for name in ("feast", "redis", "pandas", "numpy", "pyarrow", "dask")
        },
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **results,
    }


def _redis(args, root, feature_dir, requests, begin, end) -> dict[str, object]:  # type: ignore[no-untyped-def]
    if args.no_redis or args.no_online:
        return {"skipped": "--no-redis or --no-online"}
    import redis

    host, port = args.redis.rsplit(":", 1)
    try:
        server = redis.Redis(host=host, port=int(port), socket_connect_timeout=0.5).info("server")[
            "redis_version"
        ]
    except redis.RedisError as err:
        return {"skipped": f"redis at {args.redis} unavailable: {err}"}
    os.environ["FRAUD_FEAST_REGISTRY_URL"] = f"sqlite:///{root / 'redis_registry.db'}"
    os.environ["FRAUD_REDIS_HOST_PORT"] = args.redis
    settings = store.FeatureStoreSettings(
        feature_store_dir=root / "redis_store",
        feast_config=PROD_PROFILE,
        feast_project=f"fraud_bench_{uuid.uuid4().hex[:8]}",
    )
    handle = store.open_store(settings, feature_dir, FEATURE_CONFIG)
    try:
        store.apply(handle)
        started = time.perf_counter()
        store.materialize(handle, begin, end)
        seconds = round(time.perf_counter() - started, 2)
        return {
            "server_version": server,
            "materialize_seconds": seconds,
            **_time_online(handle, requests, warmup=500),
        }
    finally:
        handle.feast.teardown()
        handle.close()


if __name__ == "__main__":
    main()
