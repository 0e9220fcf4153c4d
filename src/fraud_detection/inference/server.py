"""The online model server: KServe's protocols and app, our hot path, our own uvicorn.

Layers, outermost first:

* :class:`RequestGuard` (pure ASGI): request id, body cap (413 from ``Content-Length`` before the
  body is read, or as soon as a chunked body crosses the cap), per-request deadline (504), and a
  last-resort 500 whose body never carries a traceback, path or exception name.
* KServe's FastAPI app (``kserve.model_server.app``) with every KServe route (V1, V2/Open Inference
  Protocol, health, metadata, ``/metrics``), plus our scoring routes registered *before* KServe's:
  ``/v1/models/{name}:predict|:explain`` and ``/v2/models/{name}[/versions/{v}]/infer``. They
  decode with :class:`~fraud_detection.inference.requests.RequestDecoder` (contract-derived
  pydantic models, orjson) instead of KServe's generic path, which answers 500 for many bad
  inputs (see ``../shared/RELIABILITY.md``).
* :class:`ScoringService`: the current :class:`~fraud_detection.inference.scorer.FraudScorer`,
  adaptive micro-batching of concurrent requests into one feature read and one model call, the
  prediction event sink, hot reload, readiness.
* :class:`FraudDetectorModel`: the thin ``kserve.Model`` adapter KServe's own routes and
  readiness see.

Our uvicorn (not ``ModelServer.start``, which binds 0.0.0.0 and needs a loaded model first) binds
127.0.0.1 by default, answers ``/v2/health/live`` at once and ``ready`` only after the model is
loaded, verified and warmed up, and on SIGTERM turns not-ready at once, finishes in-flight
requests and exits 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import itertools
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.responses import Response

from fraud_detection import __version__
from fraud_detection.errors import FraudDetectionError
from fraud_detection.inference import metrics
from fraud_detection.inference.events import PredictionSink
from fraud_detection.inference.openapi import openapi_document
from fraud_detection.inference.requests import (
    InvalidRequest,
    RequestDecoder,
    RequestLimits,
    ScoreParameters,
    TransactionBatch,
)
from fraud_detection.inference.scorer import FraudScorer, Scores

log = structlog.get_logger("fraud.server")
# request ids: a random per-process prefix and a counter (unique like a uuid4, without a syscall
# per request)
_REQUEST_ID_PREFIX = os.urandom(8).hex()
_REQUEST_COUNTER = itertools.count()


def new_request_id() -> str:
    return f"{_REQUEST_ID_PREFIX}{next(_REQUEST_COUNTER):016x}"


MODEL_NAME = "fraud-detector"


class ServingSettings(BaseSettings):
    """Server settings; every field can be set as ``FRAUD_SERVE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_SERVE_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    model_name: str = MODEL_NAME
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    max_rows: int = Field(default=1000, ge=1)
    max_depth: int = Field(default=8, ge=3)
    max_string_length: int = Field(default=256, ge=32)
    request_timeout_s: float = Field(default=1.0, gt=0)
    batch_wait_ms: float = Field(default=0.0, ge=-1)
    """Micro-batching window: 0 merges what is already queued (no added wait), > 0 waits that long
    for more, -1 turns micro-batching off (each request is its own model call)."""
    max_batch_rows: int = Field(default=4000, ge=1)
    inline_max_rows: int = Field(default=100, ge=0)
    """A request of at most this many rows that is the only one the server holds, and whose features
    come from memory, is scored on the event loop, without the hand-off to the scoring thread
    (~0.2 ms); 0 always hands off."""
    compiled_trees: bool = True
    """Score model calls of up to 32 rows (after micro-batching) with the numba-compiled trees
    (``models/tree_arrays.py``), verified at load to give XGBoost's probabilities bit for bit (one
    row: ~10-20 µs instead of ~0.2-0.4 ms); false: XGBoost scores every request."""
    reload_interval_s: float = Field(default=10.0, ge=0)
    """Poll the registry alias this often and hot-reload when it moves; 0 = only on request."""
    unready_on_failed_reload: bool = False
    """After a failed hot reload, keep serving the old model but report not-ready (R10's reading)."""
    events_dir: Path | None = None
    """Prediction event log folder; unset: ``<FRAUD_DATA_DIR>/predictions``."""
    events_queue: int = Field(default=1024, ge=1)
    events_roll_s: float = Field(default=60.0, gt=0)
    events_roll_rows: int = Field(default=100_000, ge=1)
    """A prediction event file also closes at this many events (short writer pauses under load)."""
    max_concurrency: int = Field(default=512, ge=1)
    """Connections plus requests in flight above which uvicorn answers 503 at once."""
    grace_period_s: float = Field(default=30.0, gt=0)
    shadow_model: str | None = None
    """A second model (e.g. ``models:/fraud-detector@challenger``) scored on every request off the
    request path, its scores only logged (shadow mode); unset: none."""
    shadow_max_pending: int = Field(default=8, ge=1)
    """Shadow batches waiting or being scored above which further ones are skipped (counted)."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Time a client has to send a request's headers (from connecting, or from the end of the
    previous response) before its connection is closed: the slowloris guard uvicorn lacks."""

    def limits(self) -> RequestLimits:
        return RequestLimits(
            max_body_bytes=self.max_body_bytes,
            max_rows=self.max_rows,
            max_depth=self.max_depth,
            max_string_length=self.max_string_length,
        )


