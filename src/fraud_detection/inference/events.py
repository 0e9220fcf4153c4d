"""The prediction event log: what the server scored, for monitoring, off the request path.

:meth:`PredictionSink.submit` appends a scored batch to a bounded buffer and returns at once (no
lock, no thread woken: a request pays a list append); a background thread collects the buffer a
few times a second, turns what it took into an Arrow table at once, and writes parquet files rolled
by time (``events-<time>-<writer>-<seq>.parquet`` in the sink folder, each written atomically: temp
file, fsync, rename; ``<writer>`` is random per sink, so replicas sharing one folder never write the
same name). When the queue is full the
batch is dropped and counted (``fraud_prediction_events_dropped_total``), never waited for.

An event: ``request_id``, ``transaction_id``, ``event_timestamp``, ``customer_id``, ``terminal_id``,
``amount``, ``score``, ``decision``, ``degraded``, ``model_version``, ``shadow`` (true: a shadow
model's score, never an answer), ``scored_at`` and the model's feature values (``f_<name>``), never
other request payload.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.inference import metrics
from fraud_detection.inference.requests import TransactionBatch
from fraud_detection.inference.scorer import Scores
from fraud_detection.utils.io import atomic_write_bytes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Item:
    request_ids: list[str]
    batch: TransactionBatch
    scores: Scores
    model_version: str
    feature_names: tuple[str, ...]
    scored_at: dt.datetime
    shadow: bool = False


class PredictionSink:
    """Bounded, asynchronous, drop-when-full writer of prediction events."""

    def __init__(
        self, out_dir: Path, *, max_batches: int = 1024, roll_seconds: float = 60.0, roll_rows: int = 100_000
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.roll_seconds = roll_seconds
        # a file also closes at this many events: it bounds the memory held and each file's
        # encoding, which runs on the server's core
        self.roll_rows = roll_rows
        self._pending_rows = 0  # events in self._tables
        self.max_batches = max_batches
        self._buffer: collections.deque[_Item] = collections.deque()
        self._stop = threading.Event()
        self._tables: list[pa.Table] = []  # the events of the file being filled, a table per poll
        self._window_start = time.monotonic()
        self._sequence = 0
        self._writer = uuid.uuid4().hex[:12]
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="prediction-sink", daemon=True)
        self._thread.start()

    def submit(
        self,
        request_ids: list[str],
        batch: TransactionBatch,
        scores: Scores,
        model_version: str,
        feature_names: tuple[str, ...],
        *,
        shadow: bool = False,
    ) -> bool:
        """Queue one scored batch; False (and counted) when the queue is full."""
        if len(self._buffer) >= self.max_batches:
            self.dropped += 1
            metrics.EVENTS_DROPPED.inc(len(batch))
            return False
        self._buffer.append(
            _Item(request_ids, batch, scores, model_version, feature_names, dt.datetime.now(dt.UTC), shadow)
        )
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop (the server calls it on shutdown)."""
        self._stop.set()
        self._thread.join(timeout)

    def _collect(self) -> None:
        """Turn what was queued since the last poll into one table at once. The writer shares the
        server's core and holds the GIL while it builds a table: building a whole file's table at
        the roll (tens of thousands of events) stalled requests for over 100 ms; a poll's worth
        takes a millisecond or two. The file is then written from these tables (off the GIL)."""
        items: list[_Item] = []
        while self._buffer:
            items.append(self._buffer.popleft())
        if not items:
            return
        n_rows = sum(len(item.batch) for item in items)
        try:
            self._tables.append(_table(items))
        except Exception:  # a bad event must not stop the log; its rows are counted as dropped
            logger.exception("prediction events could not be recorded")
            metrics.EVENTS_DROPPED.inc(n_rows)
            return
        self._pending_rows += n_rows

    def _run(self) -> None:
        poll_s = min(0.2, self.roll_seconds / 4)
        while not self._stop.wait(poll_s):
            self._collect()
            if (
                self._pending_rows >= self.roll_rows
                or time.monotonic() - self._window_start >= self.roll_seconds
            ):
                self._flush()
        self._collect()
        self._flush()

    def _flush(self) -> None:
        self._window_start = time.monotonic()
        if not self._tables:
            return
        tables, self._tables, n_rows = self._tables, [], self._pending_rows
        self._pending_rows = 0
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        self._sequence += 1
        path = self.out_dir / f"events-{stamp}-{self._writer}-{self._sequence:06d}.parquet"
        try:
            # a reload that changed the model's features changes the columns: missing ones are null
            table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
            atomic_write_bytes(path, parquet_bytes(table, dictionary=_STRING_COLUMNS))
        except Exception:  # a failed file must not stop the log (or the writer thread): counted
            logger.exception("prediction events could not be written to %s", path)
            metrics.EVENTS_DROPPED.inc(n_rows)
            return
        metrics.EVENTS_WRITTEN.inc(n_rows)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_STRING_COLUMNS = ("request_id", "model_version")  # the only repetitive columns: dictionary pages


