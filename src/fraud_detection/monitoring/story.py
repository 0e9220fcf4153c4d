"""The drift story: the whole system in one run, from a new fraud pattern to a promoted retrained model.

Day by day, on simulated data (:func:`run_drift_story`):

1. **Simulate** ``n_days`` with the simulator's ``new_fraud_pattern`` drift from day ``N`` (bursts of small
   night-time transactions on arbitrary terminals). ``warmup_days`` of history come first, so that the
   30-day feature windows are full when the first model trains.
2. **Train the champion** on the week ``[warmup, warmup + train_days)`` (its held-out week, after the
   labelling delay, ends at ``N``: its registered baseline is pre-drift), register it in MLflow and promote it.
   The monitoring reference is built from its training window.
3. **Serve and log** from ``N - days_before_drift`` on: each day's transactions are scored by the
   champion (:class:`~fraud_detection.inference.scorer.FraudScorer`) and written to the prediction event log
   by :class:`~fraud_detection.inference.events.PredictionSink`, as the server does. The features are the
   point-in-time rows of :func:`~fraud_detection.features.engineering.build_features`: the rows the feature
   store is materialised from (a store pushed on every transaction serves exactly these).
4. **Monitor** each day with :func:`~fraud_detection.monitoring.run.run_monitoring` (the ``fraud monitor``
   pass): drift of that day against the champion's training window, performance on the labels that have
   arrived (a transaction's label arrives ``delay_days`` after it). Drift fires on day ``N`` or ``N + 1``;
   performance decay fires once the first drifted days are labelled.
5. **Retrain** after the decay alert, as soon as a whole post-drift week is labelled: the challenger trains
   on ``[N, N + train_days)``; a deliberately worse challenger (the same week with shuffled labels) is
   registered too. From the retraining day both are scored **in shadow** beside the champion's answers.
6. **A/B and promotion**: once the shadow week's labels have arrived, the promotion gate of ``fraud promote
   --require-ab-win`` (:func:`~fraud_detection.monitoring.ab_test.check_ab_win`) refuses the worse challenger
   (the champion stays) and promotes the retrained one.

The result is a timeline (day, drift share, AP and CP@k of the served answers, alerts, action), also written
to ``out_dir/timeline.csv`` and ``out_dir/story.json``. Everything the run writes stays in ``out_dir``
(MLflow store included, unless a tracking store is given).

**Why a fraud wave.** At the handbook's rate (3 compromised customers per 5,000 a day) the new pattern is
about 0.3 % of the traffic: no day-level drift test can see it (measured: the daily drifted share stays in
its clean-day range), although the performance monitor does. The story multiplies that rate
(``drift_fraud_multiplier``, default 100) so that the drift monitor has something to find; the training
table is then built in memory (the contract's quality gate, which caps the daily fraud rate at 5 %, would
rightly refuse such a wave as training data).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.errors import ConfigError, ModelGateFailed, StorageError
from fraud_detection.monitoring.ab_test import ABTestConfig, check_ab_win
from fraud_detection.monitoring.performance import LABEL, TIMESTAMP
from fraud_detection.monitoring.run import MonitoringConfig
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from fraud_detection.data.contract import Contract
    from fraud_detection.models.registry import ResolvedModel
    from fraud_detection.training.config import TrainingConfig
    from fraud_detection.training.dataset import TrainingTable
    from fraud_detection.training.tracking import Tracking

logger = logging.getLogger(__name__)


class DriftStoryConfig(BaseModel):
    """Sizes and settings of the story; the defaults are the demo (about a minute on 2 cores)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_customers: int = Field(1000, ge=50)
    n_terminals: int = Field(2000, ge=50)
    seed: int = Field(0, ge=0)
    start_date: dt.date = dt.date(2018, 4, 1)
    warmup_days: int = Field(30, ge=0, description="history before the champion's training week")
    train_days: int = Field(7, ge=1)
    delay_days: int = Field(7, ge=1, description="labels arrive this many days after the transaction")
    test_days: int = Field(7, ge=1, description="the champion's held-out week (its baseline), before N")
    days_before_drift: int = Field(3, ge=1, description="days served (and monitored) before the drift")
    shadow_days: int = Field(7, ge=1, description="days the challengers are scored in shadow")
    drift_fraud_multiplier: int = Field(100, ge=1, description="the new pattern's rate x the handbook's")
    n_estimators: int = Field(50, ge=1)
    max_depth: int = Field(4, ge=1)
    learning_rate: float = Field(0.2, gt=0)
    n_jobs: int = Field(2, ge=1)
    registered_model: str = "fraud-drift-story"
    monitoring: MonitoringConfig = MonitoringConfig()
    ab_test: ABTestConfig = ABTestConfig(n_resamples=500)

    @property
    def drift_day(self) -> int:
        """``N``: the first day of the new fraud pattern (the champion's held-out week ends there)."""
        return self.warmup_days + self.train_days + self.delay_days + self.test_days

    @property
    def earliest_retrain_day(self) -> int:
        """The first day a whole post-drift training week is labelled."""
        return self.drift_day + self.train_days + self.delay_days

    @property
    def n_days(self) -> int:
        return self.earliest_retrain_day + self.shadow_days