# ------------------------------------------------------------------------------------ the service


@dataclass
class _Pending:
    batch: TransactionBatch
    future: asyncio.Future[tuple[FraudScorer, Scores]]
    request_id: str


@dataclass
class ShadowModel:
    """Shadow mode: a second model scores what the served one scored, on its own thread after the
    answers are out, and its scores go to the prediction log (``shadow`` = true) only.

    The extra latency is bounded: the request path only hands the batch over (a semaphore and a
    queue put); when ``max_pending`` batches are already waiting, the batch is skipped and
    counted. The shadow reuses the served model's feature matrix when both take the same features
    in the same order (so an A/B comparison sees identical inputs); otherwise it reads its own.
    A shadow that fails to load or to score never affects the answers."""

    load: Callable[[], FraudScorer]
    current_version: Callable[[], str | None] | None
    max_pending: int
    sink: PredictionSink | None
    scorer: FraudScorer | None = None
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="shadow")
    )
    _slots: threading.BoundedSemaphore = field(init=False)

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_pending)

    async def reload(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if (
                self.scorer is not None
                and self.current_version is not None
                and await loop.run_in_executor(None, self.current_version) == self.scorer.version
            ):
                return
            scorer = await loop.run_in_executor(None, self.load)
        except FraudDetectionError as err:
            log.error("shadow model not loaded; serving without it", reason=str(err)[:500])
            return
        if self.scorer is not None:
            metrics.SHADOW_INFO.remove(self.scorer.version, self.scorer.model.digest)
        self.scorer = scorer
        metrics.SHADOW_INFO.labels(scorer.version, scorer.model.digest).set(1)
        log.info("shadow model ready", model_version=self.scorer.version, model_uri=self.scorer.model.uri)

    def submit(
        self, batch: TransactionBatch, served_by: FraudScorer, served: Scores, request_ids: list[str]
    ) -> None:
        scorer = self.scorer
        if scorer is None:
            return
        if not self._slots.acquire(blocking=False):
            metrics.SHADOW_SKIPPED.inc(len(batch))
            return
        same_features = scorer.bundle.feature_names == served_by.bundle.feature_names
        self._executor.submit(self._score, scorer, batch, served if same_features else None, request_ids)

    def _score(
        self, scorer: FraudScorer, batch: TransactionBatch, served: Scores | None, request_ids: list[str]
    ) -> None:
        try:
            started = time.perf_counter()
            if served is not None:  # the same features in the same order: the very same inputs
                probability, decision = scorer.score_features(served.features)
                scores = dataclasses.replace(served, probability=probability, decision=decision, reasons=None)
            else:
                scores = scorer.score(batch)
            metrics.SHADOW_LATENCY.observe(time.perf_counter() - started)
            metrics.SHADOW_PREDICTIONS.labels(scorer.version).inc(len(batch))
            if self.sink is not None:
                self.sink.submit(
                    request_ids, batch, scores, scorer.version, scorer.bundle.feature_names, shadow=True
                )
        except Exception as err:  # the shadow must never disturb serving
            metrics.SHADOW_SKIPPED.inc(len(batch))
            log.warning("shadow scoring failed", error_type=type(err).__name__, error=str(err)[:300])
        finally:
            self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


@dataclass
class ScoringService:
    """What the routes call: scoring with micro-batching, the event log, the model's life cycle."""

    settings: ServingSettings
    decoder: RequestDecoder
    load_scorer: Callable[[], FraudScorer]
    """Resolve, verify and warm up the configured model (blocking; run in a thread)."""
    current_version: Callable[[], str | None] | None = None
    """The version the model URI points at now (registry alias), for hot reload; None for a path."""
    model_uri: str | None = None
    sink: PredictionSink | None = None
    scorer: FraudScorer | None = None
    shutting_down: bool = False
    reload_failed: bool = False
    load_failed: bool = False
    _pending: collections.deque[_Pending] = field(default_factory=collections.deque)
    _flush_scheduled: bool = False
    _flushing: bool = False
    _executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="scoring")
    )
    _reload_lock: asyncio.Lock | None = None
    shadow_model: ShadowModel | None = None
    requests_in_flight: Callable[[], int] | None = None
    """The HTTP server's count of requests received and not yet answered (set by :func:`run_server`
    from uvicorn's request tasks); None: unknown, and no request is scored on the event loop."""

    @property
    def ready(self) -> bool:
        if self.scorer is None or self.shutting_down:
            return False
        return not (self.reload_failed and self.settings.unready_on_failed_reload)

    # --- life cycle ---------------------------------------------------------------------------

    def _install(self, scorer: FraudScorer) -> None:
        old = self.scorer
        self.scorer = scorer  # one assignment: requests in flight keep the scorer they started with
        if old is not None:
            metrics.MODEL_INFO.remove(self.settings.model_name, old.version, old.model.digest)
        metrics.MODEL_INFO.labels(self.settings.model_name, scorer.version, scorer.model.digest).set(1)
        log.info(
            "model ready",
            model_version=scorer.version,
            model_uri=scorer.model.uri,
            digest=scorer.model.digest,
        )

    async def start(self) -> None:
        """Load the model (off the event loop); raise on failure (the caller stops the server)."""
        self._reload_lock = asyncio.Lock()
        scorer = await asyncio.get_running_loop().run_in_executor(None, self.load_scorer)
        self._install(scorer)
        if self.shadow_model is not None:
            await self.shadow_model.reload()

    async def reload(self, *, force: bool = False) -> bool:
        """Load the model again if its alias moved (or ``force``); keep the old one on failure.
        Returns whether a new model is now served."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            try:
                if not force and self.current_version is not None and self.scorer is not None:
                    version = await loop.run_in_executor(None, self.current_version)
                    if version == self.scorer.version:
                        return False
                scorer = await loop.run_in_executor(None, self.load_scorer)
            except FraudDetectionError as err:
                self.reload_failed = True
                metrics.MODEL_RELOADS.labels("failed").inc()
                log.error("model reload failed, still serving the previous model", **self.refusal(err))
                return False
            self.reload_failed = False
            if self.scorer is not None and scorer.version == self.scorer.version and not force:
                return False
            self._install(scorer)
            metrics.MODEL_RELOADS.labels("ok").inc()
            return True

    async def poll_reloads(self) -> None:
        interval = self.settings.reload_interval_s
        if interval <= 0 or self.current_version is None:
            return
        while not self.shutting_down:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):  # a poll must never take the server down
                await self.reload()
            if self.shadow_model is not None:
                with contextlib.suppress(Exception):
                    await self.shadow_model.reload()

    def refusal(self, err: FraudDetectionError) -> dict[str, Any]:
        """The audit fields of a refused model: the URI, the bundle folder and its digest (an
        :class:`~fraud_detection.errors.ArtifactError` names them where known) and the reason,
        which names the offending file."""
        return {
            "model_uri": self.model_uri,
            "bundle": getattr(err, "bundle", None),
            "digest": getattr(err, "digest", None),
            "reason": str(err)[:500],
        }

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
        if self.shadow_model is not None:
            self.shadow_model.close()
        if self.sink is not None:
            self.sink.close()

    # --- scoring ------------------------------------------------------------------------------

    async def score(
        self, batch: TransactionBatch, parameters: ScoreParameters, request_id: str
    ) -> tuple[FraudScorer, Scores]:
        if self.scorer is None or self.shutting_down:
            raise InvalidRequest("the model is not ready; retry later", 503)
        loop = asyncio.get_running_loop()
        idle = not (self._pending or self._flushing or self._flush_scheduled)
        if parameters.explain or self.settings.batch_wait_ms < 0:
            scorer = self.scorer
            scores = await loop.run_in_executor(self._executor, self._score_sync, scorer, batch, parameters)
            result = (scorer, scores)
            self._shadow(batch, scorer, scores, [request_id] * len(batch))
        elif idle and self.settings.batch_wait_ms == 0:
            scorer = self.scorer
            # The server holds no other request: nothing could be merged with this one, and the
            # hand-off to the scoring thread and back would cost about as much as the model call.
            scores = scorer.score_from_memory(batch) if self._may_score_on_loop(batch) else None
            if scores is not None:
                self._observe_call(batch, scores, on_event_loop=True)
            else:
                # Nothing queued or being scored: this request goes at once, without a turn of the
                # loop; requests arriving meanwhile queue up and are merged into the next model call.
                self._flushing = True
                try:
                    scores = await loop.run_in_executor(
                        self._executor, self._score_sync, scorer, batch, parameters
                    )
                finally:
                    self._flushing = False
                    if self._pending:
                        self._schedule(loop)
            result = (scorer, scores)
            self._shadow(batch, scorer, scores, [request_id] * len(batch))
        else:
            future: asyncio.Future[tuple[FraudScorer, Scores]] = loop.create_future()
            self._pending.append(_Pending(batch, future, request_id))
            self._schedule(loop)
            result = await future
        self._record(request_id, batch, *result)
        return result

    def _may_score_on_loop(self, batch: TransactionBatch) -> bool:
        """Whether ``batch`` may be scored on the event loop (if its features are in memory): its
        request is the only one received and not yet answered (uvicorn creates a request's task from
        its headers on, so requests read in the same turn of the loop count each other) and it is
        small. The loop is then busy for a small batch's CPU time, never for a store's deadline."""
        in_flight = self.requests_in_flight
        return in_flight is not None and len(batch) <= self.settings.inline_max_rows and in_flight() <= 1

    @classmethod
    def _score_sync(cls, scorer: FraudScorer, batch: TransactionBatch, parameters: ScoreParameters) -> Scores:
        scores = scorer.score(batch, explain=parameters.explain, top_reasons=parameters.top_reasons)
        cls._observe_call(batch, scores, on_event_loop=False)
        return scores

    @staticmethod
    def _observe_call(batch: TransactionBatch, scores: Scores, *, on_event_loop: bool) -> None:
        metrics.child(metrics.MODEL_CALLS, "event_loop" if on_event_loop else "scoring_thread").inc()
        # once per store read, not per request: a merged batch is one read
        metrics.FEATURE_FETCH_LATENCY.observe(scores.feature_fetch_s)
        if scores.feature_fetch_failed:
            metrics.FEATURE_FETCH_FAILURES.inc()
        metrics.BATCH_ROWS.observe(len(batch))

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._flush_scheduled or self._flushing:
            return
        self._flush_scheduled = True
        wait_s = self.settings.batch_wait_ms / 1000
        if wait_s > 0:
            loop.call_later(wait_s, self._flush, loop)
        else:  # after the callbacks already queued (other requests being read) have run
            loop.call_soon(self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        taken: list[_Pending] = []
        rows = 0
        while self._pending and (
            not taken or rows + len(self._pending[0].batch) <= self.settings.max_batch_rows
        ):
            item = self._pending.popleft()
            if item.future.done():  # its request gave up (deadline)
                continue
            taken.append(item)
            rows += len(item.batch)
        if not taken:
            return
        self._flushing = True
        scorer = self.scorer
        assert scorer is not None
        batch = TransactionBatch.concat([item.batch for item in taken])
        done = loop.run_in_executor(self._executor, self._score_sync, scorer, batch, ScoreParameters())
        done.add_done_callback(lambda finished: self._deliver(loop, finished, taken, scorer, batch))

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        finished: asyncio.Future[Scores],
        taken: list[_Pending],
        scorer: FraudScorer,
        batch: TransactionBatch,
    ) -> None:
        self._flushing = False
        error = finished.exception()
        start = 0
        for item in taken:
            n = len(item.batch)
            if not item.future.done():
                if error is not None:
                    item.future.set_exception(error)
                else:
                    item.future.set_result((scorer, finished.result().slice(start, start + n)))
            start += n
        if self._pending:
            self._schedule(loop)
        if error is None:
            request_ids = [item.request_id for item in taken for _ in range(len(item.batch))]
            self._shadow(batch, scorer, finished.result(), request_ids)

    def _shadow(
        self, batch: TransactionBatch, scorer: FraudScorer, scores: Scores, request_ids: list[str]
    ) -> None:
        if self.shadow_model is not None:
            self.shadow_model.submit(batch, scorer, scores, request_ids)

    def _record(self, request_id: str, batch: TransactionBatch, scorer: FraudScorer, scores: Scores) -> None:
        version = scorer.version
        alerts = int(scores.decision.sum())
        metrics.child(metrics.PREDICTIONS, version, "alert").inc(alerts)
        metrics.child(metrics.PREDICTIONS, version, "pass").inc(len(scores) - alerts)
        metrics.observe_many(metrics.SCORES, scores.probability)
        degraded = int(scores.degraded.sum())
        if degraded:
            metrics.DEGRADED.inc(degraded)
        if self.sink is not None:
            self.sink.submit([request_id] * len(batch), batch, scores, version, scorer.bundle.feature_names)


# ---------------------------------------------------------------------------------- HTTP handlers

JSON = "application/json"
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")]


def _json_response(status: int, payload: Any, request_id: str) -> Any:
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type=JSON,
        headers={"x-request-id": request_id, "x-content-type-options": "nosniff"},
    )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == JSON or (media.startswith("application/") and media.endswith("+json"))


def v1_prediction_rows(scores: Scores) -> list[dict[str, Any]]:
    """The V1 ``predictions``: one object per transaction, in the batch's order."""
    rows = [
        {
            "transaction_id": int(tid),
            "fraud_probability": float(p),
            "decision": int(d),
            "degraded": bool(g),
        }
        for tid, p, d, g in zip(
            scores.transaction_id.tolist(),
            scores.probability.tolist(),
            scores.decision.tolist(),
            scores.degraded.tolist(),
            strict=True,
        )
    ]
    for row, reasons in zip(rows, scores.degraded_reasons, strict=True):
        if reasons:
            row["degraded_reasons"] = list(reasons)
    if scores.reasons is not None:
        for row, reasons in zip(rows, scores.reasons, strict=True):
            row["reasons"] = reasons
    return rows


