"""The evaluation report: one self-contained HTML page per evaluated model, and the guide's checklist.

:func:`render_report` draws every figure from the data in an
:class:`~fraud_detection.evaluation.evaluate.Evaluation` (``analysis.py`` returns data, never plots)
and embeds it as a base64 PNG, with inline CSS and no scripts, fonts or external URLs, so the page
opens offline and can be attached to a ticket or an MLflow run as one file.

:func:`definition_of_done` maps each item of the development guide's "Definition of Done" to the
evidence this evaluation holds. An item is ``pass`` only with evidence, ``fail`` when the evidence
is missing or says no, and ``n/a`` when it belongs to a later stage (deployment, monitoring) or to
CI rather than to one model's evaluation.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from fraud_detection.utils.io import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from fraud_detection.evaluation.evaluate import Evaluation

Status = Literal["pass", "fail", "n/a"]
DASH = "—"  # how a missing or undefined (NaN) number is shown

# Lineage keys that count as evidence of an MLflow experiment run, a registered version and tuning.
_RUN_KEYS = ("mlflow_run_id", "run_id", "training_run_id")
_REGISTERED_KEYS = ("registered_version",)
_TUNING_KEYS = ("tuning_run_id", "tuning_parent_run_id", "best_params")
_DATA_DIGEST_KEYS = ("trained_on_content_digest", "data_content_digest")


@dataclass(frozen=True)
class DoDItem:
    """One Definition of Done item: the guide's text, its status here, and the evidence for it."""

    group: str
    item: str
    status: Status
    evidence: str
    section: str | None = None  # the report section (element id) holding the evidence


# --- the Definition of Done ----------------------------------------------------------------------


def _gate(evaluation: Evaluation, name: str) -> Any | None:
    return next((gate for gate in evaluation.gates if gate.name == name), None)


def _first(lineage: dict[str, Any], keys: Sequence[str]) -> tuple[str, Any] | None:
    for key in keys:
        value = lineage.get(key)
        empty = value is None or (isinstance(value, str | list | dict) and not value)
        if not empty:
            return key, value
    return None


def _from_gate(evaluation: Evaluation, name: str, section: str = "gates") -> tuple[Status, str, str]:
    gate = _gate(evaluation, name)
    if gate is None:
        return "fail", f"no {name!r} gate in this evaluation", section
    return ("pass" if gate.passed else "fail"), f"gate {name}: {gate.detail}", section


