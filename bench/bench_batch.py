"""Batch scoring end to end (parquet in → features → score → parquet out), against raw XGBoost.

Usage: ``.venv/bin/python bench/bench_batch.py [--data handbook|simulated|both] [--rows N]
[--rounds R] [--dask local]``

Setup (not timed), in a temporary folder: a raw dataset whose one partition holds every row (the
whole handbook file, or ``--rows`` simulated transactions on one day), the feature tables built
from it by ``fraud features build``'s function, and a model bundle (the default training config's
shape: 200 trees of depth 4) trained on a sample of those features.

Timed, ``--rounds`` times, each into a fresh output folder: :func:`fraud_detection.inference.batch.run_batch`
end to end (pin, read and verify the partition, contract validation, point-in-time join over the
feature tables, ``FraudScorer`` scoring, output validation, parquet encoding, staged commit with
fsync). In the same round, on the same rows: ``Booster.inplace_predict`` on the float32 feature
matrix already in memory (the raw predict throughput). Reported: rows/s of both, their ratio, the
median over rounds, and one run's stage breakdown.

Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
HANDBOOK = REPO.parent / "shared" / "datasets" / "fraud-handbook" / "raw" / "transactions_raw.parquet"
CONTRACTS_DIR = REPO / "configs" / "contract"
FEATURE_CONFIG = REPO / "configs" / "features" / "default.yaml"
AS_OF = dt.datetime(2030, 1, 1)


def simulated_transactions(n: int, day: str = "2018-09-30", seed: int = 0) -> pd.DataFrame:
    """``n`` valid simulator-contract transactions on one day (50k cards, 10k terminals)."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 86_400, size=n))
    is_fraud = (rng.random(n) < 0.008).astype(np.int64)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "event_timestamp": (pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s")).astype(
                "datetime64[us]"
            ),
            "customer_id": rng.integers(0, 50_000, size=n).astype(np.int64),
            "terminal_id": rng.integers(0, 10_000, size=n).astype(np.int64),
            "amount": np.round(rng.gamma(2.0, 25.0, size=n), 2),
            "is_fraud": is_fraud,
            "fraud_scenario": is_fraud,
            "customer_age_band": rng.choice(["18-25", "26-35", "36-50", "51-65", "65+"], size=n).astype(
                object
            ),
        }
    )


def single_partition_dataset(frame: pd.DataFrame, out_dir: Path, contract: str, day: str) -> None:
    """A raw dataset folder whose one partition (dated ``day``) holds every row of ``frame``."""
    from fraud_detection.data.raw_store import (
        MANIFEST_FORMAT,
        FileEntry,
        Manifest,
        content_digest,
        parquet_bytes,
        write_manifest,
    )
    from fraud_detection.utils.io import atomic_write_bytes, sha256_bytes

    data = parquet_bytes(frame)
    relative = f"transactions/{day}.parquet"
    atomic_write_bytes(out_dir / relative, data)
    entry = FileEntry(path=relative, sha256=sha256_bytes(data), rows=len(frame), date=day)
    write_manifest(
        out_dir,
        Manifest(
            format=MANIFEST_FORMAT,
            kind="raw",
            contract=contract,
            rows=len(frame),
            content_digest=content_digest(frame),
            partitions=[entry],
        ),
    )


def train_bundle(features_dir: Path, out_dir: Path) -> Path:
    import xgboost as xgb

    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.models.bundle import ModelBundle, TrainingWindow, save_bundle

    config = load_feature_config(FEATURE_CONFIG)
    table = pd.read_parquet(features_dir / "transaction_features.parquet")
    sample = table.sample(n=min(len(table), 300_000), random_state=0)
    labels = (sample["terminal_risk_7d"] > 0.05).astype(int) | (sample["customer_amount_ratio_30d"] > 3)
    names = list(config.feature_names)
    matrix = xgb.DMatrix(sample[names].to_numpy(np.float32), label=labels.astype(int), feature_names=names)
    params = {"max_depth": 4, "eta": 0.1, "objective": "binary:logistic", "seed": 0, "tree_method": "hist"}
    booster = xgb.train(params, matrix, 200)
    ts = table["event_timestamp"]
    bundle = ModelBundle(
        model_type="xgboost",
        feature_names=tuple(names),
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=TrainingWindow(ts.min().to_pydatetime(), ts.max().to_pydatetime()),
        metadata={"feature_config": config.model_dump(mode="json")},
        booster=booster,
    )
    save_bundle(bundle, out_dir)
    return out_dir


def stage_breakdown(spec: Any, model: Any, contract: Any) -> dict[str, float]:
    """One run's stages timed one by one (the library's own steps, in order)."""
    from fraud_detection.data.validators import validate_transactions
    from fraud_detection.features import offline
    from fraud_detection.inference import batch
    from fraud_detection.inference.scorer import FraudScorer, bundle_feature_config

    times: dict[str, float] = {}

    def timed(name: str, call: Any) -> Any:
        started = time.perf_counter()
        out = call()
        times[name] = round(time.perf_counter() - started, 3)
        return out

    pinned = timed("pin inputs", lambda: batch.pin_inputs(spec, model, contract))
    frame, _ = timed("read + verify partition", lambda: batch.load_partition(spec, pinned, contract))
    valid = timed(
        "contract validation",
        lambda: validate_transactions(frame, contract, as_of=spec.logical_time, on_error="quarantine").valid,
    )
    tables = timed(
        "read feature tables", lambda: batch.load_features(spec, pinned, bundle_feature_config(model), valid)
    )
    # as run_batch joins: straight into the model's float32 matrix
    features = timed(
        "point-in-time join", lambda: offline.point_in_time_features(tables, valid, dtype=np.float32)
    )
    scorer = FraudScorer(model, threads=None)
    matrix = batch._bundle_matrix(scorer, features)
    ids = valid["transaction_id"].to_numpy(np.int64)
    timed("score", lambda: scorer.score_features(matrix))
    timed(
        "score + validate + encode parts",
        lambda: batch.score_parts(
            scorer,
            ids,
            matrix,
            inference_timestamp=spec.logical_time,
            explain=False,
            top_reasons=3,
            rows_per_part=spec.rows_per_part,
        ),
    )
    return times


