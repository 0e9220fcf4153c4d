"""The batch inference flow: pin the inputs → score and commit one day's partition exactly once →
verify what was published.

Wiring only: each task is one call into :mod:`fraud_detection.inference.batch`, and tasks pass
paths, digests and small JSON summaries, never frames. Only the I/O tasks (pinning: manifests and
the model registry; verification: reading the committed files) retry, with exponential backoff and
only on I/O errors; a contract or validation failure fails the flow at once. The scoring task
reads its inputs with the library's own retries and is never retried as a whole.

Caching: the scoring task's cache key is the pinned inputs (raw partition SHA-256, feature
manifest SHA-256, model digest, logical time, options) plus the output folder, and its result (a
JSON summary) is persisted in Prefect's result storage (``$PREFECT_HOME/storage``), so a rerun of
the same day with the same inputs, in this process or a later one, skips scoring altogether. The
verification task is never cached: a cache hit whose output was removed fails there, loudly
(remove the cache entry with ``refresh_cache`` or ``PREFECT_TASKS_REFRESH_CACHE=true``). Without a
cache the library itself makes such a rerun a no-op.

The day to score defaults to the day before the flow run's scheduled time (UTC), the daily
deployment's case; its logical time (``inference_timestamp``) to the end of that day.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.pipelines.runtime import prepare_flow_process, transient

FLOW_NAME = "fraud-batch-inference"


class BatchFlowParameters(BaseModel):
    """The flow's parameters; the defaults score yesterday's simulator partition with the champion."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_uri: str = "models:/fraud-detector@champion"
    data_dir: Path | None = Field(
        None, description="Default root of the folders below; unset: FRAUD_DATA_DIR."
    )
    dataset: str = Field("simulator", description="Folder name of the dataset under raw/ and features/.")
    raw_dir: Path | None = Field(None, description="Raw dataset; unset: <data_dir>/raw/<dataset>.")
    features_dir: Path | None = Field(
        None, description="Feature tables; unset: <data_dir>/features/<dataset>."
    )
    out_dir: Path | None = Field(None, description="Predictions root; unset: <data_dir>/predictions.")
    date: dt.date | None = Field(None, description="Day to score; unset: the day before the scheduled time.")
    logical_time: dt.datetime | None = Field(
        None, description="inference_timestamp (UTC); unset: end of date."
    )
    contract: str = "simulator"
    explain: bool = False
    top_reasons: int = Field(3, ge=1, le=20)
    rows_per_part: int = Field(1_000_000, ge=1)
    dask: str | None = Field(None, description='Dask scheduler address, or "local"; unset: in process.')


DEFAULT_PARAMETERS = BatchFlowParameters()


_IO_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=2),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": transient,
}


def _scoring_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """The pinned inputs and where the output goes: equal keys mean the same committed bytes."""
    spec = parameters["spec"]
    payload = {"pinned": parameters["pinned"], "out_dir": str(Path(spec.out_dir).resolve())}
    return "batch-" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@task(name="pin-inputs", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def pin_inputs(spec: Any, model_uri: str, contract: Any, public_key: Path | None) -> dict[str, Any]:
    from fraud_detection.inference import batch
    from fraud_detection.models.registry import resolve_model

    model = resolve_model(model_uri, public_key=public_key)
    return batch.pin_inputs(spec, model, contract).as_dict()


@task(
    name="score-and-commit",
    cache_key_fn=_scoring_cache_key,
    persist_result=True,
    result_serializer="json",
)
def score_and_commit(
    spec: Any, model_uri: str, contract: Any, public_key: Path | None, pinned: dict[str, Any]
) -> dict[str, Any]:
    from fraud_detection.inference import batch
    from fraud_detection.models.registry import resolve_model

    model = resolve_model(model_uri, public_key=public_key, expected_digest=pinned["model_digest"])
    result = batch.run_batch(spec, model, contract, pinned=batch.PinnedInputs.model_validate(pinned))
    return {
        "partition_dir": str(result.partition_dir),
        "rows": result.rows,
        "rejected_rows": result.rejected,
        "committed": result.committed,
    }


@task(name="verify-output", cache_policy=NO_CACHE, persist_result=False, **_IO_RETRIES)
def verify_output(partition_dir: str, pinned: dict[str, Any]) -> int:
    from fraud_detection.inference import batch

    return batch.verify_partition(Path(partition_dir), pinned)


@flow(name=FLOW_NAME, result_serializer="json", persist_result=False, validate_parameters=True)
def batch_inference_flow(parameters: BatchFlowParameters = DEFAULT_PARAMETERS) -> dict[str, Any]:
    """Score one day's partition with the model and commit the predictions exactly once."""
    prepare_flow_process()
    from fraud_detection.config import Settings
    from fraud_detection.data.contract import load_contract
    from fraud_detection.inference.batch import BatchSpec, default_logical_time

    settings = Settings() if parameters.data_dir is None else Settings(data_dir=parameters.data_dir)
    date = parameters.date or _day_before_scheduled_time()
    spec = BatchSpec(
        raw_dir=parameters.raw_dir or settings.data_dir / "raw" / parameters.dataset,
        date=date,
        features_dir=parameters.features_dir or settings.data_dir / "features" / parameters.dataset,
        out_dir=parameters.out_dir or settings.data_dir / "predictions",
        logical_time=parameters.logical_time or default_logical_time(date),
        explain=parameters.explain,
        top_reasons=parameters.top_reasons,
        rows_per_part=parameters.rows_per_part,
        dask=parameters.dask,
    )
    contract = load_contract(parameters.contract, settings.contracts_dir)
    key = settings.model_public_key
    pinned = pin_inputs(spec, parameters.model_uri, contract, key)
    state = score_and_commit(spec, parameters.model_uri, contract, key, pinned, return_state=True)
    summary = state.result()
    rows = verify_output(summary["partition_dir"], pinned)
    return {**summary, "verified_rows": rows, "date": date.isoformat(), "cached": state.name == "Cached"}


def _day_before_scheduled_time() -> dt.date:
    """The flow run's scheduled day minus one (UTC): the day a daily run scores."""
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return (dt.datetime.fromtimestamp(scheduled.timestamp(), dt.UTC) - dt.timedelta(days=1)).date()
