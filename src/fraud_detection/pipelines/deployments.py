"""The scheduled deployments, defined in code: training weekly, batch inference daily, monitoring hourly.

``fraud pipeline serve`` serves them from one long-running process (Prefect 3 ``serve``: the
process polls the API and runs each scheduled flow run as a subprocess). Against a Prefect server
set ``PREFECT_API_URL``; without it Prefect starts a temporary local server that lives as long as
the process. To run them on a work pool instead, pass the same deployments' flows to
``flow.deploy(name=..., work_pool_name=..., schedules=[...])``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron

from fraud_detection.pipelines.batch_flow import batch_inference_flow
from fraud_detection.pipelines.monitoring_flow import (
    MONITORING_CRON,
    MonitoringFlowParameters,
    monitoring_flow,
)
from fraud_detection.pipelines.runtime import prepare_flow_process
from fraud_detection.pipelines.training_flow import TrainingFlowParameters, training_flow

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

TIMEZONE = "UTC"
TRAINING_DEPLOYMENT = "fraud-training-weekly"
TRAINING_CRON = "0 3 * * 1"  # Mondays 03:00: a week of new labels per retrain
BATCH_DEPLOYMENT = "fraud-batch-daily"
BATCH_CRON = "0 4 * * *"  # every day 04:00, after the day's partition has landed
MONITORING_DEPLOYMENT = "fraud-monitoring-hourly"
TAGS = ["fraud-detection"]


def training_deployment(parameters: TrainingFlowParameters | None = None) -> RunnerDeployment:
    """The weekly training deployment (one run at a time: a late run is not overlapped by the next)."""
    return training_flow.to_deployment(
        name=TRAINING_DEPLOYMENT,
        schedules=[Cron(TRAINING_CRON, timezone=TIMEZONE)],
        parameters={"parameters": (parameters or TrainingFlowParameters()).model_dump(mode="json")},
        concurrency_limit=1,
        tags=[*TAGS, "training"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def batch_deployment(parameters: dict[str, Any] | None = None) -> RunnerDeployment:
    """The daily batch-inference deployment."""
    return batch_inference_flow.to_deployment(
        name=BATCH_DEPLOYMENT,
        schedules=[Cron(BATCH_CRON, timezone=TIMEZONE)],
        parameters=parameters or {},
        concurrency_limit=1,
        tags=[*TAGS, "batch-inference"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def monitoring_deployment(parameters: MonitoringFlowParameters | None = None) -> RunnerDeployment:
    """The hourly monitoring deployment (drift, performance on the labels that arrived, alerts)."""
    return monitoring_flow.to_deployment(
        name=MONITORING_DEPLOYMENT,
        schedules=[Cron(MONITORING_CRON, timezone=TIMEZONE)],
        parameters={"parameters": (parameters or MonitoringFlowParameters()).model_dump(mode="json")},
        concurrency_limit=1,
        tags=[*TAGS, "monitoring"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def build_deployments(training: TrainingFlowParameters | None = None) -> list[RunnerDeployment]:
    """Every scheduled deployment (nothing is sent to the API until they are served)."""
    return [training_deployment(training), batch_deployment(), monitoring_deployment()]


def serve_deployments(training: TrainingFlowParameters | None = None, *, limit: int | None = None) -> None:
    """Register the deployments with the API and run their scheduled flow runs until interrupted."""
    prepare_flow_process()
    from prefect import serve

    serve(*build_deployments(training), limit=limit)
