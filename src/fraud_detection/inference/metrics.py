"""Prometheus metrics of the model server, on KServe's ``/metrics`` (which renders the global registry).

Created once per process (this module is imported once); label values are few and fixed (outcome,
decision, model version), never request data.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUEST_LATENCY = Histogram(
    "fraud_request_latency_seconds",
    "Wall time of scoring requests, from the first body byte to the answer.",
    ["protocol"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter(
    "fraud_requests",
    "Scoring requests by outcome (ok, invalid, too_large, unsupported_media_type, timeout, unavailable, error).",
    ["protocol", "outcome"],
)
PREDICTIONS = Counter("fraud_predictions", "Scored transactions by decision.", ["model_version", "decision"])
SCORES = Histogram(
    "fraud_score",
    "Fraud probabilities given.",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99),
)
DEGRADED = Counter(
    "fraud_degraded_scores", "Transactions scored with default features for data the store lacked."
)
FEATURE_FETCH_LATENCY = Histogram(
    "fraud_feature_fetch_seconds",
    "Online feature retrieval per scored batch.",
    buckets=LATENCY_BUCKETS,
)
FEATURE_FETCH_FAILURES = Counter(
    "fraud_feature_fetch_failures", "Online feature retrievals that timed out or failed (defaults used)."
)
BATCH_ROWS = Histogram(
    "fraud_batch_rows",
    "Rows per model call after micro-batching concurrent requests.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1000, 4000),
)
MODEL_CALLS = Counter(
    "fraud_model_calls",
    "Model calls by where they ran: on the event loop (a request alone in the server) or on the scoring thread.",
    ["thread"],
)
MODEL_INFO = Gauge(
    "fraud_model_info", "The model being served (value 1).", ["model_name", "model_version", "digest"]
)
MODEL_RELOADS = Counter("fraud_model_reloads", "Hot reloads by outcome.", ["outcome"])
SHADOW_INFO = Gauge("fraud_shadow_model_info", "The shadow model (value 1).", ["model_version", "digest"])
SHADOW_PREDICTIONS = Counter(
    "fraud_shadow_predictions", "Transactions scored by the shadow model.", ["model_version"]
)
SHADOW_SKIPPED = Counter(
    "fraud_shadow_skipped", "Transactions the shadow model did not score (its queue was full, or it failed)."
)
SHADOW_LATENCY = Histogram(
    "fraud_shadow_latency_seconds",
    "Shadow scoring per batch (off the request path).",
    buckets=LATENCY_BUCKETS,
)
EVENTS_DROPPED = Counter(
    "fraud_prediction_events_dropped", "Prediction events dropped because the sink was full."
)
EVENTS_WRITTEN = Counter("fraud_prediction_events_written", "Prediction events written to the event log.")


@functools.lru_cache(maxsize=256)
def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: the client's ``labels`` takes a lock and builds
    its key on every call (a few µs per request on the hot path). Only for metrics whose children
    are never removed (``MODEL_INFO``'s are)."""
    return metric.labels(*labels)


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(v)`` for every value, as one count per bucket (a 1,000-row batch: 1,000
    lock round trips otherwise). Uses the client's bucket counters; falls back to ``observe``."""
    values = np.asarray(values, dtype=np.float64)
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 8:
        for value in values.tolist():
            histogram.observe(value)
        return
    # observe() counts a value in the first bucket whose upper bound is >= it
    counts = np.bincount(
        np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left"), minlength=len(bounds)
    )
    for bucket, count in zip(buckets, counts.tolist(), strict=False):
        if count:
            bucket.inc(count)
    total.inc(float(values.sum()))
