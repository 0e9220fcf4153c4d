"""``fraud tune``: Optuna search over the YAML search space, selecting on the validation folds only.

Objective: mean average precision over the prequential validation folds. TPE (seeded) proposes;
after each fold the running mean is reported, so the median pruner stops hopeless trials early.
Storage: in memory by default, a journal file for a path (several processes may share it), or a
database URL (e.g. PostgreSQL) for workers on several machines; workers join the same study by name.

Fairness-aware selection: with ``search.fairness``, each trial records the largest gap between the
protected groups' rate (true positive rate for equal opportunity, alert rate for statistical
parity) at the decision threshold, over its folds; the best trial is the best *feasible* one
(gap <= max_difference), never an infeasible one.

MLflow: one parent run per study invocation, one nested run per trial (a small callback of ours;
``optuna.integration.MLflowCallback`` is gone and its successor in optuna-integration is
deprecated).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from fraud_detection.errors import ConfigError, StorageError
from fraud_detection.training.config import FairnessConstraint, ModelConfig, SearchDimension, TrainingConfig
from fraud_detection.training.dataset import TrainingTable
from fraud_detection.training.trainer import FoldResult, run_protocol

_log = structlog.get_logger(__name__)

OBJECTIVE = "average_precision"
FAIRNESS_CONSTRAINT = "fairness_gap_excess"


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    n_complete: int
    n_pruned: int
    n_infeasible: int
    parent_run_id: str | None = None

    def tuned_config(self, config: TrainingConfig) -> TrainingConfig:
        """``config`` with the selected hyperparameters in place (what ``fraud train`` then uses)."""
        raw = config.model_dump(mode="json")
        raw["model"][config.model.type].update(self.best_params)
        raw["search"]["selected_by"] = (
            f"fraud tune: study {self.study_name!r}, trial {self.best_trial}, "
            f"validation average precision {self.best_value:.4f}"
        )
        return TrainingConfig.model_validate(raw)


def suggest(trial: Any, name: str, dimension: SearchDimension) -> Any:
    if dimension.type == "categorical":
        return trial.suggest_categorical(name, dimension.choices)
    assert dimension.low is not None and dimension.high is not None
    if dimension.type == "int":
        step = int(dimension.step) if dimension.step else 1
        return trial.suggest_int(name, int(dimension.low), int(dimension.high), step=step, log=dimension.log)
    return trial.suggest_float(name, dimension.low, dimension.high, step=dimension.step, log=dimension.log)


def group_rate_gap(
    fold: FoldResult, groups: np.ndarray, threshold: float, constraint: FairnessConstraint
) -> float:
    """The fold's fairness gap at ``threshold`` (see :class:`FairnessConstraint`); groups without the
    needed rows are skipped, and an undefined metric counts as no gap."""
    alerts = fold.y_score >= threshold
    if constraint.privileged is not None:
        from fraud_detection.evaluation import assess_fairness

        value = assess_fairness(fold.y_true, alerts.astype(int), groups, constraint.privileged)[
            constraint.metric
        ]
        return 0.0 if np.isnan(value) else abs(float(value))
    if constraint.metric == "average_odds_difference":
        raise ConfigError("search.fairness.metric 'average_odds_difference' needs search.fairness.privileged")
    rates = []
    for group in np.unique(groups[~_missing(groups)]):
        member = groups == group
        if constraint.metric == "equal_opportunity_difference":
            member &= fold.y_true == 1
        if member.sum() > 0:
            rates.append(alerts[member].mean())
    return float(max(rates) - min(rates)) if len(rates) > 1 else 0.0


def _missing(values: np.ndarray) -> np.ndarray:
    import pandas as pd

    return pd.isna(values)


def open_storage(storage: str | None) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage is None:
        return None
    if "://" in storage:
        return _rdb_storage(storage)
    path = Path(storage)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _rdb_storage(url: str, attempts: int = 4) -> Any:
    """An RDB storage; workers starting together race to create the schema, so the loser retries
    (the schema is there by then)."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
        except sqlalchemy.exc.SQLAlchemyError as err:
            if attempt == attempts - 1:
                shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
                raise StorageError(
                    f"Optuna storage {shown!r} cannot be opened: {type(err).__name__}"
                ) from err
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class TrialLogger:
    """Optuna callback: one nested MLflow run per finished trial under the study's parent run."""

    def __init__(self, experiment_id: str, parent_run_id: str) -> None:
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id

    def __call__(self, study: Any, trial: Any) -> None:
        from mlflow import MlflowClient

        client = MlflowClient()
        run = client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "optuna.study": study.study_name,
                "optuna.state": trial.state.name,
            },
        )
        for name, value in trial.params.items():
            client.log_param(run.info.run_id, name, value)
        if trial.value is not None:
            client.log_metric(run.info.run_id, f"validation_{OBJECTIVE}_mean", trial.value)
        for key, value in trial.user_attrs.items():
            if isinstance(value, int | float) and math.isfinite(value):
                client.log_metric(run.info.run_id, key, float(value))
        client.set_terminated(run.info.run_id)


