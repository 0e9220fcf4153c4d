"""The scoring service without HTTP: micro-batching, the prediction event sink, the metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from fraud_detection.inference.events import PredictionSink
from fraud_detection.inference.requests import ScoreParameters
from tests.serving_support import inprocess_service, v1_body

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def service(serving_world):  # type: ignore[no-untyped-def]
    return inprocess_service(serving_world)


def count_model_calls(service, monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Rows per model call, recorded from now on."""
    calls: list[int] = []
    original = type(service.scorer).score

    def counting(self, batch, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(batch))
        return original(self, batch, **kwargs)

    monkeypatch.setattr(type(service.scorer), "score", counting)
    return calls


def batch_of(service, rows):  # type: ignore[no-untyped-def]
    return service.decoder.decode_v1(orjson.dumps(v1_body(rows)))[0]


def test_concurrent_requests_are_merged_into_fewer_model_calls_with_the_same_answers(
    service, serving_world, monkeypatch
) -> None:
    rows = serving_world.rows(16)
    alone = [service.scorer.score(batch_of(service, [row])).probability[0] for row in rows]
    calls = count_model_calls(service, monkeypatch)

    async def many() -> list[float]:
        answers = await asyncio.gather(
            *(
                service.score(batch_of(service, [row]), ScoreParameters(), f"r{i}")
                for i, row in enumerate(rows)
            )
        )
        return [scores.probability[0] for _, scores in answers]

    together = asyncio.run(many())

    assert together == alone  # bitwise: batch composition does not change a score
    assert sum(calls) == 16
    assert len(calls) < 16, f"16 concurrent requests made {len(calls)} model calls"


def test_micro_batching_off_scores_each_request_alone(serving_world, monkeypatch) -> None:
    service = inprocess_service(serving_world, batch_wait_ms=-1)
    calls = count_model_calls(service, monkeypatch)
    rows = serving_world.rows(4)

    async def many() -> None:
        await asyncio.gather(
            *(service.score(batch_of(service, [row]), ScoreParameters(), "r") for row in rows)
        )

    asyncio.run(many())
    assert calls == [1, 1, 1, 1]