def small_story_config(**overrides: Any) -> DriftStoryConfig:
    """The test size: fewer customers and terminals, fewer trees, fewer resamples (seconds, not a minute)."""
    values: dict[str, Any] = {
        "n_customers": 700,
        "n_terminals": 1400,
        "ab_test": ABTestConfig(n_resamples=300),
    }
    return DriftStoryConfig(**{**values, **overrides})


@dataclass(frozen=True)
class StoryDay:
    """One row of the timeline."""

    day: int
    date: dt.date
    drift_share: float | None  # drifted share of the features, that day vs the champion's training window
    score_drifted: bool | None
    average_precision: float | None  # of that day's served answers, on its labels (known later)
    card_precision_at_k: float | None
    alerts: tuple[str, ...]
    action: str


@dataclass
class DriftStory:
    """What the story did; ``*_day`` fields are day numbers (0 = ``start_date``), None when it never happened."""

    config: DriftStoryConfig
    drift_day: int
    champion_version: str
    first_drift_alert_day: int | None = None
    first_decay_alert_day: int | None = None
    retrain_day: int | None = None
    challenger_version: str | None = None
    worse_version: str | None = None
    worse_refused: str | None = None  # the gate's message
    challenger_ab: dict[str, Any] | None = None
    challenger_promoted: bool = False
    final_champion: str | None = None
    timeline: list[StoryDay] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.model_dump(mode="json"),
            "drift_day": self.drift_day,
            "champion_version": self.champion_version,
            "first_drift_alert_day": self.first_drift_alert_day,
            "first_decay_alert_day": self.first_decay_alert_day,
            "retrain_day": self.retrain_day,
            "challenger_version": self.challenger_version,
            "worse_version": self.worse_version,
            "worse_refused": self.worse_refused,
            "challenger_ab": self.challenger_ab,
            "challenger_promoted": self.challenger_promoted,
            "final_champion": self.final_champion,
            "timeline": [_row(day) for day in self.timeline],
        }


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _row(day: StoryDay) -> dict[str, Any]:
    return {
        "day": day.day,
        "date": day.date.isoformat(),
        "drift_share": _clean(day.drift_share),
        "score_drifted": day.score_drifted,
        "average_precision": _clean(day.average_precision),
        "card_precision_at_k": _clean(day.card_precision_at_k),
        "alerts": ",".join(day.alerts),
        "action": day.action,
    }


def timeline_frame(story: DriftStory) -> pd.DataFrame:
    return pd.DataFrame([_row(day) for day in story.timeline])


