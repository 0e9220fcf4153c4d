"""One monitoring pass for a period: drift against the model's training window, performance on the labels
that have arrived, alerts. ``fraud monitor`` and the hourly monitoring flow both call :func:`run_monitoring`.

**The reference is stored, per model.** Drift compares the served traffic with the model's *training
window*: the bundle's feature values on the rows of ``bundle.training_window`` plus the model's own scores
on them (so the score distribution is monitored too). Re-reading and re-featurising the training data every
hour would cost minutes, so :func:`build_reference` computes it once and stores, in a folder keyed by the
bundle digest (default ``<FRAUD_DATA_DIR>/monitoring/reference/<digest>/``; the bundle folder itself cannot
hold it, its manifest forbids extra files):

* ``summary.json``: the mergeable drift summary (:func:`fraud_detection.evaluation.drift.save_summary`),
  which is all the drift decisions need;
* ``sample.parquet``: a seeded sample (``reference_sample_rows``) for Evidently's HTML, which needs rows;
* ``reference.json``: the model digest, the window and the row count; :func:`load_reference` refuses a
  reference built for another model.

Columns are the event log's: ``f_<feature>`` for each bundle feature and ``score``.

**Decisions.** ``data_drift`` fires when the drifted share of the *feature* columns reaches the drift config's
``drift_share`` (the score is judged on its own: ``score_drift`` fires when the score column drifted, the
earliest sign that the model sees a different population). ``performance_degraded`` is
:func:`fraud_detection.monitoring.performance.monitor_performance`'s decision. ``no_predictions`` fires when
the period holds fewer than ``min_predictions`` events of the model (the server is down or logs nothing);
drift and performance are then not computed. Only events of the monitored model's version are used: after a
promotion or a rollback the other version's events describe another model.

Alerts are the pass's result, not errors: a pass that found drift succeeded.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.config import load_yaml_config
from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.errors import ArtifactError, ConfigError, DataContractError, DataSourceError
from fraud_detection.evaluation.drift import (
    DriftConfig,
    DriftLayout,
    DriftResult,
    FrameSummary,
    detect_drift,
    load_summary,
    render_drift_report,
    save_summary,
    summarise_reference,
)
from fraud_detection.monitoring.alerts import Alert, AlertSettings, PublishResult, publish_alerts
from fraud_detection.monitoring.performance import (
    SCORE,
    TIMESTAMP,
    PerformanceReport,
    PerformanceThresholds,
    load_labels,
    model_baseline,
    monitor_performance,
)
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from fraud_detection.models.registry import ResolvedModel

logger = logging.getLogger(__name__)

REFERENCE_FORMAT: Final = "fraud-detection/monitoring-reference/v1"
REFERENCE_SUMMARY = "summary.json"
REFERENCE_SAMPLE = "sample.parquet"
REFERENCE_META = "reference.json"
EVENTS_GLOB = "events-*.parquet"


class MonitoringConfig(BaseModel):
    """Thresholds of a monitoring pass (``configs/monitoring/default.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    drift: DriftConfig = Field(default_factory=DriftConfig)
    performance: PerformanceThresholds = Field(default_factory=PerformanceThresholds)
    min_predictions: int = Field(100, ge=1, description="fewer events in the period: no_predictions alert")
    performance_lookback_days: int = Field(
        14, ge=0, description="performance uses events of [end - this, end): labels arrive days late"
    )
    reference_sample_rows: int = Field(20_000, ge=100, description="rows kept for the Evidently HTML")
    html_sample_rows: int = Field(100_000, ge=100, description="rows per side in the Evidently HTML")
    random_state: int = 0


def load_monitoring_config(path: Path) -> MonitoringConfig:
    return load_yaml_config(path, MonitoringConfig)


def event_columns(model: ResolvedModel) -> list[str]:
    """The columns drift is measured on, named as in the event log: ``f_<feature>`` and ``score``."""
    return [f"f_{name}" for name in model.bundle.feature_names] + [SCORE]


# --------------------------------------------------------------------------------------------- reference


@dataclass(frozen=True)
class Reference:
    """The training window of one model, summarised for drift, with a sample for the HTML report."""

    summary: FrameSummary
    sample: pd.DataFrame
    model_digest: str
    window_start: str
    window_end: str


def default_reference_dir(data_dir: Path, model: ResolvedModel) -> Path:
    return Path(data_dir) / "monitoring" / "reference" / model.digest


def build_reference(
    frame: pd.DataFrame, model: ResolvedModel, out_dir: Path, config: MonitoringConfig | None = None
) -> Reference:
    """Summarise the bundle's training window of ``frame`` (features + the model's scores) into ``out_dir``.

    ``frame`` is the training table (``event_timestamp`` and the bundle's feature columns), e.g. what
    ``fraud train`` read; only rows inside ``bundle.training_window`` are used.
    """
    config = config or MonitoringConfig()
    bundle = model.bundle
    names = list(bundle.feature_names)
    missing = [column for column in [TIMESTAMP, *names] if column not in frame.columns]
    if missing:
        raise DataContractError(
            f"the training frame lacks column(s) {missing} needed for the reference of {model.uri}; "
            f"expected {TIMESTAMP!r} and the bundle's features"
        )
    window = bundle.training_window
    stamps = pd.to_datetime(frame[TIMESTAMP])
    rows = frame[(stamps >= window.start) & (stamps < window.end)]
    if rows.empty:
        raise DataContractError(
            f"the training frame has no row in the model's training window [{window.start}, {window.end}) "
            f"(it spans {stamps.min()} .. {stamps.max()}); expected the data {model.uri} was trained on"
        )
    features = rows[names].astype("float64")
    reference = pd.DataFrame({f"f_{name}": features[name].to_numpy() for name in names})
    reference[SCORE] = bundle.predict_proba(features)
    summary = summarise_reference(reference, config=config.drift)
    sample = reference.sample(
        n=min(len(reference), config.reference_sample_rows), random_state=config.random_state
    ).reset_index(drop=True)
    out_dir = Path(out_dir)
    save_summary(out_dir / REFERENCE_SUMMARY, summary)
    atomic_write_bytes(out_dir / REFERENCE_SAMPLE, parquet_bytes(sample))
    # Written last: a folder without it is an unfinished reference and is rebuilt.
    atomic_write_json(
        out_dir / REFERENCE_META,
        {
            "format": REFERENCE_FORMAT,
            "model_uri": model.uri,
            "model_version": model.version,
            "model_digest": model.digest,
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
            "n_rows": len(reference),
            "columns": list(reference.columns),
        },
    )
    return Reference(summary, sample, model.digest, window.start.isoformat(), window.end.isoformat())


def has_reference(reference_dir: Path) -> bool:
    return (Path(reference_dir) / REFERENCE_META).is_file()


def prepare_reference(
    model: ResolvedModel,
    reference_dir: Path,
    *,
    training_frame: Callable[[], pd.DataFrame] | None = None,
    config: MonitoringConfig | None = None,
) -> Path:
    """Make sure ``reference_dir`` holds the model's reference: built from ``training_frame()`` (called only
    when it is missing), else an :class:`ArtifactError` that says how to build it."""
    if has_reference(reference_dir):
        return Path(reference_dir)
    if training_frame is None:
        raise ArtifactError(
            f"no monitoring reference for {model.uri} (digest {model.digest[:12]}) in {str(reference_dir)!r}; "
            "expected one built from its training window: pass the training config (fraud monitor --config)"
        )
    build_reference(training_frame(), model, reference_dir, config)
    return Path(reference_dir)


def load_reference(reference_dir: Path, *, model_digest: str) -> Reference:
    """Read a stored reference; refuse one built for another model (``model_digest`` differs)."""
    reference_dir = Path(reference_dir)
    meta_path = reference_dir / REFERENCE_META
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ArtifactError(
            f"no monitoring reference in {str(reference_dir)!r} ({REFERENCE_META} missing); build it with "
            "`fraud monitor ... --config <training config>`"
        ) from err
    except (OSError, ValueError) as err:
        raise ArtifactError(f"monitoring reference {str(meta_path)!r} cannot be read: {err}") from err
    if meta.get("format") != REFERENCE_FORMAT:
        raise ArtifactError(
            f"monitoring reference {str(meta_path)!r} has format {meta.get('format')!r}, expected {REFERENCE_FORMAT!r}"
        )
    if meta.get("model_digest") != model_digest:
        raise ArtifactError(
            f"monitoring reference {str(reference_dir)!r} was built for model digest {meta.get('model_digest')}, "
            f"not for the monitored model's {model_digest}; expected the reference of this model"
        )
    summary = load_summary(reference_dir / REFERENCE_SUMMARY)
    try:
        sample = pd.read_parquet(reference_dir / REFERENCE_SAMPLE)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"reference sample in {str(reference_dir)!r} cannot be read: {err}") from err
    return Reference(summary, sample, model_digest, meta["window_start"], meta["window_end"])


