"""The monitoring flow: make sure the model's reference exists → one monitoring pass over the trailing window.

Wiring only: each task is one call into :mod:`fraud_detection.monitoring.run`, and tasks pass URIs, paths,
digests and small JSON summaries. Only the I/O task (resolving the model and building or finding its
reference: registry, artifact store, training data) retries, on I/O errors only; the pass itself reads its
inputs once and a contract failure fails the flow at once. Alerts are the pass's *result*: a run that raised
alerts completes (they are logged, in ``alerts.json``/``alerts.prom`` and sent to the webhook).

Meant to run hourly (``MONITORING_CRON``): the drift window is the ``window_hours`` before the scheduled time
(floored to the hour), performance looks back ``performance_lookback_days`` (the monitoring config).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.pipelines.runtime import prepare_flow_process, transient

FLOW_NAME = "fraud-monitoring"
MONITORING_CRON = "5 * * * *"  # hourly, five minutes past: the server's event files of the hour have rolled


class MonitoringFlowParameters(BaseModel):
    """The flow's parameters; the defaults watch the champion's last 24 hours of served traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_uri: str = "models:/fraud-detector@champion"
    data_dir: Path | None = Field(
        None, description="Default root of the folders below; unset: FRAUD_DATA_DIR."
    )
    events_dir: Path | None = Field(
        None, description="Server prediction events; unset: <data_dir>/predictions."
    )
    labels_path: Path | None = Field(
        None, description="Delayed labels (transaction_id, is_fraud); unset: no performance."
    )
    reference_dir: Path | None = Field(
        None, description="Stored reference; unset: <data_dir>/monitoring/reference/<model digest>."
    )
    training_config: Path | None = Field(
        None, description="Training config to build a missing reference from the model's training window."
    )
    training_overrides: list[str] = Field(
        default_factory=list,
        description="key=value overrides of the training config (e.g. data.source, data.contract).",
    )
    monitoring_config: Path = Path("configs/monitoring/default.yaml")
    out_dir: Path | None = Field(
        None, description="Output folder; unset: <data_dir>/monitoring/runs/<period>."
    )
    end: dt.datetime | None = Field(None, description="Window end (naive UTC); unset: the scheduled hour.")
    window_hours: int = Field(24, ge=1, le=24 * 31)
    html: bool = False


@task(
    name="prepare-reference",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=transient,
)
def prepare_reference(
    model_uri: str,
    data_dir: Path,
    reference_dir: Path | None,
    training_config: Path | None,
    config: Any,
    training_overrides: list[str] | None = None,
) -> dict[str, str]:
    from fraud_detection.monitoring import run

    model = _resolve(model_uri)
    folder = reference_dir or run.default_reference_dir(data_dir, model)
    overrides = training_overrides or []
    frame = (lambda: _training_frame(training_config, overrides)) if training_config is not None else None
    run.prepare_reference(model, folder, training_frame=frame, config=config)
    return {"reference_dir": str(folder), "digest": model.digest}


@task(name="monitoring-pass", cache_policy=NO_CACHE, persist_result=False)
def monitoring_pass(
    model_uri: str,
    digest: str,
    events_dir: Path,
    start: dt.datetime,
    end: dt.datetime,
    reference_dir: Path,
    out_dir: Path,
    labels_path: Path | None,
    config: Any,
    html: bool,
) -> dict[str, Any]:
    from fraud_detection.monitoring import run

    result = run.run_monitoring(
        _resolve(model_uri, digest),
        events_dir,
        start=start,
        end=end,
        reference_dir=reference_dir,
        out_dir=out_dir,
        labels_path=labels_path,
        config=config,
        html=html,
    )
    return {
        "n_predictions": result.n_predictions,
        "alerts": [alert.name for alert in result.alerts],
        "outputs": {name: str(path) for name, path in result.outputs.items()},
    }


def _resolve(model_uri: str, digest: str | None = None) -> Any:
    from fraud_detection.config import Settings
    from fraud_detection.models.registry import resolve_model

    return resolve_model(model_uri, public_key=Settings().model_public_key, expected_digest=digest)


def _training_frame(training_config: Path, overrides: list[str]) -> Any:
    from fraud_detection.config import Settings
    from fraud_detection.data.contract import load_contract
    from fraud_detection.training.config import load_training_config
    from fraud_detection.training.dataset import load_training_table

    config = load_training_config(training_config, overrides)
    contract = load_contract(config.data.contract, Settings().contracts_dir)
    return load_training_table(config, contract, as_of=dt.datetime.now(dt.UTC).replace(tzinfo=None)).frame


@flow(name=FLOW_NAME, persist_result=False, validate_parameters=True)
def monitoring_flow(parameters: MonitoringFlowParameters = MonitoringFlowParameters()) -> dict[str, Any]:  # noqa: B008
    """One monitoring pass over the trailing window: drift, performance, alerts."""
    prepare_flow_process()
    from fraud_detection.config import Settings
    from fraud_detection.monitoring.run import load_monitoring_config

    settings = Settings() if parameters.data_dir is None else Settings(data_dir=parameters.data_dir)
    config = load_monitoring_config(parameters.monitoring_config)
    end = parameters.end or _scheduled_hour()
    start = end - dt.timedelta(hours=parameters.window_hours)
    pinned = prepare_reference(
        parameters.model_uri,
        settings.data_dir,
        parameters.reference_dir,
        parameters.training_config,
        config,
        parameters.training_overrides,
    )
    out_dir = (
        parameters.out_dir
        or settings.data_dir / "monitoring" / "runs" / f"{start:%Y%m%dT%H%M%S}--{end:%Y%m%dT%H%M%S}"
    )
    summary = monitoring_pass(
        parameters.model_uri,
        pinned["digest"],
        parameters.events_dir or settings.data_dir / "predictions",
        start,
        end,
        Path(pinned["reference_dir"]),
        out_dir,
        parameters.labels_path,
        config,
        parameters.html,
    )
    return {**summary, "start": start.isoformat(), "end": end.isoformat()}


def _scheduled_hour() -> dt.datetime:
    """The flow run's scheduled time, floored to the hour, naive UTC."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    moment = dt.datetime.fromtimestamp(scheduled.timestamp(), dt.UTC).replace(tzinfo=None)
    return moment.replace(minute=0, second=0, microsecond=0)
