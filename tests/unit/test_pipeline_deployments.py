"""The scheduled deployments as defined in code: names, cron schedules, parameters (no server)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.unit


def _cron(deployment) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules]


def test_training_runs_weekly_with_the_demo_defaults() -> None:
    from fraud_detection.pipelines import deployments
    from fraud_detection.pipelines.training_flow import TrainingFlowParameters

    training = deployments.training_deployment()
    assert training.name == "fraud-training-weekly" and training.flow_name == "fraud-training"
    assert _cron(training) == [("0 3 * * 1", "UTC")]
    assert training.entrypoint == "fraud_detection.pipelines.training_flow.training_flow"
    assert (
        TrainingFlowParameters.model_validate(training.parameters["parameters"]) == TrainingFlowParameters()
    )
    assert training.concurrency_limit == 1


def test_batch_inference_runs_daily_and_monitoring_hourly() -> None:
    from fraud_detection.pipelines import deployments
    from fraud_detection.pipelines.monitoring_flow import MonitoringFlowParameters

    built = {d.name: d for d in deployments.build_deployments()}
    assert set(built) == {"fraud-training-weekly", "fraud-batch-daily", "fraud-monitoring-hourly"}
    assert _cron(built["fraud-batch-daily"]) == [("0 4 * * *", "UTC")]
    assert (
        built["fraud-batch-daily"].entrypoint == "fraud_detection.pipelines.batch_flow.batch_inference_flow"
    )
    monitoring = built["fraud-monitoring-hourly"]
    assert _cron(monitoring) == [("5 * * * *", "UTC")]
    assert monitoring.entrypoint == "fraud_detection.pipelines.monitoring_flow.monitoring_flow"
    assert (
        MonitoringFlowParameters.model_validate(monitoring.parameters["parameters"])
        == MonitoringFlowParameters()
    )
    assert all(d.concurrency_limit == 1 for d in built.values())
    from fraud_detection.pipelines.batch_flow import BatchFlowParameters

    batch = built["fraud-batch-daily"].parameters["parameters"]
    assert BatchFlowParameters.model_validate(batch) == BatchFlowParameters()


def test_a_parameters_file_reaches_each_scheduled_flow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from fraud_detection.pipelines import deployments

    path = tmp_path / "schedule.yaml"
    path.write_text(
        "training:\n  source: s3://bucket/transactions/\n  train_start: null\n"
        "batch:\n  dataset: cards\n  features_dir: /srv/fraud/features/cards\n"
        "monitoring:\n  labels_path: /srv/fraud/labels\n  training_config: configs/training/default.yaml\n"
        "  training_overrides: [data.source=/srv/fraud/raw/cards]\n"
    )
    schedule = deployments.load_schedule_parameters(path)
    built = {d.name: d.parameters["parameters"] for d in deployments.build_deployments(schedule)}
    training = deployments.TrainingFlowParameters.model_validate(built["fraud-training-weekly"])
    assert training.source == "s3://bucket/transactions/" and training.train_start is None
    batch = deployments.BatchFlowParameters.model_validate(built["fraud-batch-daily"])
    assert batch.dataset == "cards" and batch.features_dir == Path("/srv/fraud/features/cards")
    monitoring = deployments.MonitoringFlowParameters.model_validate(built["fraud-monitoring-hourly"])
    assert monitoring.labels_path == Path("/srv/fraud/labels")
    assert monitoring.training_config == Path("configs/training/default.yaml")
    assert monitoring.training_overrides == ["data.source=/srv/fraud/raw/cards"]


def test_a_misspelt_parameter_is_refused_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.errors import ConfigError
    from fraud_detection.pipelines import deployments

    path = tmp_path / "schedule.yaml"
    path.write_text("monitoring:\n  label_path: /srv/fraud/labels\n")
    with pytest.raises(ConfigError, match=r"monitoring\.label_path='/srv/fraud/labels': Extra inputs"):
        deployments.load_schedule_parameters(path)


@pytest.mark.parametrize(("preset", "expected"), [(None, 120), ("45", 45)])
def test_the_ephemeral_server_gets_time_to_start_unless_told_otherwise(
    preset: str | None, expected: int
) -> None:
    """Prefect reads its settings at import: the CLI's process setup must come first, and take effect."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_EPHEMERAL")}
    if preset is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = preset
    program = (
        "import sys, fraud_detection.cli\n"
        "assert 'prefect' not in sys.modules, 'the CLI imports Prefect before its process setup'\n"
        "from fraud_detection.pipelines.runtime import prepare_flow_process\n"
        "prepare_flow_process()\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.ephemeral.startup_timeout_seconds)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.strip().splitlines()[-1]) == expected


def test_a_fixed_date_in_a_schedule_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.errors import ConfigError
    from fraud_detection.pipelines import deployments

    path = tmp_path / "schedule.yaml"
    path.write_text("batch:\n  date: 2024-01-01\nmonitoring:\n  end: 2024-01-01T00:00:00\n")
    with pytest.raises(
        ConfigError, match=r"batch\.date=2024-01-01, monitoring\.end=2024-01-01 00:00:00: a sch"
    ):
        deployments.load_schedule_parameters(path)