_V1_ROW_START = b'{"transaction_id":'
_V1_PROBABILITY = b',"fraud_probability":'
# what follows a V1 prediction's probability up to the next prediction's id, by 2 * decision + degraded
_V1_ROW_ENDS = tuple(
    b',"decision":%d,"degraded":%s},%s' % (decision, b"true" if degraded else b"false", _V1_ROW_START)
    for decision in (0, 1)
    for degraded in (False, True)
)
_V1_FAST_MIN_ROWS = 16  # below, the plain objects cost about as little


def v1_predictions(scores: Scores) -> list[dict[str, Any]] | orjson.Fragment:
    """:func:`v1_prediction_rows`, serialised: the bytes orjson writes for those objects, from two
    column-wise ``orjson.dumps`` and one join instead of four Python objects per row (a 1,000-row
    answer: about half the time, and no per-row objects for the garbage collector). The objects
    themselves where a row carries reasons, for few rows, or for a decision other than 0/1."""
    n = len(scores)
    if (
        n < _V1_FAST_MIN_ROWS
        or scores.reasons is not None
        or any(scores.degraded_reasons)
        or not ((scores.decision == 0) | (scores.decision == 1)).all()
    ):
        return v1_prediction_rows(scores)
    # numbers are written as orjson writes them for the Python int and float of each value
    option = orjson.OPT_SERIALIZE_NUMPY
    pieces = [_V1_PROBABILITY] * (4 * n)  # per row: id, probability key, probability, row end
    pieces[0::4] = orjson.dumps(scores.transaction_id.astype(np.int64), option=option)[1:-1].split(b",")
    pieces[2::4] = orjson.dumps(scores.probability.astype(np.float64), option=option)[1:-1].split(b",")
    ends = scores.decision.astype(np.intp) * 2 + scores.degraded.astype(np.intp)
    pieces[3::4] = map(_V1_ROW_ENDS.__getitem__, ends.tolist())
    joined = b"".join(pieces)
    return orjson.Fragment(b"".join((b"[", _V1_ROW_START, joined[: -len(_V1_ROW_START) - 1], b"]")))


