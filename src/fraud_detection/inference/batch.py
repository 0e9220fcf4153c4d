"""Batch inference: score one day's partition of a raw dataset, committed exactly once.

One run: pin the inputs (the raw partition's SHA-256 from the raw manifest, the feature folder's
manifest SHA-256, the model bundle's digest) → read the partition, checked against its pinned
digest → validate it against the contract (rejected rows go to quarantine with their reasons) →
point-in-time features from the offline feature tables at each transaction's time
(:mod:`fraud_detection.features.offline`, Feast's semantics) → the online
:class:`~fraud_detection.inference.scorer.FraudScorer` (``score_features``; ``reasons`` on
request) → output validation (pandera, plus rows = input rows - rejected rows) → commit
(:mod:`fraud_detection.utils.commit`: staged, fsync'ed, audited, published by one rename, the
manifest inside it written last).

Output layout (``out_dir``)::

    <model>/<version>/date=YYYY-MM-DD/       # published by one atomic rename, then immutable
        part-00000.parquet ...               # transaction_id, score, decision, model_version,
                                             # inference_timestamp[, top_reasons]; rows_per_part each
        quarantine.parquet                   # rejected input rows + quarantine_reasons (when any)
        manifest.json                        # files (sha256, bytes, rows), pinned inputs, details
    <model>/<version>/.staging/date=...      # a run in progress (removed on failure or next run)
    <model>/<version>/.locks/date=....lock   # one writer per partition

``<model>`` is the registered name (``bundle`` for a bundle folder) and ``<version>`` ``v<N>`` (or
``bundle-<digest prefix>``). Readers trust only the manifest: use :func:`read_predictions`.

Exactly once: a run holds the partition's lock from pinning to publication. A partition already
committed with the same pinned inputs is a no-op (nothing is read but the manifests). Committed
with other pins (feature tables rebuilt with later days, say), the partition is scored again and
the committed output stands if the new files are byte-identical; otherwise the run is refused
(:class:`DataIntegrityError`): committed outputs are never overwritten (delete the folder to redo).
Nothing here reads the clock: ``logical_time`` (the run's scheduled time, passed in) is the
``inference_timestamp`` and the contract's "not in the future" bound, so a rerun gives the same
bytes. I/O reads retry with backoff (:mod:`fraud_detection.utils.retry`); validation never does.

Dask: with ``dask`` set (a scheduler address, or ``"local"`` for an in-process
``LocalCluster(processes=False)``), each part is scored and encoded on a worker, which loads the
bundle by URI with the pinned digest (``resolve_model(..., expected_digest=...)``; no model object
is shipped); the parts are byte-identical to in-process scoring.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa_schema
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud_detection.data.contract import Contract
from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.raw_store import MANIFEST_NAME as RAW_MANIFEST
from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.data.raw_store import read_manifest as read_raw_manifest
from fraud_detection.data.validators import QUARANTINE_REASONS, validate_transactions
from fraud_detection.errors import (
    ConfigError,
    DataContractError,
    DataIntegrityError,
    DataSourceError,
    FeatureStoreError,
    StorageError,
)
from fraud_detection.features import offline
from fraud_detection.inference.scorer import FraudScorer, bundle_feature_config
from fraud_detection.models.registry import ResolvedModel, resolve_model
from fraud_detection.utils import commit
from fraud_detection.utils.io import sha256_bytes
from fraud_detection.utils.retry import RetryPolicy, with_retries

logger = logging.getLogger(__name__)

OUTPUT_KIND = "batch-predictions"
QUARANTINE_FILE = "quarantine.parquet"
OUTPUT_COLUMNS = ("transaction_id", "score", "decision", "model_version", "inference_timestamp")
REASONS_COLUMN = "top_reasons"
# dictionary pages only where values repeat (on the distinct scores they cost more than the write)
_REPEATED_OUTPUT_COLUMNS = ("decision", "model_version", "inference_timestamp")


class BatchSpec(BaseModel):
    """What to score and where; built once at the entry point (CLI, flow) and passed down."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_dir: Path = Field(description="Raw dataset folder (daily partitions + manifest.json).")
    date: dt.date = Field(description="The day whose partition is scored.")
    features_dir: Path = Field(description="Feature tables folder written by `fraud features build`.")
    out_dir: Path = Field(description="Root of the predictions layout.")
    logical_time: dt.datetime = Field(
        description="The run's logical time (naive UTC): inference_timestamp and the validation bound."
    )
    explain: bool = False
    top_reasons: int = Field(default=3, ge=1, le=20)
    rows_per_part: int = Field(default=1_000_000, ge=1)
    dask: str | None = Field(default=None, description='Scheduler address, or "local"; None: in process.')
    wait_for_lock: bool = Field(default=False, description="Wait for a concurrent run instead of failing.")
    retry: RetryPolicy = RetryPolicy()

    @field_validator("logical_time")
    @classmethod
    def _naive_utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value