def scoring_threads(service, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    """The name of the thread each model call runs on, recorded from now on."""
    threads: list[str] = []
    original = type(service.scorer).score_features

    def recording(self, features):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return original(self, features)

    monkeypatch.setattr(type(service.scorer), "score_features", recording)
    return threads


def model_calls(where: str) -> float:
    return REGISTRY.get_sample_value("fraud_model_calls_total", {"thread": where}) or 0.0


def test_a_request_alone_in_the_server_is_scored_on_the_event_loop(serving_world, monkeypatch) -> None:
    service = inprocess_service(serving_world)
    service.requests_in_flight = lambda: 1
    batch = batch_of(service, serving_world.rows(3))
    expected = service.scorer.score(batch).probability
    threads = scoring_threads(service, monkeypatch)
    before = model_calls("event_loop")

    async def alone() -> tuple[str, np.ndarray]:
        _, scores = await service.score(batch, ScoreParameters(), "alone")
        return threading.current_thread().name, scores.probability

    loop_thread, probability = asyncio.run(alone())

    assert threads == [loop_thread]
    assert probability.tobytes() == expected.tobytes()
    assert model_calls("event_loop") == before + 1


@pytest.mark.parametrize(
    ("in_flight", "inline_max_rows", "rows", "mirror"),
    [(2, 100, 1, "true"), (1, 0, 1, "true"), (1, 2, 3, "true"), (1, 100, 1, "false")],
    ids=["others-in-flight", "turned-off", "over-the-row-limit", "features-read-from-the-store"],
)
def test_other_requests_off_switch_size_or_store_io_send_the_request_to_the_scoring_thread(
    serving_world, monkeypatch, in_flight: int, inline_max_rows: int, rows: int, mirror: str
) -> None:
    monkeypatch.setenv("FRAUD_ONLINE_MIRROR", mirror)  # off: every read goes to SQLite, under a deadline
    service = inprocess_service(serving_world, inline_max_rows=inline_max_rows)
    service.requests_in_flight = lambda: in_flight
    threads = scoring_threads(service, monkeypatch)
    asyncio.run(service.score(batch_of(service, serving_world.rows(rows)), ScoreParameters(), "r"))
    assert len(threads) == 1 and threads[0].startswith("scoring"), threads


def test_concurrent_requests_still_merge_when_the_server_counts_them(serving_world, monkeypatch) -> None:
    service = inprocess_service(serving_world)
    service.requests_in_flight = lambda: 16  # uvicorn's count: 16 request tasks exist
    calls = count_model_calls(service, monkeypatch)

    async def many() -> None:
        await asyncio.gather(
            *(
                service.score(batch_of(service, [row]), ScoreParameters(), f"r{i}")
                for i, row in enumerate(serving_world.rows(16))
            )
        )

    asyncio.run(many())
    assert sum(calls) == 16
    assert len(calls) < 16, f"16 concurrent requests made {len(calls)} model calls"


def test_compiled_trees_give_xgboosts_bits_alone_and_in_a_batch(service, serving_world) -> None:
    """Prepared at load (FRAUD_SERVE_COMPILED_TREES, default on): one-row requests and a 60-row
    batch give exactly the bits of a server whose trees XGBoost scores."""
    assert service.scorer.bundle._compiled_trees is not None
    plain = inprocess_service(serving_world, compiled_trees=False)
    assert plain.scorer.bundle._compiled_trees is None
    rows = serving_world.rows(60)
    expected = plain.scorer.score(batch_of(plain, rows)).probability
    together = service.scorer.score(batch_of(service, rows)).probability
    alone = np.concatenate([service.scorer.score(batch_of(service, [row])).probability for row in rows])
    assert together.tobytes() == expected.tobytes()
    assert alone.tobytes() == expected.tobytes()


def test_scores_update_the_prometheus_metrics(service, serving_world) -> None:
    version = service.scorer.version

    def predictions() -> float:
        return sum(
            REGISTRY.get_sample_value("fraud_predictions_total", {"model_version": version, "decision": d})
            or 0.0
            for d in ("alert", "pass")
        )

    before = predictions()
    asyncio.run(service.score(batch_of(service, serving_world.rows(5)), ScoreParameters(), "m"))
    assert predictions() == before + 5
    assert REGISTRY.get_sample_value("fraud_score_count") >= 5
    assert (
        REGISTRY.get_sample_value(
            "fraud_model_info",
            {"model_name": "fraud-detector", "model_version": version, "digest": service.scorer.model.digest},
        )
        == 1.0
    )


def test_unknown_entities_are_scored_with_defaults_and_flagged_degraded(service, serving_world) -> None:
    row = {**serving_world.rows(1)[0], "customer_id": 10**12, "terminal_id": 10**12}
    scores = service.scorer.score(batch_of(service, [row]))
    assert scores.degraded.tolist() == [True]
    assert any("unknown entity" in reason for reason in scores.degraded_reasons[0])
    assert 0.0 <= scores.probability[0] <= 1.0


# --- the prediction event sink ------------------------------------------------------------------


def test_sink_writes_events_with_features_and_never_payload_extras(
    service, serving_world, tmp_path: Path
) -> None:
    sink = PredictionSink(tmp_path / "events", roll_seconds=60)
    batch = batch_of(service, serving_world.rows(7))
    scores = service.scorer.score(batch)
    assert sink.submit(
        ["req-1"] * 7, batch, scores, service.scorer.version, service.scorer.bundle.feature_names
    )
    sink.close()

    files = sorted((tmp_path / "events").glob("events-*.parquet"))
    assert len(files) == 1
    events = pd.read_parquet(files[0])
    assert len(events) == 7
    assert events["transaction_id"].tolist() == batch.transaction_id.tolist()
    np.testing.assert_array_equal(events["score"].to_numpy(), scores.probability)
    assert set(events["model_version"]) == {service.scorer.version}
    assert [c for c in events.columns if c.startswith("f_")] == [
        f"f_{n}" for n in service.scorer.bundle.feature_names
    ]
    assert not list((tmp_path / "events").glob("*.tmp*"))  # atomic: no temp file left behind


def test_full_sink_drops_and_counts_without_blocking(
    service, serving_world, tmp_path: Path, monkeypatch
) -> None:
    import fraud_detection.inference.events as events_module

    release = __import__("threading").Event()
    real_bytes = events_module.parquet_bytes

    def stuck_write(frame, **options):  # type: ignore[no-untyped-def]
        release.wait(5)  # the writer is stuck in its first file: the buffer fills up
        return real_bytes(frame, **options)

    monkeypatch.setattr(events_module, "parquet_bytes", stuck_write)
    sink = PredictionSink(tmp_path / "events", max_batches=2, roll_seconds=0.001)
    batch = batch_of(service, serving_world.rows(3))
    scores = service.scorer.score(batch)
    dropped_before = REGISTRY.get_sample_value("fraud_prediction_events_dropped_total") or 0.0

    started = time.perf_counter()
    accepted = [
        sink.submit(["r"] * 3, batch, scores, "v", service.scorer.bundle.feature_names) for _ in range(10)
    ]
    elapsed = time.perf_counter() - started
    release.set()
    sink.close()

    assert accepted.count(True) <= 3  # the buffer (2) plus the one the writer holds
    assert accepted.count(False) >= 7
    assert elapsed < 1.0  # never waited on the stuck writer
    dropped = (REGISTRY.get_sample_value("fraud_prediction_events_dropped_total") or 0.0) - dropped_before
    assert dropped == 3 * accepted.count(False)


def test_sink_rolls_files_by_rows_too(service, serving_world, tmp_path: Path) -> None:
    sink = PredictionSink(tmp_path / "events", roll_seconds=600, roll_rows=4)
    batch = batch_of(service, serving_world.rows(2))
    scores = service.scorer.score(batch)
    for name in ("a", "b", "c"):
        sink.submit([name, name], batch, scores, "v", service.scorer.bundle.feature_names)
        time.sleep(0.5)  # the writer collects a few times a second
    files = sorted((tmp_path / "events").glob("events-*.parquet"))
    sink.close()
    assert len(files) == 1  # 4 events reached the limit long before the 600 s roll
    assert pd.read_parquet(files[0])["request_id"].tolist() == ["a", "a", "b", "b"]


def test_sink_rolls_files_by_time(service, serving_world, tmp_path: Path) -> None:
    sink = PredictionSink(tmp_path / "events", roll_seconds=0.2)
    batch = batch_of(service, serving_world.rows(2))
    scores = service.scorer.score(batch)
    sink.submit(["a", "a"], batch, scores, "v", service.scorer.bundle.feature_names)
    time.sleep(0.6)
    sink.submit(["b", "b"], batch, scores, "v", service.scorer.bundle.feature_names)
    sink.close()
    files = sorted((tmp_path / "events").glob("events-*.parquet"))
    assert len(files) == 2
    assert [pd.read_parquet(f)["request_id"].iloc[0] for f in files] == ["a", "b"]


def test_replicas_sharing_an_events_folder_never_overwrite_each_others_files(
    service, serving_world, tmp_path: Path
) -> None:
    # two servers (pods) writing into one shared folder in the same second: each file keeps its events
    sinks = [PredictionSink(tmp_path / "events", roll_seconds=600) for _ in range(2)]
    batch = batch_of(service, serving_world.rows(2))
    scores = service.scorer.score(batch)
    for name, sink in zip(("a", "b"), sinks, strict=True):
        sink.submit([name, name], batch, scores, "v", service.scorer.bundle.feature_names)
    for sink in sinks:
        sink.close()
    files = sorted((tmp_path / "events").glob("events-*.parquet"))
    assert len(files) == 2
    assert sorted(pd.read_parquet(f)["request_id"].iloc[0] for f in files) == ["a", "b"]