def tune(
    config: TrainingConfig,
    table: TrainingTable,
    *,
    experiment_id: str | None = None,
    n_trials: int | None = None,
) -> TuneResult:
    import optuna

    search = config.search
    if not search.space:
        raise ConfigError("search.space is empty: name at least one hyperparameter to search")
    fairness = search.fairness
    groups = None
    if fairness is not None:
        if fairness.protected_attribute not in table.protected:
            raise ConfigError(
                f"search.fairness.protected_attribute={fairness.protected_attribute!r} is not a protected "
                f"column of the data contract (expected one of {list(table.protected)})"
            )
        groups = table.frame[fairness.protected_attribute].to_numpy(dtype=object)

    def objective(trial: optuna.Trial) -> float:
        chosen = {name: suggest(trial, name, dimension) for name, dimension in search.space.items()}
        raw = config.model.model_dump()
        raw[config.model.type].update(chosen)
        model = ModelConfig.model_validate(raw)
        folds_ap: list[float] = []
        gaps: list[float] = []

        def after_fold(index: int, fold: FoldResult) -> None:
            folds_ap.append(fold.metrics[OBJECTIVE])
            for name, value in fold.metrics.items():
                trial.set_user_attr(f"fold{index}_validation_{name}", value)
            trial.report(float(np.nanmean(folds_ap)), step=index)
            if index + 1 >= search.pruner_warmup_folds and trial.should_prune():
                raise optuna.TrialPruned()

        result = run_protocol(table, config, config.split.validation, model=model, after_fold=after_fold)
        if fairness is not None and groups is not None:
            threshold = _trial_threshold(config, result)
            trial.set_user_attr("threshold", threshold)
            for fold in result.folds:
                gaps.append(group_rate_gap(fold, groups[fold.test_rows], threshold, fairness))
            worst = max(gaps)
            trial.set_user_attr("fairness_gap_max", worst)
            trial.set_constraint(FAIRNESS_CONSTRAINT, worst - fairness.max_difference)
        for name, value in result.summary.items():
            trial.set_user_attr(f"validation_{name}", value)
        return result.summary[f"{OBJECTIVE}_mean"]

    study_name = search.study_name or f"{config.experiment}-{config.model.type}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name,
        direction="maximize",
        storage=open_storage(search.storage),
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        load_if_exists=True,
    )
    _pin_study(study, config, table)
    parent_run_id = None
    if experiment_id is not None:
        import mlflow

        with mlflow.start_run(experiment_id=experiment_id, run_name=f"tune-{study_name}") as parent:
            parent_run_id = parent.info.run_id
            mlflow.log_dict(config.model_dump(mode="json"), "config/training.json")
            mlflow.set_tags({"optuna.study": study_name, "optuna.storage": _storage_kind(search.storage)})
            study.optimize(
                objective,
                n_trials=n_trials or search.n_trials,
                callbacks=[TrialLogger(experiment_id, parent_run_id)],
            )
            result = _summarise(study, parent_run_id)
            mlflow.log_params({f"best.{k}": v for k, v in result.best_params.items()})
            mlflow.log_metrics(
                {
                    f"best_validation_{OBJECTIVE}_mean": result.best_value,
                    "n_complete": result.n_complete,
                    "n_pruned": result.n_pruned,
                    "n_infeasible": result.n_infeasible,
                }
            )
            return result
    study.optimize(objective, n_trials=n_trials or search.n_trials)
    return _summarise(study, None)


def _pin_study(study: Any, config: TrainingConfig, table: TrainingTable) -> None:
    """A stored study continues only with the same data, space and protocol: its best trial must
    stay comparable with the new ones."""
    import hashlib
    import json

    subject = {
        "data": table.content_digest,
        "features": list(table.feature_names),
        "split": config.split.model_dump(mode="json"),
        # The base model without the searched parameters: writing the selection back into the
        # config does not make the study another one.
        "model": {
            "type": config.model.type,
            "params": {k: v for k, v in config.model.params().items() if k not in config.search.space},
        },
        "space": {k: v.model_dump(mode="json") for k, v in config.search.space.items()},
        "fairness": config.search.fairness.model_dump(mode="json") if config.search.fairness else None,
        "seed": config.seed,
        "threshold": config.threshold.value,
    }
    digest = hashlib.sha256(json.dumps(subject, sort_keys=True).encode()).hexdigest()
    pinned = study.user_attrs.get("subject_sha256")
    if pinned is None:
        study.set_user_attr("subject_sha256", digest)
    elif pinned != digest:
        raise ConfigError(
            f"study {study.study_name!r} in {config.search.storage!r} was run on other data, features, "
            "search space or protocol; give this search a new search.study_name"
        )


def _trial_threshold(config: TrainingConfig, result: Any) -> float:
    """The threshold this trial's model would get: fixed, or by cost on its validation scores."""
    if config.threshold.strategy != "cost":
        return config.threshold.value  # an alert budget needs days; the fixed value stands in
    from fraud_detection.evaluation.metrics import select_threshold_by_cost

    y_true = np.concatenate([fold.y_true for fold in result.folds])
    y_score = np.concatenate([fold.y_score for fold in result.folds])
    return float(select_threshold_by_cost(y_true, y_score, config.threshold.cost))


def _storage_kind(storage: str | None) -> str:
    if storage is None:
        return "memory"
    return storage.split("://", 1)[0] if "://" in storage else "journal"


def _summarise(study: Any, parent_run_id: str | None) -> TuneResult:
    import optuna

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    feasible = [t for t in complete if all(v <= 0 for v in (t.constraints or {}).values())]
    if not feasible:
        raise ConfigError(
            f"study {study.study_name!r}: no complete trial meets the constraints "
            f"({len(complete)} complete, {len(pruned)} pruned); widen the search or relax search.fairness"
        )
    best = max(feasible, key=lambda t: (t.value, -t.number))
    return TuneResult(
        study_name=study.study_name,
        best_params=dict(best.params),
        best_value=float(best.value),
        best_trial=best.number,
        n_complete=len(complete),
        n_pruned=len(pruned),
        n_infeasible=len(complete) - len(feasible),
        parent_run_id=parent_run_id,
    )
