"""The training lifecycle as steps over paths, URIs and run ids.

Each step reads what it needs from disk or the model registry, calls the library, writes its
outputs atomically and returns a small JSON-able record. The training flow
(``fraud_detection.pipelines.training_flow``) runs each step as one task; ``fraud evaluate`` and
``fraud promote`` share :func:`evaluate_version` and :func:`promote_challenger`.

Steps that touch MLflow point it at the given :class:`~fraud_detection.training.tracking.Tracking`
first and turn store failures into :class:`~fraud_detection.errors.StorageError` naming the store.
"""

from __future__ import annotations

import datetime as dt
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from fraud_detection.errors import ModelGateFailed

if TYPE_CHECKING:
    from fraud_detection.data.contract import Contract
    from fraud_detection.evaluation.evaluate import Evaluation, EvaluationConfig
    from fraud_detection.features.engineering import FeatureConfig
    from fraud_detection.features.store import FeatureStoreSettings
    from fraud_detection.models.registry import ResolvedModel
    from fraud_detection.training.config import TrainingConfig
    from fraud_detection.training.dataset import TrainingTable
    from fraud_detection.training.tracking import Tracking


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ValidatedData(_Record):
    manifest_path: str
    rows: int
    quarantined_rows: int
    content_digest: str | None
    warnings: list[str]


class TrainedModel(_Record):
    bundle_dir: str
    bundle_sha256: str
    run_id: str
    registered_model: str
    version: str
    train_start: dt.date
    test_metrics: dict[str, float]  # means over the prequential test folds

    @property
    def model_uri(self) -> str:
        return f"models:/{self.registered_model}/{self.version}"


class EvaluatedModel(_Record):
    model_uri: str
    version: str
    passed: bool
    failures: list[str]
    gates: dict[str, bool]
    metrics: dict[str, float]  # headline point estimates on the held-out week
    report_path: str
    evidence_path: str
    run_id: str | None


class TunedConfig(_Record):
    config_path: str
    best_params: dict[str, float | int | str | bool]
    best_value: float
    n_trials: int
    parent_run_id: str | None


class Promotion(_Record):
    registered_model: str
    champion: str
    previous: str | None


class StageTiming(_Record):
    stage: str
    seconds: float


class TrainingRunSummary(_Record):
    """What one training flow run did: its stages and their wall time, key metrics, where outputs are."""

    stages: list[StageTiming]
    registered_model: str
    version: str
    run_id: str
    gates_passed: bool
    gate_failures: list[str]
    champion: str | None
    metrics: dict[str, float]
    paths: dict[str, str]


def write_run_summary(summary: TrainingRunSummary, path: Path) -> Path:
    from fraud_detection.utils.io import atomic_write_text

    # Not atomic_write_json: its sorted keys would lose the pipeline order of the stages and paths.
    atomic_write_text(path, summary.model_dump_json(indent=2) + "\n")
    return path


def read_run_summary(path: Path) -> TrainingRunSummary:
    """The summary :func:`write_run_summary` wrote (a ``DataSourceError`` when there is none)."""
    from pydantic import ValidationError

    from fraud_detection.errors import DataSourceError

    try:
        return TrainingRunSummary.model_validate_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValidationError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataSourceError(f"no readable training flow summary at {str(path)!r}: {reason}") from err


def _tracked(tracking: Tracking | None):  # type: ignore[no-untyped-def]
    """Point MLflow at ``tracking`` and translate its failures; no-op without tracking."""
    if tracking is None:
        return nullcontext()
    from fraud_detection.training.tracking import mlflow_errors, open_tracking

    with mlflow_errors(tracking):
        open_tracking(tracking)
    return mlflow_errors(tracking)


# --- data ---------------------------------------------------------------------------------------


def validate_and_publish(
    source: str, contract: Contract, out_dir: Path, *, as_of: dt.datetime
) -> ValidatedData:
    """Validate ``source``, publish the result in ``out_dir`` (a failure's report too), then gate it.

    Raises :class:`DataContractError` or :class:`DataQualityError` after the report is written.
    """
    from fraud_detection.data.ingest import publish, validate_dataset
    from fraud_detection.data.quality import gate
    from fraud_detection.errors import DataContractError

    try:
        result = validate_dataset(source, contract, as_of=as_of)
    except DataContractError as err:
        if err.report is not None:
            publish(err.report, out_dir)
        raise
    path = publish(result.report, out_dir, result)
    gate(result.report)
    return ValidatedData(
        manifest_path=str(path),
        rows=result.report.n_valid_rows,
        quarantined_rows=result.report.n_quarantined_rows,
        content_digest=result.report.content_digest,
        warnings=result.report.warnings,
    )


