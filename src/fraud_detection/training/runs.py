"""``fraud train``: assess the configured model on the prequential test folds, fit it on one window,
write the bundle, and record everything in MLflow (optionally registering a ``challenger``).

The training window defaults to the latest one whose labels are all known at the end of the data
(``delay_days`` before it); ``train_start`` picks any other, e.g. one fold of the handbook protocol.
When the data covers that window's delayed test period, the model is scored there too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from fraud_detection.errors import SplitError
from fraud_detection.models.bundle import ModelBundle, TrainingWindow, save_bundle
from fraud_detection.training.config import TrainingConfig
from fraud_detection.training.dataset import LABEL, TrainingTable
from fraud_detection.training.trainer import (
    TIMESTAMP,
    ProtocolResult,
    feature_matrix,
    fit_bundle,
    latest_labelled_train_start,
    run_protocol,
    score_metrics,
    window_rows,
)

if TYPE_CHECKING:
    from distributed import Client

_log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrainResult:
    bundle: ModelBundle
    bundle_dir: Path
    digest: str
    window: TrainingWindow
    protocol: ProtocolResult | None
    holdout_metrics: dict[str, float] | None
    run_id: str | None = None
    registered_version: str | None = None


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """Bundle metadata is strict JSON: an undefined metric (NaN) is recorded as null."""
    return {name: (value if np.isfinite(value) else None) for name, value in metrics.items()}


def choose_threshold(table: TrainingTable, config: TrainingConfig) -> tuple[float, dict[str, Any]]:
    """The bundle's decision threshold, and the evidence for it (kept in the bundle's metadata).

    Cost and alert-budget thresholds are chosen on the validation folds' out-of-sample scores:
    never on the rows the model is fitted on, and never on the test folds.
    """
    from fraud_detection.evaluation.metrics import (
        expected_cost,
        select_threshold_by_alert_budget,
        select_threshold_by_cost,
    )

    rule = config.threshold
    if rule.strategy == "fixed":
        return rule.value, {"strategy": "fixed", "threshold": rule.value}
    validation = run_protocol(table, config, config.split.validation)
    y_true = np.concatenate([fold.y_true for fold in validation.folds])
    y_score = np.concatenate([fold.y_score for fold in validation.folds])
    if rule.strategy == "cost":
        threshold = select_threshold_by_cost(y_true, y_score, rule.cost)
    else:
        assert rule.alerts_per_day is not None
        rows = np.concatenate([fold.test_rows for fold in validation.folds])
        days = table.frame[TIMESTAMP].to_numpy()[rows].astype("datetime64[D]")
        threshold = select_threshold_by_alert_budget(y_score, alerts_per_day=rule.alerts_per_day, days=days)
    evidence = {
        "strategy": rule.strategy,
        "threshold": float(threshold),
        "chosen_on": "validation folds (out of sample)",
        "rows": len(y_true),
        "expected_cost_per_transaction": float(expected_cost(y_true, y_score, threshold, rule.cost)),
        "alerts_per_transaction": float(np.mean(y_score >= threshold)),
        "cost": rule.cost.model_dump(),
    }
    _log.info("threshold chosen", **{k: v for k, v in evidence.items() if k != "cost"})
    return float(threshold), evidence


def config_digest(config: TrainingConfig) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def train(
    config: TrainingConfig,
    table: TrainingTable,
    out_dir: Path,
    *,
    train_start: dt.date | None = None,
    assess_folds: bool = True,
    signing_key: Path | None = None,
    dask_client: Client | None = None,
) -> TrainResult:
    """Fit, assess and save; tracking is separate (:func:`log_training_run`).

    ``dask_client`` trains the folds and the final model on that Dask cluster (``xgboost.dask``).
    """
    protocol = (
        run_protocol(table, config, config.split.test, dask_client=dask_client) if assess_folds else None
    )
    threshold, threshold_evidence = choose_threshold(table, config)
    latest = latest_labelled_train_start(table, config)
    if train_start is not None and train_start > latest:
        raise SplitError(
            f"--train-start {train_start}: labels of that window are not all known by the end of the data "
            f"({config.split.delay_days} days delay); the latest labelled window starts {latest}"
        )
    start = train_start or latest
    train_rows, test_rows, run_windows = window_rows(table, config, start)
    window = TrainingWindow(
        start=dt.datetime.combine(start, dt.time()),
        end=dt.datetime.combine(start, dt.time()) + dt.timedelta(days=config.split.train_days),
    )
    metadata: dict[str, Any] = {
        "data": {
            "source": table.source,
            "content_digest": table.content_digest,
            "train_rows": len(train_rows),
            "train_frauds": int(train_rows[LABEL].sum()),
            "quality": table.quality,
        },
        "feature_set": config.features.feature_set,
        "feature_config": table.feature_config.model_dump(mode="json"),
        "config_sha256": config_digest(config),
        "config": config.model_dump(mode="json"),
        "threshold_selection": threshold_evidence,
    }
    if protocol is not None:
        metadata["test_folds"] = _finite(protocol.summary)
    bundle = fit_bundle(
        train_rows,
        table.feature_names,
        config.model,
        seed=config.seed,
        window=window,
        threshold=threshold,
        feature_service=config.features.feature_service,
        metadata=metadata,
        dask_client=dask_client,
    )
    holdout_metrics = None
    if test_rows is not None:
        scores = bundle.predict_proba(feature_matrix(test_rows, table.feature_names))
        holdout_metrics = score_metrics(test_rows, scores, config.top_k)
        served = _served_holdout(table, bundle, run_windows, config.top_k)
        bundle = dataclasses.replace(
            bundle,
            metadata={
                **bundle.metadata,
                "holdout_metrics": _finite(holdout_metrics),
                "served_holdout_metrics": _finite(served),
            },
        )
    digest = save_bundle(bundle, out_dir, signing_key=signing_key)
    _log.info("model trained", bundle=str(out_dir), digest=digest, window_start=str(start))
    return TrainResult(bundle, out_dir, digest, window, protocol, holdout_metrics)


def _served_holdout(table: TrainingTable, bundle: Any, windows: Any, k: int) -> dict[str, float]:
    """The monitor's metrics (every card) on the held-out week: the baseline ``fraud monitor``
    compares served traffic with (:func:`~fraud_detection.monitoring.performance.served_metrics`)."""
    from fraud_detection.monitoring.performance import served_metrics

    stamps = table.frame[TIMESTAMP]
    rows = table.frame[(stamps >= windows.test_start) & (stamps < windows.test_end)]
    scores = bundle.predict_proba(feature_matrix(rows, table.feature_names))
    return served_metrics(rows.assign(score=scores), k=k, threshold=bundle.threshold)


def log_training_run(
    result: TrainResult,
    config: TrainingConfig,
    table: TrainingTable,
    experiment_id: str,
    *,
    register: bool,
    lock_file: Path | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """One MLflow run with the config, lineage, per-fold and aggregated metrics, plots, the model
    (signature + input example) and the lock file; registering makes the version the ``challenger``."""
    import mlflow

    from fraud_detection.models import registry
    from fraud_detection.training import tracking

    bundle = result.bundle
    metrics = {
        f"test_{name}": value for name, value in (result.protocol.summary if result.protocol else {}).items()
    }
    metrics.update({f"holdout_{name}": value for name, value in (result.holdout_metrics or {}).items()})
    served = bundle.metadata.get("served_holdout_metrics") or {}
    metrics.update({f"served_holdout_{name}": value for name, value in served.items()})
    train_rows = bundle.metadata["data"]["train_rows"]
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or "train") as run:
        mlflow.set_tags(
            {
                "git_commit": tracking.git_commit(),
                "data_digest": table.content_digest,
                "feature_service": bundle.feature_service,
                "feature_set": config.features.feature_set,
                "model_type": bundle.model_type,
                registry.DIGEST_TAG: result.digest,
            }
        )
        mlflow.log_dict(config.model_dump(mode="json"), "config/training.json")
        mlflow.log_params(
            {
                **tracking.flatten("model", config.model.params()),
                "model.type": config.model.type,
                "seed": config.seed,
                "feature_set": config.features.feature_set,
                "n_features": len(bundle.feature_names),
                "train_start": result.window.start.date().isoformat(),
                "train_end": result.window.end.date().isoformat(),
                "train_rows": train_rows,
                "train_frauds": bundle.metadata["data"]["train_frauds"],
                "data_rows": len(table.frame),
                "data_frauds": int(table.label.sum()),
                "threshold": bundle.threshold,
            }
        )
        mlflow.log_input(
            tracking.dataset_input(table.source, table.content_digest, len(table.frame)), context="training"
        )
        if result.protocol is not None:
            for index, fold in enumerate(result.protocol.folds):
                mlflow.log_metrics({f"fold_test_{k}": v for k, v in fold.metrics.items()}, step=index)
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        _log_figures(result)
        if lock_file is not None:
            tracking.log_lock_file(lock_file)
        example = table.frame[list(bundle.feature_names)].head(5).astype(np.float32)
        info = tracking.log_bundle_model(
            result.bundle_dir,
            result.digest,
            example,
            bundle.predict_proba(example),
            config.registered_model if register else None,
        )
        version = None
        if register and info.registered_model_version is not None:
            version = str(info.registered_model_version)
            registry.tag_version(
                config.registered_model,
                version,
                {
                    registry.DIGEST_TAG: result.digest,
                    "data_digest": table.content_digest,
                    "feature_service": bundle.feature_service,
                    "model_type": bundle.model_type,
                    "run_id": run.info.run_id,
                    **{k: round(v, 6) for k, v in metrics.items() if np.isfinite(v)},
                },
            )
            registry.set_alias(config.registered_model, registry.CHALLENGER, version)
    return TrainResult(**{**result.__dict__, "run_id": run.info.run_id, "registered_version": version})


def _log_figures(result: TrainResult) -> None:
    import mlflow

    from fraud_detection.training import tracking

    bundle = result.bundle
    names = list(bundle.feature_names)
    if bundle.booster is not None:
        gain = bundle.booster.get_score(importance_type="gain")
        values = np.array([gain.get(name, 0.0) for name in names])
        title = "XGBoost gain"
    else:
        assert bundle.linear is not None
        values = np.abs(bundle.linear.coef)
        title = "|coefficient| (standardised inputs)"
    figure = tracking.figure_feature_importance(names, values, f"feature importance: {title}")
    mlflow.log_figure(figure, "plots/feature_importance.png")
    if result.protocol is not None:
        y_true = np.concatenate([fold.y_true for fold in result.protocol.folds])
        y_score = np.concatenate([fold.y_score for fold in result.protocol.folds])
        figure = tracking.figure_pr_curve(y_true, y_score, "precision-recall, prequential test folds")
        mlflow.log_figure(figure, "plots/pr_curve.png")