def default_logical_time(date: dt.date) -> dt.datetime:
    """The end of ``date`` (next midnight, UTC): a daily run's logical time when none is given."""
    return dt.datetime.combine(date + dt.timedelta(days=1), dt.time())


class RawPartitionPin(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    rows: int


class PinnedInputs(BaseModel):
    """Everything a run's output depends on; equal pins give equal bytes (a rerun is a no-op)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    date: str
    raw_partition: RawPartitionPin
    raw_contract: str
    features_manifest_sha256: str
    model_version: str
    model_digest: str
    logical_time: str
    explain: bool
    top_reasons: int
    rows_per_part: int

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True)
class BatchResult:
    partition_dir: Path
    manifest: commit.CommitManifest
    committed: bool
    """False when the partition was already committed with these inputs (a no-op)."""
    seconds: float

    @property
    def rows(self) -> int:
        return self.manifest.rows

    @property
    def rejected(self) -> int:
        return sum(f.rows for f in self.manifest.role("quarantine"))

    @property
    def not_in_feature_tables(self) -> int:
        """Transactions the feature tables were not built with (scored from earlier rows)."""
        return int(self.manifest.details.get("n_rows_not_in_feature_tables", 0))


def partition_dir(out_dir: Path, model: ResolvedModel, date: dt.date) -> Path:
    """``<out>/<model>/<version>/date=YYYY-MM-DD`` (see the module docstring)."""
    version = f"v{model.version}" if model.version.isdigit() else model.version
    return Path(out_dir) / (model.name or "bundle") / version / f"date={date.isoformat()}"


# ------------------------------------------------------------------------------------- inputs


def _check_logical_time(spec: BatchSpec) -> None:
    """Refuse a logical time before the end of the scored day: the contract refuses events after
    it, so the day's later rows would be quarantined and the immutable partition would hold part
    of the day."""
    day_end = default_logical_time(spec.date)
    if spec.logical_time < day_end:
        raise ConfigError(
            f"logical time {spec.logical_time.isoformat()} is before the end of the scored day "
            f"{spec.date.isoformat()} ({day_end.isoformat()}); expected a logical time at or after it"
        )


def pin_inputs(spec: BatchSpec, model: ResolvedModel, contract: Contract) -> PinnedInputs:
    """Read the raw and feature manifests and pin the run's inputs (retried on I/O errors)."""
    _check_logical_time(spec)  # every run pins first (run_batch, the flow's pin task)

    def pin() -> PinnedInputs:
        import fsspec

        manifest_path = Path(spec.raw_dir) / RAW_MANIFEST
        if not manifest_path.exists():
            raise DataSourceError(
                f"raw dataset {str(spec.raw_dir)!r} has no {RAW_MANIFEST}; expected a folder written by "
                "`fraud simulate` or the raw store"
            )
        raw = read_raw_manifest(fsspec.filesystem("file"), str(manifest_path))
        if raw.contract != contract.name:
            raise DataSourceError(
                f"raw dataset {str(spec.raw_dir)!r} follows contract {raw.contract!r}, the run was given "
                f"contract {contract.name!r}"
            )
        entries = [e for e in raw.partitions if e.date == spec.date.isoformat()]
        if not entries:
            dates = sorted(e.date for e in raw.partitions if e.date)
            span = f"{dates[0]} .. {dates[-1]}" if dates else "none"
            raise DataSourceError(
                f"raw dataset {str(spec.raw_dir)!r} has no partition for date {spec.date.isoformat()!r}; "
                f"it holds {len(dates)} day(s): {span}"
            )
        entry = entries[0]
        features = offline.read_tables_manifest(spec.features_dir)
        return PinnedInputs(
            date=spec.date.isoformat(),
            raw_partition=RawPartitionPin(path=entry.path, sha256=entry.sha256, rows=entry.rows),
            raw_contract=raw.contract,
            features_manifest_sha256=features.sha256,
            model_version=model.version,
            model_digest=model.digest,
            logical_time=spec.logical_time.isoformat(),
            explain=spec.explain,
            top_reasons=spec.top_reasons,
            rows_per_part=spec.rows_per_part,
        )

    return with_retries("pinning the batch inputs", pin, spec.retry)


def load_partition(spec: BatchSpec, pinned: PinnedInputs, contract: Contract) -> tuple[pd.DataFrame, Any]:
    """The pinned raw partition (checked against its pinned SHA-256), read through the contract."""
    path = Path(spec.raw_dir) / pinned.raw_partition.path

    def read() -> tuple[pd.DataFrame, Any]:
        try:
            data = path.read_bytes()
        except FileNotFoundError as err:
            raise DataIntegrityError(
                f"raw partition {str(path)!r} listed in the manifest is missing"
            ) from err
        digest = sha256_bytes(data)
        if digest != pinned.raw_partition.sha256:
            raise DataIntegrityError(
                f"raw partition {str(path)!r} has sha256 {digest}, the run pinned "
                f"{pinned.raw_partition.sha256}: the data changed after it was written"
            )
        frame, source = read_transactions(str(path), contract)
        if len(frame) != pinned.raw_partition.rows:
            raise DataIntegrityError(
                f"raw partition {str(path)!r} holds {len(frame)} rows, its manifest records "
                f"{pinned.raw_partition.rows}"
            )
        return frame, source.load_failures

    return with_retries(f"reading raw partition {str(path)!r}", read, spec.retry, error=StorageError)


def read_features_ahead(spec: BatchSpec, pinned: PinnedInputs, config: Any) -> Future[Any]:
    """Start reading the pinned feature tables in the background (see :func:`load_features`)."""
    return offline.read_ahead(
        spec.features_dir, config, expected_manifest_sha256=pinned.features_manifest_sha256
    )


def load_features(
    spec: BatchSpec,
    pinned: PinnedInputs,
    config: Any,
    entity_rows: pd.DataFrame,
    read_ahead: Future[Any] | None = None,
) -> offline.OfflineTables:
    """The pinned feature tables, reduced to what ``entity_rows`` can match (retried on I/O errors).

    ``read_ahead`` (from :func:`read_features_ahead`) serves the first attempt; a retry reads anew.
    """
    pending = [read_ahead] if read_ahead is not None else []

    def load() -> offline.OfflineTables:
        return offline.load_offline_tables(
            spec.features_dir,
            config,
            expected_manifest_sha256=pinned.features_manifest_sha256,
            entity_rows=entity_rows,
            read_ahead=pending.pop() if pending else None,
        )

    return with_retries(
        f"reading the feature tables in {str(spec.features_dir)!r}", load, spec.retry, error=FeatureStoreError
    )


# ------------------------------------------------------------------------------------- scoring


def prediction_schema(threshold: float, *, explain: bool) -> pa_schema.DataFrameSchema:
    """The output contract of one part (``model_version`` and ``inference_timestamp`` are constants
    of the run and checked as such, not per row)."""
    columns = {
        "transaction_id": pa_schema.Column("int64", nullable=False, unique=True),
        "score": pa_schema.Column(
            "float64",
            checks=[pa_schema.Check.in_range(0.0, 1.0), pa_schema.Check(np.isfinite, name="finite")],
            nullable=False,
        ),
        "decision": pa_schema.Column("int8", checks=pa_schema.Check.isin([0, 1]), nullable=False),
    }
    if explain:
        columns[REASONS_COLUMN] = pa_schema.Column(str, nullable=False)
    return pa_schema.DataFrameSchema(
        columns,
        checks=[
            pa_schema.Check(
                lambda frame: (frame["decision"] == 1) == (frame["score"] >= threshold),
                name=f"decision_at_threshold({threshold})",
            )
        ],
        strict=True,
        coerce=False,
    )


def score_part(
    scorer: FraudScorer,
    transaction_id: np.ndarray,
    features: np.ndarray,
    *,
    inference_timestamp: dt.datetime,
    explain: bool,
    top_reasons: int,
) -> tuple[bytes, int]:
    """One output part as parquet bytes: score, decide, (explain), validate, encode.

    ``features``: float32 in the bundle's feature order. Raises :class:`DataContractError` when the
    output breaks its contract (nothing of the run is then published).
    """
    if len(features):
        probability, decision = scorer.score_features(features)
    else:  # every row of the day was rejected: an empty part, without asking the model
        probability, decision = np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int8)
    frame = pd.DataFrame({"transaction_id": transaction_id, "score": probability, "decision": decision})
    if explain:
        reasons = scorer.reasons(features, top_reasons) if len(features) else []
        frame[REASONS_COLUMN] = [json.dumps(r, separators=(",", ":")) for r in reasons]
    try:
        prediction_schema(scorer.bundle.threshold, explain=explain).validate(frame, lazy=True)
    except pa_schema.errors.SchemaErrors as err:
        cases = err.failure_cases[["column", "check", "failure_case"]].drop_duplicates().head(10)
        listed = "; ".join(f"{c.column}: {c.check} failed for {c.failure_case!r}" for c in cases.itertuples())
        raise DataContractError(
            f"batch output violates its contract ({len(err.failure_cases)} failure(s)): {listed}"
        ) from err
    n = len(frame)
    table = pa.table(
        {
            "transaction_id": pa.array(frame["transaction_id"].to_numpy(), pa.int64()),
            "score": pa.array(probability, pa.float64()),
            "decision": pa.array(decision, pa.int8()),
            "model_version": pa.repeat(pa.scalar(scorer.version, pa.string()), n),
            "inference_timestamp": pa.repeat(
                pa.scalar(pd.Timestamp(inference_timestamp, tz="UTC"), pa.timestamp("us", tz="UTC")), n
            ),
            **({REASONS_COLUMN: pa.array(frame[REASONS_COLUMN].to_numpy(), pa.string())} if explain else {}),
        }
    )
    return parquet_bytes(table, dictionary=_REPEATED_OUTPUT_COLUMNS, delta=("transaction_id",)), n


