"""R3 of ``../shared/RELIABILITY.md``: properties of decode → validate → score.

(a) Any JSON value (depth ≤ 20, ≤ 10 KB), and request-shaped bodies with arbitrary values, fed as
bytes to ``RequestDecoder.decode_v1``/``decode_v2`` give a batch or an ``InvalidRequest`` with a
4xx status, never another exception.

(b) Valid rows score in [0, 1], bitwise deterministic, independent of the batch they come in and
of its order: a batch, the batch shuffled and each row alone give the same probabilities, and V1
and V2 give the same ones too.

Examples per property: 2,000 for the decoder (RELIABILITY's figure, a few seconds); 500 for
scoring, which calls the model and the online store up to 3 + n times per example (about 20 ms), so
the file stays near a minute on two cores. ``derandomize=True`` makes every CI run the same.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fraud_detection.data.contract import load_contract
from fraud_detection.inference.requests import (
    INT64_MAX,
    InvalidRequest,
    RequestDecoder,
    TransactionBatch,
)
from tests.conftest import CONTRACTS_DIR
from tests.serving_support import ServingWorld, inprocess_service, v1_body, v2_body

pytestmark = pytest.mark.integration

DECODE_EXAMPLES = 2000
SCORE_EXAMPLES = 500
MAX_BODY = 10 * 1024
MAX_DEPTH = 20

DECODER = RequestDecoder(load_contract("simulator", CONTRACTS_DIR))
COLUMNS = [*DECODER.columns, "is_fraud", "fraud_scenario", "instances", "inputs", "parameters"]
DATATYPES = ["BOOL", "INT8", "INT64", "UINT64", "FP16", "FP32", "FP64", "BYTES", "STRING", ""]


# ------------------------------------------------------------------------------------- (a) decode


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


leaves = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: beyond int64 and uint64 too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(
        ["2018-05-10T22:52:39Z", "2018-05-10T22:52:39", "0001-01-01T00:00:00+01:00", "9999-12-31"]
    )
)
keys = st.sampled_from(COLUMNS) | st.text(max_size=12)


@st.composite
def nested(draw: st.DrawFn, children: st.SearchStrategy[Any]) -> Any:
    """A value wrapped in 1 to 20 lists and objects (random trees are rarely deeper than 6)."""
    value = draw(children)
    for _ in range(draw(st.integers(1, MAX_DEPTH - 1))):
        value = [value] if draw(st.booleans()) else {draw(keys): value}
    return value


def _trees(max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
        max_leaves=max_leaves,
    )


small_values = _trees(6)
json_values = _trees(20) | nested(_trees(4))
tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(COLUMNS) | st.text(max_size=8),
        "shape": st.lists(st.integers(-2, 4), max_size=3),
    },
    optional={
        "datatype": st.sampled_from(DATATYPES),
        "data": st.lists(leaves, max_size=4)
        | st.lists(st.lists(leaves, max_size=2), max_size=4)
        | small_values,
        "parameters": small_values,
        "extra": small_values,
    },
)
parameters = (
    st.fixed_dictionaries({}, optional={"explain": leaves, "top_reasons": leaves, "threshold": leaves})
    | small_values
)
rows = st.dictionaries(keys, leaves | small_values, max_size=7)
VALID_ROW = {
    "transaction_id": 1,
    "customer_id": 42,
    "terminal_id": 7,
    "amount": 12.5,
    "event_timestamp": "2018-05-10T22:52:39Z",
    "customer_age_band": "26-35",
}


@st.composite
def near_valid_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A valid row with up to two fields replaced, dropped or added."""
    row = dict(VALID_ROW)
    for _ in range(draw(st.integers(0, 2))):
        key = draw(keys)
        if draw(st.booleans()):
            row.pop(key, None)
        else:
            row[key] = draw(leaves | small_values)
    return row


