"""Immutable raw datasets: daily parquet partitions plus a manifest written last.

Layout of a raw dataset folder::

    manifest.json                      # written last, atomically: the dataset is what it lists
    transactions/2018-04-01.parquet    # one partition per day of event_timestamp
    reference/customers.parquet        # optional reference tables (referential checks)

Raw data is immutable: writing a partition that exists with different bytes is refused with
:class:`DataIntegrityError`; the same bytes are a no-op. Parquet is written with fixed settings and
no wall-clock metadata, so the same frame always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraud_detection.data.contract import EVENT_TIMESTAMP, TRANSACTION_ID
from fraud_detection.errors import DataIntegrityError
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, sha256_bytes

MANIFEST_NAME = "manifest.json"
PARTITIONS_DIR = "transactions"
REFERENCE_DIR = "reference"
MANIFEST_FORMAT = 1


def parquet_bytes(data: pd.DataFrame | pa.Table) -> bytes:
    """Serialise a frame or Arrow table to parquet deterministically (fixed compression, no index)."""
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", compression_level=3)
    return buffer.getvalue()


def content_digest(frame: pd.DataFrame) -> str:
    """A stable hash of a dataset's content, independent of file layout, partitioning and row order.

    Rows are taken in ``transaction_id`` order and columns in name order. Each column contributes
    its name, dtype and values: the raw little-endian bytes of a numeric or datetime column (no
    per-row work), or pandas' stable per-value hash of a string column.
    """
    order = None
    if TRANSACTION_ID in frame and not frame[TRANSACTION_ID].is_monotonic_increasing:
        order = np.argsort(frame[TRANSACTION_ID].to_numpy(), kind="stable")
    digest = hashlib.sha256()
    for column in sorted(frame.columns):
        values = frame[column].to_numpy()
        if order is not None:
            values = values[order]
        digest.update(f"{column}\x00{values.dtype.str}\x00".encode())
        if values.dtype == object:
            values = pd.util.hash_array(values)
        elif values.dtype.kind in "mM":
            values = values.view(np.int64)
        digest.update(
            memoryview(np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))).cast("B")
        )
    return f"sha256:{digest.hexdigest()}"


def _daily_tables(transactions: pd.DataFrame) -> list[tuple[str, pa.Table]]:
    """Split ``transactions`` into one Arrow table per calendar day of ``event_timestamp``.

    One conversion to Arrow, then zero-copy slices: rows are put in day order first (a stable
    sort, skipped when they already are, as time-sorted data is).
    """
    days = transactions[EVENT_TIMESTAMP].to_numpy().astype("datetime64[D]")
    if len(days) == 0:
        return []
    if (days[1:] < days[:-1]).any():
        order = np.argsort(days, kind="stable")
        transactions, days = transactions.iloc[order], days[order]
    table = pa.Table.from_pandas(transactions, preserve_index=False)
    starts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    ends = np.r_[starts[1:], len(days)]
    return [
        (str(days[start]), table.slice(start, end - start)) for start, end in zip(starts, ends, strict=True)
    ]


def write_immutable(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly these bytes.

    Returns True when written, False for the no-op; raises when ``path`` holds other bytes.
    """
    if path.exists():
        existing = sha256_bytes(path.read_bytes())
        if existing != sha256_bytes(data):
            raise DataIntegrityError(
                f"raw file {str(path)!r} already exists with different content (sha256 {existing}); "
                "raw data is immutable: write to a new folder"
            )
        return False
    atomic_write_bytes(path, data)
    return True


def read_manifest(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    try:
        with fs.open(path, "rb") as handle:
            manifest = json.loads(handle.read())
    except json.JSONDecodeError as err:
        raise DataIntegrityError(f"manifest {path!r} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataIntegrityError(f"manifest {path!r} is not a format-{MANIFEST_FORMAT} raw manifest")
    return manifest


@dataclass(frozen=True)
class RawWriteResult:
    manifest_path: Path
    manifest: dict[str, Any]
    files_written: int
    files_unchanged: int


def write_raw_dataset(
    out_dir: Path,
    transactions: pd.DataFrame,
    *,
    contract_name: str,
    references: Mapping[str, pd.DataFrame] | None = None,
    generator: Mapping[str, Any] | None = None,
    progress: Any = None,
) -> RawWriteResult:
    """Write ``transactions`` as daily partitions (plus reference tables) and then the manifest.

    An existing dataset in ``out_dir`` can only be extended: partitions it already has must come
    out byte-identical, and a dataset made by a different generator config is refused up front.
    ``progress``, when given, is called with (done, total) after each file.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    # Compare and store the generator config as its JSON form (dates become strings).
    generator = json.loads(json.dumps(dict(generator), default=str)) if generator else None
    previous: dict[str, Any] | None = None
    if manifest_path.exists():
        previous = read_manifest(fsspec.filesystem("file"), str(manifest_path))
        if previous.get("generator") != generator:
            raise DataIntegrityError(
                f"{str(out_dir)!r} already holds a dataset generated with {previous.get('generator')}; "
                "raw data is immutable: write to a new folder"
            )

    # (relative path, Arrow table, manifest entry) for every file; the entries get their sha256
    # once the file is written.
    files: list[tuple[str, pa.Table, dict[str, Any]]] = []
    for day, table in _daily_tables(transactions):
        relative = f"{PARTITIONS_DIR}/{day}.parquet"
        files.append((relative, table, {"path": relative, "date": day, "rows": table.num_rows}))
    n_partitions = len(files)
    for name, frame in sorted((references or {}).items()):
        relative = f"{REFERENCE_DIR}/{name}.parquet"
        table = pa.Table.from_pandas(frame, preserve_index=False)
        files.append((relative, table, {"name": name, "path": relative, "rows": table.num_rows}))

    def write(relative: str, table: pa.Table) -> tuple[str, bool]:
        data = parquet_bytes(table)
        return sha256_bytes(data), write_immutable(out_dir / relative, data)

    written = unchanged = 0
    # Parquet encoding and fsync release the GIL: a few threads overlap them across files.
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(write, relative, table) for relative, table, _ in files]
        for done, (future, (_, _, entry)) in enumerate(zip(futures, files, strict=True), start=1):
            entry["sha256"], was_written = future.result()
            written += was_written
            unchanged += not was_written
            if progress is not None:
                progress(done, len(files))

    partitions = {e["path"]: e for e in (previous or {}).get("partitions", [])}
    partitions.update({entry["path"]: entry for _, _, entry in files[:n_partitions]})
    reference_entries = {e["name"]: e for e in (previous or {}).get("references", [])}
    reference_entries.update({entry["name"]: entry for _, _, entry in files[n_partitions:]})

    if previous and len(partitions) > n_partitions:
        # Appending to an existing dataset: the digest covers every partition the manifest lists.
        frames = [pd.read_parquet(out_dir / entry["path"]) for entry in partitions.values()]
        digest = content_digest(pd.concat(frames, ignore_index=True))
    else:
        digest = content_digest(transactions)

    manifest = {
        "format": MANIFEST_FORMAT,
        "contract": contract_name,
        "generator": generator,
        "rows": sum(entry["rows"] for entry in partitions.values()),
        "content_digest": digest,
        "partitions": sorted(partitions.values(), key=lambda e: e["path"]),
        "references": sorted(reference_entries.values(), key=lambda e: e["name"]),
    }
    if previous != manifest:
        atomic_write_json(manifest_path, manifest)
    return RawWriteResult(manifest_path, manifest, written, unchanged)
