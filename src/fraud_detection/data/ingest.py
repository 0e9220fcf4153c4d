"""Read → validate → quality-check → digest: the data stage every later stage starts from.

:func:`validate_dataset` returns the validated rows with a full report; :func:`quality.gate`
decides whether the pipeline may go on. :func:`write_validated` publishes the result:
``transactions.parquet`` (canonical columns, valid rows), ``quarantine.parquet`` (rows set aside,
with their reasons), ``quality_report.{json,html}`` and, last, ``manifest.json`` carrying the
content digest used for lineage.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pandas as pd
import structlog

from fraud_detection.data.contract import Contract
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.quality import QualityReport, run_quality_checks
from fraud_detection.data.raw_store import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    RawWriteResult,
    content_digest,
    parquet_bytes,
    read_manifest,
    write_manifest,
    write_raw_dataset,
)
from fraud_detection.data.report import render_html
from fraud_detection.data.simulator import SimulatorConfig, simulate
from fraud_detection.data.validators import OnError, validate_transactions
from fraud_detection.errors import DataContractError, DataSourceError, StorageError
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_bytes

_log = structlog.get_logger(__name__)

TRANSACTIONS_FILE = "transactions.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REPORT_JSON = "quality_report.json"
REPORT_HTML = "quality_report.html"


SIMULATOR_CONTRACT = "simulator"


def simulate_to_folder(
    config: SimulatorConfig, out_dir: Path, *, progress: Callable[[int, int], None] | None = None
) -> RawWriteResult:
    """Simulate with ``config`` and write the result as an immutable raw dataset in ``out_dir``."""
    data = simulate(config)
    if data.transactions.empty:
        raise DataSourceError(
            f"the simulation made no transactions ({config.n_customers} customers reach none of "
            f"{config.n_terminals} terminals within radius {config.radius}); use more terminals or customers"
        )
    _log.info(
        "simulated",
        transactions=len(data.transactions),
        fraud_rate=round(float(data.transactions["is_fraud"].mean()), 5),
    )
    return write_raw_dataset(
        out_dir,
        data.transactions,
        contract_name=SIMULATOR_CONTRACT,
        references={"customers": data.customers, "terminals": data.terminals},
        generator={"simulator": config.model_dump(mode="json")},
        progress=progress,
    )


@dataclass(frozen=True)
class DatasetValidation:
    report: QualityReport
    valid: pd.DataFrame
    quarantined: pd.DataFrame


def validate_dataset(
    source: str | Path, contract: Contract, *, as_of: dt.datetime, on_error: OnError = "fail"
) -> DatasetValidation:
    """Validate the dataset at ``source`` against ``contract`` and run its quality checks.

    Raises :class:`DataContractError` (its ``report`` a :class:`QualityReport`) when the schema
    fails in ``fail`` mode or in a way no quarantine can fix. Quality failures do not raise here:
    pass the report to :func:`fraud_detection.data.quality.gate`.
    """
    started = time.perf_counter()
    source = str(source)
    frame, raw_source = read_transactions(source, contract)
    base = {"source": source, "contract": contract.name, "as_of": as_of, "n_input_rows": len(frame)}
    # Most datasets are clean, so hash them while the checks run: hashlib and numpy release the
    # GIL, which puts a second core to work. The result is used only if every row passes.
    with ThreadPoolExecutor(max_workers=1) as pool:
        speculative_digest = pool.submit(content_digest, frame)
        try:
            schema = validate_transactions(
                frame, contract, as_of=as_of, on_error=on_error, load_failures=raw_source.load_failures
            )
        except DataContractError as err:
            report = QualityReport(
                **base,
                n_valid_rows=0,
                n_quarantined_rows=0,
                violations=err.report or [],
                checks=[],
                duration_seconds=time.perf_counter() - started,
                schema_passed=False,
            )
            raise DataContractError(str(err), report=report) from err
        reference_root = source if raw_source.is_dir else posixpath.dirname(source)
        manifest = raw_source.manifest
        checks = run_quality_checks(
            schema.valid,
            contract,
            as_of=as_of,
            n_input_rows=len(frame),
            reference_root=reference_root,
            reference_sha256={e.path: e.sha256 for e in manifest.references} if manifest else None,
        )
        report = QualityReport(
            **base,
            n_valid_rows=len(schema.valid),
            n_quarantined_rows=len(schema.quarantined),
            violations=schema.violations,
            checks=checks,
        )
        if report.passed:
            clean = schema.valid is frame
            report.content_digest = speculative_digest.result() if clean else content_digest(schema.valid)
    report.duration_seconds = time.perf_counter() - started
    _log.info(
        "dataset validated",
        source=source,
        contract=contract.name,
        rows=len(frame),
        quarantined=len(schema.quarantined),
        passed=report.passed,
        critical_issues=len(report.critical_issues),
        warnings=len(report.warnings),
        content_digest=report.content_digest,
        seconds=round(report.duration_seconds, 3),
    )
    return DatasetValidation(report, schema.valid, schema.quarantined)


def write_report(report: QualityReport, out_dir: Path) -> tuple[Path, Path]:
    """Write the report as JSON and HTML into ``out_dir``; returns both paths."""
    json_path, html_path = Path(out_dir) / REPORT_JSON, Path(out_dir) / REPORT_HTML
    atomic_write_json(json_path, report.model_dump(mode="json"))
    atomic_write_text(html_path, render_html(report))
    return json_path, html_path


def publish(report: QualityReport, out_dir: Path, result: DatasetValidation | None = None) -> Path:
    """Write what a validation produced into ``out_dir``; returns the path to point a user at.

    A dataset that passed gets its data, quarantine, report and (last) manifest, and the manifest
    path is returned. Otherwise the report and any quarantined rows are written, an earlier
    published dataset in ``out_dir`` is withdrawn (manifest first, so no reader sees it half
    gone), and the report path is returned. ``out_dir`` must not hold a raw dataset.
    """
    out_dir = Path(out_dir)
    _refuse_raw_dataset(out_dir, report.source)
    quarantine = _write_quarantine(result, out_dir)
    if result is None or not report.passed:
        (out_dir / MANIFEST_NAME).unlink(missing_ok=True)
        (out_dir / TRANSACTIONS_FILE).unlink(missing_ok=True)
        return write_report(report, out_dir)[0]
    write_report(report, out_dir)
    data = parquet_bytes(result.valid)
    atomic_write_bytes(out_dir / TRANSACTIONS_FILE, data)
    manifest = Manifest(
        format=MANIFEST_FORMAT,
        kind="validated",
        contract=report.contract,
        rows=len(result.valid),
        content_digest=report.content_digest,
        partitions=[FileEntry(path=TRANSACTIONS_FILE, sha256=sha256_bytes(data), rows=len(result.valid))],
        source=report.source,
        as_of=report.as_of.isoformat(),
        quarantine=quarantine,
    )
    return write_manifest(out_dir, manifest)


def _refuse_raw_dataset(out_dir: Path, source: str) -> None:
    manifest_path = out_dir / MANIFEST_NAME
    same_folder = Path(source).exists() and Path(source).resolve() == out_dir.resolve()
    if same_folder or (
        manifest_path.exists() and read_manifest(fsspec.filesystem("file"), str(manifest_path)).kind == "raw"
    ):
        raise StorageError(
            f"--out {str(out_dir)!r} holds a raw dataset, which is immutable; choose another folder"
        )


def _write_quarantine(result: DatasetValidation | None, out_dir: Path) -> FileEntry | None:
    path = out_dir / QUARANTINE_FILE
    if result is None or result.quarantined.empty:
        path.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
        return None
    data = parquet_bytes(result.quarantined)
    atomic_write_bytes(path, data)
    return FileEntry(path=QUARANTINE_FILE, sha256=sha256_bytes(data), rows=len(result.quarantined))
