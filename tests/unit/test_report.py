"""The evaluation report: a self-contained, escaped HTML page and an honest Definition of Done."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.evaluation.analysis import amount_band, evaluate_by_segment
from fraud_detection.evaluation.evaluate import Evaluation, GateResult
from fraud_detection.evaluation.metrics import calibration_table, cost_curve
from fraud_detection.evaluation.report import (
    DoDItem,
    definition_of_done,
    format_checklist,
    render_report,
    write_report,
)

pytestmark = pytest.mark.unit

SECTION_IDS = (
    "headline",
    "gates",
    "curves",
    "calibration",
    "confusion",
    "cost",
    "segments",
    "fairness",
    "explanations",
    "behaviour",
    "lineage",
    "definition-of-done",
)
GUIDE_ITEMS = (
    "Data validation schema defined and enforced",
    "Data quality checks automated",
    "Feature engineering code tested",
    "No training/serving skew (transformers serialized)",
    "Data versioning in place",
    "Experiment tracked with all parameters and metrics",
    "Multiple metrics evaluated (not just accuracy)",
    "Fairness assessed across protected groups",
    "Hyperparameters optimized",
    "Model registered with signature",
    "Model packaged with dependencies",
    "Inference endpoint tested",
    "Latency meets SLA",
    "Scaling configuration defined",
    "Rollback procedure documented",
    "Drift detection configured",
    "Performance alerts set up",
    "Logging in place",
    "Dashboards created",
    "Incident response plan documented",
    "Unit tests for all transforms",
    "Model behavior tests passing",
    "Integration tests for inference",
    "Fairness tests passing",
    "Load testing completed",
)


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _shap_png(path: Path) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3), layout="constrained")
    figure.subplots().barh(["amount", "terminal_risk_7d"], [0.4, 0.2])
    figure.savefig(path, format="png")
    return path


def make_evaluation(tmp_path: Path, **changes: object) -> Evaluation:
    """A hand-built Evaluation on seeded random data, shaped like ``evaluate_model``'s."""
    rng = np.random.default_rng(7)
    n = 600
    y_true = (rng.random(n) < 0.08).astype(int)
    y_score = np.clip(0.15 * rng.random(n) + 0.55 * y_true * rng.random(n), 0, 1)
    threshold = 0.3
    amounts = rng.gamma(2.0, 40.0, n)
    alerts = y_score >= threshold
    evaluation = Evaluation(
        model_uri="models:/fraud-xgb/3",
        model_version="3",
        bundle_digest="ab" * 32,
        model_type="xgboost",
        feature_service="fraud_v1",
        training_window=(dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 29)),
        period=(dt.datetime(2024, 2, 5), dt.datetime(2024, 2, 12)),
        n_rows=n,
        n_frauds=int(y_true.sum()),
        threshold=threshold,
        headline={
            "roc_auc": (0.7519, 0.7312, 0.7704),
            "average_precision": (0.5123, 0.4611, 0.5598),
            "brier_score": (0.0043, 0.0031, 0.0057),
            "card_precision_at_100": (0.45, math.nan, math.nan),
        },
        classification={"accuracy": 0.95, "precision": 0.6, "recall": math.nan, "n": n},
        confusion={
            "tp": int((alerts & (y_true == 1)).sum()),
            "fp": int((alerts & (y_true == 0)).sum()),
            "fn": int((~alerts & (y_true == 1)).sum()),
            "tn": int((~alerts & (y_true == 0)).sum()),
        },
        calibration=calibration_table(y_true, y_score),
        cost_curve=cost_curve(y_true, y_score, thresholds=np.linspace(0, 1, 21)),
        segments={
            "amount_band": evaluate_by_segment(
                y_true, y_score, amount_band(amounts), threshold=threshold, min_size=50, n_boot=20
            )
        },
        fairness={
            "statistical_parity_difference": 0.02,
            "equal_opportunity_difference": -0.15,
            "average_odds_difference": -0.06,
            "disparate_impact": 1.1,
            "theil_index": 0.08,
        },
        fairness_violations=[
            "equal_opportunity_difference = -0.1500 is outside the allowed range [-0.1, 0.1]"
        ],
        fairness_note="customer_age_band, privileged ['25-64']",
        behaviour=[
            Check("deterministic", True, "identical scores"),
            Check("directional:terminal_risk_7d", True, "score rises with terminal risk"),
        ],
        latency_ms={"p50": 0.4, "p99": 1.2},
        lineage={
            "data_content_digest": "cd" * 32,
            "trained_on_content_digest": "cd" * 32,
            "data_quality_passed": True,
            "run_id": "0123abcd",
        },
        gates=[
            GateResult("data_quality", True, "the training data passed its contract and quality gate"),
            GateResult("performance_floor", True, "average precision 0.5123 (floor 0.5)"),
            GateResult("fairness", False, "equal_opportunity_difference = -0.1500 is outside"),
            GateResult("latency", True, "single-row p99 1.200 ms (SLA 5.0 ms)"),
        ],
        shap_plots={"beeswarm": _shap_png(tmp_path / "beeswarm.png")},
        y_true=y_true,
        y_score=y_score,
    )
    return dataclasses.replace(evaluation, **changes)


