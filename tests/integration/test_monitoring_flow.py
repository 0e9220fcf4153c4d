"""The monitoring Prefect flow: the tasks through ``.fn`` (no server), the retry configuration, and one
real flow run on the shared test Prefect server (alerts do not fail it)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fraud_detection.errors import ArtifactError, DataContractError, StorageError
from fraud_detection.monitoring.run import MonitoringConfig
from tests.integration.test_monitoring_run import (  # the same bundle, reference and traffic
    CONFIG,
    _traffic,
    _write_events,
    model,  # noqa: F401  (fixture)
    reference_dir,  # noqa: F401  (fixture)
)
from tests.prefect_support import prefect_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration


class _State:
    def __init__(self, error: BaseException) -> None:
        self.data = error  # a failed Prefect state holds its exception as its data


def test_only_the_io_task_retries_and_only_on_io_errors() -> None:
    from fraud_detection.pipelines import monitoring_flow

    assert monitoring_flow.prepare_reference.retries == 3
    assert monitoring_flow.monitoring_pass.retries == 0
    for error in (OSError("disk"), StorageError("disk")):
        assert monitoring_flow.transient(None, None, _State(error))
    for error in (DataContractError("bad rows"), ArtifactError("no reference"), ValueError("bug")):
        assert not monitoring_flow.transient(None, None, _State(error))


def test_tasks_wire_the_library_end_to_end(model, reference_dir, tmp_path) -> None:  # noqa: F811
    from fraud_detection.pipelines import monitoring_flow

    pinned = monitoring_flow.prepare_reference.fn(model.uri, tmp_path, reference_dir, None, CONFIG)
    assert pinned == {"reference_dir": str(reference_dir), "digest": model.digest}
    _write_events(
        tmp_path / "events", _traffic("2026-11-01", 1, seed=8, shift={0: 2.0, 1: 2.0}), model.version
    )
    summary = monitoring_flow.monitoring_pass.fn(
        model.uri, model.digest, tmp_path / "events", dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 2),
        reference_dir, tmp_path / "out", None, MonitoringConfig(min_predictions=10), False,
    )  # fmt: skip
    assert summary["n_predictions"] == 600 and "data_drift" in summary["alerts"]
    assert json.loads((tmp_path / "out" / "alerts.json").read_text())["alerts"][0]["name"] == "data_drift"


def test_a_missing_reference_without_training_config_fails_clearly(model, tmp_path) -> None:  # noqa: F811
    from fraud_detection.pipelines import monitoring_flow

    with pytest.raises(ArtifactError, match="no monitoring reference"):
        monitoring_flow.prepare_reference.fn(model.uri, tmp_path, tmp_path / "missing", None, CONFIG)


def test_training_overrides_reach_the_reference_data(tmp_path) -> None:
    # another dataset's champion: its reference must come from that dataset, not the config's own
    from fraud_detection.errors import FraudDetectionError
    from fraud_detection.pipelines import monitoring_flow
    from tests.conftest import REPO_ROOT

    config = REPO_ROOT / "configs" / "training" / "default.yaml"
    with pytest.raises(FraudDetectionError, match=str(tmp_path / "cards")):
        monitoring_flow._training_frame(config, [f"data.source={tmp_path / 'cards'}"])


def test_hourly_schedule_constant() -> None:
    from prefect.schedules import Cron

    from fraud_detection.pipelines.monitoring_flow import MONITORING_CRON

    assert Cron(MONITORING_CRON, timezone="UTC").cron.startswith("5 * * * *")


def test_the_flow_runs_a_pass_and_completes_despite_alerts(
    model,  # noqa: F811
    reference_dir,  # noqa: F811
    tmp_path,
    prefect_server,  # noqa: F811
) -> None:
    from fraud_detection.pipelines.monitoring_flow import MonitoringFlowParameters, monitoring_flow

    _write_events(
        tmp_path / "events", _traffic("2026-11-01", 1, seed=9, shift={0: 2.0, 1: 2.0}), model.version
    )
    config_path = tmp_path / "monitoring.yaml"
    config_path.write_text("min_predictions: 10\nperformance_lookback_days: 0\n", encoding="utf-8")
    summary = monitoring_flow(
        MonitoringFlowParameters(
            model_uri=model.uri,
            data_dir=tmp_path,
            events_dir=tmp_path / "events",
            reference_dir=reference_dir,
            monitoring_config=config_path,
            end=dt.datetime(2026, 11, 2),
            window_hours=24,
        )
    )
    assert "data_drift" in summary["alerts"] and summary["start"] == "2026-11-01T00:00:00"
    assert (tmp_path / "monitoring" / "runs" / "20261101T000000--20261102T000000" / "alerts.prom").is_file()