def definition_of_done(evaluation: Evaluation) -> list[DoDItem]:
    """The guide's Definition of Done, each item judged on this evaluation's evidence."""
    lineage = evaluation.lineage or {}
    later: Status = "n/a"
    items: list[DoDItem] = []

    def add(group: str, item: str, status: Status, evidence: str, section: str | None = None) -> None:
        items.append(DoDItem(group, item, status, evidence, section))

    # Data pipeline. The data_quality gate is the evidence: training only runs after the pandera
    # contract and the quality checks pass, and the bundle records that data's digest.
    group = "Data Pipeline"
    status, evidence, section = _from_gate(evaluation, "data_quality")
    add(group, "Data validation schema defined and enforced", status, evidence, section)
    add(group, "Data quality checks automated", status, evidence, section)
    add(
        group,
        "Feature engineering code tested",
        later,
        "CI unit tests, not evidenced by one model's evaluation",
    )
    if evaluation.feature_service:
        add(
            group,
            "No training/serving skew (transformers serialized)",
            "pass",
            f"the bundle pins feature service {evaluation.feature_service!r} and its ordered feature list, "
            "checked when loaded; training and serving score through the same bundle",
            "lineage",
        )
    else:
        add(
            group,
            "No training/serving skew (transformers serialized)",
            "fail",
            "the bundle names no feature service",
            "lineage",
        )
    digest = _first(lineage, _DATA_DIGEST_KEYS)
    add(
        group,
        "Data versioning in place",
        "pass" if digest else "fail",
        f"{digest[0]} = {digest[1]}"
        if digest
        else f"no data digest in the lineage ({', '.join(_DATA_DIGEST_KEYS)})",
        "lineage",
    )

    group = "Model Development"
    run = _first(lineage, _RUN_KEYS)
    add(
        group,
        "Experiment tracked with all parameters and metrics",
        "pass" if run else "fail",
        f"MLflow {run[0]} = {run[1]}" if run else f"no MLflow run in the lineage ({', '.join(_RUN_KEYS)})",
        "lineage",
    )
    finite = [name for name, (point, _, _) in evaluation.headline.items() if _finite(point)]
    add(
        group,
        "Multiple metrics evaluated (not just accuracy)",
        "pass" if len(finite) >= 2 else "fail",
        f"{len(finite)} headline metrics with bootstrap CIs: {', '.join(finite) or 'none'}",
        "headline",
    )
    if evaluation.fairness is None:
        add(group, "Fairness assessed across protected groups", later, evaluation.fairness_note, "fairness")
    else:
        add(
            group,
            "Fairness assessed across protected groups",
            "pass",
            f"{len(evaluation.fairness)} metrics on {evaluation.fairness_note}",
            "fairness",
        )
    tuned = _first(lineage, _TUNING_KEYS)
    add(
        group,
        "Hyperparameters optimized",
        "pass" if tuned else "fail",
        f"{tuned[0]} = {tuned[1]}"
        if tuned
        else f"no tuning record in the lineage ({', '.join(_TUNING_KEYS)})",
        "lineage",
    )
    registered = _first(lineage, _REGISTERED_KEYS)
    if registered is None and evaluation.model_version.isdigit():  # registry versions are numbers
        registered = ("registry version", evaluation.model_version)
    add(
        group,
        "Model registered with signature",
        "pass" if registered else "fail",
        f"{registered[0]} {registered[1]} (training logs the model with its MLflow signature)"
        if registered
        else f"{evaluation.model_uri} is a bundle folder, not a registered version",
        "lineage",
    )

    group = "Deployment"
    add(group, "Model packaged with dependencies", later, "later stage (deployment)")
    add(group, "Inference endpoint tested", later, "later stage (deployment)")
    status, evidence, section = _from_gate(evaluation, "latency")
    add(group, "Latency meets SLA", status, evidence + " (in-process scoring, not the endpoint)", section)
    add(group, "Scaling configuration defined", later, "later stage (deployment)")
    add(group, "Rollback procedure documented", later, "later stage (deployment)")

    group = "Monitoring"
    for text in (
        "Drift detection configured",
        "Performance alerts set up",
        "Logging in place",
        "Dashboards created",
        "Incident response plan documented",
    ):
        add(group, text, later, "later stage (monitoring)")

    group = "Testing"
    add(
        group,
        "Unit tests for all transforms",
        later,
        "CI unit tests, not evidenced by one model's evaluation",
    )
    failed = [b.name for b in evaluation.behaviour if not b.passed]
    if not evaluation.behaviour:
        add(group, "Model behavior tests passing", "fail", "no behaviour checks ran", "behaviour")
    else:
        add(
            group,
            "Model behavior tests passing",
            "fail" if failed else "pass",
            f"failed: {', '.join(failed)}" if failed else f"{len(evaluation.behaviour)} checks passed",
            "behaviour",
        )
    add(group, "Integration tests for inference", later, "later stage (deployment); CI integration tier")
    if evaluation.fairness is None:
        add(group, "Fairness tests passing", later, evaluation.fairness_note, "fairness")
    else:
        violations = _gated_violations(evaluation)
        add(
            group,
            "Fairness tests passing",
            "fail" if violations else "pass",
            "; ".join(violations) if violations else "every gated fairness metric within its limits",
            "fairness",
        )
    add(group, "Load testing completed", later, "later stage (deployment)")

    # Two items the guide asks for elsewhere ("explainability by default", metric floors), judged
    # here because this evaluation holds their evidence.
    group = "Evaluation (project additions)"
    status, evidence, section = _from_gate(evaluation, "performance_floor")
    add(
        group,
        "Performance floors met",
        status,
        evidence,
        "headline" if _gate(evaluation, "performance_floor") else section,
    )
    plots = sorted(evaluation.shap_plots)
    present = [name for name in plots if Path(evaluation.shap_plots[name]).is_file()]
    add(
        group,
        "Predictions explained (SHAP summary)",
        "pass" if present else "fail",
        f"SHAP summary plots: {', '.join(present)}" if present else "no SHAP summary plot was produced",
        "explanations",
    )
    return items