def format_timeline(story: DriftStory) -> str:
    """The timeline as a fixed-width text table (what ``fraud drift-story`` prints)."""

    def number(value: float | None) -> str:
        return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"

    header = f"{'day':>4}  {'date':<10}  {'drift':>6}  {'AP':>6}  {'CP@k':>6}  {'alerts':<38}  action"
    lines = [header, "-" * len(header)]
    for day in story.timeline:
        marker = "*" if day.day == story.drift_day else " "
        lines.append(
            f"{day.day:>3}{marker}  {day.date.isoformat():<10}  {number(day.drift_share):>6}  "
            f"{number(day.average_precision):>6}  {number(day.card_precision_at_k):>6}  "
            f"{','.join(day.alerts) or '-':<38}  {day.action}"
        )
    lines.append(f"(* day {story.drift_day}: the new fraud pattern starts)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- steps


def _training_config(config: DriftStoryConfig, feature_config_path: Path, source: str) -> TrainingConfig:
    from fraud_detection.training.config import TrainingConfig

    start = config.start_date
    return TrainingConfig.model_validate(
        {
            "experiment": config.registered_model,
            "registered_model": config.registered_model,
            "seed": config.seed,
            "top_k": config.ab_test.k,
            "data": {"source": source, "contract": "simulator"},
            "features": {"config": str(feature_config_path)},
            "split": {
                "train_days": config.train_days,
                "delay_days": config.delay_days,
                "test_days": config.test_days,
                # Unused (no folds are assessed, the threshold is fixed) but part of the schema.
                "validation": {"latest_train_start": start.isoformat(), "n_folds": 1},
                "test": {
                    "latest_train_start": (start + dt.timedelta(days=config.test_days)).isoformat(),
                    "n_folds": 1,
                },
            },
            "model": {
                "type": "xgboost",
                "xgboost": {
                    "n_estimators": config.n_estimators,
                    "max_depth": config.max_depth,
                    "learning_rate": config.learning_rate,
                    "n_jobs": config.n_jobs,
                },
            },
            "threshold": {"strategy": "fixed", "value": 0.5},
        }
    )


def _simulate_table(
    config: DriftStoryConfig, contract: Contract, feature_config_path: Path
) -> tuple[TrainingTable, pd.DataFrame]:
    """The simulated transactions and their training table (point-in-time features, label), in memory."""
    from fraud_detection.data.contract import Role
    from fraud_detection.data.simulator import SimulatorConfig, simulate
    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.training.dataset import TrainingTable, build_training_table, select_features
    from fraud_detection.utils.io import sha256_bytes

    simulator = SimulatorConfig(
        n_customers=config.n_customers,
        n_terminals=config.n_terminals,
        n_days=config.n_days,
        start_date=config.start_date,
        seed=config.seed,
        drift_start_day=config.drift_day,
        drift_kind="new_fraud_pattern",
        drift_fraud_multiplier=config.drift_fraud_multiplier,
    )
    transactions = simulate(simulator).transactions
    feature_config = load_feature_config(feature_config_path)
    frame = build_training_table(transactions, contract, feature_config)
    table = TrainingTable(
        frame=frame,
        feature_config=feature_config,
        feature_names=select_features(feature_config, "all"),
        protected=tuple(contract.columns_with_role(Role.PROTECTED)),
        source=f"simulator(seed={config.seed}, new_fraud_pattern from day {config.drift_day})",
        content_digest=sha256_bytes(simulator.model_dump_json().encode()),
    )
    return table, transactions


def _register(
    training: TrainingConfig,
    table: TrainingTable,
    out_dir: Path,
    train_start: dt.date,
    tracking: Tracking,
    run_name: str,
) -> str:
    """Train on the week from ``train_start``, log and register it (alias challenger); its version.

    The offline gates are recorded as passed: ``fraud evaluate`` is not part of the story, the A/B test is.
    """
    from fraud_detection.models import registry
    from fraud_detection.training import runs
    from fraud_detection.training.tracking import experiment_id, mlflow_errors

    result = runs.train(training, table, out_dir, train_start=train_start, assess_folds=False)
    with mlflow_errors(tracking):
        experiment = experiment_id(training.experiment, tracking)
        result = runs.log_training_run(result, training, table, experiment, register=True, run_name=run_name)
        if result.registered_version is None:
            raise StorageError(
                f"MLflow did not register {training.registered_model!r} for the {run_name} run {result.run_id}; "
                "expected a new version"
            )
        registry.record_gates(training.registered_model, result.registered_version, True, [], result.run_id)
    return result.registered_version


def _record_served_baseline(
    model: ResolvedModel, rows: pd.DataFrame, k: int, tracking: Tracking
) -> dict[str, float]:
    """Tag the version with its served baseline (``served_holdout_*``, what the performance monitor
    compares with) measured on the story's own held-out days: the week just before the drift, which
    training's held-out week need not be."""
    from fraud_detection.models import registry
    from fraud_detection.monitoring.performance import served_metrics
    from fraud_detection.training.tracking import mlflow_errors

    scores = model.bundle.predict_proba(rows[list(model.bundle.feature_names)].astype("float64"))
    joined = rows[["transaction_id", TIMESTAMP, "customer_id", LABEL]].assign(score=scores)
    measured = served_metrics(joined, k=k, threshold=model.bundle.threshold)
    baseline = {f"served_holdout_{name}": value for name, value in measured.items()}
    with mlflow_errors(tracking):
        registry.tag_version(model.name or "", model.version, baseline)
    return baseline


def _resolve(name: str, version: str, tracking: Tracking) -> ResolvedModel:
    from fraud_detection.models.registry import resolve_model
    from fraud_detection.training.tracking import mlflow_errors

    with mlflow_errors(tracking):
        return resolve_model(f"models:/{name}/{version}")


def _log_day(
    events_dir: Path,
    day: int,
    rows: pd.DataFrame,
    answer: ResolvedModel,
    shadows: list[ResolvedModel],
) -> None:
    """Score one day's transactions like the server (answers, then shadows) and write the event log."""
    from fraud_detection.inference.events import PredictionSink
    from fraud_detection.inference.requests import TransactionBatch
    from fraud_detection.inference.scorer import FraudScorer, Scores

    batch = TransactionBatch(
        transaction_id=rows["transaction_id"].to_numpy(np.int64),
        customer_id=rows["customer_id"].to_numpy(np.int64),
        terminal_id=rows["terminal_id"].to_numpy(np.int64),
        amount=rows["amount"].to_numpy(np.float64),
        event_us=rows[TIMESTAMP].to_numpy("datetime64[us]").astype(np.int64),
        extra={},
    )
    staging = events_dir / f".day-{day:03d}"
    sink = PredictionSink(staging)
    try:
        for model, shadow in [(answer, False), *((model, True) for model in shadows)]:
            scorer = FraudScorer(model, None, threads=None)
            features = np.ascontiguousarray(rows[list(model.bundle.feature_names)].to_numpy(np.float32))
            probability, decision = scorer.score_features(features)
            scores = Scores(
                transaction_id=batch.transaction_id,
                probability=probability,
                decision=decision,
                degraded=np.zeros(len(batch), dtype=bool),
                degraded_reasons=tuple(() for _ in range(len(batch))),
                features=features,
            )
            request_ids = [f"story-{day}"] * len(batch)
            sink.submit(request_ids, batch, scores, model.version, model.bundle.feature_names, shadow=shadow)
    finally:
        sink.close()
    # One sink per day: its files get the day in their name (two sinks may share a second and a sequence).
    for path in sorted(staging.glob("events-*.parquet")):
        os.replace(path, events_dir / f"events-day{day:03d}-{path.name.removeprefix('events-')}")
    staging.rmdir()


def _write_labels(path: Path, transactions: pd.DataFrame, known_before: dt.datetime) -> None:
    """The labels that have arrived by ``known_before + delay``: transactions before ``known_before``."""
    from fraud_detection.data.raw_store import parquet_bytes

    known = transactions.loc[transactions[TIMESTAMP] < known_before, ["transaction_id", LABEL]]
    atomic_write_bytes(path, parquet_bytes(known.reset_index(drop=True)))


def _daily_metrics(
    events_dir: Path, transactions: pd.DataFrame, k: int
) -> dict[dt.date, tuple[float, float]]:
    """(AP, CP@k) per day of the served answers, on all the labels (known once the story is over)."""
    from fraud_detection.monitoring.performance import daily_performance, join_labels
    from fraud_detection.monitoring.run import load_prediction_events

    events = load_prediction_events(events_dir, dt.datetime(1970, 1, 1), dt.datetime(2200, 1, 1))
    answers = events[~events["shadow"].astype(bool)]
    daily = daily_performance(join_labels(answers, transactions[["transaction_id", LABEL]]), k=k)
    return {
        row["day"]: (float(row["average_precision"]), float(row[f"card_precision_at_{k}"]))
        for _, row in daily.iterrows()
    }


def default_tracking(out_dir: Path) -> Tracking:
    """An MLflow store of the story's own, under ``out_dir/mlflow`` (SQLite + local artifacts)."""
    from fraud_detection.training.tracking import Tracking

    root = (Path(out_dir) / "mlflow").resolve()
    return Tracking(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())


def run_drift_story(
    out_dir: Path,
    config: DriftStoryConfig,
    *,
    contract: Contract,
    feature_config_path: Path,
    tracking: Tracking | None = None,
) -> DriftStory:
    """Run the story (module docstring) in ``out_dir`` (new or empty) and return what happened."""
    from fraud_detection.models import registry
    from fraud_detection.monitoring.run import build_reference, run_monitoring
    from fraud_detection.training.lifecycle import promote_challenger
    from fraud_detection.training.tracking import mlflow_errors, open_tracking

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"drift story folder {str(out_dir)!r} is not empty; expected a new or empty folder")
    tracking = tracking or default_tracking(out_dir)
    with mlflow_errors(tracking):
        open_tracking(tracking)
    name = config.registered_model
    day0 = dt.datetime.combine(config.start_date, dt.time())

    def at(day: int) -> dt.datetime:
        return day0 + dt.timedelta(days=day)

    table, transactions = _simulate_table(config, contract, feature_config_path)
    training = _training_config(config, feature_config_path, table.source)
    days = pd.to_datetime(table.frame[TIMESTAMP]).dt.floor("D")
    logger.info("drift story: %d transactions over %d days", len(transactions), config.n_days)

    champion_version = _register(
        training, table, out_dir / "models" / "champion", at(config.warmup_days).date(), tracking, "champion"
    )
    with mlflow_errors(tracking):
        registry.promote(name, champion_version)
    holdout = table.frame[(days >= at(config.drift_day - config.test_days)) & (days < at(config.drift_day))]
    _record_served_baseline(_resolve(name, champion_version, tracking), holdout, config.ab_test.k, tracking)
    champion = _resolve(name, champion_version, tracking)
    reference_dir = out_dir / "monitoring" / "reference"
    build_reference(table.frame, champion, reference_dir, config.monitoring)
    story = DriftStory(config=config, drift_day=config.drift_day, champion_version=champion_version)

    events_dir = out_dir / "predictions"
    events_dir.mkdir(parents=True)
    labels_path = out_dir / "labels" / "labels.parquet"
    shadows: list[ResolvedModel] = []
    actions: dict[int, str] = {
        config.drift_day - config.days_before_drift: f"serve champion v{champion_version}"
    }
    records: list[tuple[int, float | None, bool | None, tuple[str, ...]]] = []
    for day in range(config.drift_day - config.days_before_drift, config.n_days):
        decayed = story.first_decay_alert_day is not None
        if not shadows and decayed and day >= config.earliest_retrain_day:
            story.retrain_day = day
            start = at(day - config.delay_days - config.train_days).date()
            story.challenger_version = _register(
                training, table, out_dir / "models" / "challenger", start, tracking, "retrained"
            )
            shuffled = table.frame.assign(
                **{LABEL: np.random.default_rng(config.seed).permutation(table.frame[LABEL].to_numpy())}
            )
            worse_table = dataclasses.replace(table, frame=shuffled)
            story.worse_version = _register(
                training, worse_table, out_dir / "models" / "worse", start, tracking, "shuffled-labels"
            )
            shadows = [_resolve(name, v, tracking) for v in (story.challenger_version, story.worse_version)]
            actions[day] = (
                f"retrain on {start}..+{config.train_days}d: shadow v{story.challenger_version} "
                f"(retrained), v{story.worse_version} (shuffled labels)"
            )
        _log_day(events_dir, day, table.frame[days == at(day)], champion, shadows)
        _write_labels(labels_path, transactions, at(day + 1) - dt.timedelta(days=config.delay_days))
        result = run_monitoring(
            champion,
            events_dir,
            start=at(day),
            end=at(day + 1),
            reference_dir=reference_dir,
            out_dir=out_dir / "monitoring" / "runs" / f"day-{day:03d}",
            labels_path=labels_path,
            config=config.monitoring,
        )
        names = tuple(alert.name for alert in result.alerts)
        share = score_drifted = None
        if result.drift is not None:
            features = [column for column in result.drift.columns if column != "score"]
            share = sum(result.drift.columns[c].drifted for c in features) / len(features)
            score_drifted = result.drift.columns["score"].drifted if "score" in result.drift.columns else None
        if story.first_drift_alert_day is None and {"data_drift", "score_drift"} & set(names):
            story.first_drift_alert_day = day
        if story.first_decay_alert_day is None and "performance_degraded" in names:
            story.first_decay_alert_day = day
        records.append((day, share, score_drifted, names))

    # The shadow week's labels arrive (delay_days later); then the promotion gate decides.
    _write_labels(labels_path, transactions, at(config.n_days))
    last = config.n_days - 1
    if story.worse_version is not None and story.challenger_version is not None:
        with mlflow_errors(tracking):
            try:
                check_ab_win(name, story.worse_version, events_dir, labels_path, config=config.ab_test)
            except ModelGateFailed as err:
                story.worse_refused = str(err)
            try:
                gate = check_ab_win(
                    name, story.challenger_version, events_dir, labels_path, config=config.ab_test
                )
            except ModelGateFailed as err:
                story.challenger_ab = {"significant_win": False, "refused": str(err)}
            else:
                story.challenger_ab = gate.result.to_dict()
                promote_challenger(name, story.challenger_version, tracking=tracking)
                story.challenger_promoted = True
            story.final_champion = registry.alias_version(name, registry.CHAMPION)
        worse = (
            f"v{story.worse_version} refused"
            if story.worse_refused
            else f"v{story.worse_version} NOT refused"
        )
        better = "promoted" if story.challenger_promoted else "refused"
        actions[last] = (
            f"labels in: A/B {worse}; v{story.challenger_version} {better}; champion v{story.final_champion}"
        )
    else:
        actions[last] = "no retraining: the performance monitor never flagged a decay"

    metrics = _daily_metrics(events_dir, transactions, config.ab_test.k)
    for day, share, score_drifted, names in records:
        ap, cpk = metrics.get(at(day).date(), (math.nan, math.nan))
        story.timeline.append(
            StoryDay(day, at(day).date(), share, score_drifted, ap, cpk, names, actions.get(day, ""))
        )
    story.outputs = {
        "timeline": out_dir / "timeline.csv",
        "story": out_dir / "story.json",
        "predictions": events_dir,
        "monitoring": out_dir / "monitoring" / "runs",
    }
    atomic_write_text(story.outputs["timeline"], timeline_frame(story).to_csv(index=False))
    atomic_write_json(story.outputs["story"], story.to_dict())
    return story


