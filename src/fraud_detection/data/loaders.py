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
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

from fraud_detection.data.contract import ColumnSpec, Contract, DType
from fraud_detection.errors import DataContractError, DataIntegrityError, DataSourceError
from fraud_detection.utils.io import sha256_bytes

SUPPORTED_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class RawSource:
    """Where a frame came from: its root (file or folder) and the files read, in order."""

    root: str
    files: list[str]
    is_dir: bool
    manifest: dict | None = field(default=None)


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
    from fraud_detection.data.raw_store import MANIFEST_NAME, read_manifest

    fs, root = url_to_fs(str(source))
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
        files = [f"{root.rstrip('/')}/{entry['path']}" for entry in manifest["partitions"]]
        return fs, RawSource(root=root, files=files, is_dir=True, manifest=manifest)
    files = _data_files(fs, root)
    if not files:
        raise DataSourceError(
            f"input folder {str(source)!r} holds no data files; expected {list(SUPPORTED_SUFFIXES)} files"
        )
    return fs, RawSource(root=root, files=files, is_dir=True)


def _parse_timestamps(values: pd.Series, spec: ColumnSpec, path: str) -> pd.Series:
    """ISO 8601 text to naive UTC microseconds: offsets converted to UTC, naive values taken as UTC."""
    parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna() & values.notna()
    if bad.any():
        column = spec.name if spec.source_name == spec.name else f"{spec.name} (source {spec.source_name!r})"
        samples = ", ".join(repr(v) for v in values[bad].head(5))
        raise DataContractError(
            f"file {path!r}: column {column}: {int(bad.sum())} value(s) cannot be parsed as ISO 8601 "
            f"timestamps (rows {bad[bad].index[:5].tolist()}, 0-based): {samples}"
        )
    return parsed.dt.tz_localize(None).astype("datetime64[us]")


def _read_csv(data: bytes, path: str, contract: Contract) -> pa.Table:
    # CSV carries no types: read the declared string and datetime columns as text, let Arrow infer
    # the rest, then parse the datetime columns explicitly (Arrow's inference leaves date-only or
    # mixed naive/offset values as text, which the schema would only report as a wrong dtype).
    text = {c.source_name: pa.string() for c in contract.columns if c.dtype in (DType.STRING, DType.DATETIME)}
    options = pacsv.ConvertOptions(column_types=text, strings_can_be_null=True)
    table = pacsv.read_csv(io.BytesIO(data), convert_options=options)
    for spec in contract.columns:
        if spec.dtype == DType.DATETIME and spec.source_name in table.column_names:
            index = table.column_names.index(spec.source_name)
            parsed = _parse_timestamps(table.column(index).to_pandas(), spec, path)
            table = table.set_column(index, spec.source_name, pa.array(parsed, type=pa.timestamp("us")))
    return table


def _read_table(data: bytes, path: str, contract: Contract) -> pa.Table:
    try:
        if path.endswith(".csv"):
            return _read_csv(data, path, contract)
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as err:
        kind = PurePosixPath(path).suffix[1:]
        raise DataSourceError(f"file {path!r} cannot be read as {kind}: {err}") from err


def _check_integrity(path: str, data: bytes, entry: dict) -> None:
    # Checked before parsing, so a tampered file is never handed to a parser.
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise DataIntegrityError(
            f"file {path!r} has sha256 {digest}, but the manifest records {entry['sha256']}: "
            "the raw data was changed after it was written"
        )


def _normalise(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    for spec in contract.columns:
        if spec.name not in frame:
            continue
        column = frame[spec.name]
        kind = column.dtype.kind
        if spec.dtype == DType.DATETIME and kind == "M" and column.dtype != "datetime64[us]":
            if getattr(column.dt, "tz", None) is not None:
                column = column.dt.tz_convert("UTC").dt.tz_localize(None)
            frame[spec.name] = column.astype("datetime64[us]")
        elif spec.dtype == DType.INT64 and kind in "iu" and column.dtype != "int64":
            if kind == "i" or column.max() <= 2**63 - 1:
                frame[spec.name] = column.astype("int64")
        elif spec.dtype == DType.FLOAT64 and kind in "fiu" and column.dtype != "float64":
            frame[spec.name] = column.astype("float64")
        elif spec.dtype == DType.STRING and (isinstance(column.dtype, pd.CategoricalDtype) or kind == "O"):
            frame[spec.name] = column.astype(object).where(column.notna(), None)
    return frame


def read_transactions(source: str, contract: Contract) -> tuple[pd.DataFrame, RawSource]:
    """Read ``source`` into a frame with canonical column names and a RangeIndex (not yet validated)."""
    fs, raw_source = resolve_source(str(source))
    entries = {e["path"]: e for e in raw_source.manifest["partitions"]} if raw_source.manifest else {}
    root_prefix = raw_source.root.rstrip("/") + "/"
    tables = []
    for path in raw_source.files:
        try:
            with fs.open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError as err:
            raise DataIntegrityError(f"file {path!r} listed in the manifest is missing") from err
        entry = entries.get(path.removeprefix(root_prefix))
        if entry is not None:
            _check_integrity(path, data, entry)
        table = _read_table(data, path, contract)
        tables.append(table)
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataSourceError(f"the files under {str(source)!r} have incompatible columns: {err}") from err
    frame = table.to_pandas()
    mapping = contract.source_to_canonical
    # Relabel in place: rename() and reset_index() would each copy every column.
    frame.columns = [mapping.get(column, column) for column in frame.columns]
    return _normalise(frame, contract), raw_source