@functools.lru_cache(maxsize=4)
def _worker_scorer(model_uri: str, digest: str) -> FraudScorer:
    """The scorer on a Dask worker: the bundle loaded by URI and checked against the pinned digest."""
    return FraudScorer(resolve_model(model_uri, expected_digest=digest), threads=None)


def _score_part_on_worker(
    model_uri: str, digest: str, transaction_id: np.ndarray, features: np.ndarray, options: dict[str, Any]
) -> tuple[bytes, int]:
    return score_part(_worker_scorer(model_uri, digest), transaction_id, features, **options)


def score_parts(
    scorer: FraudScorer,
    transaction_id: np.ndarray,
    features: np.ndarray,
    *,
    inference_timestamp: dt.datetime,
    explain: bool,
    top_reasons: int,
    rows_per_part: int,
    dask: str | None = None,
) -> list[tuple[bytes, int]]:
    """Every part of a partition, in process or on Dask (identical bytes either way)."""
    bounds = [
        (s, min(s + rows_per_part, len(transaction_id))) for s in range(0, len(transaction_id), rows_per_part)
    ]
    bounds = bounds or [(0, 0)]
    options = {"inference_timestamp": inference_timestamp, "explain": explain, "top_reasons": top_reasons}
    if dask is None:
        return [score_part(scorer, transaction_id[a:b], features[a:b], **options) for a, b in bounds]
    from fraud_detection.training.distributed import dask_client

    model = scorer.model
    with dask_client(dask, timeout_s=30.0) as client:
        futures = [
            client.submit(
                _score_part_on_worker,
                model.uri,
                model.digest,
                transaction_id[a:b],
                features[a:b],
                options,
                pure=False,  # a fresh key per part: concurrent runs on one cluster never share results
            )
            for a, b in bounds
        ]
        return client.gather(futures)


