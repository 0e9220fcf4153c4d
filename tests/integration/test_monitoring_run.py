"""A monitoring pass on real files: a saved bundle, its stored reference, event-log parquet files, labels.

The model is a small logistic-regression bundle whose truth is the model itself (frauds drawn from its own
probabilities), so a clean period raises nothing, shifted features raise drift, and a new fraud pattern the
model cannot see raises a performance alert once the labels arrive.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.errors import ArtifactError, ConfigError
from fraud_detection.models.bundle import LinearModel, ModelBundle, TrainingWindow, save_bundle
from fraud_detection.models.registry import ResolvedModel, resolve_model
from fraud_detection.monitoring.alerts import AlertSettings
from fraud_detection.monitoring.performance import Baseline, monitor_performance
from fraud_detection.monitoring.run import (
    MonitoringConfig,
    build_reference,
    load_reference,
    prepare_reference,
    run_monitoring,
)
from fraud_detection.utils.io import atomic_write_bytes

pytestmark = pytest.mark.integration

FEATURES = ("x0", "x1", "x2")
COEF = np.array([2.0, 1.0, 0.5])
INTERCEPT = -4.5
WINDOW = TrainingWindow(dt.datetime(2026, 10, 1), dt.datetime(2026, 10, 15))
K = 20
CONFIG = MonitoringConfig(min_predictions=50, performance_lookback_days=0)
NO_WEBHOOK = AlertSettings(webhook_url=None)


def _probability(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(x @ COEF + INTERCEPT)))


def _traffic(
    start: str, n_days: int, *, seed: int, shift: dict[int, float] | None = None, new_pattern: bool = False
) -> pd.DataFrame:
    """Transactions with features, the model's score and a label (drawn from the model, or not)."""
    rng = np.random.default_rng(seed)
    n = n_days * 600
    x = rng.normal(0.0, 1.0, size=(n, len(FEATURES)))
    for column, delta in (shift or {}).items():
        x[:, column] += delta
    probability = _probability(x)
    label_probability = rng.permutation(probability) if new_pattern else probability
    cards = rng.integers(0, 400, size=n)
    seconds = np.repeat(np.arange(n_days), 600) * 86_400 + rng.integers(0, 86_400, size=n)
    frame = pd.DataFrame({name: x[:, i] for i, name in enumerate(FEATURES)})
    frame["event_timestamp"] = (pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s")).astype(
        "datetime64[us]"
    )
    frame["customer_id"] = cards
    frame["transaction_id"] = [f"{seed}-{i}" for i in range(n)]
    frame["score"] = probability
    frame["is_fraud"] = (rng.random(n) < label_probability).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ResolvedModel:
    holdout = _traffic("2026-10-16", 7, seed=99)
    measured = monitor_performance(
        holdout.assign(decision=holdout["score"] >= 0.5),
        holdout[["transaction_id", "is_fraud"]],
        Baseline(None, None, K, ""),
    )
    bundle = ModelBundle(
        model_type="logistic_regression",
        feature_names=FEATURES,
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=WINDOW,
        metadata={
            "config": {"top_k": K},
            "holdout_metrics": {
                "average_precision": measured.average_precision,
                f"card_precision_at_{K}": measured.card_precision_at_k,
            },
        },
        linear=LinearModel(mean=np.zeros(3), scale=np.ones(3), coef=COEF, intercept=INTERCEPT),
    )
    path = tmp_path_factory.mktemp("model") / "bundle"
    save_bundle(bundle, path)
    return resolve_model(str(path))


@pytest.fixture(scope="module")
def reference_dir(model, tmp_path_factory):
    training = _traffic("2026-09-20", 30, seed=1)  # spans the window and more: only the window is used
    path = tmp_path_factory.mktemp("reference")
    build_reference(training, model, path, CONFIG)
    return path


def _write_events(events_dir, traffic: pd.DataFrame, version: str) -> None:
    """The server's layout: f_<feature>, score, decision, model_version, in a few rolled files."""
    events = traffic.rename(columns={name: f"f_{name}" for name in FEATURES}).drop(columns="is_fraud")
    events["decision"] = events["score"] >= 0.5
    events["model_version"] = version
    events["scored_at"] = events["event_timestamp"] + pd.Timedelta("50ms")
    for index, rows in enumerate(np.array_split(np.arange(len(events)), 3)):
        part = events.iloc[rows]
        atomic_write_bytes(
            events_dir / f"events-20261101T00000{index}-{index:06d}.parquet", parquet_bytes(part)
        )


def _pass(model, reference_dir, tmp_path, traffic, **kwargs):
    events_dir = tmp_path / "events"
    _write_events(events_dir, traffic, kwargs.pop("version", model.version))
    labels = tmp_path / "labels.parquet"
    atomic_write_bytes(labels, parquet_bytes(traffic[["transaction_id", "is_fraud"]]))
    return run_monitoring(
        model,
        events_dir,
        start=dt.datetime(2026, 11, 1),
        end=dt.datetime(2026, 11, 4),
        reference_dir=reference_dir,
        out_dir=tmp_path / "out",
        labels_path=labels,
        config=CONFIG,
        alert_settings=NO_WEBHOOK,
        **kwargs,
    )


def _gauges(path) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        sample.labels["name"]: sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
        if sample.name == "fraud_monitoring_alert"
    }


def test_reference_covers_only_the_training_window(model, reference_dir):
    reference = load_reference(reference_dir, model_digest=model.digest)
    assert reference.summary.layout.names == ["f_x0", "f_x1", "f_x2", "score"]
    assert reference.summary.n_rows == 14 * 600  # 14 days of the 30 given
    meta = json.loads((reference_dir / "reference.json").read_text())
    assert meta["window_start"] == "2026-10-01T00:00:00" and meta["model_digest"] == model.digest


