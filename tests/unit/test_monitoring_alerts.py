"""Alerts as structured events: one log line each, the gauge (firing 1, known-but-quiet 0), the textfile."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError
from structlog.testing import capture_logs

from fraud_detection.errors import ConfigError
from fraud_detection.monitoring.alerts import (
    ALERT_METRIC,
    LAST_RUN_METRIC,
    Alert,
    AlertSettings,
    alert_registry,
    publish_alerts,
)

pytestmark = pytest.mark.unit

NO_WEBHOOK = AlertSettings(webhook_url=None)


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_firing_alerts_are_logged_once_each_with_their_details(tmp_path):
    drift = Alert(
        name="data_drift", severity="warning", summary="3 of 10 columns drifted", details={"share": 0.3}
    )
    decay = Alert(name="performance_degraded", severity="critical", summary="AP fell 40 %")
    with capture_logs() as logs:
        result = publish_alerts([drift, decay], settings=NO_WEBHOOK)
    lines = [line for line in logs if line["event"] == "monitoring alert"]
    assert [(line["alert"], line["log_level"]) for line in lines] == [
        ("data_drift", "warning"),
        ("performance_degraded", "error"),
    ]
    assert lines[0]["detail_share"] == 0.3 and lines[0]["summary"] == "3 of 10 columns drifted"
    assert result.webhook_sent == 0 and result.webhook_failures == []


def test_gauge_is_one_for_firing_and_zero_for_quiet_known_alerts(tmp_path):
    path = tmp_path / "textfile" / "alerts.prom"
    result = publish_alerts(
        [Alert(name="score_drift", severity="warning", summary="score moved")],
        settings=NO_WEBHOOK,
        textfile=path,
    )
    assert result.textfile == path
    samples = _samples(path.read_text())
    assert samples[(ALERT_METRIC, (("name", "score_drift"), ("severity", "warning")))] == 1.0
    assert samples[(ALERT_METRIC, (("name", "performance_degraded"), ("severity", "critical")))] == 0.0
    assert samples[(ALERT_METRIC, (("name", "data_drift"), ("severity", "warning")))] == 0.0
    assert samples[(LAST_RUN_METRIC, ())] > 1.7e9
    assert not list(path.parent.glob(".*tmp")), "no temporary file left beside the textfile"


def test_no_alert_still_writes_the_resolved_gauges(tmp_path):
    path = tmp_path / "alerts.prom"
    publish_alerts([], settings=NO_WEBHOOK, textfile=path)
    values = [v for (name, _), v in _samples(path.read_text()).items() if name == ALERT_METRIC]
    assert values and set(values) == {0.0}


def test_the_global_registry_is_untouched():
    from prometheus_client import REGISTRY

    registry = alert_registry()
    publish_alerts(
        [Alert(name="data_drift", severity="warning", summary="x")], settings=NO_WEBHOOK, registry=registry
    )
    assert REGISTRY.get_sample_value(ALERT_METRIC, {"name": "data_drift", "severity": "warning"}) is None
    assert registry[0].get_sample_value(ALERT_METRIC, {"name": "data_drift", "severity": "warning"}) == 1.0


def test_an_alert_name_raised_twice_is_refused():
    alert = Alert(name="data_drift", severity="warning", summary="x")
    with pytest.raises(ConfigError, match=r"\['data_drift'\] were raised more than once"):
        publish_alerts([alert, alert], settings=NO_WEBHOOK)


def test_alert_and_settings_validate_their_fields(monkeypatch):
    with pytest.raises(ValidationError, match="name"):
        Alert(name="Data Drift!", severity="warning", summary="x")
    with pytest.raises(ValidationError, match="severity"):
        Alert(name="data_drift", severity="page-everyone", summary="x")
    monkeypatch.setenv("FRAUD_ALERT_WEBHOOK_URL", "ftp://example.invalid/hook")
    with pytest.raises(ValidationError, match="webhook_url"):
        AlertSettings()
    monkeypatch.setenv("FRAUD_ALERT_WEBHOOK_URL", "https://hooks.example.invalid/T0/B0")
    monkeypatch.setenv("FRAUD_ALERT_WEBHOOK_TIMEOUT_S", "2.5")
    settings = AlertSettings()
    assert str(settings.webhook_url).startswith("https://hooks.") and settings.webhook_timeout_s == 2.5


def test_numpy_details_become_plain_json():
    import datetime as dt
    import json

    import numpy as np

    alert = Alert(
        name="data_drift",
        severity="warning",
        summary="x",
        details={"n": np.int64(3), "share": np.float64(0.5), "day": dt.date(2026, 11, 1)},
    )
    assert json.loads(json.dumps(alert.model_dump(mode="json")))["details"] == {
        "n": 3,
        "share": 0.5,
        "day": "2026-11-01",
    }
    with pytest.raises(ValidationError, match="not JSON"):
        Alert(name="data_drift", severity="warning", summary="x", details={"bad": object()})


def test_the_collectors_fixed_textfile_gets_the_same_gauges(tmp_path, monkeypatch):
    # each pass's run folder is never read by the collector: FRAUD_ALERT_TEXTFILE is
    collector = tmp_path / "textfile" / "fraud_monitoring.prom"
    monkeypatch.setenv("FRAUD_ALERT_TEXTFILE", str(collector))
    run_file = tmp_path / "runs" / "a" / "alerts.prom"
    result = publish_alerts(
        [Alert(name="data_drift", severity="warning", summary="x")],
        settings=AlertSettings(),
        textfile=run_file,
    )
    assert result.collector_textfile == collector and result.textfile == run_file
    assert collector.read_bytes() == run_file.read_bytes()
    assert (
        _samples(collector.read_text())[(ALERT_METRIC, (("name", "data_drift"), ("severity", "warning")))]
        == 1
    )
    assert not list(collector.parent.glob(".*tmp"))
    # the next pass replaces it: the alert resolves there too
    publish_alerts([], settings=AlertSettings())
    assert (
        _samples(collector.read_text())[(ALERT_METRIC, (("name", "data_drift"), ("severity", "warning")))]
        == 0
    )


def test_a_textfile_the_collector_would_ignore_is_refused_by_its_variable(monkeypatch):
    from typer.testing import CliRunner

    from fraud_detection.cli import app

    monkeypatch.setenv("FRAUD_ALERT_TEXTFILE", "/var/lib/node_exporter/textfile/fraud.txt")
    with pytest.raises(ValidationError, match=r"does not end in \.prom"):
        AlertSettings()
    args = ["monitor", "--model", "x", "--start", "2026-11-01", "--end", "2026-11-02"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "FRAUD_ALERT_TEXTFILE=PosixPath('/var/lib/node_exporter/textfile/fraud.txt')" not in result.output
    assert "FRAUD_ALERT_TEXTFILE=" in result.output and "does not end in .prom" in result.output
