"""Model quality and search time on the handbook data with the handbook's chapter-5 protocol.

Usage: ``.venv/bin/python bench/bench_training.py [--config configs/training/handbook.yaml]
[--search-trials N] [--skip-grid] [--skip-search]``

What it measures (test = the 4 prequential test folds, train from 08-15, 08-08, 08-01, 07-25;
every hyperparameter was chosen on the 4 validation folds only, train from 07-11 .. 06-20):

1. **Sanity check**: the handbook's default XGBoost row (100 trees, lr 0.3, depth 6, its 15
   features) with ``tree_method="exact", base_score=0.5`` (XGBoost 1.x behaviour), against the
   published 0.859 / 0.659 / 0.285.
2. **The handbook's 18-point XGBoost grid** (n_estimators {25, 50, 100} x learning_rate {0.1, 0.3}
   x max_depth {3, 6, 9}) on its 15 features, one thread, every point assessed on the validation
   and the test folds as the handbook's ``model_selection_wrapper`` does: wall time against its
   1,251 s, and the test result of the point selected on validation AP.
3. **Our search**: ``fraud tune``'s study (TPE + pruning, ``search.n_trials`` trials) on the
   validation folds, wall time.
4. **Results**: the config's hyperparameters (those the search selected) on the test folds, with
   the handbook's 15 features alone and with all of ours, plus the logistic-regression baseline:
   mean and std of AUC, AP and card precision@100.
5. **Ceiling**: what a perfect model could reach on the same test folds under the protocol's
   label delay. The handbook file records each fraud's scenario. A compromised-terminal fraud
   (scenario 2) whose compromise has no fraud with a known label yet (no scenario-2 fraud at its
   terminal between 28 days, a compromise's length, and the label delay before it) looks like any
   genuine transaction to every feature that respects the delay: the terminals are drawn at random
   and the amounts are untouched. The ceiling model ranks those frauds at random among the genuine
   transactions and every other fraud first (the mean over 20 random orders). Its figures bound any
   legitimately trained model's expected result.

Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_DEFAULT = {"roc_auc": 0.859, "average_precision": 0.659, "card_precision_at_100": 0.285}
PUBLISHED_BEST = {"roc_auc": 0.870, "average_precision": 0.687, "card_precision_at_100": 0.303}
TARGET = {"roc_auc": 0.89, "average_precision": 0.75, "card_precision_at_100": 0.32}
HANDBOOK_GRID_SECONDS = 1251


def summary(result) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {k: round(v, 4) for k, v in result.summary.items()}


def ceiling(table, config, test) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Step 5: the expected result of a perfect model that sees only what the label delay allows."""
    import pandas as pd
    import pyarrow.parquet as pq

    from fraud_detection.training.trainer import score_metrics

    raw = pq.read_table(
        REPO / config.data.source,
        columns=["TRANSACTION_ID", "TX_DATETIME", "TERMINAL_ID", "TX_FRAUD_SCENARIO"],
    ).to_pandas()
    delay = pd.Timedelta(days=table.feature_config.label_delay_days)
    raw["TX_DATETIME"] = raw.TX_DATETIME.astype("datetime64[ns]")
    frauds = raw[raw.TX_FRAUD_SCENARIO == 2].sort_values("TX_DATETIME")
    # For each compromised-terminal fraud, the latest earlier one at its terminal with a known label.
    probe = frauds[["TRANSACTION_ID", "TERMINAL_ID", "TX_DATETIME"]].assign(
        known_by=frauds.TX_DATETIME - delay
    )
    known = pd.merge_asof(
        probe.sort_values("known_by"),
        frauds[["TERMINAL_ID", "TX_DATETIME"]].rename(columns={"TX_DATETIME": "last_known"}),
        left_on="known_by",
        right_on="last_known",
        by="TERMINAL_ID",
        direction="backward",
    )
    same_compromise = known.last_known >= known.TX_DATETIME - pd.Timedelta(days=28)
    blind = set(known.TRANSACTION_ID[~same_compromise.to_numpy()])
    rng = np.random.default_rng(0)
    folds = []
    for fold in test.folds:
        rows = table.frame.iloc[fold.test_rows]
        is_blind = rows["transaction_id"].isin(blind).to_numpy()
        draws = []
        for _ in range(20):
            scores = rng.random(len(rows)) * 0.5  # genuine and blind frauds: a random order
            scores[(fold.y_true == 1) & ~is_blind] = 1.0  # every fraud with a visible signal first
            draws.append(score_metrics(rows, scores, config.top_k))
        folds.append({key: float(np.mean([d[key] for d in draws])) for key in draws[0]})
        folds[-1]["blind_fraud_share"] = float(is_blind.sum() / fold.y_true.sum())
        # How the tested model ranks each kind of fraud: the share of genuine scores below it.
        genuine = np.sort(fold.y_score[fold.y_true == 0])
        for kind, mask in (("blind", is_blind), ("visible", ~is_blind)):
            scores = fold.y_score[(fold.y_true == 1) & mask]
            below = np.searchsorted(genuine, scores, "left") + np.searchsorted(genuine, scores, "right")
            folds[-1][f"model_{kind}_frauds_above_genuine"] = float(below.mean() / (2 * len(genuine)))
    per_fold = {key: [round(f[key], 4) for f in folds] for key in folds[0]}
    return {
        "mean": {key: round(float(np.mean(values)), 4) for key, values in per_fold.items()},
        "folds": per_fold,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "training" / "handbook.yaml")
    parser.add_argument("--search-trials", type=int, default=None, help="trials for the timed search")
    parser.add_argument("--skip-grid", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args()

    import optuna
    import sklearn
    import xgboost

    from fraud_detection.data.contract import load_contract
    from fraud_detection.training.config import ModelConfig, load_training_config
    from fraud_detection.training.dataset import load_training_table, select_features
    from fraud_detection.training.trainer import run_protocol
    from fraud_detection.training.tuning import tune
    from fraud_detection.utils.logging import configure_logging

    configure_logging("WARNING", json_logs=True)  # stdout carries the JSON report only
    config = load_training_config(args.config)
    contract = load_contract(config.data.contract, REPO / "configs" / "contract")
    started = time.perf_counter()
    table = load_training_table(config, contract, as_of=dt.datetime(2030, 1, 1))
    load_seconds = time.perf_counter() - started
    handbook_features = select_features(table.feature_config, "handbook")
    handbook_table = dataclasses.replace(table, feature_names=handbook_features)

    def xgb(**params: object) -> ModelConfig:
        raw = config.model.model_dump()
        raw["type"] = "xgboost"
        raw["xgboost"]["monotone_increasing"] = []  # the handbook's models had no constraints
        raw["xgboost"].update(params)
        return ModelConfig.model_validate(raw)

    report: dict[str, object] = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, {platform.python_version()}",
        "versions": {
            "xgboost": xgboost.__version__,
            "optuna": optuna.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "command": " ".join(sys.argv),
        "rows": len(table.frame),
        "load_validate_features_seconds": round(load_seconds, 1),
    }

    # 1. Sanity check: the handbook's default XGBoost row.
    handbook_default = xgb(
        n_estimators=100,
        max_depth=6,
        learning_rate=0.3,
        tree_method="exact",
        base_score=0.5,
        min_child_weight=1,
        subsample=1,
        colsample_bytree=1,
        reg_lambda=1,
        max_bin=256,
    )
    result = run_protocol(handbook_table, config, config.split.test, model=handbook_default)
    report["handbook_default_xgboost_test"] = {"ours": summary(result), "published": PUBLISHED_DEFAULT}

    # 2. The handbook's grid, one thread, validation + test per point.
    if not args.skip_grid:
        started = time.perf_counter()
        points = []
        for n_estimators in (25, 50, 100):
            for learning_rate in (0.1, 0.3):
                for max_depth in (3, 6, 9):
                    model = xgb(
                        n_estimators=n_estimators,
                        learning_rate=learning_rate,
                        max_depth=max_depth,
                        n_jobs=1,
                        min_child_weight=1,
                        subsample=1,
                        colsample_bytree=1,
                        reg_lambda=1,
                    )
                    validation = run_protocol(handbook_table, config, config.split.validation, model=model)
                    test = run_protocol(handbook_table, config, config.split.test, model=model)
                    points.append(
                        (
                            validation.summary["average_precision_mean"],
                            n_estimators,
                            learning_rate,
                            max_depth,
                            test,
                        )
                    )
        grid_seconds = time.perf_counter() - started
        best = max(points, key=lambda p: p[0])
        report["handbook_grid"] = {
            "points": len(points),
            "seconds_one_thread": round(grid_seconds, 1),
            "handbook_seconds": HANDBOOK_GRID_SECONDS,
            "speed_up": round(HANDBOOK_GRID_SECONDS / grid_seconds, 1),
            "selected_on_validation_ap": {
                "n_estimators": best[1],
                "learning_rate": best[2],
                "max_depth": best[3],
            },
            "selected_test": summary(best[4]),
        }

    # 3. Our search on the validation folds (a fresh in-memory study, timed).
    if not args.skip_search:
        searched = config.model_copy(
            update={"search": config.search.model_copy(update={"storage": None, "study_name": "bench"})}
        )
        started = time.perf_counter()
        found = tune(searched, table, n_trials=args.search_trials)
        report["search"] = {
            "trials": found.n_complete + found.n_pruned,
            "complete": found.n_complete,
            "pruned": found.n_pruned,
            "seconds": round(time.perf_counter() - started, 1),
            "best_validation_average_precision": round(found.best_value, 4),
            "best_params": found.best_params,
        }

    # 4. The config's (selected) hyperparameters on the test folds.
    results = {}
    for name, subject in (("handbook_features", handbook_table), ("all_features", table)):
        validation = run_protocol(subject, config, config.split.validation)
        test = run_protocol(subject, config, config.split.test)
        results[name] = {"validation": summary(validation), "test": summary(test)}
        if name == "all_features":
            report["ceiling"] = ceiling(table, config, test)
    logistic = ModelConfig.model_validate({**config.model.model_dump(), "type": "logistic_regression"})
    results["logistic_regression_all_features"] = {
        "test": summary(run_protocol(table, config, config.split.test, model=logistic))
    }
    report["results"] = results
    report["params"] = config.model.params()
    ours = results["all_features"]["test"]
    report["target_met"] = {name: bool(ours[f"{name}_mean"] >= target) for name, target in TARGET.items()}
    report["published_best_legitimate"] = PUBLISHED_BEST
    print(json.dumps(report, indent=2, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))


if __name__ == "__main__":
    main()