def format_checklist(items: Iterable[DoDItem]) -> str:
    """The checklist as plain-text lines for a terminal: status, item and evidence, by group."""
    items = list(items)
    lines: list[str] = []
    group = None
    for item in items:
        if item.group != group:
            group = item.group
            lines += ["", group] if lines else [group]
        lines.append(f"  {item.status.upper():<4}  {item.item}")
        lines.append(f"        {item.evidence}")
    counts = {status: sum(1 for item in items if item.status == status) for status in ("pass", "fail", "n/a")}
    lines += ["", f"{counts['pass']} pass, {counts['fail']} fail, {counts['n/a']} n/a"]
    return "\n".join(lines)


# --- formatting ----------------------------------------------------------------------------------


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, digits: int = 4) -> str:
    """Four decimals for floats, thousands separators for integers, a dash for NaN/None."""
    if value is None or isinstance(value, bool | np.bool_):
        return DASH if value is None else str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if not _finite(value):
        return DASH
    return f"{float(value):.{digits}f}"


def _ci(point: float, low: float, high: float) -> str:
    """``0.7519 [0.73, 0.77]``; a metric below 0.1 (Brier, rare rates) keeps 4 decimals in its CI."""
    if not _finite(point):
        return DASH
    if not (_finite(low) and _finite(high)):
        return f"{_num(point)} [{DASH}]"
    digits = 2 if abs(point) >= 0.1 else 4
    return f"{_num(point)} [{low:.{digits}f}, {high:.{digits}f}]"


def _badge(status: str) -> str:
    css = {"PASS": "pass", "FAIL": "fail", "N/A": "na", "NOT JUDGED": "na"}.get(status, "na")
    return f'<span class="badge {css}">{escape(status)}</span>'


def _pass_fail(passed: bool) -> str:
    return _badge("PASS" if passed else "FAIL")


def _text(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return _num(value)
    if value is None:
        return DASH
    return escape(str(value))


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] | None = None) -> str:
    """An HTML table from already-escaped cells; ``classes`` styles each column ("num": right-aligned)."""
    classes = classes or [""] * len(header)
    head = "".join(f'<th class="{c}">{escape(h)}</th>' for h, c in zip(header, classes, strict=True))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{c}">{cell}</td>' for cell, c in zip(row, classes, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- figures -------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    # A bare Figure draws with the Agg canvas: no pyplot global state, no backend switch.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _img(figure: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return _png(buffer.getvalue(), alt)


