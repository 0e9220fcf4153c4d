"""Read raw transactions through a contract: CSV or parquet, one file or a folder, local or fsspec URL.

Reading renames source columns to canonical names and applies only safe dtype normalisations:
narrow ints widened, ints to float where the contract wants float, timestamps to naive UTC at the
contract's microsecond resolution (finer digits are truncated), categorical and Arrow strings to
Python strings. Anything else is left as it came, so the schema's ``dtype`` check reports it
instead of a silent cast hiding it.

A folder holding a ``manifest.json`` (see ``raw_store``) is read exactly as its manifest lists it,
and each file's SHA-256 and row count are checked first.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from fraud_detection.data.contract import ColumnSpec, Contract, DType
from fraud_detection.data.raw_store import MANIFEST_NAME, PARTITIONS_DIR, Manifest, read_manifest
from fraud_detection.errors import DataContractError, DataIntegrityError, DataSourceError
from fraud_detection.utils.io import sha256_bytes

SUPPORTED_SUFFIXES = (".parquet", ".csv")
FAILURE_COLUMNS = ["column", "check", "failure_case", "index"]


@dataclass(frozen=True)
class RawSource:
    """Where a frame came from: its root (file or folder) and the files read, in order."""

    root: str
    files: list[str]
    is_dir: bool
    manifest: Manifest | None = None
    # Values the reader had to drop (unparseable timestamps, nulls in int columns): pandera-style
    # failure cases (column, check, failure_case, index) that validation reports with the rest.
    load_failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAILURE_COLUMNS))


def _data_files(fs: fsspec.AbstractFileSystem, root: str) -> list[str]:
    files = []
    for path in sorted(fs.find(root)):
        relative = PurePosixPath(path).relative_to(PurePosixPath(root))
        if any(part.startswith((".", "_")) for part in relative.parts):
            continue  # hidden files: temporary writes, _SUCCESS markers, .gitkeep
        if relative.suffix in SUPPORTED_SUFFIXES:
            files.append(path)
    return files


def resolve_source(source: str) -> tuple[fsspec.AbstractFileSystem, RawSource]:
    """List the data files behind ``source``, checking them against a manifest when there is one."""
    try:
        fs, root = url_to_fs(str(source))
    except (ValueError, ImportError) as err:
        raise DataSourceError(f"input {str(source)!r} cannot be opened: {err}") from err
    if not fs.exists(root):
        raise DataSourceError(f"input {str(source)!r} does not exist")
    if not fs.isdir(root):
        suffix = PurePosixPath(root).suffix
        if suffix not in SUPPORTED_SUFFIXES:
            raise DataSourceError(
                f"input {str(source)!r} has suffix {suffix!r}; expected one of {list(SUPPORTED_SUFFIXES)}"
            )
        return fs, RawSource(root=root, files=[root], is_dir=False)
    manifest_path = f"{root.rstrip('/')}/{MANIFEST_NAME}"
    if fs.exists(manifest_path):
        manifest = read_manifest(fs, manifest_path)
        if not manifest.partitions:
            raise DataSourceError(f"dataset {str(source)!r} holds no transactions (its manifest lists none)")
        files = [f"{root.rstrip('/')}/{entry.path}" for entry in manifest.partitions]
        return fs, RawSource(root=root, files=files, is_dir=True, manifest=manifest)
    if fs.exists(f"{root.rstrip('/')}/{PARTITIONS_DIR}"):
        # Our raw layout without its manifest: a write that never finished (the manifest is last).
        raise DataIntegrityError(
            f"{str(source)!r} has a {PARTITIONS_DIR}/ folder but no {MANIFEST_NAME}: an unfinished write; "
            "its partitions are not a dataset"
        )
    files = _data_files(fs, root)
    if not files:
        raise DataSourceError(
            f"input folder {str(source)!r} holds no data files; expected {list(SUPPORTED_SUFFIXES)} files"
        )
    return fs, RawSource(root=root, files=files, is_dir=True)


def _parse_timestamps(values: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, pd.DataFrame]:
    """ISO 8601 text to naive UTC microseconds: offsets converted to UTC, naive values taken as UTC.

    Unparseable values become NaT and are returned as failure cases, so validation lists them with
    every other violation (and can quarantine their rows) instead of stopping at the first file.
    """
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna() & values.notna()
    failures = pd.DataFrame(
        {
            "column": spec.name,
            "check": "parseable_timestamp",
            "failure_case": values[bad],
            "index": values.index[bad],
        }
    )
    return parsed.dt.tz_localize(None).astype("datetime64[us]"), failures


def _read_csv(data: bytes, contract: Contract) -> pa.Table:
    # CSV carries no types: read the declared string and datetime columns as text, let Arrow infer
    # the rest; datetime columns are parsed after renaming (Arrow's inference leaves date-only or
    # mixed naive/offset values as text, which the schema would only report as a wrong dtype).
    text = {c.source_name: pa.string() for c in contract.columns if c.dtype in (DType.STRING, DType.DATETIME)}
    options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(data), convert_options=options)


def _read_table(data: bytes, path: str, contract: Contract) -> pa.Table:
    try:
        if path.endswith(".csv"):
            return _read_csv(data, contract)
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        kind = PurePosixPath(path).suffix[1:]
        reason = " ".join(ascii(str(err))[1:-1].split())[:300]  # one printable line, whatever the bytes
        raise DataContractError(f"file {path!r} is not valid {kind}: {reason}") from err


def _check_integrity(path: str, data: bytes, expected_sha256: str) -> None:
    # Checked before parsing, so a tampered file is never handed to a parser.
    digest = sha256_bytes(data)
    if digest != expected_sha256:
        raise DataIntegrityError(
            f"file {path!r} has sha256 {digest}, but the manifest records {expected_sha256}: "
            "the data was changed after it was written"
        )


def _normalise(frame: pd.DataFrame, contract: Contract) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Apply the safe dtype conversions; return the frame and the failure cases they found."""
    failures = []
    for spec in contract.columns:
        if spec.name not in frame:
            continue
        column = frame[spec.name]
        kind = column.dtype.kind
        if spec.dtype == DType.DATETIME and kind in "OU":
            frame[spec.name], bad = _parse_timestamps(column, spec)
            failures.append(bad)
        elif spec.dtype == DType.DATETIME and kind == "M" and column.dtype != "datetime64[us]":
            if getattr(column.dt, "tz", None) is not None:
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            frame[spec.name] = column.astype("datetime64[us]")
        elif spec.dtype == DType.INT64 and column.dtype != "int64" and _integral(column):
            # Whole numbers that arrived as floats or nullable ints (CSV, Arrow nulls). Nulls are
            # reported as `not_nullable` on their rows (so they can be quarantined) and held as 0
            # meanwhile; the rest converts without loss.
            nulls = column.isna()
            if nulls.any():
                failures.append(
                    pd.DataFrame(
                        {
                            "column": spec.name,
                            "check": "not_nullable",
                            "failure_case": None,
                            "index": column.index[nulls],
                        }
                    )
                )
            frame[spec.name] = column.where(~nulls, 0).astype("int64")
        elif spec.dtype == DType.FLOAT64 and kind in "fiu" and column.dtype != "float64":
            frame[spec.name] = column.astype("float64")
        elif spec.dtype == DType.STRING and (isinstance(column.dtype, pd.CategoricalDtype) or kind == "O"):
            frame[spec.name] = column.astype(object).where(column.notna(), None)
    return frame, failures


