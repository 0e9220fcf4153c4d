"""A vectorised point-in-time join over the offline feature tables, with Feast's semantics.

Batch scoring needs the features of every transaction of a day as the offline store held them at
the transaction's time. Feast's ``get_historical_features`` gives them (``store.historical_features``)
but takes seconds per 100k rows; this module gives the same rows with one ``merge_asof`` per view
over the tables ``fraud features build`` wrote (read directly, each file checked against the
folder's manifest first). Feast is not imported.

Semantics (Feast's DuckDB/ibis offline store, ``point_in_time_join``; parity tested against
``store.historical_features(missing="default")``):

* per batch view, the entity's latest row with ``row_time <= t`` and, for a view with a TTL,
  ``row_time + ttl >= t`` (both bounds inclusive); rows at the same time hold the same values
  (``engineering``'s tie rule), so which one wins does not matter;
* a view with no such row takes ``store.default_columns`` for its features (the online path's
  defaults); the request features (``amount``, weekend and night flags, the amount ratio) are
  computed from the transaction by ``engineering``'s functions, the ratio from the customer view's
  prior average (1.0 when the customer view is missing).

When the tables were built from data that includes the scored transaction, its own row is the one
found, and the features equal ``engineering.build_features``' row for it (tested).

The view layout (names, tables, join keys, TTLs, integer features) repeats
``features/repo/definitions.py`` so this module need not import Feast (~4 s); a test keeps the
two equal.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fraud_detection.errors import DataIntegrityError, DataSourceError, FeatureStoreError
from fraud_detection.features import engineering
from fraud_detection.features.build import MANIFEST_FILE, table_file
from fraud_detection.features.engineering import FeatureConfig
from fraud_detection.features.store import default_columns
from fraud_detection.utils.io import sha256_bytes

TIMESTAMP_FIELD = "event_timestamp"
TRANSACTION_ID = "transaction_id"
#: Columns the entity rows need.
ENTITY_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "event_timestamp", "amount")
#: Features held as 0/1 integers (``definitions.INTEGER_FEATURES``).
INTEGER_FEATURES = frozenset(
    {"tx_during_weekend", "tx_during_night", "customer_terminal_first_use", "terminal_last_known_fraud"}
)


@dataclass(frozen=True)
class ViewSpec:
    """One batch view of ``fraud_v1``: its table, join keys, TTL (None: none) and features."""

    name: str
    table: str
    join_keys: tuple[str, ...]
    ttl: dt.timedelta | None
    features: Callable[[FeatureConfig], list[str]]


CUSTOMER_VIEW = ViewSpec(
    "customer_windows", "customer", ("customer_id",), dt.timedelta(days=90), lambda c: c.customer_features
)
TERMINAL_VIEW = ViewSpec(
    "terminal_windows", "terminal", ("terminal_id",), dt.timedelta(days=90), lambda c: c.terminal_features
)
PAIR_VIEW = ViewSpec(
    "customer_terminal_usage",
    "customer_terminal",
    ("customer_id", "terminal_id"),
    None,
    lambda c: c.pair_features,
)
VIEWS = (CUSTOMER_VIEW, TERMINAL_VIEW, PAIR_VIEW)


@dataclass(frozen=True)
class FeatureTablesManifest:
    """The feature folder's manifest: its bytes' SHA-256 (what a run pins) and content."""

    features_dir: Path
    sha256: str
    content: dict

    def file_entry(self, name: str) -> dict:
        entry = self.content.get("files", {}).get(name)
        if not isinstance(entry, dict) or "sha256" not in entry:
            raise FeatureStoreError(
                f"feature manifest {str(self.features_dir / MANIFEST_FILE)!r} does not list {name!r}; "
                "rebuild the folder with `fraud features build`"
            )
        return entry


def read_tables_manifest(features_dir: Path) -> FeatureTablesManifest:
    """The manifest ``fraud features build`` wrote last into ``features_dir``."""
    path = Path(features_dir) / MANIFEST_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:  # not transient: no retry cures it
        raise DataSourceError(
            f"feature folder {str(features_dir)!r} has no {MANIFEST_FILE}: run `fraud features build --out` first"
        ) from err
    except OSError as err:  # transient or permanent: the caller's retry policy decides
        raise FeatureStoreError(f"cannot read {str(path)!r}: {err.strerror or err}") from err
    try:
        content = json.loads(data)
    except json.JSONDecodeError as err:
        raise DataIntegrityError(f"feature manifest {str(path)!r} is not JSON: {err}") from err
    return FeatureTablesManifest(Path(features_dir), sha256_bytes(data), content)


@dataclass(frozen=True)
class OfflineTables:
    """The batch views' rows, as ``{view name: Arrow table}`` of join keys, ``event_us`` and features."""

    manifest: FeatureTablesManifest
    config: FeatureConfig
    tables: dict[str, pa.Table]