def summary_lines(story: DriftStory) -> list[str]:
    """The story's steps in words (what ``fraud drift-story`` prints under the timeline)."""

    def when(day: int | None) -> str:
        return "never" if day is None else f"day {day} (N{day - story.drift_day:+d})"

    lines = [
        f"champion: version {story.champion_version}, trained before the drift (day N = {story.drift_day})",
        f"drift flagged: {when(story.first_drift_alert_day)}",
        f"performance decay flagged: {when(story.first_decay_alert_day)}",
        f"retrained: {when(story.retrain_day)}"
        + (
            f" -> challenger version {story.challenger_version}, worse version {story.worse_version}"
            if story.retrain_day is not None
            else ""
        ),
    ]
    if story.worse_version is not None:
        lines.append(
            f"worse challenger v{story.worse_version}: "
            + (f"refused ({story.worse_refused})" if story.worse_refused else "NOT refused")
        )
    if story.challenger_ab is not None:
        reason = story.challenger_ab.get("reason") or story.challenger_ab.get("refused")
        verdict = "promoted" if story.challenger_promoted else "refused"
        lines.append(f"retrained challenger v{story.challenger_version}: {verdict} ({reason})")
    if story.final_champion is not None:
        lines.append(f"champion now: version {story.final_champion}")
    lines.extend(f"{name}: {path}" for name, path in story.outputs.items())
    return lines
