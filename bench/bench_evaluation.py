"""Full evaluation of one model on one test week of the handbook data, and its breakdown.

Usage: ``.venv/bin/python bench/bench_evaluation.py [--config configs/training/handbook.yaml]``

Trains the handbook config's model on the 2018-08-15 window, then evaluates it on its delayed test
week (2018-08-29 .. 09-04, known-compromised cards removed) the way ``fraud evaluate`` does:
``evaluate_model`` (metrics with bootstrap CIs, calibration, cost curve, segments, behaviour checks,
latency, SHAP sample) plus the HTML report. Then each step once more on its own, for the breakdown.
The handbook data has no protected attribute, so fairness is timed on a synthetic age band drawn
for the same rows. Prints one JSON object; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "training" / "handbook.yaml")
    parser.add_argument("--eval-config", type=Path, default=REPO / "configs" / "evaluation" / "default.yaml")
    args = parser.parse_args()

    from fraud_detection.data.contract import load_contract
    from fraud_detection.evaluation import behaviour
    from fraud_detection.evaluation import metrics as m
    from fraud_detection.evaluation.analysis import assess_fairness, evaluate_by_segment, fairness_intervals
    from fraud_detection.evaluation.evaluate import (
        evaluate_model,
        held_out_rows,
        load_evaluation_config,
        segment_columns,
        single_row_latency_ms,
    )
    from fraud_detection.evaluation.explain import shap_summary_plots
    from fraud_detection.evaluation.report import render_report
    from fraud_detection.models.bundle import TrainingWindow
    from fraud_detection.models.registry import ResolvedModel
    from fraud_detection.training.config import load_training_config
    from fraud_detection.training.dataset import load_training_table
    from fraud_detection.training.trainer import fit_bundle, fold_at
    from fraud_detection.utils.logging import configure_logging

    configure_logging("WARNING", json_logs=True)
    config = load_training_config(args.config)
    checks = load_evaluation_config(args.eval_config)
    table = load_training_table(
        config,
        load_contract(config.data.contract, REPO / "configs" / "contract"),
        as_of=dt.datetime(2030, 1, 1),
    )
    window = fold_at(config, dt.date(2018, 8, 15)).windows()[0]
    train = table.frame[
        (table.frame["event_timestamp"] >= window.train_start)
        & (table.frame["event_timestamp"] < window.train_end)
    ]
    bundle = fit_bundle(
        train,
        table.feature_names,
        config.model,
        seed=config.seed,
        window=TrainingWindow(window.train_start, window.train_end),
        threshold=0.05,
        feature_service="fraud_v1",
    )
    model = ResolvedModel(bundle, "bench", "bench", "")
    rows, period = held_out_rows(table, config, model)
    rows = rows.assign(
        customer_age_band=np.random.default_rng(0).choice(
            ["18-25", "26-35", "36-50", "51-65", "65+"], len(rows)
        )
    )

    timings: dict[str, float] = {}

    def timed(name: str, action):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = action()
        timings[name] = round(time.perf_counter() - started, 3)
        return result

    with tempfile.TemporaryDirectory() as scratch:
        evaluation = timed(
            "evaluate_model_total",
            lambda: evaluate_model(
                model,
                rows,
                checks,
                period=period,
                lineage={},
                protected_column="customer_age_band",
                figures_dir=Path(scratch),
            ),
        )
        timed("render_report", lambda: render_report(evaluation))
        y, s = evaluation.y_true, evaluation.y_score
        timed("step_score", lambda: bundle.predict_proba(rows[list(bundle.feature_names)]))
        timed(
            "step_bootstrap_ap_200", lambda: m.bootstrap_ci(m.average_precision, y, s, n_boot=checks.n_boot)
        )
        timed("step_bootstrap_auc_200", lambda: m.bootstrap_ci(m.roc_auc, y, s, n_boot=checks.n_boot))
        timed(
            "step_calibration_cost_curve",
            lambda: (m.calibration_table(y, s), m.cost_curve(y, s, checks.cost)),
        )
        timed(
            "step_segments",
            lambda: [
                evaluate_by_segment(y, s, v, threshold=bundle.threshold, n_boot=checks.n_boot)
                for v in segment_columns(rows, checks.segments, "customer_age_band").values()
            ],
        )
        decisions = (s >= bundle.threshold).astype(int)
        privileged = checks.fairness.privileged if checks.fairness else ["26-35"]
        timed(
            "step_fairness_with_intervals",
            lambda: (
                assess_fairness(y, decisions, rows["customer_age_band"], privileged),
                fairness_intervals(y, decisions, rows["customer_age_band"], privileged),
            ),
        )
        timed(
            "step_behaviour",
            lambda: behaviour.run_behaviour_suite(bundle, rows, protected_column="customer_age_band"),
        )
        timed("step_latency_2000_calls", lambda: single_row_latency_ms(model, rows))
        sample = rows.sample(min(checks.shap_sample, len(rows)), random_state=0)
        timed("step_shap_plots", lambda: shap_summary_plots(bundle, sample, Path(scratch) / "again"))
    print(
        json.dumps(
            {
                "date": dt.date.today().isoformat(),
                "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs, Python {platform.python_version()}",
                "rows": len(rows),
                "frauds": int(rows["is_fraud"].sum()),
                "n_boot": checks.n_boot,
                "seconds": timings,
                "gates": {g.name: g.passed for g in evaluation.gates},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