# ------------------------------------------------------------------------------------- the run


def _bundle_matrix(scorer: FraudScorer, features: offline.PointInTimeFeatures) -> np.ndarray:
    """The model's float32 input; the join's own matrix when its columns are the bundle's (the usual
    case: no copy, XGBoost reads the column-major layout as it is)."""
    columns = [features.names.index(name) for name in scorer.bundle.feature_names]
    if columns == list(range(len(features.names))):
        return np.asarray(features.values, dtype=np.float32)
    return np.asarray(features.values[:, columns], dtype=np.float32)


def _refuse_other_inputs(final_dir: Path, committed: commit.CommitManifest, pinned: PinnedInputs) -> None:
    new = pinned.as_dict()
    changed = [
        f"{k}: committed {committed.inputs.get(k)!r}, now {new[k]!r}"
        for k in new
        if committed.inputs.get(k) != new[k]
    ]
    raise DataIntegrityError(
        f"{str(final_dir)!r} is already committed from other inputs ({'; '.join(changed)}); committed "
        "outputs are immutable: delete that folder to score the partition again"
    )


def run_batch(
    spec: BatchSpec,
    model: ResolvedModel,
    contract: Contract,
    *,
    pinned: PinnedInputs | None = None,
    checkpoint: commit.Checkpoint | None = None,
) -> BatchResult:
    """Score ``spec.date``'s partition with ``model`` and commit the predictions exactly once.

    ``pinned`` (from :func:`pin_inputs`, e.g. an earlier flow task) must still hold: the run
    re-pins under the lock and refuses inputs that changed since. ``checkpoint`` is passed to
    :func:`fraud_detection.utils.commit.commit_folder` (crash tests).
    """
    started = time.perf_counter()
    final_dir = partition_dir(spec.out_dir, model, spec.date)
    with commit.commit_lock(final_dir, wait=spec.wait_for_lock):
        current = pin_inputs(spec, model, contract)
        if pinned is not None and pinned != current:
            raise DataIntegrityError(
                f"the inputs of {spec.date.isoformat()} changed since they were pinned "
                f"(pinned {pinned.as_dict()}, now {current.as_dict()})"
            )
        committed = commit.read_manifest(final_dir)
        if committed is not None and committed.inputs == current.as_dict():
            logger.info("batch partition %s already committed with these inputs: nothing to do", final_dir)
            return BatchResult(final_dir, committed, False, time.perf_counter() - started)
        if commit.discard_staging(final_dir):
            logger.warning("removed the staging folder an earlier, unfinished run of %s left", final_dir)
        files, details = _score(spec, model, contract, current)
        if committed is not None:
            # Other pins (say, feature tables rebuilt with later days): the committed output stands
            # if these inputs give the very same files; anything else is refused, never overwritten.
            if [(f.name, sha256_bytes(f.data)) for f in files] != [
                (f.name, f.sha256) for f in committed.files
            ]:
                _refuse_other_inputs(final_dir, committed, current)
            logger.info("batch partition %s: new pins give the committed bytes; kept as is", final_dir)
            return BatchResult(final_dir, committed, False, time.perf_counter() - started)
        manifest = commit.commit_folder(
            final_dir,
            files,
            kind=OUTPUT_KIND,
            inputs=current.as_dict(),
            details=details,
            checkpoint=checkpoint,
        )
    seconds = time.perf_counter() - started
    logger.info(
        "batch partition %s committed: %d rows, %d rejected, %.3f s",
        final_dir,
        manifest.rows,
        sum(f.rows for f in manifest.role("quarantine")),
        seconds,
    )
    return BatchResult(final_dir, manifest, True, seconds)


