"""The batch inference Prefect flow (``pipelines/batch_flow.py``): two real flow runs (the second
a cache hit), and the retry configuration checked without a server."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fraud_detection.errors import DataContractError, DataSourceError, FeatureStoreError, StorageError
from fraud_detection.inference import batch
from tests import batch_support
from tests.prefect_support import prefect_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.integration

DAY = dt.date(2018, 5, 10)


def test_the_flow_commits_once_and_a_rerun_is_a_cache_hit(
    tmp_path_factory: pytest.TempPathFactory,
    serving_world,  # type: ignore[no-untyped-def]
    prefect_server: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    from fraud_detection.pipelines.batch_flow import BatchFlowParameters, batch_inference_flow

    world = batch_support.small_world(tmp_path_factory, serving_world)
    parameters = BatchFlowParameters(
        model_uri=str(world.bundle_dir),
        raw_dir=world.raw_dir,
        features_dir=world.features_dir,
        out_dir=tmp_path / "predictions",
        date=DAY,
        explain=True,
    )
    first = batch_inference_flow(parameters)
    partition = Path(first["partition_dir"])
    assert first["committed"] and not first["cached"]
    assert first["rows"] == first["verified_rows"] == len(batch.read_predictions(partition)) > 0
    assert "top_reasons" in batch.read_predictions(partition).columns
    manifest_stat = (partition / "manifest.json").stat()

    second = batch_inference_flow(parameters)
    assert second["cached"] and second["partition_dir"] == first["partition_dir"]
    assert second["verified_rows"] == first["rows"]
    assert (partition / "manifest.json").stat() == manifest_stat
    # the cached result is JSON in the isolated result storage, never a pickle
    stored = [json.loads(p.read_bytes()) for p in (prefect_server / "storage").rglob("*") if p.is_file()]
    assert any(record.get("metadata", {}).get("serializer", {}).get("type") == "json" for record in stored)


class _State:
    def __init__(self, error: BaseException) -> None:
        self.data = error  # a failed Prefect state holds its exception as its data


def test_only_io_tasks_retry_and_only_on_io_errors() -> None:
    from fraud_detection.pipelines import batch_flow

    assert batch_flow.pin_inputs.retries == 3 and batch_flow.verify_output.retries == 3
    assert batch_flow.score_and_commit.retries == 0
    for error in (OSError("disk"), StorageError("disk"), FeatureStoreError("store")):
        assert batch_flow.transient(None, None, _State(error))
    for error in (DataContractError("bad rows"), DataSourceError("no partition"), ValueError("bug")):
        assert not batch_flow.transient(None, None, _State(error))