# --------------------------------------------------------------------------------------------- events


def load_prediction_events(events_dir: Path, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The server's prediction events with ``start <= event_timestamp < end`` (naive UTC)."""
    events_dir = Path(events_dir)
    if not events_dir.is_dir():
        raise DataSourceError(f"prediction events folder {str(events_dir)!r} does not exist")
    if end <= start:
        raise DataContractError(f"monitoring period end {end} is not after its start {start}")
    files = sorted(events_dir.glob(EVENTS_GLOB))
    frames = []
    for path in files:
        try:
            frame = pd.read_parquet(path, filters=[(TIMESTAMP, ">=", start), (TIMESTAMP, "<", end)])
        except (OSError, ValueError) as err:
            raise DataSourceError(f"prediction events file {str(path)!r} cannot be read: {err}") from err
        if len(frame):
            frames.append(frame)
    if not frames:
        return pd.DataFrame(
            columns=["transaction_id", TIMESTAMP, "customer_id", SCORE, "decision", "model_version"]
        )
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------- the pass


@dataclass
class MonitoringResult:
    """What one pass found and wrote."""

    start: dt.datetime | None  # the period asked for (None when monitor_period is called directly)
    end: dt.datetime | None
    model_uri: str
    model_version: str
    n_predictions: int
    alerts: list[Alert]
    drift: DriftResult | None = None
    performance: PerformanceReport | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    published: PublishResult | None = None
    other_versions: dict[str, int] = field(default_factory=dict)  # events of other models, not used


def _restricted(summary: FrameSummary, columns: list[str]) -> FrameSummary:
    layout = DriftLayout(columns=[spec for spec in summary.layout.columns if spec.name in columns])
    return FrameSummary(
        layout=layout, n_rows=summary.n_rows, columns={name: summary.columns[name] for name in layout.names}
    )


def measure_drift(reference: Reference, current: pd.DataFrame, config: DriftConfig) -> DriftResult:
    """Drift of the reference's columns that the current frame has (a batch output may hold only ``score``)."""
    wanted = [name for name in reference.summary.layout.names if name in current.columns]
    if not wanted:
        raise DataContractError(
            f"the predictions have none of the reference columns {reference.summary.layout.names}; "
            f"they have {[str(c) for c in current.columns]}"
        )
    return detect_drift(_restricted(reference.summary, wanted), current[wanted], config=config)


def drift_alerts(drift: DriftResult, config: DriftConfig) -> list[Alert]:
    alerts = []
    features = [name for name in drift.columns if name != SCORE]
    drifted = [name for name in features if drift.columns[name].drifted]
    share = len(drifted) / len(features) if features else 0.0
    if features and share >= config.drift_share:
        top = sorted(drifted, key=lambda name: -(drift.columns[name].psi or 0.0))[:10]
        alerts.append(
            Alert(
                name="data_drift",
                severity="warning",
                summary=f"{len(drifted)} of {len(features)} features drifted (share {share:.2f} >= {config.drift_share})",
                details={
                    "drift_share": round(share, 4),
                    "drifted_columns": top,
                    "psi": {name: drift.columns[name].psi for name in top},
                },
            )
        )
    score = drift.columns.get(SCORE)
    if score is not None and score.drifted:
        alerts.append(
            Alert(
                name="score_drift",
                severity="warning",
                summary=(
                    f"score distribution drifted ({score.method} "
                    f"{'n/a' if score.score is None else f'{score.score:.4g}'}, threshold {score.threshold})"
                ),
                details={
                    "method": score.method,
                    "score": score.score,
                    "psi": score.psi,
                    "mean_shift": score.mean_shift,
                },
            )
        )
    return alerts


def performance_alert(report: PerformanceReport) -> list[Alert]:
    if not report.degraded:
        return []
    return [
        Alert(
            name="performance_degraded",
            severity="critical",
            summary="; ".join(report.reasons),
            details={
                "average_precision": report.average_precision,
                "card_precision_at_k": report.card_precision_at_k,
                "baseline_average_precision": report.baseline.average_precision,
                "baseline_card_precision_at_k": report.baseline.card_precision_at_k,
                "complete_days": report.complete_days,
            },
        )
    ]


def _of_model(predictions: pd.DataFrame, model: ResolvedModel) -> tuple[pd.DataFrame, dict[str, int]]:
    """The events scored by ``model`` and the event counts of other versions.

    A version served as the answer *and* as a shadow at once (the same model in both slots) counts once:
    its answer rows; a version that only ran as the shadow is monitored on its shadow rows.
    """
    if "model_version" not in predictions.columns:
        return predictions, {}
    versions = predictions["model_version"].astype(str)
    others = {str(k): int(v) for k, v in versions[versions != model.version].value_counts().items()}
    mine = predictions[versions == model.version]
    if "shadow" in mine.columns:
        answers = mine[~mine["shadow"].astype(bool)]
        mine = answers if len(answers) else mine
    return mine, others


def monitor_period(
    predictions: pd.DataFrame,
    model: ResolvedModel,
    reference: Reference,
    *,
    labels: pd.DataFrame | None = None,
    labelled_predictions: pd.DataFrame | None = None,
    config: MonitoringConfig | None = None,
) -> MonitoringResult:
    """The pass without I/O: drift, performance (when ``labels`` are given) and the alerts they raise.

    Drift is measured on ``predictions`` (the period); performance on ``labelled_predictions`` (default the
    same), usually a longer look-back because labels arrive days after the scoring.
    """
    config = config or MonitoringConfig()
    predictions, other_versions = _of_model(predictions, model)
    result = MonitoringResult(
        start=None, end=None, model_uri=model.uri, model_version=model.version,
        n_predictions=len(predictions), alerts=[], other_versions=other_versions,
    )  # fmt: skip
    if len(predictions) < config.min_predictions:
        result.alerts.append(
            Alert(
                name="no_predictions",
                severity="critical",
                summary=(
                    f"{len(predictions)} prediction event(s) of {model.uri} (version {model.version}) in the period, "
                    f"fewer than min_predictions={config.min_predictions}"
                ),
                details={"n_predictions": len(predictions), "other_versions": other_versions},
            )
        )
        return result
    result.drift = measure_drift(reference, predictions, config.drift)
    result.alerts.extend(drift_alerts(result.drift, config.drift))
    if labels is not None:
        scored = predictions if labelled_predictions is None else _of_model(labelled_predictions, model)[0]
        result.performance = monitor_performance(
            scored, labels, model_baseline(model), config.performance, threshold=model.bundle.threshold
        )
        result.alerts.extend(performance_alert(result.performance))
    return result


def run_monitoring(
    model: ResolvedModel,
    events_dir: Path,
    *,
    start: dt.datetime,
    end: dt.datetime,
    reference_dir: Path,
    out_dir: Path,
    labels_path: Path | None = None,
    config: MonitoringConfig | None = None,
    html: bool = False,
    alert_settings: AlertSettings | None = None,
) -> MonitoringResult:
    """Read the period's events (and labels), run :func:`monitor_period`, write the outputs, publish alerts.

    Drift: events of ``[start, end)``. Performance: events of ``[end - performance_lookback_days, end)``
    joined to the labels at ``labels_path`` (only days whose labels are complete are judged).

    Writes into ``out_dir``: ``drift.json`` (and ``drift.html`` with ``html``), ``performance.json`` and
    ``performance.csv`` (with labels), ``alerts.json`` and ``alerts.prom`` (node-exporter textfile).
    """
    if end <= start:  # checked here: the performance window would otherwise hide it
        raise ConfigError(f"monitoring period end {end} is not after its start {start}")
    config = config or MonitoringConfig()
    reference = load_reference(reference_dir, model_digest=model.digest)
    first = min(start, end - dt.timedelta(days=config.performance_lookback_days))
    loaded = load_prediction_events(events_dir, first, end)
    predictions = loaded[loaded[TIMESTAMP] >= start] if first < start else loaded
    labels = load_labels(labels_path) if labels_path is not None else None
    result = monitor_period(
        predictions, model, reference, labels=labels, labelled_predictions=loaded, config=config
    )
    result.start, result.end = start, end
    out_dir = Path(out_dir)
    period = {"start": start.isoformat(), "end": end.isoformat()}
    model_info = {"uri": model.uri, "version": model.version, "digest": model.digest}
    if result.drift is not None:
        path = out_dir / "drift.json"
        atomic_write_json(
            path,
            {
                "period": period,
                "model": model_info,
                "reference_window": {"start": reference.window_start, "end": reference.window_end},
                **result.drift.to_dict(),
            },
        )
        result.outputs["drift"] = path
        if html:
            columns = [name for name in reference.summary.layout.names if name in predictions.columns]
            current, _ = _of_model(predictions, model)
            result.outputs["drift_html"] = render_drift_report(
                reference.sample,
                current[columns],
                out_dir / "drift.html",
                columns=columns,
                drift_share=config.drift.drift_share,
                sample_rows=config.html_sample_rows,
                random_state=config.random_state,
            )
    if result.performance is not None:
        path = out_dir / "performance.json"
        atomic_write_json(path, {"period": period, "model": model_info, **result.performance.to_dict()})
        atomic_write_text(out_dir / "performance.csv", result.performance.daily.to_csv(index=False))
        result.outputs["performance"] = path
        result.outputs["performance_table"] = out_dir / "performance.csv"
    alerts_path = out_dir / "alerts.json"
    atomic_write_json(
        alerts_path,
        {
            "period": period,
            "model": model_info,
            "n_predictions": result.n_predictions,
            "other_versions": result.other_versions,
            "alerts": [alert.model_dump(mode="json") for alert in result.alerts],
        },
    )
    result.outputs["alerts"] = alerts_path
    result.published = publish_alerts(
        result.alerts, settings=alert_settings, textfile=out_dir / "alerts.prom"
    )
    result.outputs["alerts_metrics"] = out_dir / "alerts.prom"
    logger.info("monitoring pass done: %d alert(s), %d predictions", len(result.alerts), result.n_predictions)
    return result


def summary_lines(result: MonitoringResult) -> list[str]:
    """What ``fraud monitor`` prints: the period, the counts, each alert and the files written."""
    lines = [
        f"monitored {result.model_uri} (version {result.model_version}) from {result.start} to {result.end}: "
        f"{result.n_predictions} prediction(s)"
    ]
    if result.other_versions:
        lines.append(f"  events of other versions, not used: {result.other_versions}")
    if result.drift is not None:
        lines.append(
            f"  drift: {result.drift.n_drifted} of {result.drift.n_columns} column(s) drifted "
            f"{result.drift.drifted_columns[:10]}"
        )
    if result.performance is not None:
        report = result.performance

        def fmt(value: Any) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        lines.append(
            f"  performance on {len(report.complete_days)} complete day(s): AP {fmt(report.average_precision)} "
            f"(baseline {fmt(report.baseline.average_precision)}), CP@{report.baseline.k} "
            f"{fmt(report.card_precision_at_k)} (baseline {fmt(report.baseline.card_precision_at_k)})"
        )
        lines.extend(f"  note: {note}" for note in report.notes)
    if result.alerts:
        lines.extend(f"ALERT [{alert.severity}] {alert.name}: {alert.summary}" for alert in result.alerts)
    else:
        lines.append("no alerts")
    lines.extend(f"  {name}: {path}" for name, path in result.outputs.items())
    return lines