def _score(
    spec: BatchSpec, model: ResolvedModel, contract: Contract, pinned: PinnedInputs
) -> tuple[list[commit.FileToCommit], dict[str, Any]]:
    """Read, validate, join features, score: the files to commit and the manifest's details."""
    feature_config = bundle_feature_config(model)
    # The feature tables are read (hashed, decoded) on other threads while the partition is
    # read and validated here.
    tables_read = read_features_ahead(spec, pinned, feature_config)
    frame, load_failures = load_partition(spec, pinned, contract)
    validation = validate_transactions(
        frame, contract, as_of=spec.logical_time, on_error="quarantine", load_failures=load_failures
    )
    valid, rejected = validation.valid, validation.quarantined
    scorer = FraudScorer(model, threads=None)  # batch: XGBoost's own thread count
    tables = load_features(spec, pinned, feature_config, valid, tables_read)
    features = offline.point_in_time_features(tables, valid, dtype=np.float32)
    parts = score_parts(
        scorer,
        valid["transaction_id"].to_numpy(np.int64),
        _bundle_matrix(scorer, features),
        inference_timestamp=spec.logical_time,
        explain=spec.explain,
        top_reasons=spec.top_reasons,
        rows_per_part=spec.rows_per_part,
        dask=spec.dask,
    )
    n_out = sum(rows for _, rows in parts)
    if n_out != len(frame) - len(rejected):  # write-audit-publish: every accepted row, exactly once
        raise DataContractError(
            f"batch output has {n_out} rows, expected {len(frame)} input rows - {len(rejected)} rejected "
            f"= {len(frame) - len(rejected)}; nothing was published"
        )
    files = [commit.FileToCommit(f"part-{i:05d}.parquet", data, rows) for i, (data, rows) in enumerate(parts)]
    if len(rejected):
        files.append(
            commit.FileToCommit(QUARANTINE_FILE, parquet_bytes(rejected), len(rejected), "quarantine")
        )
    defaulted = features.missing[offline.CUSTOMER_VIEW.name] | features.missing[offline.TERMINAL_VIEW.name]
    not_in_tables = int(features.not_in_tables.sum())
    if not_in_tables:
        logger.warning(
            "%d of %d transactions of %s are not in the feature tables of %s (built before the day?): "
            "they are scored with their entities' earlier rows, whose windows miss the day; rebuild "
            "the tables with `fraud features build` to score them as online and in training",
            not_in_tables, len(valid), spec.date.isoformat(), spec.features_dir,
        )  # fmt: skip
    details = {
        "model_uri": model.uri,
        "threshold": scorer.bundle.threshold,
        "n_input_rows": len(frame),
        "n_rejected_rows": len(rejected),
        "n_rows_with_default_features": int(defaulted.sum()),
        "n_rows_not_in_feature_tables": not_in_tables,
        "columns": [*OUTPUT_COLUMNS, *([REASONS_COLUMN] if spec.explain else [])],
    }
    return files, details