@st.composite
def near_valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A V1 or V2 request of near-valid rows, its V2 tensors now and then edited."""
    batch = draw(st.lists(near_valid_rows(), min_size=1, max_size=4))
    if draw(st.booleans()):
        return v1_body(batch, **draw(st.fixed_dictionaries({}, optional={"parameters": parameters})))
    names = sorted({name for row in batch for name in row})
    body = v2_body([{name: row.get(name) for name in names} for row in batch])
    for tensor in body["inputs"]:
        if draw(st.integers(0, 4)) == 0:
            tensor[draw(st.sampled_from(["shape", "datatype", "data", "name"]))] = draw(leaves | small_values)
    return body


request_shaped = st.fixed_dictionaries(
    {},
    optional={
        "instances": st.lists(rows, max_size=4) | small_values,
        "inputs": st.lists(tensors, max_size=7) | small_values,
        "parameters": parameters,
        "id": leaves,
        "outputs": small_values,
    },
)


def _encode(value: Any, allow_nan: bool) -> bytes:
    return json.dumps(value, allow_nan=allow_nan).encode()


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """JSON bytes: any value or a request-shaped object, now and then with NaN literals, a repeated
    key, or cut short."""
    value = draw(json_values | request_shaped | near_valid_requests())
    body = _encode(value, allow_nan=True) if draw(st.booleans()) else _encode(value, allow_nan=False)
    twist = draw(st.sampled_from(["none", "none", "none", "duplicate", "truncate"]))
    if twist == "duplicate" and body.startswith(b"{") and len(body) > 2:
        body = b'{"instances": [], ' + body[1:]
    elif twist == "truncate" and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    assume(len(body) <= MAX_BODY)
    return body


def _decodes_or_refuses(decode: Callable[[bytes], tuple[Any, ...]], body: bytes) -> None:
    try:
        result = decode(body)
    except InvalidRequest as err:
        assert 400 <= err.status < 500, (err.status, str(err))
        assert str(err)
        return
    batch = result[0]
    assert isinstance(batch, TransactionBatch)
    assert 1 <= len(batch) <= DECODER.limits.max_rows


DECODE_SETTINGS = settings(
    max_examples=DECODE_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@DECODE_SETTINGS
@given(body=bodies())
def test_decoders_give_a_batch_or_a_4xx_for_any_json(body: bytes) -> None:
    _decodes_or_refuses(DECODER.decode_v1, body)
    _decodes_or_refuses(DECODER.decode_v2, body)


@settings(max_examples=DECODE_EXAMPLES, derandomize=True, deadline=None, database=None)
@given(body=st.binary(max_size=512))
def test_decoders_refuse_arbitrary_bytes_cleanly(body: bytes) -> None:
    _decodes_or_refuses(DECODER.decode_v1, body)
    _decodes_or_refuses(DECODER.decode_v2, body)


# ------------------------------------------------------------------------------------- (b) score


@pytest.fixture(scope="module")
def scorer(serving_world: ServingWorld) -> Any:
    """The in-process service's scorer, its online-store deadline raised out of a loaded CI
    machine's reach: a timed-out read falls back to default features (flagged degraded), by design
    not the same score. The store handle is this service's own."""
    service = inprocess_service(serving_world)
    service.scorer.store.online_timeout_s = 60.0
    return service.scorer


@pytest.fixture(scope="module")
def valid_rows(serving_world: ServingWorld) -> st.SearchStrategy[dict[str, Any]]:
    """Valid request rows: known and unseen entities, timestamps in and around the served history,
    written with Z, an offset or none (UTC)."""
    frame = serving_world.transactions
    start = frame["event_timestamp"].min().to_pydatetime() - dt.timedelta(days=10)
    end = frame["event_timestamp"].max().to_pydatetime() + dt.timedelta(days=10)
    zones = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2)), dt.timezone(dt.timedelta(hours=-7))])

    def stamp(moment: dt.datetime, zone: dt.tzinfo | None) -> str:
        if zone is None:
            return moment.isoformat()
        text = moment.replace(tzinfo=dt.UTC).astimezone(zone).isoformat()
        return text.replace("+00:00", "Z")

    ids = st.integers(0, INT64_MAX)
    return st.fixed_dictionaries(
        {
            "transaction_id": ids,
            "customer_id": st.sampled_from(sorted(frame["customer_id"].unique().tolist())) | ids,
            "terminal_id": st.sampled_from(sorted(frame["terminal_id"].unique().tolist())) | ids,
            "amount": st.floats(0, 100_000, allow_nan=False) | st.integers(0, 100_000),
            "event_timestamp": st.builds(stamp, st.datetimes(start, end), st.none() | zones),
        },
        optional={"customer_age_band": st.sampled_from([None, "18-25", "26-35", "36-50", "51-65", "65+"])},
    )


def _probabilities(scorer: Any, batch: TransactionBatch) -> np.ndarray:
    scores = scorer.score(batch)
    assert scores.probability.dtype == np.float64
    timed_out = [r for r in scores.degraded_reasons if any("timed out" in reason for reason in r)]
    assert not timed_out, timed_out
    return scores.probability


@settings(
    max_examples=SCORE_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=st.data())
def test_valid_rows_score_in_unit_interval_deterministic_and_batch_independent(
    scorer: Any, valid_rows: st.SearchStrategy[dict[str, Any]], data: st.DataObject
) -> None:
    batch_rows = data.draw(st.lists(valid_rows, min_size=1, max_size=10), label="rows")
    order = data.draw(st.permutations(range(len(batch_rows))), label="order")

    batch, _ = DECODER.decode_v1(json.dumps(v1_body(batch_rows)).encode())
    scores = _probabilities(scorer, batch)
    assert scores.shape == (len(batch_rows),)
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0.0) & (scores <= 1.0)), scores

    again = _probabilities(scorer, DECODER.decode_v1(json.dumps(v1_body(batch_rows)).encode())[0])
    assert again.tobytes() == scores.tobytes(), "the same batch scored twice differs"

    shuffled_rows = [batch_rows[i] for i in order]
    shuffled = _probabilities(scorer, DECODER.decode_v1(json.dumps(v1_body(shuffled_rows)).encode())[0])
    assert shuffled.tobytes() == scores[list(order)].tobytes(), "the order of the batch changes scores"

    # V2 carries the same rows as tensors; the optional column only when every row has it
    names = [name for name in DECODER.columns if all(name in r for r in batch_rows)]
    v2_rows = [{name: r[name] for name in names} for r in batch_rows]
    v2_batch, _, _ = DECODER.decode_v2(json.dumps(v2_body(v2_rows)).encode())
    assert _probabilities(scorer, v2_batch).tobytes() == scores.tobytes(), "V1 and V2 score differently"

    for i, row in enumerate(batch_rows):
        alone = _probabilities(scorer, DECODER.decode_v1(json.dumps(v1_body([row])).encode())[0])
        assert alone.tobytes() == scores[i : i + 1].tobytes(), f"row {i} scores differently alone"