@dataclass
class ScoringRoutes:
    """The hot-path handlers (plain Starlette endpoints: no FastAPI dependency machinery)."""

    service: ScoringService
    # bound once, as logging is configured now: the module's lazy proxy binds anew on every call,
    # even one its level drops (the per-request debug line)
    _log: Any = field(default_factory=lambda: log.bind(), init=False, repr=False)

    def _reject(self, protocol: str, err: InvalidRequest, request_id: str) -> Any:
        outcome = {413: "too_large", 415: "unsupported_media_type", 503: "unavailable", 404: "not_found"}
        metrics.REQUESTS.labels(protocol, outcome.get(err.status, "invalid")).inc()
        message = str(err)
        log.info("request rejected", request_id=request_id, status=err.status, reason=message[:400])
        return _json_response(err.status, {"error": message}, request_id)

    async def _body(self, request: Any) -> bytes:
        if not _is_json(request.headers.get("content-type")):
            raise InvalidRequest(
                f"content-type {request.headers.get('content-type')!r} is not supported; send application/json",
                415,
            )
        return await request.body()

    def _check_model(self, request: Any) -> None:
        name = request.path_params.get("model_name")
        if name != self.service.settings.model_name:
            raise InvalidRequest(
                f"model {str(name)[:64]!r} does not exist; this server serves "
                f"{self.service.settings.model_name!r}",
                404,
            )
        version = request.path_params.get("model_version")
        scorer = self.service.scorer
        if version is not None and (scorer is None or version != scorer.version):
            raise InvalidRequest(
                f"model {name!r} has no version {str(version)[:64]!r}; serving version "
                f"{scorer.version if scorer else 'none'!r}",
                404,
            )

    async def _handle(
        self,
        request: Any,
        protocol: str,
        decode: Callable[[bytes], tuple[TransactionBatch, ScoreParameters, str | None]],
        answer: Callable[[FraudScorer, Scores, str, str | None, ScoreParameters], Any],
    ) -> Any:
        started = time.perf_counter()
        request_id = request.scope.get("fraud.request_id") or new_request_id()
        try:
            self._check_model(request)
            body = await self._body(request)
            batch, parameters, client_id = decode(body)
            scorer, scores = await self.service.score(batch, parameters, request_id)
        except InvalidRequest as err:
            return self._reject(protocol, err, request_id)
        payload = answer(scorer, scores, request_id, client_id, parameters)
        elapsed = time.perf_counter() - started
        metrics.child(metrics.REQUEST_LATENCY, protocol).observe(elapsed)
        metrics.child(metrics.REQUESTS, protocol, "ok").inc()
        self._log.debug(
            "scored", request_id=request_id, rows=len(scores), latency_ms=round(elapsed * 1000, 3)
        )
        return _json_response(200, payload, request_id)

    # --- V1 -----------------------------------------------------------------------------------

    def _decode_v1(self, body: bytes) -> tuple[TransactionBatch, ScoreParameters, str | None]:
        batch, parameters = self.service.decoder.decode_v1(body)
        return batch, parameters, None

    def _decode_v1_explain(self, body: bytes) -> tuple[TransactionBatch, ScoreParameters, str | None]:
        batch, parameters = self.service.decoder.decode_v1(body)
        return batch, parameters.model_copy(update={"explain": True}), None

    def _answer_v1(
        self, scorer: FraudScorer, scores: Scores, request_id: str, _: str | None, parameters: ScoreParameters
    ) -> dict[str, Any]:
        return {
            "predictions": v1_predictions(scores),
            "model_name": self.service.settings.model_name,
            "model_version": scorer.version,
            "threshold": scorer.bundle.threshold,
            "request_id": request_id,
        }

    async def v1_predict(self, request: Any) -> Any:
        return await self._handle(request, "v1", self._decode_v1, self._answer_v1)

    async def v1_explain(self, request: Any) -> Any:
        return await self._handle(request, "v1", self._decode_v1_explain, self._answer_v1)

    # --- V2 -----------------------------------------------------------------------------------

    def _answer_v2(
        self,
        scorer: FraudScorer,
        scores: Scores,
        request_id: str,
        client_id: str | None,
        parameters: ScoreParameters,
    ) -> dict[str, Any]:
        n = len(scores)

        def output(name: str, datatype: str, data: Any) -> dict[str, Any]:
            return {"name": name, "shape": [n], "datatype": datatype, "data": data}

        outputs = [
            output("fraud_probability", "FP64", scores.probability),
            output("decision", "INT8", scores.decision),
            output("degraded", "BOOL", scores.degraded.tolist()),
            output("transaction_id", "INT64", scores.transaction_id),
        ]
        if scores.reasons is not None:
            outputs.append(output("reasons", "BYTES", [orjson.dumps(r).decode() for r in scores.reasons]))
        return {
            "model_name": self.service.settings.model_name,
            "model_version": scorer.version,
            "id": client_id or request_id,  # a V2 request without an id still gets one
            "parameters": {"request_id": request_id, "threshold": scorer.bundle.threshold},
            "outputs": outputs,
        }

    async def v2_infer(self, request: Any) -> Any:
        return await self._handle(request, "v2", self.service.decoder.decode_v2, self._answer_v2)

    async def v2_health_ready(self, request: Any) -> Any:
        """Server readiness. KServe's own route answers 200 as soon as the process is up; this one
        only once the model is loaded, verified and warmed up, and no longer once shutting down."""
        request_id = request.scope.get("fraud.request_id") or new_request_id()
        if self.service.ready:
            return _json_response(200, {"ready": True}, request_id)
        return _json_response(503, {"ready": False, "error": "the model is not ready"}, request_id)

    async def v2_load(self, request: Any) -> Any:
        """KServe's repository ``load``: reload the model now (hot reload on request)."""
        request_id = request.scope.get("fraud.request_id") or new_request_id()
        name = request.path_params.get("model_name")
        if name != self.service.settings.model_name:
            return _json_response(404, {"error": f"model {str(name)[:64]!r} does not exist"}, request_id)
        if self.service.scorer is None:
            return _json_response(503, {"error": "the model is still loading"}, request_id)
        await self.service.reload(force=True)
        if self.service.reload_failed:
            return _json_response(
                409, {"error": "reload failed; the previous model is still served", "name": name}, request_id
            )
        return _json_response(
            200, {"name": name, "load": True, "model_version": self.service.scorer.version}, request_id
        )