def feature_window(features_dir: Path) -> tuple[dt.datetime, dt.datetime]:
    """The event-time span of the transactions behind ``features_dir`` (end one second past the last)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from fraud_detection.features.build import table_file

    times = pq.read_table(Path(features_dir) / table_file("transaction"), columns=["event_timestamp"])
    bounds = pc.min_max(times.column("event_timestamp")).as_py()
    return bounds["min"].replace(tzinfo=None), bounds["max"].replace(tzinfo=None) + dt.timedelta(seconds=1)


def apply_feature_store(settings: FeatureStoreSettings, features_dir: Path, config: FeatureConfig) -> str:
    """Register the feature definitions and the ``fraud_v1`` service; returns the Feast project."""
    from fraud_detection.features import store

    with store.open_store(settings, features_dir, config) as handle:
        store.apply(handle)
        return str(handle.feast.project)


def materialize_feature_store(
    settings: FeatureStoreSettings,
    features_dir: Path,
    config: FeatureConfig,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> tuple[dt.datetime, dt.datetime]:
    """Load the online store with each entity's latest row in ``[start, end]`` (default: all the data)."""
    from fraud_detection.features import store

    if start is None or end is None:
        first, last = feature_window(features_dir)
        start, end = start or first, end or last
    with store.open_store(settings, features_dir, config) as handle:
        store.materialize(handle, start, end)
    return start, end


# --- training set, tuning, training ---------------------------------------------------------------


def build_training_set(
    config: TrainingConfig, contract: Contract, out_dir: Path, *, as_of: dt.datetime
) -> Path:
    """Validate the configured source (quality gate included), compute the training table, persist it."""
    from fraud_detection.training.dataset import load_training_table, write_training_table

    return write_training_table(load_training_table(config, contract, as_of=as_of), out_dir)


def tune_config(
    config: TrainingConfig,
    training_set: Path,
    out_path: Path,
    *,
    tracking: Tracking | None,
    n_trials: int | None = None,
) -> TunedConfig:
    """Search hyperparameters on the validation folds; writes the tuned config (YAML) to ``out_path``."""
    import yaml

    from fraud_detection.training import tuning
    from fraud_detection.training.dataset import read_training_table
    from fraud_detection.utils.io import atomic_write_text

    table = read_training_table(training_set)
    with _tracked(tracking):
        experiment = None
        if tracking is not None:
            from fraud_detection.training.tracking import experiment_id

            experiment = experiment_id(config.experiment, tracking)
        result = tuning.tune(config, table, experiment_id=experiment, n_trials=n_trials)
    tuned = result.tuned_config(config)
    atomic_write_text(out_path, yaml.safe_dump(tuned.model_dump(mode="json"), sort_keys=False))
    return TunedConfig(
        config_path=str(out_path),
        best_params=result.best_params,
        best_value=result.best_value,
        n_trials=result.n_complete + result.n_pruned + result.n_infeasible,
        parent_run_id=result.parent_run_id,
    )


def train_and_register(
    config: TrainingConfig,
    training_set: Path,
    out_dir: Path,
    *,
    tracking: Tracking,
    train_start: dt.date | None = None,
    lock_file: Path | None = None,
) -> TrainedModel:
    """Train on one window, write the bundle, log the run and register it as the ``challenger``."""
    from fraud_detection.errors import StorageError
    from fraud_detection.training import runs
    from fraud_detection.training.dataset import read_training_table
    from fraud_detection.training.tracking import experiment_id

    table = read_training_table(training_set)
    with _tracked(tracking):
        experiment = experiment_id(config.experiment, tracking)  # before the training: fail fast
    result = runs.train(config, table, out_dir, train_start=train_start)
    with _tracked(tracking):
        result = runs.log_training_run(result, config, table, experiment, register=True, lock_file=lock_file)
    if result.run_id is None or result.registered_version is None:
        raise StorageError(f"MLflow did not register {config.registered_model!r} for the run of {out_dir}")
    summary = result.protocol.summary if result.protocol is not None else {}
    return TrainedModel(
        bundle_dir=str(result.bundle_dir),
        bundle_sha256=result.digest,
        run_id=result.run_id,
        registered_model=config.registered_model,
        version=result.registered_version,
        train_start=result.window.start.date(),
        test_metrics={k: float(v) for k, v in summary.items() if k.endswith("_mean")},
    )