def bench(
    name: str, frame: pd.DataFrame, contract_name: str, day: str, root: Path, args: argparse.Namespace
) -> dict:
    import xgboost as xgb

    from fraud_detection.data.contract import load_contract
    from fraud_detection.features.build import build_feature_tables
    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.inference import batch
    from fraud_detection.models.registry import resolve_model

    contract = load_contract(contract_name, CONTRACTS_DIR)
    config = load_feature_config(FEATURE_CONFIG)
    raw_dir, features_dir = root / name / "raw", root / name / "features"
    started = time.perf_counter()
    single_partition_dataset(frame, raw_dir, contract.name, day)
    build_feature_tables(raw_dir, contract, config, features_dir, as_of=AS_OF)
    model = resolve_model(str(train_bundle(features_dir, root / name / "bundle")))
    setup_s = time.perf_counter() - started
    date = dt.date.fromisoformat(day)

    def spec(out: Path) -> batch.BatchSpec:
        return batch.BatchSpec(
            raw_dir=raw_dir,
            date=date,
            features_dir=features_dir,
            out_dir=out,
            logical_time=batch.default_logical_time(date),
            rows_per_part=args.rows_per_part,
            dask=args.dask,
        )

    # the raw baseline's input: the same rows' feature matrix, in memory, in the bundle's order
    table = pd.read_parquet(features_dir / "transaction_features.parquet")
    matrix = np.ascontiguousarray(table[list(model.bundle.feature_names)].to_numpy(np.float32))
    booster: xgb.Booster = model.bundle.booster
    n_rounds = booster.num_boosted_rounds()
    booster.inplace_predict(matrix[:1000], iteration_range=(0, n_rounds))  # warm-up
    batch.run_batch(spec(root / name / "warmup"), model, contract)  # first-use costs (pandera)

    rounds = []
    for r in range(args.rounds):
        result = batch.run_batch(spec(root / name / f"out{r}"), model, contract)
        assert result.committed and result.rows == len(frame)
        started = time.perf_counter()
        booster.inplace_predict(matrix, iteration_range=(0, n_rounds))
        raw_s = time.perf_counter() - started
        rounds.append(
            {
                "end_to_end_s": round(result.seconds, 3),
                "end_to_end_rows_per_s": round(len(frame) / result.seconds),
                "raw_predict_s": round(raw_s, 3),
                "raw_predict_rows_per_s": round(len(frame) / raw_s),
                "ratio": round(raw_s / result.seconds, 3),
            }
        )
    breakdown = stage_breakdown(spec(root / name / "stages"), model, contract)
    return {
        "rows": len(frame),
        "setup_s": round(setup_s, 1),
        "model": {"trees": n_rounds, "max_depth": 4, "features": len(model.bundle.feature_names)},
        "rounds": rounds,
        "median_end_to_end_rows_per_s": round(statistics.median(r["end_to_end_rows_per_s"] for r in rounds)),
        "median_raw_predict_rows_per_s": round(
            statistics.median(r["raw_predict_rows_per_s"] for r in rounds)
        ),
        "median_ratio": round(statistics.median(r["ratio"] for r in rounds), 3),
        "stages_s": breakdown,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["handbook", "simulated", "both"], default="both")
    parser.add_argument("--rows", type=int, default=2_000_000, help="simulated rows (up to 10M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-per-part", type=int, default=1_000_000)
    parser.add_argument("--dask", default=None, help='"local" or a scheduler address')
    args = parser.parse_args()
    if not 1 <= args.rows <= 10_000_000:
        parser.error(f"--rows {args.rows}: expected 1 .. 10,000,000")

    import pyarrow
    import xgboost

    from fraud_detection.utils.logging import configure_logging

    configure_logging("WARNING", json_logs=True)  # stdout carries the JSON report only
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "versions": {
            "xgboost": xgboost.__version__,
            "pandas": pd.__version__,
            "pyarrow": pyarrow.__version__,
        },
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        root = Path(tmp)
        if args.data in ("handbook", "both"):
            if HANDBOOK.exists():
                from fraud_detection.data.contract import load_contract
                from fraud_detection.data.loaders import read_transactions

                frame, _ = read_transactions(str(HANDBOOK), load_contract("handbook", CONTRACTS_DIR))
                report["handbook"] = bench("handbook", frame, "handbook", "2018-09-30", root, args)
            else:
                report["handbook"] = f"skipped: {HANDBOOK} is absent"
        if args.data in ("simulated", "both"):
            frame = simulated_transactions(args.rows)
            report["simulated"] = bench("simulated", frame, "simulator", "2018-09-30", root, args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
