"""``fraud evaluate``: the evidence a promotion decision needs, and the gates that judge it.

A model is evaluated on a held-out period: by default its own delayed test week (the week after its
training window and the labelling delay, known-compromised cards removed, as in training). The
evidence: classification and fraud metrics with bootstrap CIs, calibration, the cost curve,
segment tables, fairness on the contract's protected attribute (when the data has one), SHAP
summary plots, the behaviour checks, single-row scoring latency and the lineage. The gates turn it
into one decision; :class:`~fraud_detection.errors.ModelGateFailed` lists every failing check.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.config import load_yaml_config
from fraud_detection.evaluation import metrics as m
from fraud_detection.evaluation.analysis import (
    FairnessThresholds,
    amount_band,
    assess_fairness,
    evaluate_by_segment,
    fairness_intervals,
    fairness_violations,
    risk_band,
)
from fraud_detection.models.bundle import ModelBundle
from fraud_detection.models.registry import ResolvedModel


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FairnessConfig(_Strict):
    protected_attribute: str = "customer_age_band"
    privileged: list[str] = Field(min_length=1)
    thresholds: FairnessThresholds = FairnessThresholds()
    gated_metrics: list[str] = Field(
        default_factory=lambda: [
            "statistical_parity_difference",
            "equal_opportunity_difference",
            "average_odds_difference",
            "disparate_impact",
            "theil_index",
        ],
        description="Metrics whose violations fail the gate; the others are reported only.",
    )
    gate_on: Literal["interval", "point"] = Field(
        "interval",
        description="interval: a metric fails only when its whole 95% bootstrap interval is outside "
        "the range (a week's group rates are noisy with rare frauds); point: the estimate alone.",
    )


class GatesConfig(_Strict):
    min_average_precision: float = Field(0.5, ge=0, le=1)
    min_roc_auc: float = Field(0.8, ge=0, le=1)
    max_regression: float = Field(0.02, ge=0, description="Largest allowed drop vs the champion (AP, AUC).")
    max_latency_p99_ms: float = Field(5.0, gt=0, description="Single-row scoring, in-process.")


class EvaluationConfig(_Strict):
    top_k: int = Field(100, ge=1)
    n_boot: int = Field(200, ge=10)
    shap_sample: int = Field(2_000, ge=100)
    min_segment_size: int = Field(100, ge=1)
    segments: list[Literal["amount_band", "terminal_risk_band", "new_card", "protected"]] = Field(
        default_factory=lambda: ["amount_band", "terminal_risk_band", "new_card", "protected"],
        description="Segment tables; 'protected' is the fairness section's attribute, when the data has it.",
    )
    cost: m.CostModel = m.CostModel()
    fairness: FairnessConfig | None = None
    gates: GatesConfig = GatesConfig()


def load_evaluation_config(path: Path) -> EvaluationConfig:
    return load_yaml_config(path, EvaluationConfig)


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str


@dataclass
class Evaluation:
    """Everything ``fraud evaluate`` found about one model on one period (the report renders it)."""

    model_uri: str
    model_version: str
    bundle_digest: str
    model_type: str
    feature_service: str
    training_window: tuple[dt.datetime, dt.datetime]
    period: tuple[dt.datetime, dt.datetime]
    n_rows: int
    n_frauds: int
    threshold: float
    headline: dict[str, tuple[float, float, float]]  # metric -> (point, CI low, CI high)
    classification: dict[str, float]
    confusion: dict[str, int]  # tp, fp, fn, tn at the threshold
    calibration: pd.DataFrame
    cost_curve: pd.DataFrame
    segments: dict[str, pd.DataFrame]
    fairness: dict[str, float] | None
    fairness_violations: list[str]
    fairness_note: str
    behaviour: list[Any]  # behaviour.BehaviourResult
    latency_ms: dict[str, float]
    lineage: dict[str, Any]
    gates: list[GateResult] = field(default_factory=list)
    fairness_intervals: dict[str, tuple[float, float]] | None = None
    fairness_gated: list[str] = field(default_factory=list)  # metrics whose violations fail the gate
    shap_plots: dict[str, Path] = field(default_factory=dict)
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    y_score: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def failures(self) -> list[str]:
        return [f"{gate.name}: {gate.detail}" for gate in self.gates if not gate.passed]

    def summary(self) -> dict[str, Any]:
        """JSON-ready evidence (tables as records), written beside the report and to MLflow."""
        return {
            "model": {
                "uri": self.model_uri,
                "version": self.model_version,
                "bundle_sha256": self.bundle_digest,
                "type": self.model_type,
                "feature_service": self.feature_service,
                "training_window": [t.isoformat() for t in self.training_window],
            },
            "period": [t.isoformat() for t in self.period],
            "rows": self.n_rows,
            "frauds": self.n_frauds,
            "threshold": self.threshold,
            "headline": {k: list(v) for k, v in self.headline.items()},
            "classification": self.classification,
            "confusion": self.confusion,
            "calibration": self.calibration.to_dict(orient="records"),
            "segments": {k: v.reset_index().to_dict(orient="records") for k, v in self.segments.items()},
            "fairness": self.fairness,
            "fairness_intervals": self.fairness_intervals,
            "fairness_violations": self.fairness_violations,
            "fairness_note": self.fairness_note,
            "behaviour": [{"name": b.name, "passed": b.passed, "detail": b.detail} for b in self.behaviour],
            "latency_ms": self.latency_ms,
            "lineage": self.lineage,
            "gates": [{"name": g.name, "passed": g.passed, "detail": g.detail} for g in self.gates],
            "passed": self.passed,
        }


def single_row_latency_ms(model: ResolvedModel, rows: pd.DataFrame, calls: int = 2_000) -> dict[str, float]:
    """p50/p99 of scoring one row in-process, as the server does: a float32 row in bundle order, one
    XGBoost thread (``inference.scorer.FraudScorer``'s setting).

    Three rounds; the reported figures are those of the quietest round (lowest p99), so a burst of
    work elsewhere on the machine does not fail the latency gate of a model that meets it.
    """
    bundle = model.bundle
    if bundle.booster is not None:
        booster = bundle.booster.copy()
        booster.set_param({"nthread": 1})
        bundle = dataclasses.replace(bundle, booster=booster)
    matrix = rows[list(bundle.feature_names)].to_numpy(dtype=np.float32)
    picks = np.random.default_rng(0).integers(0, len(matrix), size=calls)
    rounds = []
    for chunk in np.array_split(picks, 3):
        timings = np.empty(len(chunk))
        for i, row in enumerate(chunk):
            one = matrix[row : row + 1]
            started = time.perf_counter()
            bundle.predict_proba(one)
            timings[i] = time.perf_counter() - started
        rounds.append(
            {"p50": float(np.percentile(timings, 50) * 1e3), "p99": float(np.percentile(timings, 99) * 1e3)}
        )
    return min(rounds, key=lambda r: r["p99"])


def segment_columns(rows: pd.DataFrame, names: list[str], protected: str | None) -> dict[str, pd.Series]:
    """The segment label of every row, per configured segmentation."""
    segments = {
        "amount_band": amount_band(rows["amount"].to_numpy()),
        "terminal_risk_band": risk_band(
            rows["terminal_risk_7d"].to_numpy(), (0.0, 1e-9, 0.05, 0.2, 1.0 + 1e-9)
        ),
        "new_card": pd.Series(
            np.where(rows["customer_nb_tx_30d"].to_numpy() <= 5, "new (<= 5 tx in 30 days)", "established")
        ),
    }
    if "protected" in names and protected is not None and protected in rows.columns:
        segments[protected] = rows[protected].reset_index(drop=True)
    return {name: values for name, values in segments.items() if name in names or name == protected}


def evaluate_model(
    model: ResolvedModel,
    rows: pd.DataFrame,
    config: EvaluationConfig,
    *,
    period: tuple[dt.datetime, dt.datetime],
    lineage: dict[str, Any],
    champion: ModelBundle | None = None,
    protected_column: str | None = None,
    figures_dir: Path | None = None,
) -> Evaluation:
    """Evaluate ``model`` on ``rows`` (one held-out period: features, label, card, time, protected).

    ``champion`` (the current champion's bundle, scored on the same rows) arms the no-regression gate.
    """
    from fraud_detection.evaluation import behaviour

    bundle = model.bundle
    y_true = rows["is_fraud"].to_numpy()
    y_score = bundle.predict_proba(rows[list(bundle.feature_names)])
    cards = rows["customer_id"].to_numpy()
    days = rows["event_timestamp"].to_numpy().astype("datetime64[D]")
    threshold = bundle.threshold

    def ci(metric: Any, **kwargs: Any) -> tuple[float, float, float]:
        return m.bootstrap_ci(metric, y_true, y_score, n_boot=config.n_boot, random_state=0, **kwargs)

    headline = {
        "roc_auc": ci(m.roc_auc),
        "average_precision": ci(m.average_precision),
        f"precision_at_{config.top_k}": ci(m.precision_at_k, k=config.top_k),
        "brier_score": ci(m.brier_score),
        "expected_cost_per_transaction": ci(m.expected_cost, threshold=threshold, cost=config.cost),
    }
    cp = m.card_precision_at_k(y_true, y_score, cards=cards, days=days, k=config.top_k)
    headline[f"card_precision_at_{config.top_k}"] = (
        cp,
        float("nan"),
        float("nan"),
    )  # per-day: no row bootstrap
    classification = m.ClassificationMetrics.compute(y_true, y_score, threshold).as_dict()
    alerts = y_score >= threshold
    confusion = {
        "tp": int((alerts & (y_true == 1)).sum()),
        "fp": int((alerts & (y_true == 0)).sum()),
        "fn": int((~alerts & (y_true == 1)).sum()),
        "tn": int((~alerts & (y_true == 0)).sum()),
    }
    segments = {
        name: evaluate_by_segment(
            y_true,
            y_score,
            values,
            threshold=threshold,
            min_size=config.min_segment_size,
            n_boot=config.n_boot,
        )
        for name, values in segment_columns(rows, config.segments, protected_column).items()
    }

    fairness = None
    intervals = None
    violations: list[str] = []
    if config.fairness is None:
        note = "not applicable: no fairness section in the evaluation config"
    elif protected_column is None or protected_column not in rows.columns:
        note = f"not applicable: the data has no protected column {config.fairness.protected_attribute!r}"
    else:
        sensitive = rows[protected_column].to_numpy(dtype=object)
        decisions = alerts.astype(int)
        fairness = assess_fairness(y_true, decisions, sensitive, config.fairness.privileged)
        intervals = fairness_intervals(y_true, decisions, sensitive, config.fairness.privileged)
        gated = intervals if config.fairness.gate_on == "interval" else None
        violations = fairness_violations(fairness, config.fairness.thresholds, gated)
        note = (
            f"{protected_column}, privileged {config.fairness.privileged}; gated on the "
            f"{'95% bootstrap interval' if gated else 'point estimate'}"
        )

    has_protected = protected_column is not None and protected_column in rows.columns
    results = behaviour.run_behaviour_suite(
        bundle,
        rows,
        protected_column=protected_column if has_protected else None,
        amount_ratio_feature=_ratio_feature(bundle.feature_names),
        labels=y_true,
        champion=champion,
        tolerance=config.gates.max_regression,
    )
    latency = single_row_latency_ms(model, rows)

    evaluation = Evaluation(
        model_uri=model.uri,
        model_version=model.version,
        bundle_digest=model.digest,
        model_type=bundle.model_type,
        feature_service=bundle.feature_service,
        training_window=(bundle.training_window.start, bundle.training_window.end),
        period=period,
        n_rows=len(rows),
        n_frauds=int(y_true.sum()),
        threshold=threshold,
        headline=headline,
        classification=classification,
        confusion=confusion,
        calibration=m.calibration_table(y_true, y_score),
        cost_curve=m.cost_curve(y_true, y_score, config.cost, thresholds=np.linspace(0.0, 1.0, 101)),
        segments=segments,
        fairness=fairness,
        fairness_violations=violations,
        fairness_note=note,
        fairness_intervals=intervals,
        fairness_gated=list(config.fairness.gated_metrics) if config.fairness else [],
        behaviour=results,
        latency_ms=latency,
        lineage=lineage,
        y_true=y_true,
        y_score=y_score,
    )
    evaluation.gates = judge(evaluation, config.gates, lineage)
    if figures_dir is not None and bundle.booster is not None:
        from fraud_detection.evaluation.explain import shap_summary_plots

        sample = rows.sample(min(config.shap_sample, len(rows)), random_state=0)
        evaluation.shap_plots = shap_summary_plots(bundle, sample, figures_dir)
    return evaluation


def _ratio_feature(names: tuple[str, ...]) -> str:
    found = [name for name in names if name.startswith("customer_amount_ratio_")]
    return found[0] if found else "customer_amount_ratio_30d"


def judge(evaluation: Evaluation, gates: GatesConfig, lineage: dict[str, Any]) -> list[GateResult]:
    """Every gate, pass or fail with its evidence; promotion needs all of them."""
    ap, auc = evaluation.headline["average_precision"][0], evaluation.headline["roc_auc"][0]
    quality = lineage.get("data_quality_passed")
    failed_checks = [b for b in evaluation.behaviour if not b.passed]
    gated = [v for v in evaluation.fairness_violations if v.split(" ", 1)[0] in evaluation.fairness_gated]
    reported = [v for v in evaluation.fairness_violations if v not in gated]
    return [
        GateResult(
            "data_quality",
            bool(quality),
            "the training data passed its contract and quality gate"
            if quality
            else "the training data's quality report is missing or failed",
        ),
        GateResult(
            "performance_floor",
            bool(ap >= gates.min_average_precision and auc >= gates.min_roc_auc),
            f"average precision {ap:.4f} (floor {gates.min_average_precision}), "
            f"ROC AUC {auc:.4f} (floor {gates.min_roc_auc})",
        ),
        GateResult(
            "fairness",
            not gated,
            "; ".join(gated)
            or f"within thresholds on {evaluation.fairness_gated or 'no gated metric'} ({evaluation.fairness_note})"
            + (f"; reported, not gated: {'; '.join(reported)}" if reported else ""),
        ),
        GateResult(
            "behaviour",
            not failed_checks,
            "; ".join(f"{b.name}: {b.detail}" for b in failed_checks)
            or f"{len(evaluation.behaviour)} checks passed",
        ),
        GateResult(
            "latency",
            evaluation.latency_ms["p99"] <= gates.max_latency_p99_ms,
            f"single-row p99 {evaluation.latency_ms['p99']:.3f} ms (SLA {gates.max_latency_p99_ms} ms), "
            f"p50 {evaluation.latency_ms['p50']:.3f} ms",
        ),
    ]


def held_out_rows(
    table: Any, training_config: Any, model: ResolvedModel
) -> tuple[pd.DataFrame, tuple[dt.datetime, dt.datetime]]:
    """The model's own delayed test week, known-compromised cards removed (the training protocol)."""
    from fraud_detection.errors import SplitError
    from fraud_detection.training.trainer import window_rows

    _, rows, window = window_rows(table, training_config, model.bundle.training_window.start.date())
    if rows is None:
        last = pd.Timestamp(table.frame["event_timestamp"].max())
        raise SplitError(
            f"the model's held-out week {window.test_start.date()} .. "
            f"{(window.test_end - dt.timedelta(days=1)).date()} has no usable rows in this data (it ends "
            f"{last.date()}, or every card of that week is already known compromised); evaluate it on data "
            "that covers that week (train with an earlier --train-start to keep a week for evaluation)"
        )
    return rows, (window.test_start, window.test_end)


def run_evaluation(
    model: ResolvedModel,
    table: Any,
    training_config: Any,
    config: EvaluationConfig,
    out_dir: Path,
    *,
    champion: ResolvedModel | None = None,
    lineage: dict[str, Any] | None = None,
) -> Evaluation:
    """Evaluate on the model's held-out week and write ``evaluation.json``, figures and ``report.html``."""
    from fraud_detection.utils.io import atomic_write_json

    rows, period = held_out_rows(table, training_config, model)
    metadata = model.bundle.metadata
    facts = {
        "data_source": table.source,
        "data_content_digest": table.content_digest,
        "trained_on_content_digest": metadata.get("data", {}).get("content_digest"),
        # The quality gate's outcome on the training data, recorded in the bundle at training time.
        "data_quality_passed": bool((metadata.get("data", {}).get("quality") or {}).get("passed")),
        "data_quality": (metadata.get("data", {}).get("quality")),
        "config_sha256": metadata.get("config_sha256"),
        "threshold_selection": metadata.get("threshold_selection"),
        "champion_version": champion.version if champion is not None else None,
        "registered_model": model.name,
        "registered_version": model.version if model.name else None,
        "training_run_id": model.tags.get("run_id"),
        "best_params": (metadata.get("config") or {}).get("search", {}).get("selected_by"),
        **(lineage or {}),
    }
    protected = config.fairness.protected_attribute if config.fairness else None
    evaluation = evaluate_model(
        model,
        rows,
        config,
        period=period,
        lineage=facts,
        champion=champion.bundle if champion is not None and champion.digest != model.digest else None,
        protected_column=protected if protected in table.protected else None,
        figures_dir=Path(out_dir) / "figures",
    )
    atomic_write_json(Path(out_dir) / "evaluation.json", evaluation.summary())
    from fraud_detection.evaluation.report import write_report

    write_report(evaluation, Path(out_dir) / "report.html")
    return evaluation


def log_evaluation(
    evaluation: Evaluation, experiment_id: str, out_dir: Path, registered_model: str | None
) -> str:
    """One MLflow run holding the evidence; for a registered version, its gate outcome as tags."""
    import mlflow

    from fraud_detection.models import registry

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"evaluate-{evaluation.model_version}"
    ) as run:
        mlflow.set_tags(
            {
                "model_uri": evaluation.model_uri,
                "model_version": evaluation.model_version,
                registry.DIGEST_TAG: evaluation.bundle_digest,
                "gates_passed": str(evaluation.passed).lower(),
            }
        )
        mlflow.log_params(
            {"period_start": evaluation.period[0].date().isoformat(), "rows": evaluation.n_rows}
        )
        mlflow.log_metrics(
            {
                f"eval_{name}": point
                for name, (point, _, _) in evaluation.headline.items()
                if np.isfinite(point)
            }
        )
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
    if registered_model is not None and evaluation.model_version.isdigit():
        registry.record_gates(
            registered_model,
            evaluation.model_version,
            evaluation.passed,
            evaluation.failures,
            run.info.run_id,
        )
    return run.info.run_id
