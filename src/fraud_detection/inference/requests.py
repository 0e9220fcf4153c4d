"""Decoding and validation of scoring requests, derived from the data contract.

One row model, generated from the contract's ``id``, ``timestamp``, ``entity``, ``feature`` and
``protected`` columns (:func:`row_model`), validates every row of every protocol: KServe V1
(``{"instances": [{...}, ...]}``) and V2 / Open Inference Protocol (one input tensor per column).
Labels and excluded columns are refused: they are never model inputs.

Every problem is an :class:`InvalidRequest` with an HTTP status and a message naming the field,
the value and what was expected. The decoder never raises anything else for any JSON body (a
property test checks it), so the server answers 4xx and never 500 for bad input.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    create_model,
)

from fraud_detection.data.contract import (
    AMOUNT,
    EVENT_TIMESTAMP,
    TRANSACTION_ID,
    Contract,
    DType,
    Role,
)
from fraud_detection.errors import FraudDetectionError

INT64_MAX = 2**63 - 1
REQUEST_ROLES = (Role.ID, Role.TIMESTAMP, Role.ENTITY, Role.FEATURE, Role.PROTECTED)


class InvalidRequest(FraudDetectionError):
    """A request the server refuses; ``status`` is its HTTP status (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RequestLimits(BaseModel):
    """Size and shape limits of one request (``../shared/RELIABILITY.md`` R5 defaults)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_rows: int = Field(default=1000, ge=1)
    max_depth: int = Field(default=8, ge=3)
    max_string_length: int = Field(default=256, ge=32)
    max_id_length: int = Field(default=64, ge=8)
    max_future_skew: dt.timedelta = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class TransactionBatch:
    """Validated transactions as columns (the scorer's input); ``event_us`` is naive UTC microseconds."""

    transaction_id: np.ndarray
    customer_id: np.ndarray
    terminal_id: np.ndarray
    amount: np.ndarray
    event_us: np.ndarray
    extra: dict[str, list[Any]]
    """Other contract columns sent with the rows (protected attributes), for the prediction log."""

    def __len__(self) -> int:
        return len(self.transaction_id)

    @classmethod
    def concat(cls, batches: list[TransactionBatch]) -> TransactionBatch:
        if len(batches) == 1:
            return batches[0]
        keys = sorted({k for b in batches for k in b.extra})
        return cls(
            np.concatenate([b.transaction_id for b in batches]),
            np.concatenate([b.customer_id for b in batches]),
            np.concatenate([b.terminal_id for b in batches]),
            np.concatenate([b.amount for b in batches]),
            np.concatenate([b.event_us for b in batches]),
            {k: [v for b in batches for v in b.extra.get(k, [None] * len(b))] for k in keys},
        )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _timestamp(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("expected an ISO 8601 date-time such as 2018-09-30T12:00:00Z") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00: before year 1 in UTC (a 500 otherwise)
        raise ValueError("is out of range in UTC; expected a date-time between years 1 and 9999") from None


def _whole_number(value: Any) -> Any:
    """A JSON number of integral value is that integer (to JSON Schema, ``2.0`` is the integer
    ``2``) where a double spells it exactly; anything else is left to the strict check."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def _column_type(spec: Any, limits: RequestLimits) -> Any:
    """The strict pydantic type of one contract column (strict: no "12" for 12, no true for 1)."""
    low = spec.min
    high = spec.max
    if spec.dtype == DType.INT64:
        constraints: dict[str, Any] = {"ge": int(low) if low is not None else -INT64_MAX - 1}
        constraints["le"] = int(high) if high is not None else INT64_MAX
        kind: Any = Annotated[int, Field(strict=True, **constraints), BeforeValidator(_whole_number)]
        if spec.allowed is not None:
            kind = Annotated[Literal[tuple(spec.allowed)], BeforeValidator(_whole_number)]
    elif spec.dtype == DType.FLOAT64:
        constraints = {k: v for k, v in (("ge", low), ("le", high)) if v is not None}
        # strict float still takes a JSON integer (120 for 120.0), never a string or a boolean
        kind = Annotated[float, Field(strict=True, allow_inf_nan=False, **constraints)]
    elif spec.dtype == DType.DATETIME:
        kind = Annotated[str, StringConstraints(strict=True, max_length=64), AfterValidator(_timestamp)]
    else:
        max_length = limits.max_id_length if spec.role == Role.ID else limits.max_string_length
        kind = Annotated[str, StringConstraints(strict=True, max_length=max_length, pattern=spec.pattern)]
        if spec.allowed is not None:
            kind = Literal[tuple(spec.allowed)]
    if spec.nullable:
        return (kind | None, None)
    return (kind, ...)


def row_model(contract: Contract, limits: RequestLimits) -> type[BaseModel]:
    """The request row of ``contract``: its id, timestamp, entity, feature and protected columns."""
    fields = {
        spec.name: _column_type(spec, limits) for spec in contract.columns if spec.role in REQUEST_ROLES
    }
    for required in (TRANSACTION_ID, EVENT_TIMESTAMP, "customer_id", "terminal_id", AMOUNT):
        if required not in fields:
            raise FraudDetectionError(f"contract {contract.name!r} has no {required!r} column to score with")
    return create_model(
        "TransactionRow",
        __config__=ConfigDict(strict=True, extra="forbid", frozen=True),
        **fields,
    )


# --- V2 / Open Inference Protocol envelope (KServe's own models accept strings for numbers) ---

_V2_DATATYPES = {DType.INT64: ("INT64",), DType.FLOAT64: ("FP64", "FP32"), DType.DATETIME: ("BYTES",)}
_V2_DATATYPES[DType.STRING] = ("BYTES",)
_Name = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]


class V2Input(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    name: _Name
    shape: Annotated[
        list[Annotated[int, Field(ge=0, le=INT64_MAX), BeforeValidator(_whole_number)]],
        Field(min_length=1, max_length=2),
    ]
    datatype: (
        Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
        | Literal["FP16", "FP32", "FP64", "BYTES"]
    )
    data: list[Any]
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    id: Annotated[str, StringConstraints(strict=True, max_length=128)] | None = None
    parameters: dict[str, Any] | None = None
    inputs: Annotated[list[V2Input], Field(min_length=1, max_length=32)]
    outputs: list[dict[str, Any]] | None = None


class ScoreParameters(BaseModel):
    """Per-request options (``parameters`` in V1 and V2)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    explain: bool = False
    """Return each row's top reasons (XGBoost ``pred_contribs``)."""
    top_reasons: Annotated[int, Field(ge=1, le=10), BeforeValidator(_whole_number)] = 3


_PARAMETERS = TypeAdapter(ScoreParameters)


def _format_errors(err: ValidationError, prefix: str, limit: int = 5) -> str:
    lines = []
    for problem in err.errors()[:limit]:
        location = ".".join(str(p) for p in (prefix, *problem["loc"]) if p != "")
        value = repr(problem.get("input"))
        value = value if len(value) <= 60 else value[:57] + "..."
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{location}={value}: {message}")
    more = len(err.errors()) - limit
    return "; ".join(lines) + (f"; and {more} more problem(s)" if more > 0 else "")


class RequestDecoder:
    """Bytes of a request body → :class:`TransactionBatch` and :class:`ScoreParameters`, or
    :class:`InvalidRequest`. Built once per server from the contract."""

    def __init__(self, contract: Contract, limits: RequestLimits | None = None) -> None:
        self.contract = contract
        self.limits = limits or RequestLimits()
        self.row_model = row_model(contract, self.limits)
        self.columns = {spec.name: spec for spec in contract.columns if spec.role in REQUEST_ROLES}
        self.required = [name for name, spec in self.columns.items() if not spec.nullable]
        self.string_columns = [
            name for name, spec in self.columns.items() if spec.dtype in (DType.STRING, DType.DATETIME)
        ]
        self._rows = TypeAdapter(list[self.row_model])  # type: ignore[name-defined]
        self._fast_plan = _fast_path_columns(self.columns)

    # --- JSON ---------------------------------------------------------------------------------

    def parse_json(self, body: bytes) -> Any:
        """The JSON value of ``body``, refusing nesting deeper than the limit (checked on the bytes).

        String lengths are the row model's and the envelope's business (every string a request
        may carry is a typed field with a maximum length; anything else is refused as unknown).
        """
        if len(body) > self.limits.max_body_bytes:
            raise InvalidRequest(
                f"request body has {len(body)} bytes, the limit is {self.limits.max_body_bytes}", 413
            )
        if not body.strip():
            raise InvalidRequest("request body is empty; expected a JSON object")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise InvalidRequest(f"request body is not valid JSON: {err}") from None
        if _nesting(body) > self.limits.max_depth:
            raise InvalidRequest(f"JSON nesting is deeper than the limit of {self.limits.max_depth} levels")
        return value

    def _check_members(self, body: bytes, counted: int) -> None:
        """Refuse repeated keys (orjson keeps the last one silently), cheaply: every ``:`` of a
        body is an object member or inside a string, and ``counted`` is the members plus the
        string colons of the expected shape. Any difference takes the exact (slow) check, and
        so does any escape: ``\\u003a`` is one colon in the value but none in the bytes, so
        escapes could offset a repeated key in the count."""
        if b"\\" in body or body.count(b":") != counted:
            self._check_duplicates(body)

    @staticmethod
    def _check_duplicates(body: bytes) -> None:
        def refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            seen: dict[str, Any] = {}
            for key, value in pairs:
                if key in seen:
                    raise InvalidRequest(
                        f"JSON object repeats the key {key[:64]!r}; each key must appear once"
                    )
                seen[key] = value
            return seen

        json.loads(body, object_pairs_hook=refuse_duplicates)  # slow path: only when counts differ

    # --- protocols ----------------------------------------------------------------------------

    def _parameters(self, raw: Any, where: str) -> ScoreParameters:
        if raw is None:
            return ScoreParameters()
        try:
            return _PARAMETERS.validate_python(raw)
        except ValidationError as err:
            raise InvalidRequest(_format_errors(err, where), 422) from None

    def _check_count(self, n: int, where: str) -> None:
        if n == 0:
            raise InvalidRequest(f"{where} holds no rows; expected 1 to {self.limits.max_rows}")
        if n > self.limits.max_rows:
            raise InvalidRequest(
                f"{where} holds {n} rows, more than the limit of {self.limits.max_rows} per request", 413
            )

    def decode_v1(self, body: bytes) -> tuple[TransactionBatch, ScoreParameters]:
        """``{"instances": [{column: value, ...}, ...], "parameters": {...}}``."""
        payload = self.parse_json(body)
        if not isinstance(payload, dict):
            raise InvalidRequest(
                f"request body is a JSON {_json_kind(payload)}; expected an object with 'instances'"
            )
        unknown = sorted(set(payload) - {"instances", "parameters"})
        if unknown:
            raise InvalidRequest(
                f"unknown top-level field(s) {unknown}; expected 'instances' and optional 'parameters'"
            )
        if "instances" not in payload:
            raise InvalidRequest("field 'instances' is missing; expected a list of transaction objects")
        instances = payload["instances"]
        if not isinstance(instances, list):
            raise InvalidRequest(f"instances={_short(instances)}: expected a list of transaction objects")
        self._check_count(len(instances), "instances")
        parameters = self._parameters(payload.get("parameters"), "parameters")
        columns = self._fast_row_columns(instances)
        batch = None if columns is None else self._fast_columns(columns, len(instances))
        # after validation every row is a flat object of typed fields: cheap to count
        if batch is not None and columns is not None:  # the fast path's columns, each row has all
            row_colons = len(instances) * len(columns) + sum(
                "".join(columns[name]).count(":") for name in self.string_columns if name in columns
            )
        else:
            batch = self._model_batch(instances, "instances")
            row_colons = sum(map(len, instances)) + self._row_colons(instances)
        self._check_members(body, _colons(payload) + row_colons)
        return batch, parameters

    def decode_v2(self, body: bytes) -> tuple[TransactionBatch, ScoreParameters, str | None]:
        """Open Inference Protocol: one input tensor per column, shape ``[n]`` or ``[n, 1]``."""
        payload = self.parse_json(body)
        if not isinstance(payload, dict):
            raise InvalidRequest(
                f"request body is a JSON {_json_kind(payload)}; expected an object with 'inputs'"
            )
        try:
            request = V2Request.model_validate(payload)
        except ValidationError as err:
            raise InvalidRequest(_format_errors(err, ""), 422) from None
        columns: dict[str, list[Any]] = {}
        n_rows: int | None = None
        for position, tensor in enumerate(request.inputs):
            where = f"inputs.{position}"
            spec = self.columns.get(tensor.name)
            if spec is None:
                raise InvalidRequest(
                    f"{where}.name={tensor.name!r}: not an input of this model; expected one of {sorted(self.columns)}"
                )
            if tensor.name in columns:
                raise InvalidRequest(f"{where}.name={tensor.name!r}: input sent twice")
            if tensor.datatype not in _V2_DATATYPES[spec.dtype]:
                raise InvalidRequest(
                    f"{where}.datatype={tensor.datatype!r}: input {tensor.name!r} must be one of "
                    f"{list(_V2_DATATYPES[spec.dtype])}"
                )
            shape = tensor.shape
            if len(shape) == 2 and shape[1] != 1:
                raise InvalidRequest(f"{where}.shape={shape}: expected [n] or [n, 1]")
            data = tensor.data
            if data and isinstance(data[0], list):  # row-major nested [[v], [v]]: flatten one level
                if not all(isinstance(item, list) and len(item) == 1 for item in data):
                    raise InvalidRequest(f"{where}.data: expected a flat list or a list of one-element lists")
                data = [item[0] for item in data]
            if len(data) != shape[0]:
                raise InvalidRequest(
                    f"{where}.data has {len(data)} values, its shape {shape} says {shape[0]}"
                )
            if n_rows is not None and shape[0] != n_rows:
                raise InvalidRequest(
                    f"{where}.shape={shape}: every input must have the same number of rows ({n_rows})"
                )
            n_rows = shape[0]
            columns[tensor.name] = data
        missing = [name for name in self.required if name not in columns]
        if missing:
            raise InvalidRequest(
                f"inputs lack {missing}; expected one tensor per column of {sorted(self.columns)}"
            )
        assert n_rows is not None
        self._check_count(n_rows, "inputs")
        parameters = self._parameters(request.parameters, "parameters")
        batch = self._fast_columns(columns, n_rows)
        if batch is None:
            names = list(columns)
            rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
            batch = self.validate_rows(rows, "inputs")
        self._check_members(body, _colons(payload) + _tensor_colons(payload["inputs"]))
        return batch, parameters, request.id

    def _row_colons(self, rows: list[dict[str, Any]]) -> int:
        """The ``:`` inside the string values of validated rows (each a str or None)."""
        return sum(
            "".join(filter(None, [row.get(name) for row in rows])).count(":") for name in self.string_columns
        )

    def validate_rows(self, rows: list[Any], where: str) -> TransactionBatch:
        """Rows (dicts) through the contract's row model; the future-time rule; as columns.

        The common case (plain JSON numbers in range, ``YYYY-MM-DDTHH:MM:SSZ`` timestamps, no
        optional column) is checked vectorised (:meth:`_fast_batch`); anything else, valid or not,
        goes through the row model, which gives the field-level message."""
        return self._fast_batch(rows) or self._model_batch(rows, where)

    def _model_batch(self, rows: list[Any], where: str) -> TransactionBatch:
        try:
            validated = self._rows.validate_python(rows)
        except ValidationError as err:
            raise InvalidRequest(_format_errors(err, where), 422) from None
        latest = dt.datetime.now(dt.UTC) + self.limits.max_future_skew
        event_us = np.empty(len(validated), dtype=np.int64)
        for i, row in enumerate(validated):
            ts = getattr(row, EVENT_TIMESTAMP)
            if ts > latest:
                raise InvalidRequest(
                    f"{where}.{i}.{EVENT_TIMESTAMP}={ts.isoformat()!r}: is in the future; expected at most "
                    f"{self.limits.max_future_skew} after the server's clock ({latest.isoformat()})",
                    422,
                )
            event_us[i] = (ts - _EPOCH) // dt.timedelta(microseconds=1)
        extra_names = [n for n in self.columns if n not in _CORE]
        return TransactionBatch(
            transaction_id=np.fromiter((r.transaction_id for r in validated), np.int64, len(validated)),
            customer_id=np.fromiter((r.customer_id for r in validated), np.int64, len(validated)),
            terminal_id=np.fromiter((r.terminal_id for r in validated), np.int64, len(validated)),
            amount=np.fromiter((r.amount for r in validated), np.float64, len(validated)),
            event_us=event_us,
            extra={name: [getattr(r, name) for r in validated] for name in extra_names},
        )

    def _fast_batch(self, rows: list[Any]) -> TransactionBatch | None:
        """The batch when every row is in the common case and valid; None otherwise (the row model
        then decides, and words any error). A property test checks that whatever this accepts,
        the row model accepts with the same values."""
        columns = self._fast_row_columns(rows)
        return None if columns is None else self._fast_columns(columns, len(rows))

    def _fast_row_columns(self, rows: list[Any]) -> dict[str, list[Any]] | None:
        """The fast path's columns of ``rows`` when every row is an object with exactly those keys."""
        plan = self._fast_plan
        if plan is None or len(rows) < _FAST_PATH_MIN_ROWS or set(map(type, rows)) != {dict}:
            return None
        if set(map(len, rows)) != {len(plan)}:
            return None
        try:  # KeyError: another key set
            return {name: list(map(operator.itemgetter(name), rows)) for name in plan}
        except KeyError:
            return None

    def _fast_columns(self, raw: dict[str, list[Any]], n: int) -> TransactionBatch | None:
        """:meth:`_fast_batch` of columns (V2 tensors, V1 rows taken apart): exactly the fast
        path's columns, ``n`` values each."""
        plan = self._fast_plan
        if plan is None or n < _FAST_PATH_MIN_ROWS or raw.keys() != plan.keys():
            return None
        columns: dict[str, np.ndarray] = {}
        try:
            for name, (dtype, low, high) in plan.items():
                values = raw[name]
                if len(values) != n:
                    return None
                kinds = set(map(type, values))
                if dtype == DType.DATETIME:
                    if kinds != {str}:
                        return None
                    parsed = _utc_seconds(values)
                    if parsed is None:
                        return None
                    columns[name] = parsed * 1_000_000
                    continue
                if dtype == DType.INT64:
                    if kinds != {int}:
                        return None
                    array = np.array(values, dtype=np.int64)  # OverflowError: beyond int64
                else:
                    if not kinds <= {float, int}:
                        return None
                    array = np.array(values, dtype=np.float64)
                    if not np.isfinite(array).all():
                        return None
                if (low is not None and (array < low).any()) or (high is not None and (array > high).any()):
                    return None
                columns[name] = array
        except OverflowError:
            return None
        event_us = columns[EVENT_TIMESTAMP]
        latest = dt.datetime.now(dt.UTC) + self.limits.max_future_skew
        if (event_us > (latest - _EPOCH) // dt.timedelta(microseconds=1)).any():
            return None
        return TransactionBatch(
            transaction_id=columns[TRANSACTION_ID],
            customer_id=columns["customer_id"],
            terminal_id=columns["terminal_id"],
            amount=columns[AMOUNT],
            event_us=event_us,
            extra={name: [None] * n for name in self.columns if name not in _CORE},
        )


def _fast_path_columns(columns: dict[str, Any]) -> dict[str, tuple[DType, float | None, float | None]] | None:
    """The required columns of the fast path with their bounds; None when the contract needs the
    row model for every row (a required string or closed-vocabulary column, or extra columns that
    are not optional)."""
    plan = {}
    for name, spec in columns.items():
        if spec.nullable and name not in _CORE:
            continue  # optional: the fast path takes rows without it
        if spec.allowed is not None or spec.dtype == DType.STRING or name not in _CORE:
            return None
        plan[name] = (spec.dtype, spec.min, spec.max)
    return plan


_FAST_PATH_MIN_ROWS = 64  # below, numpy's per-call overhead outweighs the row model's per-row cost

# "YYYY-MM-DDTHH:MM:SSZ", as code points: digits where 0, separators where 1
_TIMESTAMP_DIGITS = np.array([c == "9" for c in "9999-99-99T99:99:99Z"])
_TIMESTAMP_SEPARATORS = np.array([ord(c) for c in "0000-00-00T00:00:00Z"], dtype=np.uint32)
_DAYS_IN_MONTH = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _utc_seconds(values: list[str]) -> np.ndarray | None:
    """Seconds since the epoch of ``YYYY-MM-DDTHH:MM:SSZ`` strings, each a valid date-time
    (computed from the digits: no string parsing); None when any string has another form or an
    impossible value (month 13, 31 September, 29 February of a common year, hour 24, ...)."""
    # the strings one after the other, each followed by a newline (which the form never holds):
    # the bytes are 21 per string, newlines at every 21st, only when each string has 20 characters
    # (the checks below then find a newline wherever the form has another character)
    n = len(values)
    joined = "\n".join(values)
    if len(joined) != 21 * n - 1 or not joined.isascii():
        return None
    points = np.frombuffer(joined.encode("ascii") + b"\n", dtype=np.uint8).reshape(n, 21)
    if (points[:, 20] != 10).any():
        return None
    points = points[:, :20]
    digits = points[:, _TIMESTAMP_DIGITS]
    if ((digits < 48) | (digits > 57)).any():
        return None
    if (points[:, ~_TIMESTAMP_DIGITS] != _TIMESTAMP_SEPARATORS[~_TIMESTAMP_DIGITS]).any():
        return None
    number = (digits - 48).astype(np.int64)
    year = number[:, 0] * 1000 + number[:, 1] * 100 + number[:, 2] * 10 + number[:, 3]
    month, day, hour, minute, second = (number[:, j] * 10 + number[:, j + 1] for j in (4, 6, 8, 10, 12))
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    if (year < 1).any() or (month < 1).any() or (month > 12).any() or (day < 1).any():
        return None
    if (day > _DAYS_IN_MONTH[month - 1] + (leap & (month == 2))).any():
        return None
    if (hour > 23).any() or (minute > 59).any() or (second > 59).any():
        return None
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil)
    shifted = year - (month <= 2)
    era = shifted // 400
    year_of_era = shifted - era * 400
    day_of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146097 + day_of_era - 719468
    return days * 86400 + hour * 3600 + minute * 60 + second


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSERS = np.frombuffer(b"]}", dtype=np.uint8)
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in b'[]{}"')
_CORE = {TRANSACTION_ID, EVENT_TIMESTAMP, "customer_id", "terminal_id", AMOUNT}


def _colons(obj: dict[str, Any]) -> int:
    """The ``:`` of a JSON object as written: one per member, plus those inside its keys and its
    string values, and in the strings of its flat lists (V2 ``data``) and of its ``parameters``;
    other nested values are not visited (a valid request has none, and a mismatch only costs the
    exact check)."""
    count = len(obj)
    for key, value in obj.items():
        count += key.count(":")
        if isinstance(value, str):
            count += value.count(":")
        elif isinstance(value, list):
            count += "".join([item for item in value if type(item) is str]).count(":")
        elif key == "parameters" and isinstance(value, dict):
            count += _colons(value)
    return count


def _tensor_colons(tensors: list[dict[str, Any]]) -> int:
    """``sum(map(_colons, tensors))`` for V2 tensors that passed :class:`V2Input` and name the
    model's columns, in one pass: their keys, names and datatypes hold no ``:``, so only the
    members, the string data and the parameters count."""
    count = sum(map(len, tensors))
    count += "".join([item for tensor in tensors for item in tensor["data"] if type(item) is str]).count(":")
    for tensor in tensors:
        parameters = tensor.get("parameters")
        if isinstance(parameters, dict):
            count += _colons(parameters)
    return count


def _nesting(body: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings, exactly, for a body that parsed as JSON.

    Fast where no string holds a bracket or an escape (a valid request's never do): the brackets
    and quotes alone are then a few bytes per row, the quotes pair up in order, and the brackets
    outside them are the structure. Otherwise :func:`_depth`'s scan of the whole body. (Counting
    every bracket, strings included, is no bound: ``"]]]"`` in a string would hide deep nesting.)"""
    if b"\\" not in body:
        # One pass removing adjacent quote pairs leaves no quote exactly when the pairs removed
        # were the strings' own (the only way to pair a sequence off in order), each empty.
        outside = body.translate(None, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
        if b'"' not in outside:
            return _deepest(outside)
    return _depth(body)


def _deepest(brackets: bytes) -> int:
    """The running maximum of +1 per opening and -1 per closing bracket."""
    if len(brackets) <= 256:  # a few rows: a Python loop costs less than numpy's calls
        depth = deepest = 0
        for byte in brackets:
            depth += 1 if byte in (91, 123) else -1
            deepest = max(deepest, depth)
        return deepest
    skeleton = np.frombuffer(brackets, dtype=np.uint8)
    return int(np.cumsum(np.where((skeleton == 91) | (skeleton == 123), 1, -1)).max())


def _depth(body: bytes) -> int:
    """Deepest nesting of ``[``/``{`` outside strings."""
    skeleton = np.frombuffer(_STRING.sub(b'""', body), dtype=np.uint8)
    steps = np.isin(skeleton, _OPENERS).astype(np.int32) - np.isin(skeleton, _CLOSERS)
    return int(np.cumsum(steps).max()) if steps.size else 0


def _json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type (a message names no Python class)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array"}.get(type(value), "object")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