# ------------------------------------------------------------------------------------- readers


def _read_role(partition: Path, role: str) -> tuple[commit.CommitManifest, pd.DataFrame | None]:
    manifest, contents = commit.read_committed(partition, role=role)
    if manifest.kind != OUTPUT_KIND:
        raise DataIntegrityError(f"{str(partition)!r} holds {manifest.kind!r}, not {OUTPUT_KIND!r}")
    tables = commit.parquet_frames(contents)
    if not tables:
        return manifest, None
    return manifest, pa.concat_tables(tables).to_pandas()


def read_predictions(partition: Path) -> pd.DataFrame:
    """The committed predictions of a partition folder, every part checked against the manifest."""
    manifest, frame = _read_role(Path(partition), "part")
    if frame is None or len(frame) != manifest.rows:
        raise DataIntegrityError(
            f"{str(partition)!r} parts hold {0 if frame is None else len(frame)} rows, the manifest {manifest.rows}"
        )
    return frame


def verify_partition(partition: Path, pinned: PinnedInputs | dict[str, Any]) -> int:
    """Check a committed partition (every file against the manifest); returns its rows.

    A partition committed from other pins is accepted (a run keeps it only when the new pins give
    the same bytes); one with no manifest is a :class:`DataIntegrityError`.
    """
    manifest, _ = commit.read_committed(Path(partition))
    if manifest.kind != OUTPUT_KIND:
        raise DataIntegrityError(f"{str(partition)!r} holds {manifest.kind!r}, not {OUTPUT_KIND!r}")
    expected = pinned.as_dict() if isinstance(pinned, PinnedInputs) else pinned
    if manifest.inputs != expected:
        logger.info("%s was committed from other pins that gave the same bytes", partition)
    return manifest.rows


def read_quarantine(partition: Path) -> pd.DataFrame:
    """The rejected input rows of a committed partition, with ``quarantine_reasons`` (empty if none)."""
    _, frame = _read_role(Path(partition), "quarantine")
    return frame if frame is not None else pd.DataFrame(columns=[QUARANTINE_REASONS])
