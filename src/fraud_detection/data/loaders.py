"""Read raw transactions through a contract: CSV or parquet, one file or a folder, local or fsspec URL.

Reading renames source columns to canonical names and applies only lossless dtype normalisations
(narrow ints widened, ints to float where the contract wants float, timestamps to naive UTC
microseconds, categorical and Arrow strings to Python strings). Anything else is left as it came so
the schema's ``dtype`` check reports it instead of a silent cast hiding it.

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

from fraud_detection.data.contract import Contract, DType
from fraud_detection.errors import DataIntegrityError, DataSourceError
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


def _read_csv(data: bytes, contract: Contract) -> pa.Table:
    # CSV carries no types: read the declared string columns as strings, let Arrow infer the rest.
    strings = {c.source_name: pa.string() for c in contract.columns if c.dtype == DType.STRING}
    options = pacsv.ConvertOptions(column_types=strings, strings_can_be_null=True)
    return pacsv.read_csv(io.BytesIO(data), convert_options=options)


def _read_table(data: bytes, path: str, contract: Contract) -> pa.Table:
    try:
        if path.endswith(".csv"):
            return _read_csv(data, contract)
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise DataSourceError(f"file {path!r} cannot be read as {PurePosixPath(path).suffix[1:]}: {err}") from err


def _check_integrity(path: str, data: bytes, entry: dict, rows: int) -> None:
    digest = sha256_bytes(data)
    if digest != entry["sha256"]:
        raise DataIntegrityError(
            f"file {path!r} has sha256 {digest}, but the manifest records {entry['sha256']}: "
            "the raw data was changed after it was written"
        )
    if rows != entry["rows"]:
        raise DataIntegrityError(f"file {path!r} has {rows} rows, but the manifest records {entry['rows']}")


def _normalise(frame: pd.DataFrame, contract: Contract) -> pd.DataFrame:
    for spec in contract.columns:
        if spec.name not in frame:
            continue
        column = frame[spec.name]
        kind = column.dtype.kind
        if spec.dtype == DType.DATETIME and kind == "M":
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
        table = _read_table(data, path, contract)
        entry = entries.get(path.removeprefix(root_prefix))
        if entry is not None:
            _check_integrity(path, data, entry, table.num_rows)
        tables.append(table)
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataSourceError(f"the files under {str(source)!r} have incompatible columns: {err}") from err
    frame = table.to_pandas(types_mapper=None, self_destruct=True)
    mapping = contract.source_to_canonical
    frame = frame.rename(columns={c: mapping[c] for c in frame.columns if c in mapping})
    return _normalise(frame.reset_index(drop=True), contract), raw_source