# The per-row columns of an event, from each batch and its scores (event_timestamp in epoch µs),
# in file order after request_id: one list for both table builders.
_ROW_COLUMNS: tuple[tuple[str, Callable[[_Item], Any]], ...] = (
    ("transaction_id", lambda i: i.batch.transaction_id),
    ("event_timestamp", lambda i: i.batch.event_us),
    ("customer_id", lambda i: i.batch.customer_id),
    ("terminal_id", lambda i: i.batch.terminal_id),
    ("amount", lambda i: i.batch.amount),
    ("score", lambda i: i.scores.probability),
    ("decision", lambda i: i.scores.decision),
    ("degraded", lambda i: i.scores.degraded),
)


def _row_columns(items: list[_Item]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([np.asarray(get(item)) for item in items]) for name, get in _ROW_COLUMNS}


def _table(items: list[_Item]) -> pa.Table:
    """One table of the events of ``items``, built from the arrays themselves, no data frame
    (columns concatenated once; a value per batch, such as the model version, repeated by index):
    the writer shares the server's core, and its time is taken from requests. :func:`_frame`
    where the model's features changed within the file. Read back, the same table as
    :func:`_frame`'s (a unit test checks it)."""
    names = items[0].feature_names
    if any(item.feature_names != names for item in items):  # a reload changed the features
        return pa.Table.from_pandas(_frame(items), preserve_index=False)
    lengths = np.array([len(item.batch) for item in items], dtype=np.int64)

    def per_item(values: list[Any]) -> pa.Array:  # one value per item, repeated over its rows
        return pa.array(values).take(pa.array(np.repeat(np.arange(len(items)), lengths)))

    def timestamps(us: np.ndarray) -> pa.Array:
        return pa.array(us.astype(np.int64) * 1000, type=pa.timestamp("ns"))

    request_ids: list[str] = list(itertools.chain.from_iterable(item.request_ids for item in items))
    scored_at = [(item.scored_at - _EPOCH) // dt.timedelta(microseconds=1) for item in items]
    # one contiguous row per feature
    features = np.concatenate(
        [np.asarray(item.scores.features, dtype=np.float64).T for item in items], axis=1
    )
    rows = _row_columns(items)
    columns: dict[str, Any] = {
        "request_id": pa.array(request_ids, type=pa.string()),
        **rows,
        "event_timestamp": timestamps(rows["event_timestamp"]),
        "model_version": per_item([item.model_version for item in items]),
        "shadow": per_item([item.shadow for item in items]),
        "scored_at": timestamps(np.repeat(np.array(scored_at, dtype=np.int64), lengths)),
    }
    for j, name in enumerate(names):
        columns[f"f_{name}"] = features[j]
    return pa.table(columns)


def _frame(items: list[_Item]) -> pd.DataFrame:
    """One table of the events of ``items`` (columns concatenated once, not a frame per batch)."""
    rows = _row_columns(items)
    frame = pd.DataFrame(
        {
            "request_id": [rid for item in items for rid in item.request_ids],
            **rows,
            "event_timestamp": pd.to_datetime(rows["event_timestamp"], unit="us"),
            "model_version": [item.model_version for item in items for _ in range(len(item.batch))],
            "shadow": np.concatenate([np.full(len(item.batch), item.shadow) for item in items]),
            "scored_at": pd.to_datetime(
                [item.scored_at.replace(tzinfo=None) for item in items for _ in range(len(item.batch))]
            ),
        }
    )
    names = items[0].feature_names
    same = [item for item in items if item.feature_names == names]
    if len(same) != len(items):  # a reload changed the model's features within one file
        return pd.concat(
            [_frame(same), _frame([i for i in items if i.feature_names != names])], ignore_index=True
        )
    features = np.concatenate([np.asarray(item.scores.features, dtype=np.float64) for item in items])
    return pd.concat([frame, pd.DataFrame(features, columns=[f"f_{name}" for name in names])], axis=1)
