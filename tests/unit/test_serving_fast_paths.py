"""The serving hot path's vectorised shortcuts give what the plain code gives: the V1 answer's
bytes, the prediction event table, the online mirror's lookups."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_detection.data.raw_store import parquet_bytes as frame_parquet_bytes
from fraud_detection.features.sqlite_online import _row_keys, _ViewMirror
from fraud_detection.inference import events
from fraud_detection.inference.requests import TransactionBatch, _colons, _depth, _nesting, _tensor_colons
from fraud_detection.inference.scorer import Scores
from fraud_detection.inference.server import v1_prediction_rows, v1_predictions
from tests.serving_support import wait_until

pytestmark = pytest.mark.unit


def scores_of(ids: list[int], probability: list[float], degraded: list[bool], n_features: int = 3) -> Scores:
    n = len(ids)
    p = np.array(probability, dtype=np.float64)
    return Scores(
        transaction_id=np.array(ids, dtype=np.int64),
        probability=p,
        decision=(p >= 0.5).astype(np.int8),
        degraded=np.array(degraded, dtype=bool),
        degraded_reasons=tuple(() for _ in range(n)),
        features=np.arange(n * n_features, dtype=np.float32).reshape(n, n_features) / 7,
    )


# --- the V1 answer ------------------------------------------------------------------------------

PROBABILITIES = st.one_of(
    st.floats(0, 1), st.sampled_from([0.0, 1.0, 0.5, 1e-7, 5e-324, 0.1, 1 / 3, 0.9999999999999999])
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(st.integers(-(2**63), 2**63 - 1), PROBABILITIES, st.booleans()), min_size=1, max_size=60
    )
)
def test_v1_predictions_serialise_to_the_bytes_of_the_objects(rows: list[tuple[int, float, bool]]) -> None:
    ids, probability, degraded = (list(column) for column in zip(*rows, strict=True))
    scores = scores_of(ids, probability, degraded)
    fast = orjson.dumps({"predictions": v1_predictions(scores), "model_version": "3"})
    plain = orjson.dumps({"predictions": v1_prediction_rows(scores), "model_version": "3"})
    assert fast == plain
    assert orjson.loads(fast)["predictions"][0]["transaction_id"] == ids[0]


def test_rows_with_reasons_keep_the_objects() -> None:
    scores = scores_of(list(range(40)), [0.2] * 40, [False] * 39 + [True])
    with_reason = Scores(
        **{**scores.__dict__, "degraded_reasons": (*(() for _ in range(39)), ("unknown entity",))}
    )
    answer = v1_predictions(with_reason)
    assert isinstance(answer, list)
    assert answer[-1]["degraded_reasons"] == ["unknown entity"]
    assert isinstance(v1_predictions(scores), orjson.Fragment)


# --- the prediction event table -----------------------------------------------------------------


def event_item(
    seed: int, n: int, names: tuple[str, ...], *, shadow: bool = False, one_id: bool = True
) -> events._Item:
    rng = np.random.default_rng(seed)
    batch = TransactionBatch(
        rng.integers(0, 10**12, n),
        rng.integers(0, 4000, n),
        rng.integers(0, 8000, n),
        rng.random(n) * 100,
        rng.integers(1_500_000_000_000_000, 1_600_000_000_000_000, n),
        {"customer_age_band": [None] * n},
    )
    scores = scores_of(batch.transaction_id.tolist(), rng.random(n).tolist(), (rng.random(n) < 0.3).tolist())
    scores = Scores(**{**scores.__dict__, "features": rng.random((n, len(names))).astype(np.float32)})
    ids = [f"request-{seed}"] * n if one_id else [f"request-{seed}-{k}" for k in range(n)]
    scored_at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC) + dt.timedelta(seconds=seed)
    return events._Item(ids, batch, scores, f"v{seed % 3}", names, scored_at, shadow)


def read(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))


@pytest.mark.parametrize("mixed_features", [False, True])
def test_the_event_table_holds_what_the_frame_holds(mixed_features: bool) -> None:
    names = ("amount", "customer_nb_tx_1d", "terminal_risk_7d")
    items = [
        event_item(seed, 1 + seed * 7 % 40, names, shadow=seed % 3 == 1, one_id=seed % 2 == 0)
        for seed in range(12)
    ]
    if mixed_features:  # a reload changed the model's features within one file
        items.append(event_item(99, 5, names[:2]))
    table = events._table(items)
    expected = read(frame_parquet_bytes(events._frame(items)))
    pd.testing.assert_frame_equal(
        read(events.parquet_bytes(table, dictionary=events._STRING_COLUMNS)), expected, check_exact=True
    )
    assert str(expected["scored_at"].iloc[0]) == "2026-01-02 03:04:05.678901"


def test_a_failed_file_is_counted_and_the_writer_goes_on(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client import REGISTRY

    names = ("amount", "customer_nb_tx_1d")
    real_bytes = events.parquet_bytes
    failures = iter([True])

    def first_write_fails(table, **options):  # type: ignore[no-untyped-def]
        if next(failures, False):
            raise ValueError("simulated encoder failure")
        return real_bytes(table, **options)

    monkeypatch.setattr(events, "parquet_bytes", first_write_fails)
    dropped_before = REGISTRY.get_sample_value("fraud_prediction_events_dropped_total") or 0.0
    sink = events.PredictionSink(tmp_path, roll_seconds=3600, roll_rows=4)
    try:
        for seed, n in ((1, 4), (2, 5)):  # each batch reaches the roll on its own: two files
            item = event_item(seed, n, names)
            sink.submit(item.request_ids, item.batch, item.scores, item.model_version, names)
            assert wait_until(lambda: not sink._buffer and not sink._tables, 30.0)
        assert sink._thread.is_alive()
    finally:
        sink.close()
    dropped = (REGISTRY.get_sample_value("fraud_prediction_events_dropped_total") or 0.0) - dropped_before
    assert dropped == 4
    files = sorted(tmp_path.glob("events-*.parquet"))
    assert len(files) == 1 and len(pd.read_parquet(files[0])) == 5


def test_a_file_built_from_several_polls_holds_every_event_in_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The writer turns each poll's events into a table at once and writes a file from those tables;
    the file holds the events' frames in the order scored, across a reload that changed features."""
    names = ("amount", "customer_nb_tx_1d", "terminal_risk_7d")
    polls = [
        [event_item(seed, 1 + seed * 5 % 30, names, one_id=seed % 2 == 0) for seed in range(4)],
        [event_item(seed, 3, names[:2]) for seed in (10, 11)],  # a reload dropped a feature
        [event_item(20, 40, names, shadow=True, one_id=False)],
    ]
    sink = events.PredictionSink(tmp_path, roll_seconds=3600, roll_rows=10**9)
    try:
        submitted = 0
        for poll in polls:
            for item in poll:
                assert sink.submit(
                    item.request_ids,
                    item.batch,
                    item.scores,
                    item.model_version,
                    item.feature_names,
                    shadow=item.shadow,
                )
                submitted += len(item.batch)
            # the writer's next poll took them
            assert wait_until(lambda n=submitted: sink._pending_rows == n, 30.0)
        # each poll's events became a table (at least one per poll); none wait as items
        assert not sink._buffer and len(polls) <= len(sink._tables) <= sum(map(len, polls))
    finally:
        sink.close()
    files = sorted(tmp_path.glob("events-*.parquet"))
    assert len(files) == 1
    got = pd.read_parquet(files[0]).drop(columns=["scored_at"])  # stamped at submit, not at build
    # in the order scored (one frame of every item would put the reloaded batches last)
    expected = pd.concat([events._frame(poll) for poll in polls], ignore_index=True).drop(
        columns=["scored_at"]
    )
    assert got.shape == expected.shape
    pd.testing.assert_frame_equal(got[list(expected.columns)], expected, check_exact=True)
    assert got["f_terminal_risk_7d"].isna().sum() == 6  # the two reloaded batches of 3 rows


