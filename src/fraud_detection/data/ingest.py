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

import pandas as pd

from fraud_detection.data.contract import Contract
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.quality import QualityReport, run_quality_checks
from fraud_detection.data.raw_store import RawWriteResult, content_digest, parquet_bytes, write_raw_dataset
from fraud_detection.data.report import render_html
from fraud_detection.data.simulator import SimulatorConfig, simulate
from fraud_detection.data.validators import OnError, validate_transactions
from fraud_detection.errors import DataContractError
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_bytes

TRANSACTIONS_FILE = "transactions.parquet"
QUARANTINE_FILE = "quarantine.parquet"
REPORT_JSON = "quality_report.json"
REPORT_HTML = "quality_report.html"
MANIFEST_FILE = "manifest.json"


SIMULATOR_CONTRACT = "simulator"


def simulate_to_folder(
    config: SimulatorConfig, out_dir: Path, *, progress: Callable[[int, int], None] | None = None
) -> RawWriteResult:
    """Simulate with ``config`` and write the result as an immutable raw dataset in ``out_dir``."""
    data = simulate(config)
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
            schema = validate_transactions(frame, contract, as_of=as_of, on_error=on_error)
        except DataContractError as err:
            report = QualityReport(
                **base,
                n_valid_rows=0,
                n_quarantined_rows=0,
                violations=err.report or [],
                checks=[],
                duration_seconds=time.perf_counter() - started,
            )
            raise DataContractError(str(err), report=report) from err
        reference_root = source if raw_source.is_dir else posixpath.dirname(source)
        checks = run_quality_checks(
            schema.valid, contract, as_of=as_of, n_input_rows=len(frame), reference_root=reference_root
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
    return DatasetValidation(report, schema.valid, schema.quarantined)


def write_report(report: QualityReport, out_dir: Path) -> tuple[Path, Path]:
    """Write the report as JSON and HTML into ``out_dir``; returns both paths."""
    json_path, html_path = Path(out_dir) / REPORT_JSON, Path(out_dir) / REPORT_HTML
    atomic_write_json(json_path, report.model_dump(mode="json"))
    atomic_write_text(html_path, render_html(report))
    return json_path, html_path


def write_validated(result: DatasetValidation, out_dir: Path) -> Path:
    """Publish a dataset that passed: data files first, the manifest (with the digest) last."""
    out_dir = Path(out_dir)
    write_report(result.report, out_dir)
    data = parquet_bytes(result.valid)
    atomic_write_bytes(out_dir / TRANSACTIONS_FILE, data)
    files = {TRANSACTIONS_FILE: {"sha256": sha256_bytes(data), "rows": len(result.valid)}}
    quarantine_path = out_dir / QUARANTINE_FILE
    if len(result.quarantined):
        quarantined = parquet_bytes(result.quarantined)
        atomic_write_bytes(quarantine_path, quarantined)
        files[QUARANTINE_FILE] = {"sha256": sha256_bytes(quarantined), "rows": len(result.quarantined)}
    else:
        quarantine_path.unlink(missing_ok=True)  # a stale one from an earlier run would mislead
    manifest_path = out_dir / MANIFEST_FILE
    atomic_write_json(
        manifest_path,
        {
            "source": result.report.source,
            "contract": result.report.contract,
            "as_of": result.report.as_of.isoformat(),
            "content_digest": result.report.content_digest,
            "rows": len(result.valid),
            "files": files,
        },
    )
    return manifest_path
