"""Build the fraud model's benchmark artifacts: every server then serves the project's own booster.

Run with the PROJECT venv (it drives the ``fraud`` CLI and imports ``fraud_detection``)::

    .venv/bin/python bench/serving/scripts/prepare_fraud.py [--out bench/serving/artifacts/fraud] [--force]

Steps (each skipped when its output exists, unless ``--force``), with the ``fraud`` CLI, as the
Makefile's ``demo`` target does them:

1. ``fraud simulate``: a small dataset (default 4,000 customers, 8,000 terminals, 45 days from
   2018-08-17: about 340,000 transactions) → ``raw/``;
2. ``fraud features build`` → ``features/`` (the point-in-time feature tables);
3. ``fraud features apply`` and ``fraud features materialize`` over the whole data period, with
   ``FRAUD_FEATURE_STORE_DIR=feature_store/`` (Feast registry + SQLite online store);
4. ``fraud train`` → ``bundle/``: 300 trees of depth 6 (no early stopping), one 7-day window
   from 2018-09-03, fixed threshold 0.5 (no validation folds: this is a speed benchmark, not a
   model), no MLflow tracking.

Then, from the bundle (``load_bundle``), the files the peer servers load, in the layout of
``scripts/train.py`` (the reference model):

* ``model.json``, ``model.ubj``, ``kserve/model.ubj``, ``mlserver/``: the booster's trees, saved
  through ``XGBClassifier`` so MLServer loads it as a classifier, and *without feature names*
  (the booster's names make ``DMatrix(numpy)`` raise, which the stock xgbserver path and MLServer
  use; the names are in ``feature_names.json``). Same trees, same probabilities;
* ``mlflow_model/``: ``mlflow.xgboost.save_model`` of the same booster, input columns named as the
  bundle's features.

Payloads (``payloads/``): 1 and 1,000 transactions, chosen (seeded) among those that are the
*latest* transaction of their customer and of their terminal. For such a transaction the online
store, materialised to the end of the data, holds exactly that transaction's own entity rows, so
the vector the online path builds equals its offline feature row (``tests/integration/
test_training_serving_skew.py``). Hence one expected answer fits every server:

* peers (``v1_*``, ``v2_*``, ``v2proba_*``, ``mlflow_*``): the 28 feature values of those rows from
  ``features/transaction_features.parquet``, in ``bundle.feature_names`` order;
* ours (``ours_v1_*``, ``ours_v2_*``): the same transactions as raw fields (``transaction_id``,
  ``customer_id``, ``terminal_id``, ``amount``, ``event_timestamp``), for ``fraud serve``;
* ``expected.json``: ``p1``/``p1000``, the bundle's probabilities on those feature rows. Checked
  here against (a) the online path (``store.online_features_many`` on the materialised store,
  then the bundle: what ``fraud serve`` should compute), (b) ``fraud score`` on the raw data, and
  (c) the exported files (nameless booster, MLflow pyfunc). A mismatch stops the script.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

BENCH_DIR = Path(__file__).resolve().parents[1]
REPO = BENCH_DIR.parents[1]
MODEL_NAME = "fraud"  # what the peer servers serve (the reference harness's name); ours: fraud-detector
TOLERANCE = 1e-6  # the same booster on the same float32 inputs: equal up to float32 output rounding


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, check=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def build_project_artifacts(out: Path, a: argparse.Namespace, fraud: str) -> None:
    """Steps 1-4 with the fraud CLI (each skipped when its output is there)."""
    raw, features, store_dir, bundle = out / "raw", out / "features", out / "feature_store", out / "bundle"
    store_env = {"FRAUD_FEATURE_STORE_DIR": str(store_dir)}
    first = dt.date.fromisoformat(a.start_date)
    last = first + dt.timedelta(days=a.days)  # exclusive
    if not (raw / "manifest.json").is_file():
        run(
            [
                fraud,
                "simulate",
                "--out",
                str(raw),
                "--days",
                str(a.days),
                "--customers",
                str(a.customers),
                "--terminals",
                str(a.terminals),
                "--start-date",
                a.start_date,
                "--seed",
                str(a.seed),
            ]
        )
    if not (features / "manifest.json").is_file():
        run(
            [fraud, "features", "build", "--raw", str(raw), "--contract", "simulator", "--out", str(features)]
        )
    if not (store_dir / "online_store.db").is_file():
        run([fraud, "features", "apply", "--features-dir", str(features)], store_env)
        run(
            [
                fraud,
                "features",
                "materialize",
                "--start",
                str(first - dt.timedelta(days=1)),
                "--end",
                str(last + dt.timedelta(days=1)),
                "--features-dir",
                str(features),
            ],
            store_env,
        )
    if not (bundle / "manifest.json").is_file():
        shutil.rmtree(bundle, ignore_errors=True)
        sets = [
            f"data.source={raw}",
            f"model.xgboost.n_estimators={a.trees}",
            f"model.xgboost.max_depth={a.max_depth}",
            "model.xgboost.early_stopping_rounds=null",  # keep every tree
            "threshold.strategy=fixed",  # cost/alert thresholds need the config's validation folds
            "threshold.value=0.5",
        ]
        run(
            [fraud, "train", "--config", "configs/training/default.yaml"]
            + [w for s in sets for w in ("--set", s)]
            + ["--train-start", a.train_start, "--no-folds", "--no-track", "--out", str(bundle)],
            {"FRAUD_DATA_DIR": str(out)},
        )


def choose_transactions(features: Path, n: int, seed: int) -> pd.DataFrame:
    """``n`` feature rows of transactions that are their customer's and their terminal's latest."""
    table = pd.read_parquet(features / "transaction_features.parquet")
    ts = table["event_timestamp"]
    latest = (ts == ts.groupby(table["customer_id"]).transform("max")) & (
        ts == ts.groupby(table["terminal_id"]).transform("max")
    )
    candidates = table[latest]
    if len(candidates) < n:
        raise SystemExit(
            f"only {len(candidates)} transactions are the latest of their customer and terminal, "
            f"{n} needed: simulate more customers (--customers)"
        )
    rng = np.random.default_rng(seed)
    chosen = candidates.iloc[np.sort(rng.choice(len(candidates), n, replace=False))]
    return chosen.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def export_peer_models(out: Path, booster, feature_names: list[str], x1: np.ndarray, p1: np.ndarray) -> None:
    """The booster's trees in every format the peer servers load (see the module docstring)."""
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature

    nameless = booster.copy()
    nameless.feature_names = None
    nameless.feature_types = None
    nameless_path = out / "booster_nameless.ubj"
    nameless.save_model(nameless_path)
    clf = xgb.XGBClassifier()
    clf.load_model(nameless_path)  # adds the scikit-learn metadata MLServer needs to see a classifier
    nameless_path.unlink()
    clf.save_model(out / "model.json")
    clf.save_model(out / "model.ubj")
    (out / "feature_names.json").write_text(json.dumps(feature_names, indent=1) + "\n")

    mdir = out / "mlflow_model"
    shutil.rmtree(mdir, ignore_errors=True)
    signature = infer_signature(pd.DataFrame(x1, columns=feature_names), p1)
    mlflow.xgboost.save_model(
        clf.get_booster(),
        str(mdir),
        model_format="ubj",
        signature=signature,
        pip_requirements=[f"xgboost=={xgb.__version__}"],  # no inference from the repo's uv.lock
    )

    sdir = out / "mlserver"
    sdir.mkdir(exist_ok=True)
    shutil.copy(out / "model.json", sdir / "model.json")
    settings = {
        "name": MODEL_NAME,
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json"},
    }
    (sdir / "model-settings.json").write_text(json.dumps(settings, indent=2))
    kdir = out / "kserve"
    kdir.mkdir(exist_ok=True)
    shutil.copy(out / "model.ubj", kdir / "model.ubj")