def _integral(column: pd.Series) -> bool:
    """Whole numbers within int64, nulls allowed: safe to hold as int64."""
    if column.dtype.kind not in "iuf" and not pd.api.types.is_integer_dtype(column.dtype):
        return False
    values = column.dropna().to_numpy(dtype=np.float64 if column.dtype.kind == "f" else None)
    if column.dtype.kind == "u" and len(values) and values.max() > np.iinfo(np.int64).max:
        return False
    if column.dtype.kind == "f":
        return bool(
            np.isfinite(values).all()
            and (values == np.round(values)).all()
            and (np.abs(values) < 2**63).all()
        )
    return True


def read_transactions(source: str, contract: Contract) -> tuple[pd.DataFrame, RawSource]:
    """Read ``source`` into a frame with canonical column names and a RangeIndex (not yet validated).

    Values that cannot be held in the contract's dtype (unparseable timestamps, nulls in integer
    columns) are listed in ``RawSource.load_failures`` for validation to report.
    """
    fs, raw_source = resolve_source(str(source))
    expected = {e.path: e.sha256 for e in raw_source.manifest.partitions} if raw_source.manifest else {}
    root_prefix = raw_source.root.rstrip("/") + "/"
    tables = []
    for path in raw_source.files:
        try:
            with fs.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError as err:
            raise DataIntegrityError(f"file {path!r} listed in the manifest is missing") from err
        sha256 = expected.get(path.removeprefix(root_prefix))
        if sha256 is not None:
            _check_integrity(path, data, sha256)
        tables.append(_read_table(data, path, contract))
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataContractError(f"the files under {str(source)!r} have incompatible columns: {err}") from err
    frame = table.to_pandas()
    mapping = contract.source_to_canonical
    # Relabel in place: rename() and reset_index() would each copy every column.
    frame.columns = [mapping.get(column, column) for column in frame.columns]
    frame, failures = _normalise(frame, contract)
    if failures:
        raw_source = replace(raw_source, load_failures=pd.concat(failures, ignore_index=True))
    return frame, raw_source
