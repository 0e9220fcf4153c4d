"""The training flow: simulate or ingest → validate + quality gate → features → Feast apply and
materialise → training set → (tune) → train → evaluate → gates → register (challenger) → promote.

Wiring only: each task is one call into :mod:`fraud_detection.training.lifecycle` (or the data and
feature modules) and tasks pass paths, URIs and run ids, never frames. Only I/O tasks retry, with
exponential backoff, and only on I/O errors; a contract, quality or gate failure fails the flow at
once with the library's message. No task result is cached or persisted (a scheduled retrain must
retrain); where a result is persisted it is JSON, never pickle.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.data.simulator import SimulatorConfig
from fraud_detection.errors import ModelGateFailed
from fraud_detection.pipelines.runtime import prepare_flow_process, transient
from fraud_detection.training import lifecycle

if TYPE_CHECKING:
    from fraud_detection.data.contract import Contract
    from fraud_detection.evaluation.evaluate import EvaluationConfig
    from fraud_detection.features.engineering import FeatureConfig
    from fraud_detection.features.store import FeatureStoreSettings
    from fraud_detection.training.config import TrainingConfig
    from fraud_detection.training.tracking import Tracking

T = TypeVar("T")

FLOW_NAME = "fraud-training"
SUMMARY_FILE = "training_flow_summary.json"
# Errors worth another try: a store or a disk that failed. Anything else (bad data, a failed gate,
# a bad config) fails the same way again.


class TrainingFlowParameters(BaseModel):
    """The flow's parameters; the defaults reproduce ``make demo`` on the simulator's default data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path | None = Field(None, description="Where every output goes; unset: FRAUD_DATA_DIR (data).")
    source: str | None = Field(None, description="Raw transactions to ingest; unset: simulate them.")
    dataset: str = Field(
        "simulator", description="Folder name of this dataset under raw/, processed/, features/."
    )
    simulator: SimulatorConfig = SimulatorConfig()
    training_config: Path = Path("configs/training/default.yaml")
    overrides: list[str] = Field(
        default_factory=list, description="key=value overrides of the training config."
    )
    evaluation_config: Path = Path("configs/evaluation/default.yaml")
    train_start: dt.date | None = Field(
        dt.date(2018, 9, 3), description="First day of the training window; unset: the latest labelled one."
    )
    tune: bool = False
    n_trials: int | None = Field(
        None, ge=1, description="Tuning trials; unset: the config's search.n_trials."
    )
    promote: bool = Field(True, description="Make the challenger the champion when every gate passed.")
    as_of: dt.datetime | None = Field(
        None, description="Reference time (UTC) of the data checks; unset: now."
    )


DEFAULT_PARAMETERS = TrainingFlowParameters()


_NO_RESULTS: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False, "result_serializer": "json"}
_IO_RETRIES: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": transient,
}


@task(name="simulate", **_NO_RESULTS, **_IO_RETRIES)
def simulate(config: SimulatorConfig, out_dir: Path) -> str:
    from fraud_detection.data.ingest import simulate_to_folder

    return str(simulate_to_folder(config, out_dir).manifest_path)


@task(name="validate", **_NO_RESULTS)
def validate(source: str, contract: Contract, out_dir: Path, as_of: dt.datetime) -> lifecycle.ValidatedData:
    return lifecycle.validate_and_publish(source, contract, out_dir, as_of=as_of)


@task(name="build-features", **_NO_RESULTS)
def build_features(
    source: str, contract: Contract, feature_config: FeatureConfig, out_dir: Path, as_of: dt.datetime
) -> str:
    from fraud_detection.features.build import build_feature_tables

    return str(build_feature_tables(source, contract, feature_config, out_dir, as_of=as_of).out_dir)


@task(name="feast-apply", **_NO_RESULTS, **_IO_RETRIES)
def feast_apply(settings: FeatureStoreSettings, features_dir: str, feature_config: FeatureConfig) -> str:
    return lifecycle.apply_feature_store(settings, Path(features_dir), feature_config)


@task(name="feast-materialize", **_NO_RESULTS, **_IO_RETRIES)
def feast_materialize(
    settings: FeatureStoreSettings, features_dir: str, feature_config: FeatureConfig
) -> list[dt.datetime]:
    return list(lifecycle.materialize_feature_store(settings, Path(features_dir), feature_config))


@task(name="training-set", **_NO_RESULTS)
def training_set(config: TrainingConfig, contract: Contract, out_dir: Path, as_of: dt.datetime) -> str:
    return str(lifecycle.build_training_set(config, contract, out_dir, as_of=as_of))


@task(name="tune", **_NO_RESULTS)
def tune(
    config: TrainingConfig, table_dir: str, out_path: Path, tracking: Tracking, n_trials: int | None
) -> lifecycle.TunedConfig:
    return lifecycle.tune_config(config, Path(table_dir), out_path, tracking=tracking, n_trials=n_trials)


@task(name="train-register", **_NO_RESULTS)
def train(
    config: TrainingConfig,
    table_dir: str,
    out_dir: Path,
    tracking: Tracking,
    train_start: dt.date | None,
    lock_file: Path | None,
) -> lifecycle.TrainedModel:
    return lifecycle.train_and_register(
        config, Path(table_dir), out_dir, tracking=tracking, train_start=train_start, lock_file=lock_file
    )


@task(name="evaluate", **_NO_RESULTS)
def evaluate(
    model_uri: str,
    config: TrainingConfig,
    table_dir: str,
    checks: EvaluationConfig,
    evaluations_dir: Path,
    tracking: Tracking,
    public_key: Path | None,
) -> lifecycle.EvaluatedModel:
    return lifecycle.evaluate_version(
        model_uri,
        config,
        Path(table_dir),
        checks,
        evaluations_dir=evaluations_dir,
        tracking=tracking,
        public_key=public_key,
    )


