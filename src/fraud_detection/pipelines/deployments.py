"""The scheduled deployments, defined in code: training weekly, batch inference daily, monitoring hourly.

``fraud pipeline serve`` serves them from one long-running process (Prefect 3 ``serve``: the
process polls the API and runs each scheduled flow run as a subprocess). Against a Prefect server
set ``PREFECT_API_URL``; without it Prefect starts a temporary local server that lives as long as
the process. To run them on a work pool instead, pass the same deployments' flows to
``flow.deploy(name=..., work_pool_name=..., schedules=[...])``.

Each flow's parameters default to the demo's (the simulator's data under ``FRAUD_DATA_DIR``). A
real deployment gives its own in one YAML file, :class:`ScheduleParameters`
(``fraud pipeline serve --parameters FILE``, example in ``docs/pipelines.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.deployments.runner import EntrypointType
from prefect.schedules import Cron
from pydantic import BaseModel, ConfigDict, model_validator

from fraud_detection.config import load_yaml_config
from fraud_detection.pipelines.batch_flow import BatchFlowParameters, batch_inference_flow
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
# The parameters each scheduled run derives from its own scheduled time when they are unset.
PER_RUN_TIMES = (("batch", "date"), ("batch", "logical_time"), ("monitoring", "end"), ("training", "as_of"))


class ScheduleParameters(BaseModel):
    """The parameters of each scheduled flow; a flow left out runs with its defaults (the demo's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    training: TrainingFlowParameters = TrainingFlowParameters()
    batch: BatchFlowParameters = BatchFlowParameters()
    monitoring: MonitoringFlowParameters = MonitoringFlowParameters()

    @model_validator(mode="after")
    def _no_fixed_times(self) -> ScheduleParameters:
        """A schedule's runs take their day and window from the scheduled time: a fixed one would
        make every run redo the same day."""
        fixed = [
            f"{flow}.{name}={getattr(getattr(self, flow), name)}"
            for flow, name in PER_RUN_TIMES
            if getattr(getattr(self, flow), name) is not None
        ]
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)}: a scheduled flow takes these from its scheduled time; expected them unset"
            )
        return self


def load_schedule_parameters(path: Path) -> ScheduleParameters:
    """Read and validate a parameters file (YAML: ``training:``, ``batch:``, ``monitoring:``)."""
    return load_yaml_config(path, ScheduleParameters)


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


def batch_deployment(parameters: BatchFlowParameters | None = None) -> RunnerDeployment:
    """The daily batch-inference deployment."""
    return batch_inference_flow.to_deployment(
        name=BATCH_DEPLOYMENT,
        schedules=[Cron(BATCH_CRON, timezone=TIMEZONE)],
        parameters={"parameters": (parameters or BatchFlowParameters()).model_dump(mode="json")},
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


def build_deployments(schedule: ScheduleParameters | None = None) -> list[RunnerDeployment]:
    """Every scheduled deployment (nothing is sent to the API until they are served)."""
    schedule = schedule or ScheduleParameters()
    return [
        training_deployment(schedule.training),
        batch_deployment(schedule.batch),
        monitoring_deployment(schedule.monitoring),
    ]


def serve_deployments(schedule: ScheduleParameters | None = None, *, limit: int | None = None) -> None:
    """Register the deployments with the API and run their scheduled flow runs until interrupted."""
    prepare_flow_process()
    from prefect import serve

    serve(*build_deployments(schedule), limit=limit)