# --- the online mirror --------------------------------------------------------------------------


@pytest.mark.parametrize("n_keys", [1, 2, 3])
def test_mirror_lookups_find_exactly_the_stored_entities(n_keys: int) -> None:
    rng = np.random.default_rng(n_keys)
    ids = np.unique(rng.integers(-50, 50, (400, n_keys)) * 10**15 // 7, axis=0)
    values = rng.random((len(ids), 2))
    seen = rng.random(len(ids))
    mirror = _ViewMirror.build(ids, values, seen)
    stored = {tuple(row): i for i, row in enumerate(ids.tolist())}
    wanted = np.concatenate([ids[rng.permutation(len(ids))[:100]], rng.integers(-60, 60, (100, n_keys))])
    got_values, got_seen = mirror.lookup([wanted[:, j] for j in range(n_keys)])
    for row, value, when in zip(wanted.tolist(), got_values, got_seen, strict=True):
        at = stored.get(tuple(row))
        if at is None:
            assert np.isnan(value).all() and np.isnan(when)
        else:
            np.testing.assert_array_equal(value, values[at])
            assert when == seen[at]


def test_mirror_lookups_by_raw_bytes_where_ranks_overflow() -> None:
    ids = np.array([[1, 2], [3, 4], [-5, 6]], dtype=np.int64)
    keys = _row_keys(ids)
    order = np.argsort(keys, kind="stable")
    mirror = _ViewMirror(keys[order], np.arange(3.0)[order, None], np.arange(3.0)[order])
    values, _ = mirror.lookup([np.array([3, -5, 9]), np.array([4, 6, 9])])
    np.testing.assert_array_equal(values[:, 0], [1.0, 2.0, np.nan])
    empty = _ViewMirror.build(np.empty((0, 2), np.int64), np.empty((0, 1)), np.empty(0))
    assert np.isnan(empty.lookup([np.array([1]), np.array([2])])[0]).all()


# --- the nesting check ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(alphabet='[]{}ab\\"', max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(alphabet='[]{}k"', max_size=3), inner, max_size=4)
    ),
    max_leaves=120,
)


def depth_of(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_the_nesting_is_the_parsed_values_depth_whatever_its_strings_hold(value: object) -> None:
    body = orjson.dumps(value)
    assert _nesting(body) == _depth(body) == depth_of(value)


def test_closing_brackets_in_strings_do_not_hide_deep_nesting() -> None:
    strings = ",".join('"' + "]" * 250 + '"' for _ in range(5))
    body = f'{{"inputs":[{strings},{"[" * 500}{"]" * 500}]}}'.encode()
    assert _nesting(body) == 502


def test_the_colons_of_v2_tensors_counted_in_one_pass_equal_those_counted_one_by_one() -> None:
    tensors = [
        {
            "name": "event_timestamp",
            "shape": [2],
            "datatype": "BYTES",
            "data": ["2018-09-25T14:35:21Z", "a:b"],
        },
        {"name": "amount", "shape": [2, 1], "datatype": "FP64", "data": [[1.5], [2.0]]},
        {"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [3], "parameters": {"k:": "v::"}},
    ]
    # members 4 + 4 + 5, string data 2 + 1, parameters 1 member + 1 + 2 in its strings
    assert _tensor_colons(tensors) == sum(map(_colons, tensors)) == 13 + 3 + 4
