"""Immutable raw datasets: daily parquet partitions plus a manifest written last.

Layout of a raw dataset folder::

    manifest.json                      # written last, atomically: the dataset is what it lists
    transactions/2018-04-01.parquet    # one partition per day of event_timestamp
    reference/customers.parquet        # optional reference tables (referential checks)

Raw data is immutable: writing a partition that exists with different bytes is refused with
:class:`DataIntegrityError` before anything is written; the same bytes are a no-op. One writer at
a time holds the folder's lock. Parquet is written with fixed settings and no wall-clock metadata,
so the same frame always gives the same bytes.

The same manifest format (``kind: validated``) describes a validated dataset (``ingest.py``), so
readers treat both alike: a dataset is exactly the files its manifest lists, each checked against
its SHA-256 before it is parsed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraud_detection.config import format_validation_error
from fraud_detection.data.contract import EVENT_TIMESTAMP, TRANSACTION_ID
from fraud_detection.errors import DataIntegrityError, StorageError
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, sha256_bytes

_log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
PARTITIONS_DIR = "transactions"
REFERENCE_DIR = "reference"
MANIFEST_FORMAT = 1
_LOCK_NAME = ".lock"


class FileEntry(BaseModel):
    """One file of a dataset: where it is (relative, inside the folder), its SHA-256 and rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    rows: int = Field(ge=0)
    date: str | None = None
    name: str | None = None

    @field_validator("path")
    @classmethod
    def _inside_the_folder(cls, value: str) -> str:
        parts = PurePosixPath(value).parts
        if not parts or value.startswith("/") or "\\" in value or ".." in parts or ":" in value:
            raise ValueError(f"path {value!r} must be relative and inside the dataset folder")
        return value


class Manifest(BaseModel):
    """What a dataset folder holds; written last, so a dataset without one is incomplete."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1]
    kind: Literal["raw", "validated"]
    contract: str
    generator: dict[str, Any] | None = None
    rows: int = Field(ge=0)
    content_digest: str | None
    partitions: list[FileEntry]
    references: list[FileEntry] = []
    source: str | None = None
    as_of: str | None = None
    quarantine: FileEntry | None = None


def read_manifest(fs: fsspec.AbstractFileSystem, path: str) -> Manifest:
    try:
        with fs.open(path, "rb") as handle:
            return Manifest.model_validate_json(handle.read())
    except ValidationError as err:
        raise DataIntegrityError(f"manifest {path!r} is invalid: {format_validation_error(err)}") from err


def write_manifest(out_dir: Path, manifest: Manifest) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_json(path, manifest.model_dump(mode="json", exclude_none=True))
    return path


@contextlib.contextmanager
def writer_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock while writing; a second writer is refused at once, not interleaved."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = (out_dir / _LOCK_NAME).open("a")
    except OSError as err:
        raise StorageError(f"cannot write {str(out_dir)!r}: {err.strerror or err}") from err
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise DataIntegrityError(
                f"another process is writing {str(out_dir)!r}; try again when it ends"
            ) from err
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def parquet_bytes(
    data: pd.DataFrame | pa.Table,
    *,
    dictionary: Sequence[str] | None = None,
    delta: Sequence[str] = (),
) -> bytes:
    """Serialise a frame or Arrow table to parquet deterministically (fixed compression, no index).

    ``dictionary``: the only columns given dictionary pages (default: all, pyarrow's choice). On
    float columns of distinct values the dictionary attempt costs more time than the rest of the
    write and saves no space; writers of such tables name their repetitive columns here.
    ``delta``: integer columns stored delta-encoded (sorted or near-sorted ids: smaller and faster).
    """
    table = pa.Table.from_pandas(data, preserve_index=False) if isinstance(data, pd.DataFrame) else data
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="zstd",
        compression_level=3,
        use_dictionary=True if dictionary is None else list(dictionary),
        column_encoding=dict.fromkeys(delta, "DELTA_BINARY_PACKED") or None,
    )
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


def _check_immutable(path: Path, data: bytes) -> bool:
    """True when ``path`` already holds exactly ``data``; raises when it holds anything else."""
    if not path.exists():
        return False
    existing = sha256_bytes(path.read_bytes())
    if existing != sha256_bytes(data):
        raise DataIntegrityError(
            f"raw file {str(path)!r} already exists with different content (sha256 {existing}); "
            "raw data is immutable: write to a new folder"
        )
    return True


def write_immutable(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` unless it already holds exactly these bytes.

    Returns True when written, False for the no-op; raises when ``path`` holds other bytes.
    """
    if _check_immutable(path, data):
        return False
    atomic_write_bytes(path, data)
    return True


def _differences(existing: dict[str, Any] | None, requested: dict[str, Any] | None) -> str:
    """What differs between two generator configs, e.g. ``seed=0 (requested 1)``."""

    def flat(config: dict[str, Any] | None, prefix: str = "") -> dict[str, Any]:
        items: dict[str, Any] = {}
        for key, value in (config or {}).items():
            items.update(
                flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value}
            )
        return items

    old, new = flat(existing), flat(requested)
    changed = [
        f"{k}={old.get(k)!r} (requested {new.get(k)!r})"
        for k in sorted(old.keys() | new.keys())
        if old.get(k) != new.get(k)
    ]
    return ", ".join(changed) or "another config"


