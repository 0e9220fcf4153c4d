"""Per-row explanations: XGBoost's native ``pred_contribs`` against shap's ``TreeExplainer``.

Usage: ``.venv/bin/python bench/bench_explain.py [--rows 10000] [--rounds 5]``

Trains the handbook config's model on the first test fold's window (train from 2018-08-15), then
explains 10,000 rows of its test week both ways, interleaved rounds, and checks they agree. Prints
one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "training" / "handbook.yaml")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import shap
    import xgboost

    from fraud_detection.data.contract import load_contract
    from fraud_detection.training.config import load_training_config
    from fraud_detection.training.dataset import load_training_table
    from fraud_detection.training.trainer import fit_bundle, fold_at
    from fraud_detection.utils.logging import configure_logging

    configure_logging("WARNING", json_logs=True)
    config = load_training_config(args.config)
    table = load_training_table(
        config,
        load_contract(config.data.contract, REPO / "configs" / "contract"),
        as_of=dt.datetime(2030, 1, 1),
    )
    split = fold_at(config, dt.date(2018, 8, 15))
    train_rows, test_rows = next(split.split(table.frame))
    window = split.windows()[0]
    from fraud_detection.models.bundle import TrainingWindow

    bundle = fit_bundle(
        table.frame.iloc[train_rows],
        table.feature_names,
        config.model,
        seed=config.seed,
        window=TrainingWindow(window.train_start, window.train_end),
        threshold=0.5,
        feature_service="fraud_v1",
    )
    rows = table.frame.iloc[test_rows[: args.rows]][list(table.feature_names)]
    matrix = rows.to_numpy(np.float32)
    explainer = shap.TreeExplainer(bundle.booster)
    native, treeshap = [], []
    for index in range(args.rounds + 1):
        for name, action in sorted(
            (("native", lambda: bundle.contributions(rows)), ("shap", lambda: explainer.shap_values(matrix))),
            reverse=index % 2 == 1,
        ):
            started = time.perf_counter()
            result = action()
            elapsed = time.perf_counter() - started
            if index:  # the first round warms up
                (native if name == "native" else treeshap).append(elapsed)
            if name == "native":
                ours = result
            else:
                theirs = result
    report = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}",
        "versions": {"xgboost": xgboost.__version__, "shap": shap.__version__},
        "rows": len(rows),
        "trees": bundle.booster.num_boosted_rounds(),
        "native_pred_contribs_seconds_median": round(statistics.median(native), 4),
        "shap_tree_explainer_seconds_median": round(statistics.median(treeshap), 4),
        "speed_up": round(statistics.median(treeshap) / statistics.median(native), 2),
        "max_abs_difference": float(np.abs(ours[:, :-1] - theirs).max()),
        "rounds": args.rounds,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