def _png(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{escape(alt)}">'


def _both_classes(evaluation: Evaluation) -> bool:
    y_true = np.asarray(evaluation.y_true)
    return y_true.size > 0 and len(np.unique(y_true)) == 2


def _curves_figure(evaluation: Evaluation) -> str:
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true, y_score = np.asarray(evaluation.y_true), np.asarray(evaluation.y_score)
    fig = _figure(11, 4.4)
    roc_ax, pr_ax = fig.subplots(1, 2)
    fpr, tpr, _ = roc_curve(y_true, y_score)
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    alerts = y_score >= evaluation.threshold
    positives = y_true == 1
    op_tpr = (alerts & positives).sum() / max(positives.sum(), 1)
    op_fpr = (alerts & ~positives).sum() / max((~positives).sum(), 1)
    op_precision = (alerts & positives).sum() / alerts.sum() if alerts.any() else math.nan
    auc, ap = (
        evaluation.headline.get("roc_auc", (math.nan,) * 3)[0],
        evaluation.headline.get("average_precision", (math.nan,) * 3)[0],
    )

    roc_ax.plot(fpr, tpr, color="#1f5fa8", lw=2, label=f"model (AUC {_num(auc)})")
    roc_ax.plot([0, 1], [0, 1], color="#999", ls="--", lw=1, label="chance")
    roc_ax.plot(op_fpr, op_tpr, "o", color="#c0392b", ms=8, label=f"threshold {evaluation.threshold:.4g}")
    roc_ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate (recall)",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    pr_ax.plot(
        recall, precision, color="#1f5fa8", lw=2, drawstyle="steps-post", label=f"model (AP {_num(ap)})"
    )
    prevalence = positives.mean()
    pr_ax.axhline(prevalence, color="#999", ls="--", lw=1, label=f"prevalence {prevalence:.4f}")
    if _finite(op_precision):
        pr_ax.plot(
            op_tpr, op_precision, "o", color="#c0392b", ms=8, label=f"threshold {evaluation.threshold:.4g}"
        )
    pr_ax.set(
        xlabel="recall", ylabel="precision", title="Precision-recall curve", xlim=(0, 1), ylim=(0, 1.02)
    )
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=9)
    return _img(fig, "ROC and precision-recall curves")


