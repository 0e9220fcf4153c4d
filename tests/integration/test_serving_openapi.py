"""R2 of ``../shared/RELIABILITY.md``: Schemathesis against our OpenAPI document (V1 and V2).

The document is the server's own ``/openapi.json``
(:func:`~fraud_detection.inference.openapi.openapi_document`), loaded from the in-process ASGI app
and run through Schemathesis' engine (examples, coverage and fuzzing phases) once in positive mode
(schema-valid requests must be answered 2xx) and once in negative mode (schema-invalid requests
must be refused with a 4xx), with every check on: no 5xx, documented statuses, content types and
response schemas, positive data accepted, negative data rejected, missing required headers, 405
with ``Allow`` for undeclared methods, plus our own: no leak in any body (S5). 0 failures.

What is set, and why (no check is turned off):

* JSON Schema cannot say two things, so they are given to the generator: an event time may be at
  most 5 minutes ahead of the server's clock (positive ``date-time`` values are drawn from the
  past), and a V2 request holds one tensor per column, all of one length (a positive V2 body is a
  positive V1 body, drawn from the same row schema, written as tensors).
* ``negative_data_rejection`` also accepts 413: more rows than the limit is refused as too large
  (R5), not as 422.
* The scoring routes are called on the served model name and version, so that negative examples
  reach the body (another name is a 404 before the body is read; the GET routes and R1 test that).
* The stateful phase is off: the API has no links between operations.
* The guard's deadline is raised: a 1,000-row explain on a loaded CI machine answered 504 is R8 at
  work, not a contract failure.

Settings: 200 examples per operation and mode, ``deterministic`` and a fixed seed for CI; the
file takes about 1.5 minutes on two cores (most of it generating V2 bodies).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.engine import Status, events

from tests.serving_support import LEAKS, ServingWorld, inprocess_app, v2_body

pytestmark = pytest.mark.integration

EXAMPLES = 200
V2_INFER = ("/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{model_version}/infer")
V1_PREDICT = "/v1/models/{model_name}:predict"
MODEL = "fraud-detector"

# RFC 3339 date-times in the past (the server refuses any more than 5 minutes ahead of its clock)
schemathesis.openapi.format(
    "date-time",
    st.datetimes(
        min_value=dt.datetime(1971, 1, 1),
        max_value=dt.datetime(2024, 12, 31),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=5, minutes=30))]),
    ).map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
)


@schemathesis.check
def no_leak_in_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """S5: no stack trace, path, exception class name or library name/version in any body.

    A term the request itself sent is an echo, not a leak: a 404 names the model asked for, and
    Hypothesis draws strings from our own source (a log message such as "dask xgboost trained").
    """
    sent = _sent_text(case).lower()
    for leak in LEAKS.finditer(response.text):
        if leak.group(0).lower() not in sent:
            raise AssertionError(f"the body leaks {leak.group(0)!r}: {response.text[:200]}")
    return None


def _sent_text(case: Any) -> str:
    """Every string the request carried (path, query, headers, body), joined."""
    parts: list[str] = []

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                collect(key)
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)
        elif value is not None:
            parts.append(str(value))

    for source in ("path_parameters", "query", "headers", "cookies", "body"):
        collect(getattr(case, source, None))
    return "\n".join(parts)


def _config(mode: str, version: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": 20240501,
            "generation": {"mode": mode, "max-examples": EXAMPLES, "deterministic": True},
            "checks": {
                "enabled": True,
                "negative_data_rejection": {
                    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
                },
            },
            # the API has no links (a stateless scoring service): the stateful phase would only
            # replay single requests, at twice the time
            "phases": {"stateful": {"enabled": False}},
            # the scoring routes are called on the served model and version, so that every example
            # reaches the body (another name or version is a 404 before the body is read; the GET
            # routes, and R1, test those)
            "operations": [
                {
                    "include-method": "POST",
                    "parameters": {"path.model_name": MODEL, "path.model_version": version},
                }
            ],
        }
    )


def _v2_from_v1(case: Any, as_columns: bool, request_id: str | None) -> dict[str, Any]:
    """A positive V1 body written as V2 tensors (an absent optional column is sent as null)."""
    rows = case.body["instances"]
    names = list(dict.fromkeys(name for row in rows for name in row))
    body = v2_body([{name: row.get(name) for name in names} for row in rows])
    if as_columns:  # shape [n, 1], one value a row
        for tensor in body["inputs"]:
            tensor["shape"].append(1)
            tensor["data"] = [[value] for value in tensor["data"]]
    if case.body.get("parameters") is not None:
        body["parameters"] = case.body["parameters"]
    if request_id is not None:
        body["id"] = request_id
    return body


def _schema(app: Any, mode: str, version: str) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(mode, version))
    v1_bodies = schema[V1_PREDICT]["POST"].as_strategy(GenerationMode.POSITIVE)
    v2_bodies = st.builds(_v2_from_v1, v1_bodies, st.booleans(), st.none() | st.text(max_size=128))

    @schema.hook
    def flatmap_case(context: Any, case: Any) -> Any:
        # a positive V2 case (negative runs make some too) gets a body valid across its tensors
        meta = case.meta
        if case.operation.path in V2_INFER and meta is not None and meta.generation.mode.is_positive:
            return v2_bodies.map(lambda body: _with_body(case, body))
        return st.just(case)

    return schema


def _with_body(case: Any, body: dict[str, Any]) -> Any:
    case.body = body
    return case


@dataclass
class Run:
    failures: list[str] = field(default_factory=list)
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


def _run(schema: Any) -> Run:
    """Every phase of Schemathesis' engine (examples, coverage, fuzzing, stateful) over ``schema``."""
    run = Run()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for checks in recorder.checks.values():
                for check in checks:
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        run.failures.append(
                            f"{recorder.label} [{check.name}] {failure.title}: {failure.message[:300]}\n"
                            f"    {check.failure_info.code_sample[:600]}"
                        )
            for interaction in recorder.interactions.values():
                run.requests[recorder.label] += 1
                if interaction.response is not None:
                    run.statuses[interaction.response.status_code] += 1
        elif isinstance(event, (events.NonFatalError, events.FatalError)):
            run.failures.append(f"engine error: {event.info.format()[:600]}")
    return run


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_finds_no_failure(serving_world: ServingWorld, mode: str) -> None:
    from fraud_detection.inference.server import RequestGuard, ServingSettings

    service, served = inprocess_app(serving_world)
    # the same app behind a guard whose deadline a loaded CI machine cannot reach: a 1,000-row
    # explain answered 504 there would be R8's deadline at work, not a contract failure
    app = RequestGuard(served.app, ServingSettings(request_timeout_s=60.0))
    run = _run(_schema(app, mode, service.scorer.version))
    print(
        f"\nR2 {mode}: {sum(run.requests.values())} requests; statuses {dict(sorted(run.statuses.items()))}"
    )
    for label, n in sorted(run.requests.items()):
        print(f"    {n:5d}  {label}")
    assert not run.failures, f"{len(run.failures)} failure(s):\n" + "\n".join(run.failures[:20])
    assert len(run.requests) >= 9, sorted(run.requests)


def test_the_served_document_is_derived_from_the_contract(serving_world: ServingWorld) -> None:
    from fraud_detection.inference.openapi import openapi_document

    service, app = inprocess_app(serving_world)

    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/openapi.json")

    document = asyncio.run(fetch()).json()
    assert document == json.loads(json.dumps(openapi_document(service.decoder, "fraud-detector")))
    assert document["openapi"].startswith("3.1")
    row = document["components"]["schemas"]["TransactionRow"]
    assert row["additionalProperties"] is False
    assert set(row["required"]) == {
        "transaction_id",
        "event_timestamp",
        "customer_id",
        "terminal_id",
        "amount",
    }
    assert "is_fraud" not in row["properties"] and "fraud_scenario" not in row["properties"]
    assert row["properties"]["event_timestamp"]["format"] == "date-time"
    assert row["properties"]["amount"] == {
        "type": "number",
        "minimum": 0.0,
        "maximum": 100000.0,
        "title": "Amount",
    }