# --- evaluation, gates, promotion ------------------------------------------------------------------


def evaluate_resolved(
    model_uri: str,
    config: TrainingConfig,
    table: TrainingTable,
    checks: EvaluationConfig,
    out_dir: Path | None,
    *,
    evaluations_dir: Path,
    tracking: Tracking | None,
    public_key: Path | None = None,
) -> tuple[Evaluation, Path]:
    """Resolve ``model_uri`` (and the champion to compare with), evaluate it on its held-out week and
    write the evidence and the report to ``out_dir`` (default ``evaluations_dir/<name>-v<version>``)."""
    from fraud_detection.evaluation.evaluate import run_evaluation
    from fraud_detection.models.registry import CHAMPION, ModelRef, resolve_alias, resolve_model

    ref = ModelRef.parse(model_uri)
    registered = model_uri.startswith("models:/")
    champion: ResolvedModel | None = None
    with _tracked(tracking) if registered else nullcontext():
        resolved = resolve_model(model_uri, public_key=public_key)
        if ref.name is not None:  # no champion yet: nothing to regress against
            champion = resolve_alias(ref.name, CHAMPION, public_key=public_key)
    name = f"{ref.name}-v{resolved.version}" if ref.name else resolved.version
    out_dir = out_dir or evaluations_dir / name
    evaluation = run_evaluation(resolved, table, config, checks, out_dir, champion=champion)
    return evaluation, out_dir


def record_evaluation(
    evaluation: Evaluation, config: TrainingConfig, out_dir: Path, model_uri: str, *, tracking: Tracking
) -> str:
    """Log the evidence to MLflow and, for a registered version, its gate outcome as tags; the run id."""
    from fraud_detection.evaluation.evaluate import log_evaluation
    from fraud_detection.models.registry import ModelRef
    from fraud_detection.training.tracking import experiment_id

    with _tracked(tracking):
        experiment = experiment_id(config.experiment, tracking)
        return log_evaluation(evaluation, experiment, out_dir, ModelRef.parse(model_uri).name)


def evaluate_version(
    model_uri: str,
    config: TrainingConfig,
    training_set: Path,
    checks: EvaluationConfig,
    *,
    evaluations_dir: Path,
    tracking: Tracking,
    public_key: Path | None = None,
) -> EvaluatedModel:
    """Evaluate a model on its held-out week, write the report and record the gate outcome.

    A failed gate does not raise here (the outcome is recorded either way): :func:`require_gates` decides.
    """
    from fraud_detection.training.dataset import read_training_table

    table = read_training_table(training_set)
    evaluation, out_dir = evaluate_resolved(
        model_uri,
        config,
        table,
        checks,
        None,
        evaluations_dir=evaluations_dir,
        tracking=tracking,
        public_key=public_key,
    )
    run_id = record_evaluation(evaluation, config, out_dir, model_uri, tracking=tracking)
    return EvaluatedModel(
        model_uri=model_uri,
        version=evaluation.model_version,
        passed=evaluation.passed,
        failures=evaluation.failures,
        gates={gate.name: gate.passed for gate in evaluation.gates},
        metrics={name: float(point) for name, (point, _, _) in evaluation.headline.items()},
        report_path=str(out_dir / "report.html"),
        evidence_path=str(out_dir / "evaluation.json"),
        run_id=run_id,
    )


def require_gates(evaluated: EvaluatedModel) -> None:
    """Raise :class:`ModelGateFailed` listing every failed gate; return quietly when all passed."""
    if not evaluated.passed:
        raise ModelGateFailed(evaluated.model_uri, evaluated.failures)


def promote_challenger(name: str, version: str | None = None, *, tracking: Tracking) -> Promotion:
    """Make ``version`` (default: the current challenger) the champion; only gate-passed versions move."""
    from fraud_detection.models import registry

    with _tracked(tracking):
        chosen = version or registry.alias_version(name, registry.CHALLENGER)
        previous = registry.promote(name, chosen)
    return Promotion(registered_model=name, champion=chosen, previous=previous)
