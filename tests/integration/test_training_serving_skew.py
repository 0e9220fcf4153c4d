"""No training/serving skew: the online vector of a transaction equals its offline training row.

A held-out period (the last 8 of 40 simulated days, a few thousand transactions) is replayed in time
order against a store materialised up to the period's start:

1. the training rows come from ``store.historical_features`` (which must equal ``build_features``);
2. serving follows the freshness path: the transaction's three entity rows (customer, terminal,
   customer-terminal, as ``build_features`` computes them) are pushed with
   ``store.push_transaction_rows``, then ``store.online_features`` reads the vector through
   ``fraud_v1``;
3. online and offline must agree to 1e-9 with the same column order, and nothing may be degraded.

**Batching, and why it is exact.** One push and one read per transaction would take minutes (each
SQLite write commits to disk), so transactions are replayed in batches: a batch's rows are pushed,
then the batch is read with one ``get_online_features`` call. That equals one-by-one replay if, at
read time, every entity of every queried transaction has that transaction's own row (or an
identical one) as its latest online row. The online store is keyed by entity, so only each
entity's own sequence matters, not the global order. Each transaction, in time order, goes to
the lowest batch after every batch holding an earlier-instant transaction of its customer or of
its terminal (the pair is a customer plus a terminal, so pairs follow). Hence:

* within a batch, an entity appears at one instant only, and rows of simultaneous transactions of
  one entity are identical by construction (``engineering``'s tie rule): whichever the push
  keeps is the transaction's own row;
* an entity's earlier-instant rows sit in earlier batches (overwritten by now) and its later
  ones in later batches (not pushed yet).

The first transactions are also replayed one by one through ``online_features`` itself, the exact
serving call.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_detection.features import store
from tests.integration.test_feature_store import (
    FEATURE_CONFIG,
    TOLERANCE,
    FeatureData,
    entity_rows,
    max_abs_diff,
    open_applied,
    request_of,
    simulate_features,
    write_entity_tables,
)

pytestmark = pytest.mark.integration

HELD_OUT_DAYS = 8
ONE_BY_ONE = 30


def replay_batches(period: pd.DataFrame) -> list[np.ndarray]:
    """Positions of ``period`` (in time order) per batch, by the rule in the module docstring."""
    next_batch: dict[tuple[str, int], int] = {}  # an entity's first batch for a later instant
    last: dict[tuple[str, int], tuple[np.datetime64, int]] = {}  # its last instant and batch
    batch_of = np.empty(len(period), dtype=np.int64)
    columns = ("event_timestamp", "customer_id", "terminal_id")
    for i, (timestamp, customer, terminal) in enumerate(
        zip(*(period[c].to_numpy() for c in columns), strict=True)
    ):
        keys = (("customer", int(customer)), ("terminal", int(terminal)))
        batch = 0
        for key in keys:
            if key in last and last[key][0] == timestamp:  # simultaneous: identical rows
                batch = max(batch, last[key][1])
            else:
                batch = max(batch, next_batch.get(key, 0))
        for key in keys:
            last[key] = (timestamp, batch)
            next_batch[key] = batch + 1
        batch_of[i] = batch
    return [np.flatnonzero(batch_of == b) for b in range(batch_of.max() + 1)] if len(period) else []


@pytest.fixture(scope="module")
def data() -> FeatureData:
    return simulate_features()


def test_online_vectors_equal_offline_training_rows(data: FeatureData, tmp_path_factory) -> None:
    names = FEATURE_CONFIG.feature_names
    feature_dir = write_entity_tables(data.features, tmp_path_factory.mktemp("features"))
    handle = open_applied(feature_dir, tmp_path_factory.mktemp("store"))
    tx = data.transactions.sort_values(["event_timestamp", "transaction_id"], kind="stable")
    held_out_start = tx["event_timestamp"].max().normalize() - pd.Timedelta(days=HELD_OUT_DAYS - 1)
    period = tx[tx["event_timestamp"] >= held_out_start]
    assert 2_000 <= len(period) <= 5_000
    store.materialize(handle, tx["event_timestamp"].min() - pd.Timedelta(days=1), held_out_start)

    # Offline: the training rows, which are the batch build's rows.
    training = store.historical_features(handle, entity_rows(period))
    assert list(training.columns) == ["transaction_id", *names]
    expected = data.rows(period["transaction_id"])
    assert max_abs_diff(training[names], expected[names]) <= TOLERANCE

    # Online: replay the held-out period, pushing each transaction's rows before reading it.
    feature_rows = data.features.set_index("transaction_id").loc[period["transaction_id"]].reset_index()
    online = np.empty((len(period), len(names)))
    for position in range(ONE_BY_ONE):
        store.push_transaction_rows(handle, feature_rows.iloc[[position]])
        vector = store.online_features(handle, request_of(period.iloc[position]), timeout_s=5.0)
        assert vector.names == tuple(names)
        assert not vector.degraded, vector.reasons
        online[position] = vector.values
    batches = replay_batches(period.iloc[ONE_BY_ONE:])
    for batch in batches:
        positions = batch + ONE_BY_ONE
        store.push_transaction_rows(handle, feature_rows.iloc[positions])
        requests = [request_of(period.iloc[p]) for p in positions]
        vectors = store.online_features_many(handle, requests, timeout_s=30.0)
        assert not any(v.degraded for v in vectors), [v.reasons for v in vectors if v.degraded][:3]
        online[positions] = [v.values for v in vectors]
    handle.close()

    diff = np.abs(online - training[names].to_numpy(dtype=np.float64))
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() <= TOLERANCE, (
        f"max abs diff {diff.max()} at transaction {training['transaction_id'].iloc[worst[0]]}, "
        f"feature {names[worst[1]]}"
    )
    assert len(batches) < len(period) / 10  # batching did batch
