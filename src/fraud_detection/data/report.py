"""Render a :class:`~fraud_detection.data.quality.QualityReport` as a standalone HTML page."""

from __future__ import annotations

from html import escape

from fraud_detection.data.quality import QualityReport

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}
table{border-collapse:collapse;width:100%;margin:1rem 0}
th,td{border:1px solid #ccc;padding:.35rem .5rem;text-align:left;vertical-align:top;font-size:.9rem}
th{background:#f3f3f3}.pass{color:#176b2c;font-weight:600}.fail{color:#a40e26;font-weight:600}
.warn{color:#8a5a00;font-weight:600}code{font-size:.85rem}
"""


def _status(passed: bool, severity: str) -> str:
    if passed:
        return '<span class="pass">PASS</span>'
    if severity == "warning":
        return '<span class="warn">WARN</span>'
    return '<span class="fail">FAIL</span>'


def render_html(report: QualityReport) -> str:
    verdict = _status(report.passed, "critical")
    rows = "".join(
        f"<tr><td>{_status(c.passed, c.severity)}</td><td>{escape(c.name)}</td><td>{escape(c.severity)}</td>"
        f"<td>{escape(c.observed)}</td><td>{escape(c.expected)}</td>"
        f"<td>{'<br>'.join(escape(d) for d in c.details[:20])}</td></tr>"
        for c in report.checks
    )
    violations = "".join(
        f"<tr><td>{escape(v.column or '(dataset)')}</td><td>{escape(v.source_column or '')}</td>"
        f"<td><code>{escape(v.check)}</code></td><td>{v.count}</td>"
        f"<td>{escape(', '.join(v.failing_values))}</td><td>{escape(', '.join(map(str, v.rows[:10])))}</td></tr>"
        for v in report.violations
    )
    violations_table = (
        "<table><tr><th>column</th><th>source column</th><th>check</th><th>count</th>"
        f"<th>failing values (sample)</th><th>rows (sample)</th></tr>{violations}</table>"
        if report.violations
        else "<p>No schema violations.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Data quality: {escape(report.source)}</title>
<style>{_STYLE}</style></head><body>
<h1>Data quality report {verdict}</h1>
<table>
<tr><th>source</th><td>{escape(report.source)}</td></tr>
<tr><th>contract</th><td>{escape(report.contract)}</td></tr>
<tr><th>as of</th><td>{escape(str(report.as_of))}</td></tr>
<tr><th>rows</th><td>{report.n_input_rows} read, {report.n_valid_rows} valid, {report.n_quarantined_rows} quarantined</td></tr>
<tr><th>content digest</th><td><code>{escape(report.content_digest or "not computed (data did not pass)")}</code></td></tr>
</table>
<h2>Schema (contract {escape(report.contract)})</h2>
{violations_table}
<h2>Quality checks</h2>
<table><tr><th>status</th><th>check</th><th>severity</th><th>observed</th><th>expected</th><th>details</th></tr>
{rows}</table>
</body></html>
"""