def _calibration_figure(table: pd.DataFrame) -> str:
    fig = _figure(6.5, 4.6)
    ax = fig.subplots()
    top = float(max(table["mean_predicted"].max(), table["observed_rate"].max(), 1e-3)) * 1.05
    ax.plot([0, top], [0, top], color="#999", ls="--", lw=1, label="perfectly calibrated")
    sizes = 20 + 180 * table["count"] / max(float(table["count"].max()), 1.0)
    ax.plot(table["mean_predicted"], table["observed_rate"], color="#1f5fa8", lw=1.5)
    ax.scatter(
        table["mean_predicted"],
        table["observed_rate"],
        s=sizes,
        color="#1f5fa8",
        zorder=3,
        label="bins (size = rows)",
    )
    # Fraud is rare: most bins crowd near zero, so the axes stop just past the largest value.
    ax.set(
        xlim=(0, top),
        ylim=(0, top),
        xlabel="mean predicted probability",
        ylabel="observed fraud rate",
        title="Reliability diagram",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    return _img(fig, "calibration reliability diagram")


def _cost_figure(table: pd.DataFrame, threshold: float) -> str:
    fig = _figure(9, 4.4)
    ax = fig.subplots()
    ax.plot(
        table["threshold"], table["cost_per_transaction"], color="#1f5fa8", lw=2, label="cost per transaction"
    )
    best = table.loc[table["cost_per_transaction"].idxmin()]
    ax.plot(
        best["threshold"],
        best["cost_per_transaction"],
        "s",
        color="#1d7a35",
        ms=8,
        label=f"minimum at {best['threshold']:.4g}",
    )
    ax.axvline(threshold, color="#c0392b", ls="--", lw=1.5, label=f"model threshold {threshold:.4g}")
    ax.set(xlabel="threshold", ylabel="cost per transaction", title="Expected cost by threshold")
    ax.grid(alpha=0.3)
    alerts_ax = ax.twinx()
    alerts_ax.plot(
        table["threshold"],
        table["alerts_per_transaction"],
        color="#8a5a00",
        lw=1,
        ls=":",
        label="alerts per transaction",
    )
    alerts_ax.set_ylabel("alerts per transaction", color="#8a5a00")
    lines = ax.get_legend_handles_labels()
    more = alerts_ax.get_legend_handles_labels()
    # Below the axes: inside, the legend hid the flat high-threshold end of the curve.
    fig.legend(lines[0] + more[0], lines[1] + more[1], loc="outside lower center", ncols=4, fontsize=9)
    return _img(fig, "expected cost curve")


# --- sections ------------------------------------------------------------------------------------


def _overall(evaluation: Evaluation) -> str:
    if not evaluation.gates:
        return "NOT JUDGED"  # no gates ran: all([]) is True, but nothing was checked
    return "PASS" if evaluation.passed else "FAIL"


def _section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{section_id}"><h2>{escape(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _headline(evaluation: Evaluation) -> str:
    rows = [
        [escape(name.replace("_", " ")), _ci(point, low, high)]
        for name, (point, low, high) in evaluation.headline.items()
    ]
    headline = _table(["metric", "estimate [95% bootstrap CI]"], rows, ["", "num"])
    classification = _table(
        ["at the threshold", "value"],
        [[escape(k.replace("_", " ")), _num(v)] for k, v in evaluation.classification.items()],
        ["", "num"],
    )
    return f'<div class="cols"><div>{headline}</div><div>{classification}</div></div>'


def _gates(evaluation: Evaluation) -> str:
    if not evaluation.gates:
        return _note("No gates were evaluated.")
    rows = [[_pass_fail(g.passed), escape(g.name), escape(g.detail)] for g in evaluation.gates]
    return _table(["status", "gate", "evidence"], rows, ["status", "key", ""])


def _curves(evaluation: Evaluation) -> str:
    if not _both_classes(evaluation):
        return _note("Not drawn: the scored rows need both frauds and genuine transactions.")
    return _curves_figure(evaluation)


def _calibration(evaluation: Evaluation) -> str:
    table = evaluation.calibration
    if table is None or table.empty:
        return _note("No calibration table.")
    brier = evaluation.headline.get("brier_score")
    lead = _note(f"Brier score {_ci(*brier)}; lower is better.") if brier else ""
    rows = [
        [
            _num(r.get("bin")),
            f"{_num(r.get('bin_lower'))} to {_num(r.get('bin_upper'))}",
            _num(r.get("mean_predicted")),
            _num(r.get("observed_rate")),
            _num(r.get("count")),
        ]
        for r in table.to_dict(orient="records")
    ]
    numbers = _table(
        ["bin", "score range", "mean predicted", "observed fraud rate", "rows"], rows, ["num"] * 5
    )
    return f'{lead}<div class="cols"><div>{_calibration_figure(table)}</div><div>{numbers}</div></div>'


def _confusion(evaluation: Evaluation) -> str:
    c = evaluation.confusion
    tp, fp, fn, tn = (int(c.get(k, 0)) for k in ("tp", "fp", "fn", "tn"))
    total = max(tp + fp + fn + tn, 1)

    def cell(count: int, label: str, good: bool) -> str:
        return f'<td class="num cm {"good" if good else "bad"}"><b>{count:,}</b><br><small>{escape(label)} · {count / total:.2%}</small></td>'

    return (
        _note(f"Alert when the score is at least {evaluation.threshold:.4g}.")
        + '<table class="confusion"><thead><tr><th></th><th class="num">alerted (score ≥ threshold)</th>'
        '<th class="num">not alerted</th></tr></thead><tbody>'
        f"<tr><th>fraud</th>{cell(tp, 'true positive', True)}{cell(fn, 'false negative', False)}</tr>"
        f"<tr><th>genuine</th>{cell(fp, 'false positive', False)}{cell(tn, 'true negative', True)}</tr>"
        "</tbody></table>"
    )


def _cost(evaluation: Evaluation) -> str:
    table = evaluation.cost_curve
    if table is None or table.empty:
        return _note("No cost curve.")
    best = table.loc[table["cost_per_transaction"].idxmin()]
    at = evaluation.headline.get("expected_cost_per_transaction")
    lead = _note(
        (f"At the model threshold: {_ci(*at)} per transaction. " if at else "")
        + f"Lowest on the curve: {_num(best['cost_per_transaction'])} at threshold {best['threshold']:.4g} "
        f"({_num(best['alerts_per_transaction'])} alerts per transaction)."
    )
    return lead + _cost_figure(table, evaluation.threshold)


_SEGMENT_VIEW = (  # (header, column, CI low column, CI high column)
    ("rows", "n", None, None),
    ("frauds", "n_positive", None, None),
    ("fraud rate", "positive_rate", None, None),
    ("alerted", "n_flagged", None, None),
    ("ROC AUC", "roc_auc", None, None),
    (
        "average precision [95% CI]",
        "average_precision",
        "average_precision_ci_low",
        "average_precision_ci_high",
    ),
    ("precision", "precision", None, None),
    ("recall [95% CI]", "recall", "recall_ci_low", "recall_ci_high"),
)


def _segments(evaluation: Evaluation) -> str:
    if not evaluation.segments:
        return _note("No segments.")
    parts = []
    for name, table in evaluation.segments.items():
        view = [spec for spec in _SEGMENT_VIEW if spec[1] in table.columns]
        rows = []
        for label, record in zip(table.index, table.to_dict(orient="records"), strict=True):
            cells = [
                _text(DASH if label is None or (isinstance(label, float) and math.isnan(label)) else label)
            ]
            for _, column, low, high in view:
                if low is not None and low in record:
                    cells.append(_ci(record[column], record[low], record[high]))
                else:
                    cells.append(_num(record[column]))
            if record.get("too_small"):
                cells[0] += ' <small class="muted">(too small for metrics)</small>'
            rows.append(cells)
        header = ["segment", *(spec[0] for spec in view)]
        parts.append(
            f"<h3>{escape(name.replace('_', ' '))}</h3>"
            + _table(header, rows, ["key", *(["num"] * len(view))])
        )
    return "".join(parts)


def _gated_violations(evaluation: Evaluation) -> list[str]:
    """The violations the fairness gate counts (every one when the evaluation does not say)."""
    gated = getattr(evaluation, "fairness_gated", None)
    if not gated:
        return list(evaluation.fairness_violations)
    return [v for v in evaluation.fairness_violations if v.split(" ", 1)[0] in gated]


def _fairness(evaluation: Evaluation) -> str:
    if evaluation.fairness is None:
        return _badge("N/A") + _note(evaluation.fairness_note)
    violated = {
        name
        for name in evaluation.fairness
        for v in evaluation.fairness_violations
        if v.startswith(f"{name} ")
    }
    gated = getattr(evaluation, "fairness_gated", None) or list(evaluation.fairness)
    rows = []
    for name, value in evaluation.fairness.items():
        if name in violated and name not in gated:
            status = '<span class="muted">outside, not gated</span>'
        elif name in violated:
            status = _badge("FAIL")
        elif name == "theil_index":
            # Checked only when the config sets a limit, which the Evaluation does not record.
            status = '<span class="muted">not flagged</span>'
        else:
            status = _badge("PASS")
        rows.append([status, escape(name.replace("_", " ")), _num(value)])
    verdict = _pass_fail(not _gated_violations(evaluation))
    listed = "".join(f"<li>{escape(v)}</li>" for v in evaluation.fairness_violations)
    return (
        f"<p>{verdict} {escape(evaluation.fairness_note)}</p>"
        + _table(["status", "metric (unprivileged vs privileged)", "value"], rows, ["status", "", "num"])
        + (f"<ul>{listed}</ul>" if listed else "")
    )


def _explanations(evaluation: Evaluation) -> str:
    if not evaluation.shap_plots:
        return _note("No SHAP summary was produced for this model.")
    parts = []
    for name, path in evaluation.shap_plots.items():
        path = Path(path)
        if path.is_file():
            parts.append(
                f"<figure>{_png(path.read_bytes(), f'SHAP {name}')}<figcaption>SHAP {escape(name)}</figcaption></figure>"
            )
        else:
            parts.append(_note(f"SHAP {name}: file {path} is missing."))
    return '<div class="cols">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"


def _behaviour(evaluation: Evaluation) -> str:
    if not evaluation.behaviour:
        return _note("No behaviour checks ran.")
    rows = [
        [_pass_fail(bool(b.passed)), escape(str(b.name)), escape(str(b.detail))] for b in evaluation.behaviour
    ]
    return _table(["status", "check", "detail"], rows, ["status", "key", ""])


def _lineage(evaluation: Evaluation) -> str:
    model = [
        ("model URI", evaluation.model_uri),
        ("version", evaluation.model_version),
        ("bundle sha256", evaluation.bundle_digest),
        ("model type", evaluation.model_type),
        ("feature service", evaluation.feature_service),
        ("training window", " → ".join(str(t) for t in evaluation.training_window)),
        ("evaluation period", " → ".join(str(t) for t in evaluation.period)),
        ("rows / frauds", f"{evaluation.n_rows:,} / {evaluation.n_frauds:,}"),
        ("threshold", f"{evaluation.threshold:.6g}"),
        *((f"latency {k} (ms)", f"{v:.3f}") for k, v in evaluation.latency_ms.items()),
    ]
    rows = [[escape(k), f"<code>{escape(str(v))}</code>"] for k, v in model]
    rows += [[escape(str(k)), f"<code>{_text(v)}</code>"] for k, v in (evaluation.lineage or {}).items()]
    return _table(["", "value"], rows, ["key", ""])


def _checklist(items: list[DoDItem]) -> str:
    # One table with a row per group: the columns line up across groups.
    rows = []
    group = None
    for item in items:
        if item.group != group:
            group = item.group
            rows.append(f'<tr class="group"><th colspan="3">{escape(group)}</th></tr>')
        link = f' <a href="#{item.section}">(see {escape(item.section)})</a>' if item.section else ""
        rows.append(
            f'<tr><td class="status">{_badge(item.status.upper())}</td><td class="item">{escape(item.item)}</td>'
            f"<td>{escape(item.evidence)}{link}</td></tr>"
        )
    counts = {s: sum(1 for i in items if i.status == s) for s in ("pass", "fail", "n/a")}
    lead = _note(
        f"{counts['pass']} pass, {counts['fail']} fail, {counts['n/a']} not applicable. An item passes only "
        "with evidence in this evaluation; deployment and monitoring items belong to later stages."
    )
    head = '<thead><tr><th class="status">status</th><th class="item">item</th><th>evidence</th></tr></thead>'
    return f'{lead}<table class="dod">{head}<tbody>{"".join(rows)}</tbody></table>'


_STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;padding:1.5rem 2rem 4rem;
color:#1d1d1f;max-width:78rem;line-height:1.45;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0 .4rem;overflow-wrap:anywhere}h2{font-size:1.25rem;margin:2.2rem 0 .6rem;
padding-bottom:.3rem;border-bottom:2px solid #e3e3e3}h3{font-size:1.02rem;margin:1.2rem 0 .3rem}
.meta{color:#555;margin:.2rem 0 1rem}nav{font-size:.9rem;margin:.6rem 0 1rem;display:flex;flex-wrap:wrap;gap:.3rem .9rem}
nav a,td a{color:#1f5fa8;text-decoration:none}td a{white-space:nowrap}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem}
th,td{border:1px solid #d6d6d6;padding:.35rem .55rem;text-align:left;vertical-align:top;font-size:.9rem}
thead th{background:#f3f4f6}tbody tr:nth-child(even){background:#fafafa}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.status{width:1%;white-space:nowrap}.key{width:18rem}.item{width:24rem}
tr.group th{background:#e8edf5;font-size:.95rem;padding-top:.5rem}
code{font-size:.82rem;overflow-wrap:anywhere}
.badge{display:inline-block;min-width:3.6rem;text-align:center;padding:.05rem .45rem;border-radius:.3rem;
font-weight:700;font-size:.8rem;letter-spacing:.03em}
.badge.pass{background:#dff3e4;color:#176b2c}.badge.fail{background:#fbe1e4;color:#a40e26}.badge.na{background:#eceff3;color:#555}
h1 .badge{font-size:1rem;vertical-align:middle;margin-left:.5rem;padding:.15rem .7rem}
.note{color:#444;margin:.3rem 0 .6rem}.muted{color:#777}
.cols{display:flex;flex-wrap:wrap;gap:1.5rem;align-items:flex-start}.cols>div{flex:1 1 30rem;min-width:0}
img{max-width:100%;height:auto;display:block}figure{margin:0}figcaption{color:#555;font-size:.85rem}
table.confusion{width:auto}table.confusion td,table.confusion th{padding:.6rem 1.2rem}
.failures{background:#fdf0f1;border-left:4px solid #a40e26;padding:.4rem .9rem;margin:.4rem 0 1rem}
.failures ul{margin:.2rem 0}td.cm.good{background:#eef8f0}td.cm.bad{background:#fdf0f1}
"""

_SECTIONS = (
    ("headline", "Headline metrics"),
    ("gates", "Promotion gates"),
    ("curves", "ROC and precision-recall curves"),
    ("calibration", "Calibration"),
    ("confusion", "Confusion matrix at the threshold"),
    ("cost", "Cost curve"),
    ("segments", "Segments"),
    ("fairness", "Fairness"),
    ("explanations", "Explanations (SHAP summary)"),
    ("behaviour", "Behaviour tests"),
    ("lineage", "Data and model lineage"),
    ("definition-of-done", "Definition of Done"),
)


def render_report(evaluation: Evaluation) -> str:
    """The evaluation as one self-contained HTML page (inline CSS, embedded PNGs, no external URLs)."""
    builders = {
        "headline": _headline,
        "gates": _gates,
        "curves": _curves,
        "calibration": _calibration,
        "confusion": _confusion,
        "cost": _cost,
        "segments": _segments,
        "fairness": _fairness,
        "explanations": _explanations,
        "behaviour": _behaviour,
        "lineage": _lineage,
        "definition-of-done": lambda e: _checklist(definition_of_done(e)),
    }
    body = "".join(_section(sid, title, builders[sid](evaluation)) for sid, title in _SECTIONS)
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title in _SECTIONS)
    overall = _overall(evaluation)
    failures = "".join(f"<li>{escape(f)}</li>" for f in evaluation.failures)
    period = " → ".join(t.date().isoformat() if hasattr(t, "date") else str(t) for t in evaluation.period)
    title = f"Model evaluation: {evaluation.model_uri} (version {evaluation.model_version})"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{escape(title)} {overall}</title><style>{_STYLE}</style></head><body>
<h1>{escape(title)} {_badge(overall)}</h1>
<p class="meta">{escape(evaluation.model_type)} · feature service {escape(evaluation.feature_service)} ·
evaluated on {escape(period)} · {evaluation.n_rows:,} rows, {evaluation.n_frauds:,} frauds ·
threshold {evaluation.threshold:.4g}</p>
{f'<div class="failures"><b>Failing gates</b><ul>{failures}</ul></div>' if failures else ""}
<nav>{nav}</nav>
{body}
</body></html>
"""


def write_report(evaluation: Evaluation, path: Path) -> Path:
    """Render the report and write it atomically to ``path`` (folders created); returns the path."""
    path = Path(path)
    atomic_write_text(path, render_report(evaluation))
    return path