@pytest.fixture
def evaluation(tmp_path: Path) -> Evaluation:
    return make_evaluation(tmp_path)


def _by_item(items: list[DoDItem]) -> dict[str, DoDItem]:
    return {item.item: item for item in items}


def test_report_has_every_section_in_order(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    positions = [html.index(f'<section id="{sid}">') for sid in SECTION_IDS]
    assert positions == sorted(positions)


def test_report_lists_gates_dod_items_and_overall_status(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    for gate in evaluation.gates:
        assert gate.name in html
    for text in GUIDE_ITEMS:
        assert text in html
    # The fairness gate failed: the page title and badge say FAIL.
    assert re.search(r"<h1>.*FAIL</span></h1>", html)
    assert "PASS" in html  # the passing gates still show


def test_passing_evaluation_shows_pass(tmp_path: Path) -> None:
    gates = [GateResult("data_quality", True, "ok"), GateResult("latency", True, "ok")]
    html = render_report(make_evaluation(tmp_path, gates=gates, fairness_violations=[]))
    assert re.search(r"<h1>.*PASS</span></h1>", html)


def test_report_is_self_contained(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    images = re.findall(r"<img[^>]*>", html)
    assert len(images) >= 4  # curves, calibration, cost, SHAP
    for image in images:
        assert re.search(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"', image)


def test_dynamic_strings_are_escaped(tmp_path: Path) -> None:
    evil = "<script>alert('x')</script>"
    evaluation = make_evaluation(
        tmp_path,
        model_uri=evil,
        gates=[GateResult("latency", False, evil)],
        behaviour=[Check(evil, False, evil)],
        lineage={evil: evil},
    )
    html = render_report(evaluation)
    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_nan_renders_as_a_dash(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    assert "nan" not in re.sub(r"<[^>]+>", "", html).lower().split()
    assert "0.4500 [—]" in html  # card precision has no CI
    assert '<td class="num">—</td>' in html  # recall NaN in the classification table


def test_ci_format(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    assert "0.7519 [0.73, 0.77]" in html
    assert "0.0043 [0.0031, 0.0057]" in html  # small metrics keep their CI digits


def test_shap_png_is_embedded(evaluation: Evaluation) -> None:
    import base64

    data = base64.b64encode(evaluation.shap_plots["beeswarm"].read_bytes()).decode("ascii")
    assert data in render_report(evaluation)


def test_curves_need_both_classes(tmp_path: Path) -> None:
    evaluation = make_evaluation(tmp_path, y_true=np.zeros(5, dtype=int), y_score=np.linspace(0, 1, 5))
    assert "Not drawn" in render_report(evaluation)


def test_definition_of_done_covers_the_guide_honestly(evaluation: Evaluation) -> None:
    items = definition_of_done(evaluation)
    by_item = _by_item(items)
    assert set(GUIDE_ITEMS) <= set(by_item)
    assert {item.status for item in items} <= {"pass", "fail", "n/a"}
    assert all(item.evidence for item in items)
    assert by_item["Data validation schema defined and enforced"].status == "pass"
    assert by_item["Fairness assessed across protected groups"].status == "pass"
    assert by_item["Fairness tests passing"].status == "fail"
    assert by_item["Model behavior tests passing"].status == "pass"
    assert by_item["Latency meets SLA"].status == "pass"
    assert by_item["Model registered with signature"].status == "pass"
    assert by_item["Experiment tracked with all parameters and metrics"].status == "pass"
    assert by_item["Data versioning in place"].status == "pass"
    # No tuning record in the lineage: not passed without evidence.
    assert by_item["Hyperparameters optimized"].status == "fail"
    assert by_item["Drift detection configured"].status == "n/a"
    assert "later stage" in by_item["Drift detection configured"].evidence


def test_definition_of_done_fails_without_evidence(tmp_path: Path) -> None:
    evaluation = make_evaluation(
        tmp_path,
        model_uri="/tmp/bundle",
        model_version="bundle-abcdef123456",
        lineage={},
        gates=[GateResult("data_quality", False, "the training data's quality report is missing or failed")],
        behaviour=[Check("deterministic", False, "scores differ")],
        shap_plots={},
    )
    by_item = _by_item(definition_of_done(evaluation))
    assert by_item["Data validation schema defined and enforced"].status == "fail"
    assert by_item["Model registered with signature"].status == "fail"
    assert by_item["Experiment tracked with all parameters and metrics"].status == "fail"
    assert by_item["Data versioning in place"].status == "fail"
    assert by_item["Model behavior tests passing"].status == "fail"
    assert by_item["Latency meets SLA"].status == "fail"  # no latency gate ran
    assert by_item["Predictions explained (SHAP summary)"].status == "fail"


def test_fairness_is_not_applicable_without_a_protected_attribute(tmp_path: Path) -> None:
    note = "not applicable: the data has no protected column 'customer_age_band'"
    evaluation = make_evaluation(tmp_path, fairness=None, fairness_violations=[], fairness_note=note)
    by_item = _by_item(definition_of_done(evaluation))
    assert by_item["Fairness assessed across protected groups"].status == "n/a"
    assert by_item["Fairness tests passing"].status == "n/a"
    assert note in by_item["Fairness tests passing"].evidence
    html = render_report(evaluation)
    fairness = html[html.index('<section id="fairness">') : html.index('<section id="explanations">')]
    assert "N/A" in fairness


def test_format_checklist(evaluation: Evaluation) -> None:
    items = definition_of_done(evaluation)
    text = format_checklist(items)
    for item in items:
        assert f"{item.status.upper():<4}  {item.item}" in text
        assert item.evidence in text
    assert "Monitoring" in text
    counts = {s: sum(i.status == s for i in items) for s in ("pass", "fail", "n/a")}
    assert text.endswith(f"{counts['pass']} pass, {counts['fail']} fail, {counts['n/a']} n/a")


def test_write_report_is_atomic_and_creates_folders(evaluation: Evaluation, tmp_path: Path) -> None:
    path = write_report(evaluation, tmp_path / "out" / "report.html")
    assert path == tmp_path / "out" / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


def test_segment_table_keeps_every_band(evaluation: Evaluation) -> None:
    html = render_report(evaluation)
    for band in evaluation.segments["amount_band"].index:
        assert str(band) in html
    assert isinstance(evaluation.segments["amount_band"], pd.DataFrame)


def test_sparse_evaluation_renders_and_is_not_judged(tmp_path: Path) -> None:
    evaluation = make_evaluation(
        tmp_path,
        gates=[],
        calibration=pd.DataFrame(),
        cost_curve=pd.DataFrame(),
        segments={},
        behaviour=[],
        shap_plots={"bar": tmp_path / "missing.png"},
    )
    html = render_report(evaluation)
    assert re.search(r"<h1>.*NOT JUDGED</span></h1>", html)  # no gates ran: not a PASS
    assert "missing.png is missing" in html
    by_item = _by_item(definition_of_done(evaluation))
    assert by_item["Model behavior tests passing"].status == "fail"
    assert by_item["Predictions explained (SHAP summary)"].status == "fail"


def test_a_reported_but_ungated_fairness_violation_does_not_fail_the_section(tmp_path: Path) -> None:
    evaluation = make_evaluation(
        tmp_path,
        fairness_violations=[
            "disparate_impact = 0.6467 (95% CI [0.52, 0.79]) is outside the allowed range [0.8, 1.25]"
        ],
        fairness_gated=["equal_opportunity_difference", "average_odds_difference"],
    )
    html = render_report(evaluation)
    fairness = html[html.index('id="fairness"') : html.index('id="explanations"')]
    assert "outside, not gated" in fairness
    assert ">FAIL<" not in fairness
    items = _by_item(definition_of_done(evaluation))
    assert items["Fairness tests passing"].status == "pass"
