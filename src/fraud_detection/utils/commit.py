"""Exactly-once publication of a folder of files: stage, fsync, audit, rename, manifest inside, last.

A *committed folder* is published by one atomic directory rename, so a reader sees either nothing
or every file at once, and trusts only what its ``manifest.json`` lists (:func:`read_committed`
checks each file's size and SHA-256 first). The protocol, for a final folder ``<parent>/<name>``:

1. take the folder's lock (``<parent>/.locks/<name>.lock``, ``flock``): a second writer is
   refused at once, or waits (``wait=True``) and then finds the work done;
2. wipe any staging folder a crashed run left (``<parent>/.staging/<name>``), write every file
   there (each one written to a temporary name, fsync'ed and renamed: :func:`atomic_write`);
3. audit: every staged file is re-read from disk and must have the bytes that were meant
   (SHA-256) and, for parquet, a readable footer with the expected row count;
4. write the manifest (atomically, last), fsync the staging folder;
5. rename the staging folder to the final name and fsync the parent.

A crash at any point leaves either no final folder or a complete one; a failure (disk full,
permission denied, a failed audit) removes the staging folder and never touches the final path.
A final folder is immutable: once it exists, a run only reads it.

``checkpoint``, when given, is called with the name of each step (``file:<i>:partial`` midway
through writing file ``i``, ``file:<i>:written``, ``files:written``, ``manifest:partial``,
``manifest:written``, ``published``): crash tests use it to stop a run at an exact point.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fraud_detection.errors import DataIntegrityError, StorageError
from fraud_detection.utils.io import _fsync_dir, atomic_write, sha256_bytes

MANIFEST_NAME = "manifest.json"
STAGING_DIR = ".staging"
LOCKS_DIR = ".locks"
COMMIT_FORMAT = 1

Checkpoint = Callable[[str], None]


class CommittedFile(BaseModel):
    """One file of a committed folder: its name (no folders), role, SHA-256, size and rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Literal["part", "quarantine"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    rows: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value.startswith(".") or value == MANIFEST_NAME:
            raise ValueError(
                f"file name {value!r} must be a plain, visible file name other than {MANIFEST_NAME}"
            )
        return value


class CommitManifest(BaseModel):
    """What a committed folder holds and what it was made from (``inputs``: digests, pinned values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1]
    kind: str
    rows: int = Field(ge=0)
    files: list[CommittedFile]
    inputs: dict[str, Any]
    details: dict[str, Any] = {}

    def role(self, role: str) -> list[CommittedFile]:
        return [f for f in self.files if f.role == role]


@dataclass(frozen=True)
class FileToCommit:
    """A file's name, content and row count (rows are checked against the parquet footer)."""

    name: str
    data: bytes
    rows: int
    role: Literal["part", "quarantine"] = "part"


def lock_path(final_dir: Path) -> Path:
    return final_dir.parent / LOCKS_DIR / f"{final_dir.name}.lock"


def staging_path(final_dir: Path) -> Path:
    return final_dir.parent / STAGING_DIR / final_dir.name


@contextlib.contextmanager
def commit_lock(final_dir: Path, *, wait: bool = False, poll_s: float = 0.05) -> Iterator[None]:
    """Hold ``final_dir``'s writer lock; a second holder is refused (or, with ``wait``, blocks).

    The lock lives beside the folder (``.locks/``), so taking it never creates the final path.
    """
    path = lock_path(Path(final_dir))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
    except OSError as err:
        raise StorageError(f"cannot write {str(path.parent)!r}: {err.strerror or err}") from err
    with handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as err:
                if not wait:
                    raise DataIntegrityError(
                        f"another run is writing {str(final_dir)!r} (lock {str(path)!r} is held); "
                        "it commits the output once: rerun when it ends"
                    ) from err
                time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def discard_staging(final_dir: Path) -> bool:
    """Remove what a crashed or failed run left in ``final_dir``'s staging folder; True if any."""
    staging = staging_path(Path(final_dir))
    if not staging.exists():
        return False
    shutil.rmtree(staging, ignore_errors=True)
    return True


def _check(checkpoint: Checkpoint | None, step: str) -> None:
    if checkpoint is not None:
        checkpoint(step)


def _write_in_halves(path: Path, data: bytes, checkpoint: Checkpoint | None, step: str) -> None:
    """:func:`atomic_write` of ``data``, with the checkpoint called when half of it is written."""

    def write(handle: Any) -> None:
        half = len(data) // 2
        handle.write(data[:half])
        handle.flush()
        _check(checkpoint, step)
        handle.write(data[half:])

    atomic_write(path, write)


def _audit(path: Path, expected: FileToCommit) -> None:
    """The staged file on disk has exactly the intended bytes and, if parquet, its rows."""
    data = path.read_bytes()
    if sha256_bytes(data) != sha256_bytes(expected.data):
        raise DataIntegrityError(
            f"staged file {str(path)!r} has sha256 {sha256_bytes(data)}, expected "
            f"{sha256_bytes(expected.data)}: the write did not persist what was written"
        )
    if expected.name.endswith(".parquet"):
        try:
            rows = pq.read_metadata(pa.BufferReader(data)).num_rows
        except (pa.ArrowInvalid, OSError) as err:
            raise DataIntegrityError(
                f"staged file {str(path)!r} has no readable parquet footer: {err}"
            ) from err
        if rows != expected.rows:
            raise DataIntegrityError(f"staged file {str(path)!r} holds {rows} rows, expected {expected.rows}")


def commit_folder(
    final_dir: Path,
    files: Sequence[FileToCommit],
    *,
    kind: str,
    inputs: dict[str, Any],
    details: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> CommitManifest:
    """Publish ``files`` and their manifest as ``final_dir`` in one rename (the caller holds the lock).

    Raises :class:`DataIntegrityError` when ``final_dir`` already exists (committed folders are
    immutable) or an audit fails, :class:`StorageError` when a write fails; in every failure the
    staging folder is removed and ``final_dir`` is not created.
    """
    final_dir = Path(final_dir)
    if final_dir.exists():
        raise DataIntegrityError(f"{str(final_dir)!r} is already committed; committed outputs are immutable")
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise ValueError(f"file names {names} repeat")
    staging = staging_path(final_dir)
    discard_staging(final_dir)
    try:
        try:
            staging.mkdir(parents=True)
        except OSError as err:
            raise StorageError(f"cannot write {str(staging)!r}: {err.strerror or err}") from err
        entries = []
        for i, item in enumerate(files):
            _write_in_halves(staging / item.name, item.data, checkpoint, f"file:{i}:partial")
            _check(checkpoint, f"file:{i}:written")
            entries.append(
                CommittedFile(
                    name=item.name,
                    role=item.role,
                    sha256=sha256_bytes(item.data),
                    bytes=len(item.data),
                    rows=item.rows,
                )
            )
        _check(checkpoint, "files:written")
        for item in files:
            _audit(staging / item.name, item)
        manifest = CommitManifest(
            format=COMMIT_FORMAT,
            kind=kind,
            rows=sum(e.rows for e in entries if e.role == "part"),
            files=entries,
            inputs=inputs,
            details=details or {},
        )
        payload = (manifest.model_dump_json(indent=2) + "\n").encode()
        _write_in_halves(staging / MANIFEST_NAME, payload, checkpoint, "manifest:partial")
        _check(checkpoint, "manifest:written")
        try:
            _fsync_dir(staging)
            final_dir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, final_dir)  # atomic: the folder appears complete or not at all
            _fsync_dir(final_dir.parent)
        except OSError as err:
            raise StorageError(f"cannot publish {str(final_dir)!r}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _check(checkpoint, "published")
    return manifest


def read_manifest(final_dir: Path) -> CommitManifest | None:
    """The manifest of a committed folder (None when there is none: nothing was committed)."""
    path = Path(final_dir) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StorageError(f"cannot read {str(path)!r}: {err.strerror or err}") from err
    try:
        return CommitManifest.model_validate_json(data)
    except ValidationError as err:
        raise DataIntegrityError(f"manifest {str(path)!r} is not a valid commit manifest: {err}") from err


def read_committed(final_dir: Path, *, role: str | None = None) -> tuple[CommitManifest, dict[str, bytes]]:
    """The manifest and the bytes of its files (of ``role``, when given), each checked first.

    Raises :class:`DataIntegrityError` when the folder has no manifest or a listed file is
    missing, of another size, or has another SHA-256.
    """
    final_dir = Path(final_dir)
    manifest = read_manifest(final_dir)
    if manifest is None:
        raise DataIntegrityError(f"{str(final_dir)!r} has no {MANIFEST_NAME}: nothing was committed there")
    contents = {}
    for entry in manifest.files:
        if role is not None and entry.role != role:
            continue
        path = final_dir / entry.name
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise DataIntegrityError(f"file {str(path)!r} listed in the manifest is missing") from err
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry.bytes or digest != entry.sha256:
            raise DataIntegrityError(
                f"file {str(path)!r} has {len(data)} bytes and sha256 {digest}, the manifest records "
                f"{entry.bytes} bytes and {entry.sha256}: it was changed after the commit"
            )
        contents[entry.name] = data
    return manifest, contents


def parquet_frames(contents: dict[str, bytes]) -> list[pa.Table]:
    """Parse committed parquet bytes (already verified by :func:`read_committed`), in name order."""
    return [pq.read_table(io.BytesIO(contents[name])) for name in sorted(contents)]