def _read_view_table(manifest: FeatureTablesManifest, view: ViewSpec, config: FeatureConfig) -> pa.Table:
    """The view's whole table, checked against the manifest: join keys, ``event_us`` and features."""
    name = table_file(view.table)
    path = manifest.features_dir / name
    expected = manifest.file_entry(name)["sha256"]
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FeatureStoreError(f"cannot read feature table {str(path)!r}: {err.strerror or err}") from err
    digest = sha256_bytes(data)
    if digest != expected:
        raise DataIntegrityError(
            f"feature table {str(path)!r} has sha256 {digest}, its manifest records {expected}: "
            "it was changed after it was built"
        )
    features = view.features(config)
    source = pq.ParquetFile(pa.BufferReader(data))
    lineage = [TRANSACTION_ID] if TRANSACTION_ID in source.schema_arrow.names else []
    try:
        table = source.read(columns=[*lineage, *view.join_keys, TIMESTAMP_FIELD, *features])
    except (pa.ArrowInvalid, KeyError) as err:
        raise FeatureStoreError(
            f"feature table {str(path)!r} lacks the columns of view {view.name!r} "
            f"({[*view.join_keys, TIMESTAMP_FIELD, *features]}): {err}"
        ) from err
    timestamps = table.column(TIMESTAMP_FIELD)
    if pa.types.is_timestamp(timestamps.type) and timestamps.type.tz is not None:
        timestamps = pc.cast(timestamps, pa.timestamp("us", tz="UTC"))
    else:  # naive: UTC
        timestamps = pc.cast(timestamps, pa.timestamp("us"))
    event_us = pc.cast(timestamps, pa.int64())
    return table.drop_columns([TIMESTAMP_FIELD]).append_column("event_us", event_us)


def _matchable_rows(
    view: ViewSpec, table: pa.Table, keys: dict[str, pa.Array] | None, window_us: tuple[int, int] | None
) -> pa.Table:
    """The rows of ``table`` that queries of these entities (``keys``: each join key's distinct
    values) within this time window can match."""
    event_us = table.column("event_us")
    mask = None
    if window_us is not None:  # rows after the last query, or beyond the TTL of the first, never match
        low, high = window_us
        mask = pc.less_equal(event_us, pa.scalar(high, pa.int64()))
        if view.ttl is not None:
            ttl_us = view.ttl // dt.timedelta(microseconds=1)
            mask = pc.and_(mask, pc.greater_equal(event_us, pa.scalar(low - ttl_us, pa.int64())))
    if keys is not None:
        for key in view.join_keys:
            member = pc.is_in(table.column(key), value_set=keys[key])
            mask = member if mask is None else pc.and_(mask, member)
    if mask is None or pc.all(mask).as_py():  # filtering copies every column: only when it drops rows
        return table
    return table.filter(mask)


_ReadTables = tuple[FeatureTablesManifest, dict[str, pa.Table]]