def write_payloads(out: Path, chosen: pd.DataFrame, feature_names: list[str], n1: int) -> None:
    pdir = out / "payloads"
    pdir.mkdir(exist_ok=True)
    for tag, rows in (("1", chosen.iloc[:n1]), ("1000", chosen)):
        x = rows[feature_names].to_numpy(dtype=np.float64)
        values, flat = x.tolist(), x.ravel().tolist()
        v2_input = {"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": flat}
        n = len(rows)
        ids = rows["transaction_id"].astype(int).tolist()
        customers = rows["customer_id"].astype(int).tolist()
        terminals = rows["terminal_id"].astype(int).tolist()
        amounts = rows["amount"].astype(float).tolist()
        stamps = rows["event_timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
        bodies = {
            f"v1_{tag}.json": {"instances": values},
            f"v2_{tag}.json": {"inputs": [v2_input]},
            f"v2proba_{tag}.json": {"inputs": [v2_input], "outputs": [{"name": "predict_proba"}]},
            f"mlflow_{tag}.json": {"dataframe_split": {"columns": feature_names, "data": values}},
            f"ours_v1_{tag}.json": {
                "instances": [
                    {
                        "transaction_id": t,
                        "customer_id": c,
                        "terminal_id": m,
                        "amount": v,
                        "event_timestamp": s,
                    }
                    for t, c, m, v, s in zip(ids, customers, terminals, amounts, stamps, strict=True)
                ]
            },
            f"ours_v2_{tag}.json": {
                "inputs": [
                    {"name": "transaction_id", "shape": [n], "datatype": "INT64", "data": ids},
                    {"name": "customer_id", "shape": [n], "datatype": "INT64", "data": customers},
                    {"name": "terminal_id", "shape": [n], "datatype": "INT64", "data": terminals},
                    {"name": "amount", "shape": [n], "datatype": "FP64", "data": amounts},
                    {"name": "event_timestamp", "shape": [n], "datatype": "BYTES", "data": stamps},
                ]
            },
        }
        for name, body in bodies.items():
            (pdir / name).write_text(json.dumps(body, separators=(",", ":")))


def online_probabilities(out: Path, chosen: pd.DataFrame, bundle) -> tuple[np.ndarray, float, int]:
    """What ``fraud serve`` should answer: the online path's vectors (no deadline), scored by the bundle.

    ``store.online_feature_batch`` is the server's read (one batched read per view); older
    checkouts only have ``store.online_features_many``."""
    from fraud_detection.features import store
    from fraud_detection.features.engineering import load_feature_config

    os.environ["FRAUD_FEATURE_STORE_DIR"] = str(out / "feature_store")
    config = load_feature_config(REPO / "configs/features/default.yaml")
    handle = store.open_store(store.FeatureStoreSettings(), out / "features", config)
    with handle:
        if hasattr(store, "online_feature_batch"):
            event_us = chosen["event_timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
            batch = store.online_feature_batch(
                handle,
                chosen["customer_id"].to_numpy(np.int64),
                chosen["terminal_id"].to_numpy(np.int64),
                chosen["amount"].to_numpy(np.float64),
                event_us,
                timeout_s=120.0,
            )
            degraded = int(np.sum(batch.degraded))
            columns = [list(batch.names).index(name) for name in bundle.feature_names]
            online = np.asarray(batch.values, dtype=np.float64)[:, columns]
        else:
            requests = [
                store.TransactionRequest(
                    int(r.customer_id), int(r.terminal_id), float(r.amount), r.event_timestamp
                )
                for r in chosen.itertuples()
            ]
            vectors = store.online_features_many(handle, requests, timeout_s=120.0)
            degraded = sum(v.degraded for v in vectors)
            online = np.array([v.values for v in vectors], dtype=np.float64)
            online = online[:, [list(vectors[0].names).index(name) for name in bundle.feature_names]]
    feature_diff = float(np.abs(online - chosen[list(bundle.feature_names)].to_numpy(np.float64)).max())
    return bundle.predict_proba(online), feature_diff, degraded


def score_probabilities(out: Path, fraud: str, chosen: pd.DataFrame) -> np.ndarray:
    """``fraud score`` on the raw data (features point-in-time from the data's own history)."""
    path = out / "score_check.parquet"
    run([fraud, "score", "--model", str(out / "bundle"), "--input", str(out / "raw"), "--out", str(path)])
    scores = pd.read_parquet(path).set_index("transaction_id")["score"]
    path.unlink()
    return scores.loc[chosen["transaction_id"].to_numpy()].to_numpy(dtype=np.float64)


def check(name: str, got: np.ndarray, expected: np.ndarray, checks: dict[str, float]) -> None:
    diff = float(np.abs(np.asarray(got, dtype=np.float64) - expected).max())
    checks[name] = diff
    print(f"check {name}: max |p - expected| = {diff:.2e}", flush=True)
    if diff > TOLERANCE:
        raise SystemExit(f"{name} differs from the bundle's probabilities by {diff} (> {TOLERANCE})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=BENCH_DIR / "artifacts" / "fraud")
    ap.add_argument("--force", action="store_true", help="rebuild everything under --out")
    ap.add_argument("--customers", type=int, default=4000)
    ap.add_argument("--terminals", type=int, default=8000)
    ap.add_argument("--days", type=int, default=45)
    ap.add_argument("--start-date", default="2018-08-17")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-start", default="2018-09-03")
    ap.add_argument("--trees", type=int, default=300)
    ap.add_argument("--max-depth", type=int, default=6)
    ap.add_argument("--rows", type=int, default=1000, help="rows of the batch payload")
    ap.add_argument("--no-score-check", action="store_true", help="skip the `fraud score` comparison")
    ap.add_argument("--fraud-bin", default=str(Path(sys.executable).with_name("fraud")))
    a = ap.parse_args()
    for key, value in {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(key, value)
    out = a.out.resolve()
    if a.force:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    build_project_artifacts(out, a, a.fraud_bin)

    from fraud_detection.models.bundle import bundle_digest, load_bundle

    bundle = load_bundle(out / "bundle")
    names = list(bundle.feature_names)
    chosen = choose_transactions(out / "features", a.rows, a.seed)
    x = chosen[names].to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise SystemExit("the chosen feature rows hold NaN or infinite values, which JSON cannot carry")
    expected = bundle.predict_proba(x)

    checks: dict[str, float] = {}
    export_peer_models(out, bundle.booster, names, x[:1], expected[:1])
    import mlflow.pyfunc
    import xgboost as xgb

    exported = xgb.Booster(params={"nthread": 1}, model_file=str(out / "kserve" / "model.ubj"))
    check("exported model.ubj, inplace_predict", exported.inplace_predict(x), expected, checks)
    check("exported model.ubj, DMatrix+predict", exported.predict(xgb.DMatrix(x)), expected, checks)
    pyfunc = mlflow.pyfunc.load_model(str(out / "mlflow_model"))
    check("mlflow_model pyfunc", np.asarray(pyfunc.predict(pd.DataFrame(x, columns=names))), expected, checks)
    online, feature_diff, degraded = online_probabilities(out, chosen, bundle)
    print(f"online path: max |online feature - offline feature| = {feature_diff:.2e}, degraded {degraded}")
    if degraded or feature_diff > 1e-9:
        raise SystemExit("the online vectors of the chosen transactions are not their offline rows")
    check("online path (what fraud serve should return)", online, expected, checks)
    if not a.no_score_check:
        check("fraud score", score_probabilities(out, a.fraud_bin, chosen), expected, checks)

    write_payloads(out, chosen, names, 1)
    chosen[["transaction_id", "event_timestamp", "customer_id", "terminal_id", "amount"]].assign(
        fraud_probability=expected
    ).to_csv(out / "transactions.csv", index=False)
    meta = bundle.metadata.get("data", {})
    (out / "expected.json").write_text(
        json.dumps(
            {
                "p1": expected[:1].tolist(),
                "p1000": expected.tolist(),
                "model": (
                    f"fraud bundle (fraud train): {bundle.booster.num_boosted_rounds()} trees, "
                    f"max_depth {a.max_depth}, {len(names)} features, trained on "
                    f"{bundle.training_window.start.date()} .. {bundle.training_window.end.date()} "
                    f"({meta.get('train_rows', '?')} rows) of the simulator "
                    f"({a.customers} customers, {a.terminals} terminals, {a.days} days from {a.start_date})"
                ),
                "bundle_digest": bundle_digest(out / "bundle"),
                "feature_names": names,
                "threshold": bundle.threshold,
                "transaction_ids": chosen["transaction_id"].astype(int).tolist(),
                "checks_max_abs_diff": checks,
                "xgboost": xgb.__version__,
                "n_features": len(names),
            }
        )
    )
    print(f"fraud artifacts ready in {out}: {len(chosen)} transactions, p1 = {expected[0]:.6f}")


if __name__ == "__main__":
    main()
