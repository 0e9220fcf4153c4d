"""The online store on the real Redis at 127.0.0.1:6379, through the production profile.

``deployments/feast/prod/feature_store.yaml`` is used as is, its ``${VAR}``s pointing at the local
Redis and at a SQL registry (SQLite file) under ``tmp_path``. Each test gets its own Feast project
(Redis keys carry the project), and tears it down: no key is left behind (checked).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.features import store
from tests.conftest import REPO_ROOT, require_service
from tests.integration.test_feature_store import (
    FEATURE_CONFIG,
    TOLERANCE,
    FeatureData,
    latest_for_all_entities,
    max_abs_diff,
    request_of,
    simulate_features,
    write_entity_tables,
)

pytestmark = pytest.mark.integration

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PROD_PROFILE = REPO_ROOT / "deployments" / "feast" / "prod" / "feature_store.yaml"


def redis_client():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=0.5, socket_timeout=2)


def redis_available() -> bool:
    import redis

    try:
        return bool(redis_client().ping())
    except redis.RedisError:
        return False


def keys_of(project: str) -> list[bytes]:
    """Feast's Redis keys end with the project name."""
    return list(redis_client().scan_iter(match=f"*{project}".encode(), count=1000))


@pytest.fixture(scope="module")
def data() -> FeatureData:
    return simulate_features(n_customers=100, n_terminals=200, n_days=30)


@pytest.fixture
def redis_store(
    data: FeatureData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[store.FeatureStoreHandle]:
    if not redis_available():
        require_service(False, f"redis at {REDIS_HOST}:{REDIS_PORT} unavailable")
    project = f"fraud_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FRAUD_FEAST_REGISTRY_URL", f"sqlite:///{tmp_path / 'registry.db'}")
    monkeypatch.setenv("FRAUD_REDIS_HOST_PORT", f"{REDIS_HOST}:{REDIS_PORT}")
    settings = store.FeatureStoreSettings(
        feature_store_dir=tmp_path, feast_config=PROD_PROFILE, feast_project=project
    )
    feature_dir = write_entity_tables(data.features, tmp_path / "features")
    handle = store.open_store(settings, feature_dir, FEATURE_CONFIG)
    assert handle.feast.config.online_store.type == "redis"
    try:
        store.apply(handle)
        yield handle
    finally:
        handle.feast.teardown()
        handle.close()
        assert keys_of(project) == [], f"keys of {project} left in Redis"


def test_materialised_rows_read_back_from_redis(
    redis_store: store.FeatureStoreHandle, data: FeatureData
) -> None:
    tx = data.transactions
    store.materialize(
        redis_store, tx["event_timestamp"].min(), tx["event_timestamp"].max() + pd.Timedelta(seconds=1)
    )
    assert keys_of(redis_store.feast.project)

    latest = latest_for_all_entities(tx).tail(20)
    vectors = store.online_features_many(
        redis_store, [request_of(r) for _, r in latest.iterrows()], timeout_s=2.0
    )

    assert not any(v.degraded for v in vectors)
    expected = data.rows(latest["transaction_id"])[FEATURE_CONFIG.feature_names]
    assert max_abs_diff([v.values for v in vectors], expected) <= TOLERANCE
    unknown = store.TransactionRequest(10**9, 10**9, 5.0, dt.datetime(2018, 5, 1, 12))
    got = store.online_features(redis_store, unknown, timeout_s=2.0)
    assert got.degraded
    assert got.as_dict() == store.default_features(FEATURE_CONFIG, 5.0, unknown.timestamp)


def test_pushed_rows_are_served_and_older_pushes_do_not_win(
    redis_store: store.FeatureStoreHandle, data: FeatureData
) -> None:
    tx = data.transactions
    row = tx.iloc[-1]
    customer_rows = data.features[data.features["customer_id"] == row["customer_id"]]

    store.push_transaction_rows(redis_store, customer_rows.tail(1))  # the latest row first
    store.push_transaction_rows(redis_store, customer_rows.iloc[[-2]])  # then an older one

    got = store.online_features(redis_store, request_of(row), timeout_s=2.0)
    assert not got.degraded, got.reasons
    assert max_abs_diff(got.values, data.rows([row["transaction_id"]]).iloc[0, 1:]) <= TOLERANCE
