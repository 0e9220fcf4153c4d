"""``observe_many`` counts a batch of values exactly as ``Histogram.observe`` one by one does; a
cached child is the metric's own labelled child."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from fraud_detection.inference.metrics import child, observe_many

pytestmark = pytest.mark.unit


def samples(histogram: Histogram) -> dict[tuple[str, str], float]:
    return {
        (sample.name, sample.labels.get("le", "")): sample.value
        for metric in histogram.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


@pytest.mark.parametrize("n", [0, 3, 1000])
def test_observe_many_equals_one_observe_per_value(n: int) -> None:
    rng = np.random.default_rng(n)
    values = np.concatenate([rng.random(n), [0.01, 0.5, 0.99, 1.0, 0.0]])  # bounds themselves included
    one_by_one = Histogram("one", "x", buckets=(0.01, 0.1, 0.5, 0.99), registry=CollectorRegistry())
    batched = Histogram("one", "x", buckets=(0.01, 0.1, 0.5, 0.99), registry=CollectorRegistry())
    for value in values:
        one_by_one.observe(float(value))
    observe_many(batched, values)
    expected = samples(one_by_one)
    got = samples(batched)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_a_cached_child_counts_in_the_metric_it_came_from() -> None:
    registry = CollectorRegistry()
    requests = Counter("requests", "x", ["protocol", "outcome"], registry=registry)
    child(requests, "v1", "ok").inc()
    child(requests, "v1", "ok").inc(2)
    child(requests, "v2", "ok").inc()
    assert child(requests, "v1", "ok") is requests.labels("v1", "ok")
    assert registry.get_sample_value("requests_total", {"protocol": "v1", "outcome": "ok"}) == 3.0
    assert registry.get_sample_value("requests_total", {"protocol": "v2", "outcome": "ok"}) == 1.0