def test_clean_period_raises_nothing_and_writes_every_output(model, reference_dir, tmp_path):
    result = _pass(model, reference_dir, tmp_path, _traffic("2026-11-01", 3, seed=2))
    assert result.alerts == [], [a.summary for a in result.alerts]
    assert result.n_predictions == 1_800
    out = tmp_path / "out"
    drift = json.loads((out / "drift.json").read_text())
    assert drift["drift_detected"] is False and drift["n_columns"] == 4
    performance = json.loads((out / "performance.json").read_text())
    assert performance["degraded"] is False and len(performance["complete_days"]) == 3
    assert len(pd.read_csv(out / "performance.csv")) == 3
    assert json.loads((out / "alerts.json").read_text())["alerts"] == []
    assert set(_gauges(out / "alerts.prom").values()) == {0.0}


def test_shifted_features_raise_data_and_score_drift(model, reference_dir, tmp_path):
    traffic = _traffic("2026-11-01", 3, seed=3, shift={0: 1.0, 1: 1.0})
    result = _pass(model, reference_dir, tmp_path, traffic, html=True)
    names = {alert.name for alert in result.alerts}
    assert {"data_drift", "score_drift"} <= names
    drift_alert = next(a for a in result.alerts if a.name == "data_drift")
    assert set(drift_alert.details["drifted_columns"]) == {"f_x0", "f_x1"}
    assert _gauges(tmp_path / "out" / "alerts.prom")["data_drift"] == 1.0
    html = (tmp_path / "out" / "drift.html").read_text()
    assert "<!doctype html" in html[:200].lower() and "f_x0" in html


def test_new_fraud_pattern_raises_performance_degraded(model, reference_dir, tmp_path):
    traffic = _traffic("2026-11-01", 3, seed=4, new_pattern=True)
    result = _pass(model, reference_dir, tmp_path, traffic)
    assert [alert.name for alert in result.alerts] == ["performance_degraded"]  # the features did not move
    assert result.performance is not None and result.performance.ap_drop > 0.2


def test_other_versions_events_are_left_out(model, reference_dir, tmp_path):
    result = _pass(model, reference_dir, tmp_path, _traffic("2026-11-01", 3, seed=5), version="7")
    assert [alert.name for alert in result.alerts] == ["no_predictions"]
    assert result.other_versions == {"7": 1_800} and result.drift is None


def test_a_reference_of_another_model_is_refused(model, reference_dir):
    with pytest.raises(ArtifactError, match="was built for model digest"):
        load_reference(reference_dir, model_digest="0" * 64)


def test_prepare_reference_builds_only_when_missing(model, reference_dir, tmp_path):
    calls = []
    assert prepare_reference(model, reference_dir, training_frame=lambda: calls.append(1)) == reference_dir
    assert calls == []
    with pytest.raises(ArtifactError, match="fraud monitor --config"):
        prepare_reference(model, tmp_path / "none")


def test_cli_prints_alerts_and_exits_zero(model, reference_dir, tmp_path, monkeypatch):
    from fraud_detection.cli import app

    monkeypatch.delenv("FRAUD_ALERT_WEBHOOK_URL", raising=False)
    events_dir = tmp_path / "events"
    _write_events(events_dir, _traffic("2026-11-01", 2, seed=6, shift={0: 1.5, 2: 1.5}), model.version)
    args = [
        "monitor", "--model", model.uri, "--events-dir", str(events_dir), "--start", "2026-11-01",
        "--end", "2026-11-03", "--reference", str(reference_dir), "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ALERT [warning] data_drift" in result.output
    assert (tmp_path / "out" / "drift.json").is_file()
    missing = CliRunner().invoke(app, [*args[:3], "--events-dir", str(tmp_path / "nowhere"), *args[5:]])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    swapped = [*args[:5], "--start", "2026-11-03", "--end", "2026-11-01", *args[9:]]
    backwards = CliRunner().invoke(app, swapped)
    assert backwards.exit_code == 2, backwards.output
    assert "--end 2026-11-01T00:00:00 is not after --start 2026-11-03T00:00:00" in backwards.output


def test_a_period_that_ends_before_it_starts_is_refused(model, reference_dir, tmp_path):
    with pytest.raises(ConfigError, match="period end 2026-11-01 00:00:00 is not after its start"):
        run_monitoring(
            model, tmp_path, start=dt.datetime(2026, 11, 3), end=dt.datetime(2026, 11, 1),
            reference_dir=reference_dir, out_dir=tmp_path / "out",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_shadow_rows_are_not_counted_as_the_champion(model, reference_dir, tmp_path):
    from fraud_detection.monitoring.run import load_prediction_events, monitor_period

    traffic = _traffic("2026-11-01", 1, seed=7)
    events_dir = tmp_path / "events"
    _write_events(events_dir, traffic, model.version)
    events = load_prediction_events(events_dir, dt.datetime(2026, 11, 1), dt.datetime(2026, 11, 2))
    shadow_other = events.assign(model_version="9", shadow=True, score=1 - events["score"])
    shadow_same = events.assign(shadow=True)  # the champion also ran as its own shadow
    mixed = pd.concat([events.assign(shadow=False), shadow_other, shadow_same], ignore_index=True)
    reference = load_reference(reference_dir, model_digest=model.digest)
    result = monitor_period(mixed, model, reference, config=CONFIG)
    assert result.n_predictions == 600 and result.other_versions == {"9": 600}
    assert result.alerts == []  # the inverted shadow scores would have drifted the score column