@task(name="gates", **_NO_RESULTS)
def gates(evaluated: lifecycle.EvaluatedModel) -> None:
    lifecycle.require_gates(evaluated)


@task(name="promote", **_NO_RESULTS, **_IO_RETRIES)
def promote(name: str, version: str, tracking: Tracking) -> lifecycle.Promotion:
    return lifecycle.promote_challenger(name, version, tracking=tracking)


@task(name="write-summary", **_NO_RESULTS, **_IO_RETRIES)
def write_summary(summary: lifecycle.TrainingRunSummary, path: Path) -> str:
    return str(lifecycle.write_run_summary(summary, path))


@flow(name=FLOW_NAME, result_serializer="json", persist_result=False, validate_parameters=True)
def training_flow(
    parameters: TrainingFlowParameters = DEFAULT_PARAMETERS,
) -> lifecycle.TrainingRunSummary:
    """Train, evaluate, register and (gates permitting) promote a fraud model from raw data."""
    prepare_flow_process()
    from fraud_detection.config import Settings
    from fraud_detection.data.contract import load_contract
    from fraud_detection.evaluation.evaluate import load_evaluation_config
    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.features.store import FeatureStoreSettings
    from fraud_detection.training.config import load_training_config
    from fraud_detection.training.tracking import tracking_from_settings

    # Config and settings are loaded once, here, and passed down typed.
    settings = Settings() if parameters.data_dir is None else Settings(data_dir=parameters.data_dir)
    data_dir = settings.data_dir
    store_settings = FeatureStoreSettings()
    if "feature_store_dir" not in store_settings.model_fields_set:  # FRAUD_FEATURE_STORE_DIR unset
        store_settings = store_settings.model_copy(update={"feature_store_dir": data_dir / "feature_store"})
    tracking = tracking_from_settings(settings)
    raw = parameters.source or str(data_dir / "raw" / parameters.dataset)
    config = load_training_config(parameters.training_config, [*parameters.overrides, f"data.source={raw}"])
    contract = load_contract(config.data.contract, settings.contracts_dir)
    feature_config = load_feature_config(config.features.config)
    checks = load_evaluation_config(parameters.evaluation_config)
    as_of = _utc_naive(parameters.as_of)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    lock = Path("uv.lock")

    stages: list[lifecycle.StageTiming] = []

    def timed(stage: str, call: Callable[..., T], *args: Any) -> T:
        started = time.perf_counter()
        result = call(*args)
        stages.append(lifecycle.StageTiming(stage=stage, seconds=round(time.perf_counter() - started, 2)))
        return result

    if parameters.source is None:
        timed("simulate", simulate, parameters.simulator, Path(raw))
    validated = timed("validate", validate, raw, contract, data_dir / "processed" / parameters.dataset, as_of)
    features_dir = timed(
        "build features",
        build_features,
        raw,
        contract,
        feature_config,
        data_dir / "features" / parameters.dataset,
        as_of,
    )
    timed("feast apply", feast_apply, store_settings, features_dir, feature_config)
    timed("feast materialize", feast_materialize, store_settings, features_dir, feature_config)
    table_dir = timed(
        "training set",
        training_set,
        config,
        contract,
        data_dir / "training_sets" / parameters.dataset / stamp,
        as_of,
    )
    if parameters.tune:
        tuned = timed(
            "tune",
            tune,
            config,
            table_dir,
            data_dir / "training_sets" / parameters.dataset / stamp / "tuned.yaml",
            tracking,
            parameters.n_trials,
        )
        config = load_training_config(Path(tuned.config_path))
    trained = timed(
        "train + register",
        train,
        config,
        table_dir,
        data_dir / "models" / config.experiment / stamp,
        tracking,
        parameters.train_start,
        lock if lock.is_file() else None,
    )
    evaluated = timed(
        "evaluate",
        evaluate,
        trained.model_uri,
        config,
        table_dir,
        checks,
        data_dir / "evaluations",
        tracking,
        settings.model_public_key,
    )
    summary_path = data_dir / "pipelines" / SUMMARY_FILE

    def summarise(champion: str | None) -> lifecycle.TrainingRunSummary:
        return lifecycle.TrainingRunSummary(
            stages=stages,
            registered_model=trained.registered_model,
            version=trained.version,
            run_id=trained.run_id,
            gates_passed=evaluated.passed,
            gate_failures=evaluated.failures,
            champion=champion,
            metrics={
                **{f"test_{k}": v for k, v in trained.test_metrics.items()},
                **{f"eval_{k}": v for k, v in evaluated.metrics.items()},
            },
            paths={
                "raw data": raw,
                "validated data": validated.manifest_path,
                "feature tables": features_dir,
                "feature store": str(store_settings.feature_store_dir),
                "training set": table_dir,
                "model bundle": trained.bundle_dir,
                "model report": evaluated.report_path,
                "registered model": trained.model_uri,
                "mlflow": tracking.tracking_uri,
                "summary": str(summary_path),
            },
        )

    try:
        timed("gates", gates, evaluated)
    except ModelGateFailed:
        # Kept before the flow fails: which gates failed, and where the report is.
        write_summary(summarise(None), summary_path)
        raise
    champion = None
    if parameters.promote:
        champion = timed("promote", promote, trained.registered_model, trained.version, tracking).champion
    summary = summarise(champion)
    write_summary(summary, summary_path)
    return summary


def _utc_naive(moment: dt.datetime | None) -> dt.datetime:
    if moment is not None and moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return (moment or dt.datetime.now(dt.UTC)).replace(tzinfo=None, microsecond=0)