# ---------------------------------------------------------------------------------------- guard


_SCORING_SUFFIXES = (":predict", ":explain", "/infer")


class _BodyTooLarge(InvalidRequest):
    """A streamed body crossed the cap: an :class:`InvalidRequest`, so the route reading the body
    answers 413 (FastAPI's error middleware would answer 500 for any other exception)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds the limit of {limit} bytes", 413)


class RequestGuard:
    """Pure ASGI middleware: request id, body cap, deadline, and a 500 that leaks nothing.

    ``scoring``: a router of the scoring routes alone. A POST to a scoring path goes straight to it
    rather than through the app's middleware stack (FastAPI's and KServe's timing middleware cost
    more per request than our whole handler); any path it does not match falls through to the app.
    """

    def __init__(self, app: Any, settings: ServingSettings, scoring: Any = None) -> None:
        self.app = app
        self.scoring = scoring
        self.max_body = settings.max_body_bytes
        self.timeout_s = settings.request_timeout_s

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and 0 < len(value) <= 64 and value.isascii():
                request_id = value.decode("ascii")
        scope["fraud.request_id"] = request_id
        started = False

        async def tracked_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        async def answer(status: int, message: str) -> None:
            body = orjson.dumps({"error": message})
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id.encode()),
                        (b"connection", b"close"),
                        *_SECURITY_HEADERS,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await answer(400, "Content-Length is not a number")
                    return
                if length > self.max_body:
                    metrics.REQUESTS.labels("http", "too_large").inc()
                    log.info(
                        "request rejected", request_id=request_id, status=413, reason="body over the cap"
                    )
                    await answer(413, f"request body of {length} bytes exceeds the limit of {self.max_body}")
                    return
        received = 0

        async def capped_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _BodyTooLarge(self.max_body)
            return message

        try:
            if scope.get("method") == "POST":
                target = self.app
                if self.scoring is not None and scope["path"].endswith(_SCORING_SUFFIXES):
                    target = self.scoring
                async with asyncio.timeout(self.timeout_s):  # no extra task per request, unlike wait_for
                    await target(scope, capped_receive, tracked_send)
            else:
                await self.app(scope, receive, tracked_send)
        except _BodyTooLarge:
            metrics.REQUESTS.labels("http", "too_large").inc()
            log.info(
                "request rejected", request_id=request_id, status=413, reason="streamed body over the cap"
            )
            if not started:
                await answer(413, f"request body exceeds the limit of {self.max_body} bytes")
        except TimeoutError:
            metrics.REQUESTS.labels("http", "timeout").inc()
            log.warning("request timed out", request_id=request_id, timeout_s=self.timeout_s)
            if not started:
                await answer(504, f"the request did not complete within {self.timeout_s} s")
        except Exception as err:  # the last line of defence: log the cause, answer without it
            metrics.REQUESTS.labels("http", "error").inc()
            log.error(
                "request failed", request_id=request_id, error_type=type(err).__name__, error=str(err)[:300]
            )
            if not started:
                await answer(500, f"internal error; request id {request_id}")


# ---------------------------------------------------------------------------------- KServe wiring


def _kserve_model_class() -> type:
    import kserve

    class FraudDetectorModel(kserve.Model):
        """The thin ``kserve.Model`` adapter: KServe's readiness and metadata, and its generic
        predict path (gRPC or other clients) routed to the same service."""

        def __init__(self, name: str, service: ScoringService) -> None:
            self.service = service
            super().__init__(name)

        @property  # type: ignore[override]
        def ready(self) -> bool:
            return self.service.ready

        @ready.setter
        def ready(self, value: bool) -> None:  # kserve.Model assigns it; the service decides
            pass

        def load(self) -> bool:
            return self.service.ready

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            from kserve.errors import InvalidInput

            try:
                if isinstance(payload, dict):
                    rows = payload.get("instances")
                    if not isinstance(rows, list):
                        raise InvalidRequest("expected {'instances': [transaction objects]}")
                else:  # an InferRequest: one input per column
                    columns = {inp.name: list(inp.data) for inp in payload.inputs}
                    rows = [
                        dict(zip(columns, values, strict=True))
                        for values in zip(*columns.values(), strict=True)
                    ]
                batch = self.service.decoder.validate_rows(rows, "inputs")
                _, scores = await self.service.score(batch, ScoreParameters(), new_request_id())
            except InvalidRequest as err:
                raise InvalidInput(str(err)) from None
            return {"predictions": scores.probability.tolist()}

    return FraudDetectorModel


def build_app(service: ScoringService) -> Any:
    """KServe's app with our routes first, its own after; wrapped in :class:`RequestGuard`.

    KServe mutates one module-level FastAPI app, so this runs once per process.
    """
    from fastapi.responses import JSONResponse
    from kserve import ModelServer
    from kserve import errors as kserve_errors
    from kserve.model_server import app
    from kserve.protocol.rest.server import RESTServer
    from starlette.routing import Route, Router

    routes = ScoringRoutes(service)
    scoring_routes = [
        ("/v1/models/{model_name}:predict", routes.v1_predict),
        ("/v1/models/{model_name}:explain", routes.v1_explain),
        ("/v2/models/{model_name}/infer", routes.v2_infer),
        ("/v2/models/{model_name}/versions/{model_version}/infer", routes.v2_infer),
    ]
    for path, endpoint in [*scoring_routes, ("/v2/repository/models/{model_name}/load", routes.v2_load)]:
        app.add_route(path, endpoint, methods=["POST"], include_in_schema=False)
    app.add_route("/v2/health/ready", routes.v2_health_ready, methods=["GET"], include_in_schema=False)

    async def post_only(request: Any) -> Any:  # KServe's GET /v1/models/{model_name} would answer 404
        request_id = request.scope.get("fraud.request_id", "")
        response = _json_response(
            405, {"error": f"method {request.method} not allowed; use POST"}, request_id
        )
        response.headers["allow"] = "POST"
        return response

    for path in ("/v1/models/{model_name}:predict", "/v1/models/{model_name}:explain"):
        app.add_route(path, post_only, methods=["GET"], include_in_schema=False)

    async def server_metadata(request: Any) -> Any:  # KServe's names itself and its version (S5)
        payload = {"name": "fraud-detection", "version": __version__, "extensions": []}
        return _json_response(200, payload, request.scope.get("fraud.request_id", ""))

    async def refuse_unload(request: Any) -> Any:  # KServe's drops the model: readiness 404 for ever
        message = "unloading the model is not supported; stop the server or move its registry alias"
        return _json_response(403, {"error": message}, request.scope.get("fraud.request_id", ""))

    app.add_route("/v2", server_metadata, methods=["GET"], include_in_schema=False)
    app.add_route(
        "/v2/repository/models/{model_name}/unload", refuse_unload, methods=["POST"], include_in_schema=False
    )

    server = ModelServer(
        http_port=service.settings.port,
        enable_grpc=False,
        workers=1,
        enable_docs_url=False,
        enable_latency_logging=False,
    )
    server.register_model(_kserve_model_class()(service.settings.model_name, service))
    # KServe's app default, ORJSONResponse, is deprecated: a two-line warning (with a library path)
    # on stderr for every KServe route answered once anything has reset the warning registry
    app.router.default_response_class = JSONResponse
    RESTServer(
        "kserve.model_server:app", server.dataplane, server.model_repository_extension, http_port=0
    ).create_application()

    async def internal_error(request: Any, exc: Exception) -> Any:  # KServe's own names the exception
        request_id = request.scope.get("fraud.request_id", "")
        log.error(
            "request failed", request_id=request_id, error_type=type(exc).__name__, error=str(exc)[:300]
        )
        return JSONResponse({"error": f"internal error; request id {request_id}"}, status_code=500)

    app.add_exception_handler(Exception, internal_error)
    document = openapi_document(service.decoder, service.settings.model_name)  # at /openapi.json
    app.openapi_schema = document
    app.openapi = lambda: document  # FastAPI would rebuild its own whenever the routes change

    def rejection(status: int) -> Callable[[Any, Exception], Awaitable[Any]]:
        async def reject(request: Any, exc: Exception) -> Any:  # KServe's logs a 20-line traceback
            request_id = request.scope.get("fraud.request_id", "")
            message = str(exc)[:300]
            log.info("request rejected", request_id=request_id, status=status, reason=message)
            return _json_response(status, {"error": message}, request_id)

        return reject

    for error, status in (
        (kserve_errors.InvalidInput, 400),
        (kserve_errors.ModelNotFound, 404),
        (kserve_errors.ModelNotReady, 503),
        (kserve_errors.ServerNotReady, 503),
        (kserve_errors.ServerNotLive, 503),
        (kserve_errors.UnsupportedProtocol, 501),
        (NotImplementedError, 501),
    ):
        app.add_exception_handler(error, rejection(status))
    app.add_exception_handler(kserve_errors.InferenceError, internal_error)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # a line per request otherwise
    # the same handlers, reached without the app's middleware; anything else falls through to the app
    scoring = Router(
        [Route(path, endpoint, methods=["POST"]) for path, endpoint in scoring_routes], default=app
    )
    return RequestGuard(app, service.settings, scoring)


# ----------------------------------------------------------------------------------------- run


def run_server(service: ScoringService) -> int:
    """Serve until SIGTERM/SIGINT; the exit code (0, or 1 when the model could not be loaded)."""
    import uvicorn

    # A short GIL switch interval: the event loop and the scoring thread hand over often, and the
    # default 5 ms would be added to single-row latency.
    sys.setswitchinterval(0.0005)
    guarded = build_app(service)
    settings = service.settings

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            service.shutting_down = True  # readiness answers 503 from now on
            super().handle_exit(sig, frame)
            # uvicorn re-raises a caught signal once it has shut down, which ends the process as
            # killed by SIGTERM (status -15) before the clean-up below and `return 0`: it has done
            # its job here.
            getattr(self, "_captured_signals", []).clear()

        async def serve(self, sockets: Any = None) -> None:
            async def load() -> None:
                try:
                    await service.start()
                except FraudDetectionError as err:
                    service.load_failed = True
                    log.error("model refused at start-up; stopping", **service.refusal(err))
                    self.should_exit = True
                    return
                # what start-up loaded (libraries, model, mirror) stays: keep it out of every
                # later collection, which would otherwise walk it (a pause in some requests)
                gc.collect()
                gc.freeze()
                await service.poll_reloads()

            loader = asyncio.create_task(load())
            try:
                await super().serve(sockets)
            finally:
                loader.cancel()
                service.shutting_down = True
                await asyncio.get_running_loop().run_in_executor(None, service.close)

    config = uvicorn.Config(
        guarded,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.grace_period_s),
        limit_concurrency=settings.max_concurrency,
        server_header=False,
        http=_header_deadline_protocol(settings.header_timeout_s),
    )
    server = Server(config)
    # uvicorn keeps a task per request from its headers on: the count the service asks before it
    # scores a request on the event loop
    tasks = server.server_state.tasks
    service.requests_in_flight = tasks.__len__
    server.run()
    return 1 if service.load_failed else 0


def _header_deadline_protocol(timeout_s: float) -> type:
    """uvicorn's httptools protocol with a deadline on each request's headers.

    uvicorn arms no timer while headers arrive (its keep-alive timer runs only between requests
    and stops at the first byte), so a client sending a byte a second holds its connection, and a
    ``limit_concurrency`` slot, for ever. Here the connection is closed when a request's headers
    are not complete ``timeout_s`` after the connection opened or the previous response ended.
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                log.info("connection closed: request headers incomplete", timeout_s=timeout_s)
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # the next request's headers are already in
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadlineProtocol


