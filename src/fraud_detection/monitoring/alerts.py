"""Alerts from a monitoring pass as structured events: a log line, a Prometheus gauge, an optional webhook.

Every alert is published three ways, each independent of the others:

* **one structlog line** (``event="monitoring alert"``, level warning or error) with the alert's name,
  severity, summary and details: the audit trail, always written;
* **the gauge** ``fraud_monitoring_alert{name,severity}``: 1 while the alert fires, 0 for every known alert
  that did not fire in this pass (so Prometheus sees it resolve), plus
  ``fraud_monitoring_last_run_timestamp_seconds``. The gauges live on a **registry of their own**
  (:func:`alert_registry`), not the global one: the monitoring pass is a batch job (CLI, Prefect), nobody
  scrapes it, so the registry is written to a node-exporter textfile (``alerts.prom`` in the run folder,
  atomic, and to ``FRAUD_ALERT_TEXTFILE``, the fixed path the collector reads, when set) or pushed by
  the caller; and the model server's ``/metrics`` (the global registry) never shows a stale monitoring
  value from an import side effect;
* **a webhook** (``FRAUD_ALERT_WEBHOOK_URL``, e.g. a Slack/Teams/Alertmanager-style receiver): one JSON POST
  per firing alert with a timeout (``FRAUD_ALERT_WEBHOOK_TIMEOUT_S``). A failed POST is logged and counted
  in the result, never raised: an unreachable chat tool must not fail the monitoring pass.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_detection.errors import ConfigError
from fraud_detection.utils.io import atomic_write_bytes

_log = structlog.get_logger(__name__)

Severity = Literal["info", "warning", "critical"]
ALERT_METRIC = "fraud_monitoring_alert"
LAST_RUN_METRIC = "fraud_monitoring_last_run_timestamp_seconds"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

# Every alert a monitoring pass can raise, with its severity; the runbook has a section for each.
KNOWN_ALERTS: Mapping[str, Severity] = {
    "data_drift": "warning",
    "score_drift": "warning",
    "performance_degraded": "critical",
    "no_predictions": "critical",
}


class AlertSettings(BaseSettings):
    """Where alerts go besides the log and the run folder: ``FRAUD_ALERT_WEBHOOK_URL`` and its timeout,
    and ``FRAUD_ALERT_TEXTFILE``, the fixed file the node-exporter textfile collector reads."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_ALERT_", extra="ignore", frozen=True)

    webhook_url: AnyHttpUrl | None = None
    webhook_timeout_s: float = Field(5.0, gt=0, le=60)
    # the collector reads only ``*.prom`` files directly in its folder: each run's own folder is
    # never read, so the gauges must also land at one fixed path
    textfile: Path | None = None

    @field_validator("textfile")
    @classmethod
    def _prom_file(cls, value: Path | None) -> Path | None:
        if value is not None and value.suffix != ".prom":
            raise ValueError(
                f"{str(value)!r} does not end in .prom; expected a file in the node-exporter textfile "
                "collector's folder, e.g. /var/lib/node_exporter/textfile/fraud_monitoring.prom"
            )
        return value


class Alert(BaseModel):
    """One alert: what fired, how bad, a one-line summary a person reads, and the numbers behind it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=rf"^{_NAME.pattern}$")
    severity: Severity
    summary: str = Field(min_length=1)
    details: dict[str, Any] = Field(default_factory=dict)
    fired_at: dt.datetime = Field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @field_validator("details", mode="before")
    @classmethod
    def _plain_json(cls, details: Any) -> Any:
        # Numbers from numpy/pandas become plain JSON now, not a serialisation error at the webhook.
        def plain(value: Any) -> Any:
            if hasattr(value, "item"):
                return value.item()
            if isinstance(value, dt.date | dt.datetime):
                return value.isoformat()
            raise ValueError(f"alert detail value {value!r} ({type(value).__name__}) is not JSON")

        return json.loads(json.dumps(details, default=plain)) if isinstance(details, dict) else details


@dataclass
class PublishResult:
    """What happened to each channel (the log line cannot fail)."""

    alerts: list[Alert]
    webhook_sent: int = 0
    webhook_failures: list[str] = field(default_factory=list)
    textfile: Path | None = None
    collector_textfile: Path | None = None  # FRAUD_ALERT_TEXTFILE


def alert_registry() -> tuple[CollectorRegistry, Gauge, Gauge]:
    """A fresh registry with the alert gauge and the last-run gauge."""
    registry = CollectorRegistry(auto_describe=True)
    alert = Gauge(
        ALERT_METRIC, "1 while a monitoring alert fires, else 0.", ["name", "severity"], registry=registry
    )
    last_run = Gauge(LAST_RUN_METRIC, "Unix time the last monitoring pass finished.", registry=registry)
    return registry, alert, last_run


def _post(url: str, alert: Alert, timeout_s: float) -> str | None:
    """POST one alert as JSON; the error text, or None when the receiver answered 2xx."""
    body = json.dumps({"alert": alert.model_dump(mode="json")}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "fraud-monitor"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # http(s) only: AnyHttpUrl
            response.read(1024)
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code} {err.reason}"
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        return f"{type(err).__name__}: {getattr(err, 'reason', err)}"
    return None


def publish_alerts(
    alerts: Iterable[Alert],
    *,
    settings: AlertSettings | None = None,
    textfile: Path | None = None,
    known: Mapping[str, Severity] = KNOWN_ALERTS,
    registry: tuple[CollectorRegistry, Gauge, Gauge] | None = None,
) -> PublishResult:
    """Log each alert, set the gauges (written to ``textfile`` when given) and POST to the webhook."""
    settings = settings or AlertSettings()
    fired = list(alerts)
    names = [alert.name for alert in fired]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ConfigError(
            f"alerts {duplicated} were raised more than once in one pass; expected each name once"
        )
    for alert in fired:
        level = _log.error if alert.severity == "critical" else _log.warning
        level(
            "monitoring alert",
            alert=alert.name,
            severity=alert.severity,
            summary=alert.summary,
            fired_at=alert.fired_at.isoformat(),
            **{f"detail_{key}": value for key, value in alert.details.items()},
        )

    collectors, gauge, last_run = registry or alert_registry()
    by_name = {alert.name: alert for alert in fired}
    for name, severity in {**known, **{a.name: a.severity for a in fired}}.items():
        gauge.labels(name=name, severity=by_name[name].severity if name in by_name else severity).set(
            1.0 if name in by_name else 0.0
        )
    last_run.set_to_current_time()
    result = PublishResult(fired)
    # The temp files end in ".tmp": the textfile collector only reads *.prom.
    exposition = generate_latest(collectors)
    if textfile is not None:
        atomic_write_bytes(Path(textfile), exposition)
        result.textfile = Path(textfile)
    if settings.textfile is not None:
        atomic_write_bytes(settings.textfile, exposition)
        result.collector_textfile = settings.textfile

    if settings.webhook_url is not None:
        url = str(settings.webhook_url)
        for alert in fired:
            error = _post(url, alert, settings.webhook_timeout_s)
            if error is None:
                result.webhook_sent += 1
            else:
                _log.warning(
                    "alert webhook failed",
                    alert=alert.name,
                    error=error,
                    timeout_s=settings.webhook_timeout_s,
                )
                result.webhook_failures.append(f"{alert.name}: {error}")
    return result