@dataclass(frozen=True)
class RawWriteResult:
    manifest_path: Path
    manifest: Manifest
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

    Writing into a folder that already holds a raw dataset adds new days to it, provided the
    generator config is the same and every partition it already has comes out byte-identical;
    otherwise it is refused before any file is written. ``progress``, when given, is called with
    (done, total) after each file.
    """
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_NAME
    # Compare and store the generator config as its JSON form (dates become strings).
    generator = json.loads(json.dumps(dict(generator), default=str)) if generator else None
    with writer_lock(out_dir):
        previous: Manifest | None = None
        if manifest_path.exists():
            previous = read_manifest(fsspec.filesystem("file"), str(manifest_path))
            if previous.kind != "raw" or previous.generator != generator:
                raise DataIntegrityError(
                    f"{str(out_dir)!r} already holds a {previous.kind} dataset made with "
                    f"{_differences(previous.generator, generator)}; raw data is immutable: write to a new folder"
                )

        tables: list[tuple[str, pa.Table, dict[str, Any]]] = []
        for day, table in _daily_tables(transactions):
            relative = f"{PARTITIONS_DIR}/{day}.parquet"
            tables.append((relative, table, {"path": relative, "date": day, "rows": table.num_rows}))
        n_partitions = len(tables)
        for name, frame in sorted((references or {}).items()):
            relative = f"{REFERENCE_DIR}/{name}.parquet"
            table = pa.Table.from_pandas(frame, preserve_index=False)
            tables.append((relative, table, {"name": name, "path": relative, "rows": table.num_rows}))

        # Parquet encoding and fsync release the GIL: a few threads overlap them across files.
        with ThreadPoolExecutor(max_workers=4) as pool:
            encoded = list(pool.map(lambda item: parquet_bytes(item[1]), tables))
            # Every conflict is found before the first byte is written: a refusal leaves no trace.
            present = [
                _check_immutable(out_dir / relative, data)
                for (relative, _, _), data in zip(tables, encoded, strict=True)
            ]
            writes = [
                pool.submit(atomic_write_bytes, out_dir / relative, data)
                for (relative, _, _), data, exists in zip(tables, encoded, present, strict=True)
                if not exists
            ]
            for done, future in enumerate(writes, start=1):
                future.result()
                if progress is not None:
                    progress(done, len(writes))
            written = len(writes)
        entries = [
            FileEntry(**entry, sha256=sha256_bytes(data))
            for (_, _, entry), data in zip(tables, encoded, strict=True)
        ]

        partitions = {e.path: e for e in (previous.partitions if previous else [])}
        partitions.update({e.path: e for e in entries[:n_partitions]})
        reference_entries = {e.path: e for e in (previous.references if previous else [])}
        reference_entries.update({e.path: e for e in entries[n_partitions:]})
        if previous and len(partitions) > n_partitions:
            # Adding days to a dataset: the digest covers every partition the manifest lists.
            frames = [pd.read_parquet(out_dir / path) for path in sorted(partitions)]
            digest = content_digest(pd.concat(frames, ignore_index=True))
        else:
            digest = content_digest(transactions)
        manifest = Manifest(
            format=MANIFEST_FORMAT,
            kind="raw",
            contract=contract_name,
            generator=generator,
            rows=sum(entry.rows for entry in partitions.values()),
            content_digest=digest,
            partitions=sorted(partitions.values(), key=lambda e: e.path),
            references=sorted(reference_entries.values(), key=lambda e: e.path),
        )
        if previous != manifest:
            write_manifest(out_dir, manifest)
        _log.info(
            "raw dataset written",
            folder=str(out_dir),
            files_written=written,
            files_unchanged=len(tables) - written,
            rows=manifest.rows,
        )
    return RawWriteResult(manifest_path, manifest, written, len(tables) - written)