def _read_tables(
    features_dir: Path, config: FeatureConfig, expected_manifest_sha256: str | None
) -> _ReadTables:
    """The manifest (checked first) and every view's whole table. Hashing and parquet decoding
    release the GIL: the three tables are read side by side."""
    manifest = read_tables_manifest(features_dir)
    if expected_manifest_sha256 is not None and manifest.sha256 != expected_manifest_sha256:
        raise DataIntegrityError(
            f"feature folder {str(features_dir)!r} has manifest sha256 {manifest.sha256}, the run pinned "
            f"{expected_manifest_sha256}: it was rebuilt during the run"
        )
    built = manifest.content.get("feature_config")
    if built is not None and FeatureConfig.model_validate(built) != config:
        raise FeatureStoreError(
            f"feature folder {str(features_dir)!r} was built with feature config {built}, the model "
            f"expects {config.model_dump(mode='json')}"
        )
    with ThreadPoolExecutor(max_workers=len(VIEWS)) as pool:
        read = [pool.submit(_read_view_table, manifest, view, config) for view in VIEWS]
        return manifest, {view.name: future.result() for view, future in zip(VIEWS, read, strict=True)}


def read_ahead(
    features_dir: Path, config: FeatureConfig, *, expected_manifest_sha256: str | None = None
) -> Future[_ReadTables]:
    """Start reading ``features_dir``'s tables on a background thread, for
    :func:`load_offline_tables` (``read_ahead=``) to use later: a batch run reads them while it
    validates its partition. Errors are raised where the result is used."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-tables")
    try:
        return executor.submit(_read_tables, features_dir, config, expected_manifest_sha256)
    finally:
        executor.shutdown(wait=False)


def load_offline_tables(
    features_dir: Path,
    config: FeatureConfig,
    *,
    expected_manifest_sha256: str | None = None,
    entity_rows: pd.DataFrame | None = None,
    read_ahead: Future[_ReadTables] | None = None,
) -> OfflineTables:
    """Read the batch views' tables from ``features_dir``, each checked against the manifest.

    ``expected_manifest_sha256`` pins the folder (a run reads the snapshot it pinned, never a
    newer one); ``entity_rows``, when given, keeps only rows that can match them (their entities,
    within their time range and the views' TTLs), which is what makes a daily run cheap.
    ``read_ahead`` (from :func:`read_ahead` with the same arguments) supplies the tables it read,
    with the same checks.
    """
    if read_ahead is not None:
        manifest, whole = read_ahead.result()
    else:
        manifest, whole = _read_tables(features_dir, config, expected_manifest_sha256)
    keys = window = None
    if entity_rows is not None and len(entity_rows):
        event_us = _event_us(entity_rows[TIMESTAMP_FIELD])
        # Arrow's hash: ~20x faster than np.unique's sort on millions of ids; the order is irrelevant
        keys = {
            k: pc.unique(pa.array(entity_rows[k].to_numpy(np.int64))) for k in ("customer_id", "terminal_id")
        }
        window = (int(event_us.min()), int(event_us.max()))
    tables = {view.name: _matchable_rows(view, whole[view.name], keys, window) for view in VIEWS}
    return OfflineTables(manifest, config, tables)


def _event_us(timestamps: pd.Series) -> np.ndarray:
    """Microseconds since the epoch (UTC) of naive-UTC or aware timestamps."""
    if getattr(timestamps.dt, "tz", None) is not None:
        timestamps = timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return timestamps.to_numpy().astype("datetime64[us]").view(np.int64)


def _entity_key(
    table_columns: list[np.ndarray], query_columns: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One int64 key per row for (possibly composite) join keys, comparable across both sides.

    One key column is used as it is; two non-negative ones are packed into one int64 when they fit
    (ids are small in practice), else factorised jointly.
    """
    if len(table_columns) == 1:
        return table_columns[0].astype(np.int64, copy=False), query_columns[0].astype(np.int64, copy=False)
    bounds = [
        (min(t.min(initial=0), q.min(initial=0)), max(t.max(initial=0), q.max(initial=0)))
        for t, q in zip(table_columns, query_columns, strict=True)
    ]
    if all(low >= 0 for low, _ in bounds) and (bounds[0][1] + 1) * (bounds[1][1] + 1) < 2**62:
        width = np.int64(bounds[1][1] + 1)
        return (
            table_columns[0].astype(np.int64) * width + table_columns[1],
            query_columns[0].astype(np.int64) * width + query_columns[1],
        )
    n_table = len(table_columns[0])
    table_key = np.zeros(n_table, dtype=np.int64)
    query_key = np.zeros(len(query_columns[0]), dtype=np.int64)
    for table_values, query_values in zip(table_columns, query_columns, strict=True):
        codes, uniques = pd.factorize(np.concatenate([table_values, query_values]))
        table_key = table_key * len(uniques) + codes[:n_table]
        query_key = query_key * len(uniques) + codes[n_table:]
    return table_key, query_key


def _own_rows(
    table: pa.Table,
    table_key: np.ndarray,
    table_us: np.ndarray,
    query_tx: np.ndarray,
    query_key: np.ndarray,
    query_us: np.ndarray,
) -> np.ndarray:
    """Per query, the index of the table row written for that very transaction (same id, entity and
    time), -1 when the table has none: the point-in-time answer whenever the tables were built from
    data that includes the transaction (its own row is the entity's latest at its time; rows at the
    same time hold the same values). A search in the table's sorted ids instead of an as-of join."""
    if TRANSACTION_ID not in table.column_names:
        return np.full(len(query_tx), -1, dtype=np.int64)
    ids = table.column(TRANSACTION_ID).to_numpy()
    order = None if (ids[1:] > ids[:-1]).all() else np.argsort(ids, kind="stable")
    sorted_ids = ids if order is None else ids[order]
    at = np.minimum(np.searchsorted(sorted_ids, query_tx), max(len(ids) - 1, 0))
    rows = at if order is None else order[at]
    own = (sorted_ids[at] == query_tx) & (table_key[rows] == query_key) & (table_us[rows] == query_us)
    return np.where(own, rows, -1)


def _latest_rows(
    view: ViewSpec, table: pa.Table, query: dict[str, np.ndarray], query_us: np.ndarray, query_tx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the index in ``table`` of the entity's latest row at or before its time (within the
    TTL), -1 when there is none; and the queries whose row is not the transaction's own."""
    n = len(query_us)
    if table.num_rows == 0 or n == 0:
        return np.full(n, -1, dtype=np.int64), np.arange(n)
    table_key, query_key = _entity_key(
        [table.column(k).to_numpy() for k in view.join_keys], [query[k] for k in view.join_keys]
    )
    table_us = table.column("event_us").to_numpy()
    rows = _own_rows(table, table_key, table_us, query_tx, query_key, query_us)
    rest = np.flatnonzero(rows < 0)  # transactions the tables were not built with: an as-of join
    if not len(rest):
        return rows, rest
    right = pd.DataFrame({"t": table_us, "k": table_key, "row": np.arange(len(table_us))})
    if not (table_us[1:] >= table_us[:-1]).all():
        right = right.iloc[np.argsort(table_us, kind="stable")]
    order = rest[np.argsort(query_us[rest], kind="stable")]
    left = pd.DataFrame({"t": query_us[order], "k": query_key[order]})
    tolerance = None if view.ttl is None else view.ttl // dt.timedelta(microseconds=1)
    matched = pd.merge_asof(
        left, right, on="t", by="k", direction="backward", allow_exact_matches=True, tolerance=tolerance
    )["row"]
    rows[order] = matched.fillna(-1).to_numpy(dtype=np.int64)
    return rows, rest


@dataclass(frozen=True)
class PointInTimeFeatures:
    """Feature values (column-major, ``config.feature_names`` order; float64 unless asked otherwise)
    and which views fell back to defaults."""

    names: tuple[str, ...]
    values: np.ndarray
    missing: dict[str, np.ndarray]
    """Per batch view: rows with no row in the view (defaults used)."""
    not_in_tables: np.ndarray
    """Rows whose transaction the tables were not built with (some view lacks its own row): their
    features are the entity's earlier rows, without the transaction's own day in the windows."""

    def frame(self, transaction_id: np.ndarray) -> pd.DataFrame:
        """``transaction_id`` + the features, typed as ``store.historical_features`` returns them."""
        frame = pd.DataFrame(self.values, columns=list(self.names))
        frame = frame.astype({n: np.int64 for n in self.names if n in INTEGER_FEATURES})
        frame.insert(0, "transaction_id", transaction_id)
        return frame


def point_in_time_features(
    tables: OfflineTables, entity_rows: pd.DataFrame, *, dtype: type[np.floating] = np.float64
) -> PointInTimeFeatures:
    """The ``fraud_v1`` features of ``entity_rows`` at their ``event_timestamp``, one row each, in order.

    ``entity_rows`` needs ``transaction_id``, ``customer_id``, ``terminal_id``, ``event_timestamp``
    (naive = UTC) and ``amount``. ``dtype=np.float32`` gives the model's input type directly (batch
    scoring: no float64 matrix to fill and convert); each value is then its float64 value rounded
    once, as the conversion would give.
    """
    absent = [c for c in ENTITY_COLUMNS if c not in entity_rows.columns]
    if absent:
        raise FeatureStoreError(f"entity rows lack columns {absent}; expected {list(ENTITY_COLUMNS)}")
    config = tables.config
    names = tuple(config.feature_names)
    column_of = {name: j for j, name in enumerate(names)}
    amount = entity_rows["amount"].to_numpy(np.float64)
    event_us = _event_us(entity_rows[TIMESTAMP_FIELD])
    n = len(amount)
    # Column-major while filling (each feature is one contiguous gather); defaults are computed
    # only for the rows a view has nothing for.
    values = np.empty((n, len(names)), dtype=dtype, order="F")
    # The customer's prior average at full precision: the amount ratio is computed from it.
    prior_name = config.prior_avg_amount_feature
    prior = np.empty(n, dtype=np.float64)
    weekend, night = engineering.time_flags_from_epoch_us(event_us)
    values[:, column_of["amount"]] = amount
    values[:, column_of["tx_during_weekend"]] = weekend
    values[:, column_of["tx_during_night"]] = night
    query = {k: entity_rows[k].to_numpy(np.int64) for k in ("customer_id", "terminal_id")}
    query_tx = entity_rows[TRANSACTION_ID].to_numpy(np.int64)
    missing = {}
    not_in_tables = np.zeros(n, dtype=bool)
    for view in VIEWS:
        table = tables.tables[view.name]
        view_names = view.features(config)
        columns = [column_of[name] for name in view_names]
        rows, not_own = _latest_rows(view, table, query, event_us, query_tx)
        not_in_tables[not_own] = True
        found = rows >= 0
        if found.any():
            # the daily run's usual case: every query is its own table row, in the table's order
            in_order = len(rows) == table.num_rows and bool((rows == np.arange(len(rows))).all())
            take = None if in_order else np.where(found, rows, 0)
            for name, j in zip(view_names, columns, strict=True):
                column = table.column(name).to_numpy(zero_copy_only=False)
                gathered = column if take is None else column[take]
                values[:, j] = gathered
                if name == prior_name:
                    prior[:] = gathered
            # A null stored feature makes the row unusable (Feast returns it; the store's historical
            # path then treats the view as missing): defaults, as for no row at all.
            for j in columns:
                found &= ~np.isnan(values[:, j])
        missing[view.name] = ~found
        fill = np.flatnonzero(~found)
        if len(fill):
            defaults = default_columns(config, amount[fill], event_us[fill])
            for name, j in zip(view_names, columns, strict=True):
                values[fill, j] = defaults[name]
                if name == prior_name:
                    prior[fill] = defaults[name]
    # The amount ratio: from the customer's prior average (0, hence 1.0, when the view is missing).
    values[:, column_of[config.amount_ratio_feature]] = engineering.amount_ratio(amount, prior)
    return PointInTimeFeatures(names, values, missing, not_in_tables)
