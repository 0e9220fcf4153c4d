"""The vectorised fast path of request validation accepts only what the contract's row model
accepts, with the same values, and it is the path typical batches take."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraud_detection.data.contract import load_contract
from fraud_detection.inference.requests import InvalidRequest, RequestDecoder, TransactionBatch

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
DECODER = RequestDecoder(load_contract("simulator", REPO_ROOT / "configs" / "contract"))
COLUMNS = ("transaction_id", "customer_id", "terminal_id", "amount", "event_us")
N = 64  # the fast path's smallest batch


def model_batch(rows: list[Any]) -> TransactionBatch | None:
    try:
        return DECODER._model_batch(rows, "instances")
    except InvalidRequest:
        return None


def assert_same(fast: TransactionBatch, model: TransactionBatch) -> None:
    for name in COLUMNS:
        got, expected = getattr(fast, name), getattr(model, name)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)
    assert fast.extra == model.extra


def valid_row(i: int, timestamp: str = "2018-09-25T14:35:21Z") -> dict[str, Any]:
    return {
        "transaction_id": i,
        "customer_id": i % 97,
        "terminal_id": i % 13,
        "amount": 10.5 + i,
        "event_timestamp": timestamp,
    }


def test_a_typical_batch_takes_the_fast_path_with_the_model_values() -> None:
    rows = [
        valid_row(i, f"2018-09-{1 + i % 30:02d}T{i % 24:02d}:{i % 60:02d}:{(7 * i) % 60:02d}Z")
        for i in range(1000)
    ]
    fast = DECODER._fast_batch(rows)
    assert fast is not None
    model = model_batch(rows)
    assert model is not None
    assert_same(fast, model)
    assert DECODER._fast_batch(rows[: N - 1]) is None  # small batches: the row model is faster


def test_every_calendar_day_and_time_edge_converts_as_the_model_does() -> None:
    days = [dt.date(1999, 12, 1) + dt.timedelta(days=k) for k in range(800)]
    days += [
        dt.date(1, 1, 1),
        dt.date(1900, 2, 28),
        dt.date(1900, 3, 1),
        dt.date(2000, 2, 29),
        dt.date(9999, 12, 31),
    ]
    times = ["00:00:00", "23:59:59", "12:30:07"]
    stamps = [f"{day.isoformat()}T{t}Z" for day, t in itertools.product(days, times)]
    rows = [valid_row(i, stamp) for i, stamp in enumerate(stamps) if stamp < "2026"]  # not in the future
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        fast = DECODER._fast_batch(chunk)
        assert fast is not None
        assert_same(fast, model_batch(chunk))


@pytest.mark.parametrize(
    "stamp",
    [
        "2001-02-29T00:00:00Z",  # not a leap year
        "1900-02-29T00:00:00Z",  # a century, not a leap year
        "2018-09-31T00:00:00Z",
        "2018-13-01T00:00:00Z",
        "2018-00-10T00:00:00Z",
        "2018-01-00T00:00:00Z",
        "0000-01-01T00:00:00Z",
        "2018-01-01T24:00:00Z",
        "2018-01-01T23:60:00Z",
        "2018-01-01T23:59:60Z",
        "2018-01-01 23:59:59Z",
        "2018-01-01T23:59:59",
        "2018-01-01T23:59:59+00:00",
        "2018-01-01T23:59:59.5Z",
        "2018-01-01T23:59:59ZZ",
        "2018-01-01T23:5a:59Z",
        "\uff12\uff1018-01-01T23:59:59Z",  # full-width digits
        "9999-12-31T23:59:59Z",  # in the future
    ],
)
def test_other_timestamp_forms_leave_the_fast_path(stamp: str) -> None:
    rows = [valid_row(i) for i in range(N)]
    rows[N // 2]["event_timestamp"] = stamp
    assert DECODER._fast_batch(rows) is None


ODD_VALUES = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=2),
)
TIMESTAMPS = st.one_of(
    st.builds(
        lambda y, mo, d, h, mi, s: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z",
        st.integers(0, 2030),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 60),
    ),
    st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(2025, 1, 1)).map(
        lambda t: t.isoformat() + "Z"
    ),
    st.text(max_size=25),
)
ROWS = st.fixed_dictionaries(
    {
        "transaction_id": st.one_of(st.integers(-5, 2**63 + 5), ODD_VALUES),
        "customer_id": st.one_of(st.integers(-5, 10**6), ODD_VALUES),
        "terminal_id": st.one_of(st.integers(-5, 10**6), ODD_VALUES),
        "amount": st.one_of(st.floats(-1, 200_000), st.integers(-1, 200_000), ODD_VALUES),
        "event_timestamp": st.one_of(TIMESTAMPS, ODD_VALUES),
    },
    optional={"customer_age_band": st.sampled_from(["18-25", "x", None]), "is_fraud": st.just(0)},
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    odd=st.lists(ROWS, min_size=1, max_size=4),
    positions=st.lists(st.integers(0, N - 1), min_size=4, max_size=4),
)
def test_what_the_fast_path_accepts_the_model_accepts_with_the_same_values(
    odd: list[dict[str, Any]], positions: list[int]
) -> None:
    rows: list[Any] = [valid_row(i) for i in range(N)]
    for row, at in zip(odd, positions, strict=False):
        rows[at] = row
    fast = DECODER._fast_batch(rows)
    if fast is not None:
        model = model_batch(rows)
        assert model is not None, "the fast path accepted rows the row model refuses"
        assert_same(fast, model)


# --- V1 decoding: the fast path's own count of a body's members -------------------------------


def v1_body(rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"instances": rows})


def test_a_v1_body_with_a_repeated_key_is_refused_on_the_fast_path_too() -> None:
    rows = [valid_row(i) for i in range(N)]
    body = v1_body(rows)
    assert DECODER._fast_batch(orjson.loads(body)["instances"]) is not None
    repeated = body.replace(b'{"transaction_id":5,', b'{"transaction_id":7,"transaction_id":5,', 1)
    assert repeated != body
    with pytest.raises(InvalidRequest, match="repeats the key 'transaction_id'"):
        DECODER.decode_v1(repeated)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(odd=st.lists(ROWS, min_size=0, max_size=3), positions=st.lists(st.integers(0, N - 1), min_size=3))
def test_decode_v1_counts_members_as_the_row_model_path_does(
    odd: list[dict[str, Any]], positions: list[int]
) -> None:
    """Whichever path validates the rows, the member count that guards against repeated keys is
    the rows' keys plus the colons in their string values."""
    rows: list[Any] = [valid_row(i) for i in range(N)]
    for row, at in zip(odd, positions, strict=False):
        rows[at] = row
    columns = DECODER._fast_row_columns(rows)
    if columns is None or DECODER._fast_columns(columns, len(rows)) is None:
        return
    fast_count = len(rows) * len(columns) + sum(
        "".join(columns[name]).count(":") for name in DECODER.string_columns if name in columns
    )
    assert fast_count == sum(map(len, rows)) + DECODER._row_colons(rows)
    batch, _ = DECODER.decode_v1(v1_body(rows))  # and the body's own count agrees: no refusal
    assert_same(batch, DECODER._model_batch(rows, "instances"))


@pytest.mark.parametrize(
    "pair",
    [
        ("2018-01-01T23:59:5Z", "2018-01-01T23:59:59ZZ"),  # lengths 19 + 21: the total is right
        ("2018-01-01T23:59:59Z\n2018-01-01T23:59:59Z", "2018-01-01T23:59:59Z"[:0]),
        ("2018-01-01T23:59:59\n", "2018-01-01T23:59:59Z"),
    ],
)
def test_timestamps_that_only_fit_the_form_together_leave_the_fast_path(pair: tuple[str, str]) -> None:
    rows = [valid_row(i) for i in range(N)]
    rows[3]["event_timestamp"], rows[4]["event_timestamp"] = pair
    assert DECODER._fast_batch(rows) is None
    assert model_batch(rows) is None
