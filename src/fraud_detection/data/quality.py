"""Data quality checks beyond the schema, their report, and the gate that stops a pipeline.

The guide's "Data Quality Checks" and its pitfall "Ignoring Data Quality", done on the validated
rows. Each check is configured per contract (``quality:`` in the YAML), has a severity, and tests
one thing, so a corruption trips its own check and no other:

* ``completeness``: share of nulls in each nullable column;
* ``missing_days``: calendar days with no rows between the first and the last day;
* ``freshness``: age of the latest event against ``as_of``;
* ``volume``: each day's row count against the median of the previous days;
* ``fraud_rate``: overall label rate within bounds, and no day above a ceiling;
* ``amount_distribution``: overall mean within bounds, and each day's PSI against the previous days;
* ``referential``: entity keys present in their reference table;
* ``label_leakage``: no model-input column separates the label almost perfectly (AUC);
* ``quarantine``: the share of rows the schema set aside.

Daily statistics use one pass of ``bincount`` over day numbers, never a per-day Python loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import PurePosixPath

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, computed_field

from fraud_detection.data.contract import AMOUNT, EVENT_TIMESTAMP, LABEL, Contract, DType, Severity
from fraud_detection.data.validators import Violation
from fraud_detection.errors import DataIntegrityError, DataQualityError
from fraud_detection.utils.io import sha256_bytes

_PSI_EPSILON = 1e-4
# Row samples bound the cost of rank- and quantile-based statistics on big inputs; both are
# estimates whose sampling error at this size is far below the thresholds they are compared with.
_SAMPLE_ROWS = 100_000


def _sample_rows(n: int) -> np.ndarray | slice:
    """Seeded row positions (with replacement) when ``n`` is large, else every row."""
    if n <= _SAMPLE_ROWS:
        return slice(None)
    return np.random.default_rng(0).integers(0, n, size=_SAMPLE_ROWS)


class CheckResult(BaseModel):
    name: str
    severity: Severity
    passed: bool
    observed: str
    expected: str
    details: list[str] = []

    def describe(self) -> str:
        text = f"{self.name}: observed {self.observed}, expected {self.expected}"
        if self.details:
            text += f" ({'; '.join(self.details[:5])}{'; ...' if len(self.details) > 5 else ''})"
        return text


class QualityReport(BaseModel):
    """Everything the validation of one dataset found; written as JSON and HTML."""

    source: str
    contract: str
    as_of: dt.datetime
    n_input_rows: int
    n_valid_rows: int
    n_quarantined_rows: int
    violations: list[Violation]
    checks: list[CheckResult]
    content_digest: str | None = None
    duration_seconds: float | None = None
    schema_passed: bool = True

    @computed_field  # type: ignore[prop-decorator]
    @property
    def critical_issues(self) -> list[str]:
        issues = [] if self.schema_passed else [f"schema: {len(self.violations)} contract violation(s)"]
        return issues + [c.describe() for c in self.checks if not c.passed and c.severity == "critical"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def warnings(self) -> list[str]:
        return [c.describe() for c in self.checks if not c.passed and c.severity == "warning"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return not self.critical_issues


def gate(report: QualityReport) -> None:
    """Raise :class:`DataQualityError` listing every critical issue; return quietly otherwise."""
    if report.critical_issues:
        raise DataQualityError(report.critical_issues, report=report)


class _Days:
    """Day numbers of each row (days since the first day), computed once for all daily checks."""

    def __init__(self, timestamps: pd.Series) -> None:
        days = timestamps.to_numpy().astype("datetime64[D]")
        self.first: np.datetime64 = days.min()
        self.index = (days - self.first).astype(np.int64)
        self.n_days = int(self.index.max()) + 1
        self.counts = np.bincount(self.index, minlength=self.n_days)

    def label(self, day: int) -> str:
        return str(self.first + np.timedelta64(day, "D"))

    def trailing(self, per_day: np.ndarray, window: int) -> np.ndarray:
        """Sum of ``per_day`` (days x k) over the previous ``window`` days, for each day."""
        cumulative = np.concatenate([np.zeros((1, *per_day.shape[1:])), np.cumsum(per_day, axis=0)])
        days = np.arange(self.n_days)
        return cumulative[days] - cumulative[np.maximum(days - window, 0)]


def _completeness(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    nullable = [c.name for c in contract.columns if c.nullable]
    shares = frame[nullable].isna().mean() if nullable else pd.Series(dtype=float)
    failing = shares[shares > cfg.max_null_share]
    worst = (
        f"worst null share {shares.max():.4f} in {shares.idxmax()!r}"
        if len(shares)
        else "no nullable columns"
    )
    return CheckResult(
        name="completeness",
        severity=cfg.severity,
        passed=failing.empty,
        observed=worst,
        expected=f"null share <= {cfg.max_null_share} per column",
        details=[f"{column}: {share:.4f}" for column, share in failing.items()],
    )


def _missing_days(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    missing = [days.label(d) for d in np.flatnonzero(days.counts == 0)]
    return CheckResult(
        name="missing_days",
        severity=cfg.severity,
        passed=not missing,
        observed=f"{len(missing)} day(s) without rows in {days.n_days} days",
        expected="every calendar day between the first and the last has rows",
        details=missing,
    )


def _freshness(
    frame: pd.DataFrame, contract: Contract, days: _Days, cfg, as_of: dt.datetime, **_
) -> CheckResult:
    latest = frame[EVENT_TIMESTAMP].max()
    age = pd.Timestamp(as_of) - latest
    return CheckResult(
        name="freshness",
        severity=cfg.severity,
        passed=age <= cfg.max_staleness,
        observed=f"latest event {latest} is {age} before as_of {as_of:%Y-%m-%d %H:%M:%S}",
        expected=f"latest event at most {cfg.max_staleness} old",
    )


def _volume(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    # Days without rows are `missing_days`' business; here each present day is compared with the
    # median of the previous `window_days` present days, and days with less history are not judged.
    present = np.flatnonzero(days.counts > 0)
    counts = pd.Series(days.counts[present].astype(float))
    median = counts.shift(1).rolling(cfg.window_days, min_periods=cfg.window_days).median()
    ratio = counts / median
    too_few = counts < cfg.min_rows_per_day
    off = (ratio - 1).abs() > cfg.tolerance
    details = [
        f"{days.label(present[i])}: {int(counts[i])} rows < {cfg.min_rows_per_day}"
        for i in np.flatnonzero(too_few)
    ]
    details += [
        f"{days.label(present[i])}: {int(counts[i])} rows, {ratio[i]:.2f}x the trailing median"
        for i in np.flatnonzero(off & ~too_few)
    ]
    judged = ratio.dropna()
    observed = (
        f"daily rows / trailing median in [{judged.min():.2f}, {judged.max():.2f}]"
        if len(judged)
        else "no day judged"
    )
    return CheckResult(
        name="volume",
        severity=cfg.severity,
        passed=not details,
        observed=observed,
        expected=f"within 1 ± {cfg.tolerance} of the median of the previous {cfg.window_days} days",
        details=details,
    )


def _fraud_rate(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    labels = frame[LABEL].to_numpy()
    rate = float(labels.mean())
    frauds = np.bincount(days.index, weights=labels, minlength=days.n_days)
    judged = days.counts >= cfg.min_rows_for_daily
    daily = np.divide(frauds, days.counts, out=np.zeros(days.n_days), where=judged)
    details = []
    if not cfg.min <= rate <= cfg.max:
        details.append(f"overall rate {rate:.5f} outside [{cfg.min}, {cfg.max}]")
    details += [
        f"{days.label(d)}: daily rate {daily[d]:.4f} > {cfg.max_daily}"
        for d in np.flatnonzero(daily > cfg.max_daily)
    ]
    return CheckResult(
        name="fraud_rate",
        severity=cfg.severity,
        passed=not details,
        observed=f"overall {rate:.5f}, highest day {daily.max():.4f}"
        if judged.any()
        else f"overall {rate:.5f}, no day judged",
        expected=f"overall in [{cfg.min}, {cfg.max}], each day <= {cfg.max_daily}",
        details=details,
    )


def population_stability_index(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """PSI between binned count vectors (last axis = bins), smoothed so empty bins stay finite."""
    p = expected / np.maximum(expected.sum(axis=-1, keepdims=True), 1) + _PSI_EPSILON
    q = actual / np.maximum(actual.sum(axis=-1, keepdims=True), 1) + _PSI_EPSILON
    return np.sum((q - p) * np.log(q / p), axis=-1)


def _amount_distribution(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    amounts = frame[AMOUNT].to_numpy()
    mean = float(amounts.mean())
    # Shared decile edges over the whole dataset, so every day is binned the same way.
    edges = np.unique(np.quantile(amounts[_sample_rows(len(amounts))], np.linspace(0, 1, cfg.bins + 1)[1:-1]))
    # Bin = number of edges <= value (searchsorted's "right" side); a few vectorised comparisons
    # against ~10 edges are several times faster than a binary search per row.
    bins = np.zeros(len(amounts), dtype=np.int64)
    for edge in edges:
        bins += amounts >= edge
    n_bins = len(edges) + 1
    per_day = np.bincount(days.index * n_bins + bins, minlength=days.n_days * n_bins).reshape(
        days.n_days, n_bins
    )
    reference = days.trailing(per_day, cfg.window_days)
    psi = population_stability_index(reference, per_day)
    history_days = days.trailing((days.counts > 0).astype(float)[:, None], cfg.window_days)[:, 0]
    judged = (history_days >= cfg.window_days) & (days.counts > 0)
    details = []
    if not cfg.mean_min <= mean <= cfg.mean_max:
        details.append(f"mean amount {mean:.2f} outside [{cfg.mean_min}, {cfg.mean_max}]")
    details += [
        f"{days.label(d)}: PSI {psi[d]:.3f} > {cfg.max_psi}"
        for d in np.flatnonzero(judged & (psi > cfg.max_psi))
    ]
    worst = f"{psi[judged].max():.3f}" if judged.any() else "n/a"
    return CheckResult(
        name="amount_distribution",
        severity=cfg.severity,
        passed=not details,
        observed=f"mean {mean:.2f}, highest daily PSI {worst}",
        expected=f"mean in [{cfg.mean_min}, {cfg.mean_max}], daily PSI vs previous {cfg.window_days} days <= {cfg.max_psi}",
        details=details,
    )


def _referential(
    frame: pd.DataFrame,
    contract: Contract,
    days: _Days,
    cfg,
    reference_root: str | None,
    reference_sha256: dict[str, str] | None = None,
    **_,
) -> CheckResult:
    name = f"referential({cfg.column})"
    expected = f"every {cfg.column} in {cfg.table}:{cfg.key}"
    if reference_root is None:
        return CheckResult(
            name=name, severity=cfg.severity, passed=False, observed="no dataset folder", expected=expected
        )
    fs, root = fsspec.core.url_to_fs(reference_root)
    table_path = str(PurePosixPath(root) / cfg.table)
    if not fs.exists(table_path):
        # Nothing to check against is not proof of bad keys: reported, at warning level.
        return CheckResult(
            name=name,
            severity="warning",
            passed=False,
            observed=f"not verified: {table_path!r} not found",
            expected=expected,
        )
    with fs.open(table_path, "rb") as handle:
        data = handle.read()
    known_sha256 = (reference_sha256 or {}).get(cfg.table)
    if known_sha256 is not None and sha256_bytes(data) != known_sha256:
        raise DataIntegrityError(
            f"reference table {table_path!r} does not match the sha256 its manifest records"
        )
    table = pq.read_table(pa.BufferReader(data))
    if cfg.key not in table.column_names:
        return CheckResult(
            name=name,
            severity=cfg.severity,
            passed=False,
            observed=f"reference table {table_path!r} has no column {cfg.key!r} (it has {table.column_names})",
            expected=expected,
        )
    keys = table.column(cfg.key).to_pandas()
    values = frame[cfg.column]
    unknown = values[~values.isin(keys)]
    sample = [repr(v) for v in unknown.drop_duplicates().head(5).tolist()]
    return CheckResult(
        name=name,
        severity=cfg.severity,
        passed=unknown.empty,
        observed=f"{len(unknown)} row(s) with unknown {cfg.column}",
        expected=expected,
        details=[f"unknown values: {', '.join(sample)}"] if sample else [],
    )


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    positives = label == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _label_leakage(frame: pd.DataFrame, contract: Contract, days: _Days, cfg, **_) -> CheckResult:
    numeric = [
        c.name for c in contract.columns if c.role == "feature" and c.dtype in (DType.INT64, DType.FLOAT64)
    ]
    rows = _sample_rows(len(frame))
    labels = frame[LABEL].to_numpy()[rows]
    aucs = {}
    for column in numeric:
        values = frame[column].to_numpy(dtype=float)[rows]
        present = ~np.isnan(values)  # a null says nothing about the label; judge the rest
        auc = _auc(values[present], labels[present])
        aucs[column] = max(auc, 1 - auc)
    failing = {c: a for c, a in aucs.items() if a > cfg.max_auc}
    worst = max(aucs, key=aucs.__getitem__) if aucs else None
    return CheckResult(
        name="label_leakage",
        severity=cfg.severity,
        passed=not failing,
        observed=f"highest single-column AUC {aucs[worst]:.3f} ({worst!r})"
        if worst
        else "no numeric model inputs",
        expected=f"no model input alone separates {LABEL} with AUC > {cfg.max_auc}",
        details=[f"{column}: AUC {auc:.3f}" for column, auc in failing.items()],
    )


def _quarantine(n_input_rows: int, n_quarantined: int, cfg) -> CheckResult:
    share = n_quarantined / n_input_rows if n_input_rows else 0.0
    return CheckResult(
        name="quarantine",
        severity=cfg.severity,
        passed=share <= cfg.max_share,
        observed=f"{n_quarantined} of {n_input_rows} rows quarantined ({share:.4%})",
        expected=f"at most {cfg.max_share:.2%} of rows quarantined",
    )


_DAILY_CHECKS: list[tuple[str, Callable[..., CheckResult]]] = [
    ("completeness", _completeness),
    ("missing_days", _missing_days),
    ("freshness", _freshness),
    ("volume", _volume),
    ("fraud_rate", _fraud_rate),
    ("amount_distribution", _amount_distribution),
    ("label_leakage", _label_leakage),
]


def run_quality_checks(
    frame: pd.DataFrame,
    contract: Contract,
    *,
    as_of: dt.datetime,
    n_input_rows: int,
    reference_root: str | None,
    reference_sha256: dict[str, str] | None = None,
) -> list[CheckResult]:
    """Run every check the contract configures on the validated rows in ``frame``.

    ``reference_sha256`` maps reference-table paths (relative to ``reference_root``) to the
    SHA-256 a manifest records for them; a table that does not match is refused.
    """
    quality = contract.quality
    results = [_quarantine(n_input_rows, n_input_rows - len(frame), quality.quarantine)]
    if frame.empty:
        return results
    days = _Days(frame[EVENT_TIMESTAMP])
    context = {"as_of": as_of, "reference_root": reference_root, "reference_sha256": reference_sha256}
    for attribute, check in _DAILY_CHECKS:
        cfg = getattr(quality, attribute)
        if cfg is not None:
            results.append(check(frame, contract, days, cfg, **context))
    for cfg in quality.referential:
        results.append(_referential(frame, contract, days, cfg, **context))
    return results