def make_service(
    model_uri: str,
    settings: ServingSettings,
    *,
    contract: Any,
    store: Any = None,
    public_key: Path | None = None,
    expected_digest: str | None = None,
    events_dir: Path | None = None,
    shadow_model_uri: str | None = None,
) -> ScoringService:
    """The service for ``model_uri`` (``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a bundle
    folder); the model itself is loaded by :meth:`ScoringService.start`. ``expected_digest`` pins
    the bundle: any other one is refused at start-up and at every reload. ``shadow_model_uri``
    (default ``settings.shadow_model``): a model scored in shadow mode (:class:`ShadowModel`)."""
    from fraud_detection.models.registry import ModelRef, alias_version, resolve_model

    def loader(
        uri: str, digest: str | None
    ) -> tuple[Callable[[], FraudScorer], Callable[[], str | None] | None]:
        ref = ModelRef.parse(uri)

        def load() -> FraudScorer:
            model = resolve_model(uri, public_key=public_key, expected_digest=digest)
            if settings.compiled_trees:
                compiled = model.bundle.prepare_compiled_trees()
                log.info("trees scored by", model_uri=uri, scorer="compiled trees" if compiled else "xgboost")
            scorer = FraudScorer(
                model, store
            )  # the store carries its online deadline (FRAUD_ONLINE_TIMEOUT_S)
            warm_up(scorer)
            return scorer

        name, alias = ref.name, ref.alias
        if name is None or alias is None:
            return load, None
        return load, lambda: alias_version(name, alias)

    load_scorer, current_version = loader(model_uri, expected_digest)
    sink = None
    if events_dir is not None:
        sink = PredictionSink(
            events_dir,
            max_batches=settings.events_queue,
            roll_seconds=settings.events_roll_s,
            roll_rows=settings.events_roll_rows,
        )
    shadow = None
    shadow_model_uri = shadow_model_uri or settings.shadow_model
    if shadow_model_uri is not None:
        load_shadow, shadow_version = loader(shadow_model_uri, None)
        shadow = ShadowModel(load_shadow, shadow_version, settings.shadow_max_pending, sink)
    return ScoringService(
        settings=settings,
        decoder=RequestDecoder(contract, settings.limits()),
        load_scorer=load_scorer,
        current_version=current_version,
        model_uri=model_uri,
        sink=sink,
        shadow_model=shadow,
    )


def warm_up(scorer: FraudScorer) -> None:
    """One inference through the whole path (store read included) before the model is declared ready."""
    if scorer.store is not None:
        scorer.store.prepare_online()
    when = np.datetime64(scorer.bundle.training_window.end, "us").astype(np.int64)
    batch = TransactionBatch(
        transaction_id=np.array([0], dtype=np.int64),
        customer_id=np.array([0], dtype=np.int64),
        terminal_id=np.array([0], dtype=np.int64),
        amount=np.array([1.0]),
        event_us=np.array([when], dtype=np.int64),
        extra={},
    )
    scores = scorer.score(batch)
    if not 0.0 <= float(scores.probability[0]) <= 1.0:
        raise FraudDetectionError(f"warm-up inference gave {scores.probability[0]!r}, not a probability")
