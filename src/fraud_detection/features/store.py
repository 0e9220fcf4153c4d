"""The Feast feature store: the only module that talks to Feast (imported lazily, inside functions).

One feature service, ``fraud_v1`` (``features/repo/definitions.py``), feeds both paths:

* **training**: :func:`historical_features` — a point-in-time join for entity rows keyed by
  ``transaction_id``; every row comes back, in the caller's order, with exactly
  ``FeatureConfig.feature_names`` (Feast's file offline store silently drops rows and reorders;
  this function detects, raises or fills, and restores the order);
* **scoring**: :func:`online_features` — one transaction through the same service, under a
  deadline, with documented defaults (:func:`default_features`) and a ``degraded`` flag instead of
  an exception when an entity is unknown or stale, or the store is slow or unreachable.

Configuration (:class:`FeatureStoreSettings`, read once at the entry point): the Feast profile
``FRAUD_FEAST_CONFIG`` (a ``feature_store.yaml``: ``deployments/feast/prod/feature_store.yaml`` for
Redis; unset = the packaged embedded default, ``features/repo/feature_store.yaml``: SQLite online
store, DuckDB offline store over the parquet tables, file registry) and ``FRAUD_FEATURE_STORE_DIR`` (default
``data/feature_store``), against which the profile's relative registry and SQLite paths resolve,
whatever the working directory. Batch sources name the absolute path of the feature folder the
store is opened on (what ``fraud features build --out DIR`` wrote): Feast's DuckDB offline store
reads them relative to the working directory otherwise.

Freshness: how features reach the online store, and how stale they can be
--------------------------------------------------------------------------
Each stored row is an entity's state as of one of its transactions, that transaction included.

1. **Scheduled materialisation.** ``fraud features build`` then ``fraud features materialize
   --incremental --end NOW`` on a schedule (e.g. hourly) copies each entity's latest row from the
   offline tables into the online store. A backfill (``fraud features materialize --start S --end
   E``) must run once first: Feast's incremental run on a never-materialised view starts at
   ``now - ttl`` and, on historical data, silently writes nothing (:func:`materialize_incremental`
   refuses, or backfills when given a start). Staleness with this path alone: up to the schedule
   interval plus the build time. Between runs the online store serves the state as of each
   entity's last *materialised* transaction.
2. **Push per scored transaction** (optional): :func:`push_transaction_rows` writes the three
   entity rows of transactions straight to the online store (``write_to_online_store``), visible
   immediately. Push in time order: the SQLite store keeps the last write, the Redis store the
   newest event time. The rows must be the transaction's feature rows (computed by
   ``engineering.build_features`` over the entity's history); with them pushed before
   retrieval, online vectors equal the training rows exactly (``tests/integration/
   test_training_serving_skew.py``).
3. **TTL** (90 days on the customer and terminal views, ``definitions.TTL``; none on the
   customer-terminal view, whose first-use flag looks at the whole history): Feast does not
   apply it online, so :func:`online_features` does: a row older than the TTL at the request's
   time is treated as unknown (defaults, ``degraded``), the same rule the offline store applies
   (where it drops the row, which :func:`historical_features` reports). Expected staleness is
   therefore the materialisation interval (or ~0 with the push path), never more than the TTL.

Fallbacks of :func:`online_features` (never an exception for these): an unknown or stale customer
or terminal, a timeout (``timeout_s``, the Feast call runs in a worker thread with a deadline), an
unreachable store, or every worker still busy with earlier timed-out calls: the affected features
take :func:`default_features` and the result says ``degraded=True`` with the reasons. An unknown
customer-terminal pair is not a degradation: it is the definition of a first use.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import logging
import os
import queue
import sqlite3
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_detection.errors import ConfigError, FeatureStoreError
from fraud_detection.features import engineering
from fraud_detection.features.engineering import FeatureConfig
from fraud_detection.features.sqlite_online import SqliteOnlineReader, ViewTable, proto_float

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, RepoConfig

    from fraud_detection.features.repo.definitions import FeatureDefinitions

logger = logging.getLogger(__name__)

#: Columns :func:`historical_features` needs in its entity rows.
ENTITY_ROW_COLUMNS = ("transaction_id", "customer_id", "terminal_id", "event_timestamp", "amount")
_MANIFEST_FILE = "manifest.json"


class FeatureStoreSettings(BaseSettings):
    """Where the feature store lives; every field can be set as ``FRAUD_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", frozen=True)

    feature_store_dir: Path = Path("data/feature_store")
    """Registry and SQLite online store of the embedded profile (relative profile paths resolve here)."""
    feast_config: Path | None = None
    """A Feast ``feature_store.yaml`` profile; unset: the packaged embedded default."""
    feast_project: str | None = None
    """Overrides the profile's project (isolates Redis keys per environment or test)."""
    online_timeout_s: float = Field(default=0.05, gt=0)
    """Deadline of one online retrieval before it falls back to defaults."""
    online_max_in_flight: int = Field(default=4, ge=1)
    """Worker threads for online calls; when all are stuck in timed-out calls, calls degrade at once."""
    online_mirror: bool = True
    """Embedded SQLite store: serve online reads from an in-memory mirror while nothing was written
    since it was loaded (``features/sqlite_online.py``); off: every read is an SQL query."""


@dataclass(frozen=True)
class TransactionRequest:
    """The transaction to score. A naive ``timestamp`` is UTC."""

    customer_id: int
    terminal_id: int
    amount: float
    timestamp: dt.datetime


@dataclass(frozen=True)
class OnlineFeatures:
    """One feature vector in the model's order, and whether (and why) defaults stand in for data."""

    names: tuple[str, ...]
    values: tuple[float, ...]
    degraded: bool
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.values, strict=True))


class _DeadlinePool:
    """A few daemon worker threads for calls the caller stops waiting for.

    ``ThreadPoolExecutor`` joins its threads at interpreter exit, so one call stuck in a dead store
    (redis-py retries a refused connection for seconds) would delay every exit; daemon threads
    do not.
    """

    def __init__(self, n_workers: int) -> None:
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._n_workers = n_workers
        self._closed = False
        for i in range(n_workers):
            threading.Thread(target=self._work, name=f"feast-online-{i}", daemon=True).start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            call, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as err:  # handed to the waiting caller, who decides
                future.set_exception(err)

    def submit(self, call: Callable[[], Any]) -> Future[Any]:
        if self._closed:
            raise FeatureStoreError("the feature store handle is closed")
        future: Future[Any] = Future()
        self._tasks.put((call, future))
        return future

    def shutdown(self) -> None:
        self._closed = True
        for _ in range(self._n_workers):
            self._tasks.put(None)


@dataclass
class FeatureStoreHandle:
    """An open Feast store plus what this package needs beside it. Close it (or use ``with``)."""

    feast: FeatureStore
    definitions: FeatureDefinitions
    feature_dir: Path
    max_in_flight: int = 4
    online_timeout_s: float = 0.05
    """The online read deadline the settings give (per 100 transactions, for the scorer)."""
    _service: FeatureService | None = field(default=None, repr=False)
    _pool: _DeadlinePool | None = field(default=None, repr=False)
    _slots: threading.BoundedSemaphore | None = field(default=None, repr=False)
    online_mirror: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _sqlite_reader: SqliteOnlineReader | None = field(default=None, repr=False)
    _online_plan: OnlinePlan | None = field(default=None, repr=False)

    @property
    def config(self) -> FeatureConfig:
        return self.definitions.config

    def close(self) -> None:
        """Stop the online worker threads (a call still stuck in the store finishes on its own)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
            if self._sqlite_reader is not None:
                self._sqlite_reader.close()

    def __enter__(self) -> FeatureStoreHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_view(
        self, view_name: str, join_keys: list[str], columns: list[np.ndarray], features: list[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """One batched online read of a view for unique entity keys (``columns``: one id array per
        join key): (values [n, n_features], NaN rows for unknown entities; event time in epoch
        seconds [n], NaN when unknown).

        The embedded SQLite store is read with one SQL query and the values decoded vectorised
        (:class:`~fraud_detection.features.sqlite_online.SqliteOnlineReader`); any other store
        through Feast's provider (``online_read``: one Redis pipeline, ...), which decodes each
        value in Python.
        """
        reader = self.sqlite_reader()
        if reader is not None:
            return reader.read(view_name, columns)
        keys = _entity_keys(join_keys, columns)
        rows = self.feast._get_provider().online_read(  # Feast's own read, without the response building
            config=self.feast.config,
            table=self.definitions.views[view_name],
            entity_keys=keys,
            requested_features=list(features),  # a copy: the Redis store appends its timestamp key
        )
        values = np.full((len(rows), len(features)), np.nan)
        seen = np.full(len(rows), np.nan)
        for i, (ts, row) in enumerate(rows):
            if row is None or ts is None:
                continue
            vector = [proto_float(row[name]) if name in row else None for name in features]
            if any(v is None for v in vector):
                continue
            values[i] = vector
            seen[i] = _utc(ts).timestamp()
        return values, seen

    def online_plan(self) -> OnlinePlan:
        if self._online_plan is None:
            self._online_plan = OnlinePlan.of(self)
        return self._online_plan

    def sqlite_reader(self) -> SqliteOnlineReader | None:
        """The fast reader of the embedded SQLite online store; None for any other store."""
        if self._sqlite_reader is None:
            path = _sqlite_path(self.feast.config)
            if path is None:
                return None
            from feast.infra.online_stores.helpers import compute_table_id

            join_key_of = {e.name: e.join_key for e in (self.definitions.customer, self.definitions.terminal)}
            views = {
                name: ViewTable(
                    table=compute_table_id(self.feast.project, self.definitions.views[name], False),
                    join_keys=tuple(join_key_of[e] for e in self.definitions.views[name].entities),
                    features=tuple(features),
                )
                for name, features in self.definitions.view_features().items()
                if name in self.definitions.views
            }
            with self._lock:
                if self._sqlite_reader is None:
                    self._sqlite_reader = SqliteOnlineReader(path, views, mirror=self.online_mirror)
        return self._sqlite_reader

    def mirrored_views(self) -> dict[str, Any] | None:
        """The in-memory mirror of the online store when it is current (embedded SQLite store), else None."""
        reader = self.sqlite_reader()
        return None if reader is None else reader.mirrored()

    def prepare_online(self) -> None:
        """Load the online mirror now (at start-up, before readiness) rather than on the first reads;
        a model reload finds it current and reads nothing."""
        reader = self.sqlite_reader()
        if reader is not None:
            reader.ensure_mirror()

    def _workers(self) -> tuple[_DeadlinePool, threading.BoundedSemaphore]:
        with self._lock:
            if self._pool is None or self._slots is None:
                self._pool = _DeadlinePool(self.max_in_flight)
                self._slots = threading.BoundedSemaphore(self.max_in_flight)
            return self._pool, self._slots


# --------------------------------------------------------------------------------------- opening


def _store_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the store failed" (as opposed to a bug): wrapped or fallen back on."""
    import pyarrow as pa
    from feast.errors import FeastError

    errors: list[type[BaseException]] = [FeastError, OSError, sqlite3.Error, pa.ArrowException]
    try:
        from redis.exceptions import RedisError
    except ImportError:  # the redis extra is optional
        pass
    else:
        errors.append(RedisError)
    return tuple(errors)


def _profile_text(settings: FeatureStoreSettings) -> tuple[str, str]:
    if settings.feast_config is None:
        resource = importlib.resources.files("fraud_detection.features.repo") / "feature_store.yaml"
        return resource.read_text(encoding="utf-8"), "embedded default profile"
    try:
        return settings.feast_config.read_text(encoding="utf-8"), str(settings.feast_config)
    except OSError as err:
        raise ConfigError(
            f"Feast profile FRAUD_FEAST_CONFIG={str(settings.feast_config)!r} cannot be read: {err}"
        ) from err


def _local_path(base: Path, path: str) -> str:
    """``path`` resolved against ``base`` unless it is absolute or a URL (s3://, postgresql://...)."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str((base / path).resolve())


def load_repo_config(settings: FeatureStoreSettings, feature_dir: Path) -> RepoConfig:
    """The Feast ``RepoConfig`` of the selected profile, with every local path made explicit.

    Feast itself resolves relative paths against the repo directory; here the registry and a
    SQLite online store resolve against ``settings.feature_store_dir`` and batch sources against
    ``feature_dir``, so the working directory never matters. ``${VAR}`` in the profile expands
    from the environment, as in ``feast -f``.
    """
    import yaml
    from feast import RepoConfig

    text, origin = _profile_text(settings)
    try:
        raw = yaml.safe_load(os.path.expandvars(text))
    except yaml.YAMLError as err:
        raise ConfigError(f"Feast profile {origin} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"Feast profile {origin} must hold a mapping, got {type(raw).__name__}")
    store_dir = Path(settings.feature_store_dir)
    registry = raw.get("registry", "registry.db")
    registry = {"path": registry} if isinstance(registry, str) else dict(registry)
    if registry.get("registry_type", "file") == "file" and "path" in registry:
        registry["path"] = _local_path(store_dir, str(registry["path"]))
    raw["registry"] = registry
    online = raw.get("online_store")
    if isinstance(online, dict) and online.get("type", "sqlite") == "sqlite" and "path" in online:
        raw["online_store"] = {**online, "path": _local_path(store_dir, str(online["path"]))}
    if settings.feast_project:
        raw["project"] = settings.feast_project
    try:
        return RepoConfig(**raw, repo_path=Path(feature_dir).resolve())
    except ValidationError as err:
        from fraud_detection.config import format_validation_error

        raise ConfigError(f"Feast profile {origin} is invalid: {format_validation_error(err)}") from err


def _check_manifest(feature_dir: Path, config: FeatureConfig) -> None:
    """The tables must have been built with ``config`` (when ``fraud features build`` left a manifest)."""
    manifest_path = feature_dir / _MANIFEST_FILE
    if not manifest_path.exists():
        return
    try:
        built = json.loads(manifest_path.read_text(encoding="utf-8")).get("feature_config")
    except (OSError, json.JSONDecodeError) as err:
        raise FeatureStoreError(f"feature manifest {str(manifest_path)!r} cannot be read: {err}") from err
    expected = config.model_dump(mode="json")
    if built is not None and built != expected:
        raise FeatureStoreError(
            f"feature tables in {str(feature_dir)!r} were built with feature config {built}, "
            f"expected {expected}; rebuild them or open the store with the config they were built with"
        )


def open_store(
    settings: FeatureStoreSettings, feature_dir: Path, config: FeatureConfig
) -> FeatureStoreHandle:
    """A Feast store over the feature tables in ``feature_dir`` (``fraud features build --out``).

    Creates ``settings.feature_store_dir`` when the profile keeps files there. Nothing is
    registered yet: call :func:`apply` once per definition change.
    """
    from feast import FeatureStore

    from fraud_detection.features.repo.definitions import build_definitions

    feature_dir = Path(feature_dir)
    _check_manifest(feature_dir, config)
    repo_config = load_repo_config(settings, feature_dir)
    local_paths = [Path(p) for p in (_registry_path(repo_config), _sqlite_path(repo_config)) if p]
    for path in local_paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    definitions = build_definitions(config, str(feature_dir.resolve()))
    _check_service_order(definitions.view_features(), config, "definitions")
    return FeatureStoreHandle(
        feast=FeatureStore(config=repo_config),
        definitions=definitions,
        feature_dir=feature_dir,
        max_in_flight=settings.online_max_in_flight,
        online_timeout_s=settings.online_timeout_s,
        online_mirror=settings.online_mirror,
    )


def _registry_path(repo_config: RepoConfig) -> str | None:
    registry = repo_config.registry
    if getattr(registry, "registry_type", "file") != "file":
        return None
    path = str(registry.path)
    return None if "://" in path else path


def _sqlite_path(repo_config: RepoConfig) -> str | None:
    online = repo_config.online_store
    return str(online.path) if getattr(online, "type", None) == "sqlite" else None


def _check_service_order(view_features: Mapping[str, list[str]], config: FeatureConfig, where: str) -> None:
    served = [name for names in view_features.values() for name in names]
    if served != config.feature_names:
        raise FeatureStoreError(
            f"feature service in the {where} serves {served}, expected the model's features "
            f"{config.feature_names} in this order; re-run `fraud features apply` with this feature config"
        )


def _service(handle: FeatureStoreHandle) -> FeatureService:
    """The registered ``fraud_v1``, checked once against the model's feature order."""
    if handle._service is None:
        from feast.errors import FeatureServiceNotFoundException

        from fraud_detection.features.repo.definitions import FEATURE_SERVICE_NAME

        try:
            service = handle.feast.get_feature_service(FEATURE_SERVICE_NAME)
        except FeatureServiceNotFoundException as err:
            raise FeatureStoreError(
                f"feature service {FEATURE_SERVICE_NAME!r} is not registered in project "
                f"{handle.feast.project!r}; run `fraud features apply` first"
            ) from err
        view_features = {p.name: [f.name for f in p.features] for p in service.feature_view_projections}
        _check_service_order(view_features, handle.config, "registry")
        handle._service = service
    return handle._service


# -------------------------------------------------------------------------------- apply / materialize


def _check_tables(handle: FeatureStoreHandle) -> None:
    """Every batch source exists and carries its columns; naive timestamps are slow, so say so."""
    import pyarrow.parquet as pq

    from fraud_detection.features.repo.definitions import TIMESTAMP_FIELD

    for view in handle.definitions.views.values():
        path = handle.feature_dir / view.batch_source.path
        try:
            schema = pq.read_schema(path)
        except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid (a ValueError) for non-parquet
            raise FeatureStoreError(
                f"feature table {str(path)!r} of view {view.name!r} cannot be read ({err}); "
                "run `fraud features build --out` into this folder first"
            ) from err
        needed = [TIMESTAMP_FIELD, *view.join_keys, *(f.name for f in view.features)]
        missing = [name for name in needed if name not in schema.names]
        if missing:
            raise FeatureStoreError(
                f"feature table {str(path)!r} of view {view.name!r} lacks columns {missing}; "
                "it was built with another feature config"
            )
        if getattr(schema.field(TIMESTAMP_FIELD).type, "tz", None) is None:
            logger.warning(
                "feature table %s has a timezone-naive %s: Feast's file offline store then converts "
                "it row by row in Python (~100x slower retrieval); write it as UTC",
                path,
                TIMESTAMP_FIELD,
            )


def apply(handle: FeatureStoreHandle) -> None:
    """Register (or update) the entities, views, on-demand view and ``fraud_v1`` in the registry."""
    from feast import Project

    _check_tables(handle)
    objects = [Project(name=handle.feast.project), *handle.definitions.objects()]
    with warnings.catch_warnings():
        # Feast warns on every apply that on-demand views are "experimental" (they are a stable API).
        warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
        try:
            handle.feast.apply(objects)
        except _store_errors() as err:
            raise FeatureStoreError(
                f"feast apply failed for project {handle.feast.project!r}: {err}"
            ) from err
    handle._service = None
    _service(handle)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _view_names(handle: FeatureStoreHandle) -> list[str]:
    return list(handle.definitions.views)


def materialize(
    handle: FeatureStoreHandle, start: dt.datetime, end: dt.datetime, *, views: Sequence[str] | None = None
) -> None:
    """Copy each entity's latest row with event time in ``[start, end]`` to the online store."""
    start, end = _utc(start), _utc(end)
    if start >= end:
        raise FeatureStoreError(f"materialize needs start < end, got start={start} end={end}")
    _service(handle)
    names = list(views) if views is not None else _view_names(handle)
    try:
        handle.feast.materialize(start_date=start, end_date=end, feature_views=names)
    except _store_errors() as err:
        raise FeatureStoreError(f"materialize {names} from {start} to {end} failed: {err}") from err


def materialized_until(handle: FeatureStoreHandle) -> dict[str, dt.datetime | None]:
    """Each batch view's latest materialised end (None: never materialised)."""
    _service(handle)
    ends: dict[str, dt.datetime | None] = {}
    for name in _view_names(handle):
        intervals = handle.feast.get_feature_view(name).materialization_intervals
        ends[name] = max((_utc(end) for _, end in intervals), default=None)
    return ends


def materialize_incremental(
    handle: FeatureStoreHandle, end: dt.datetime, *, backfill_start: dt.datetime | None = None
) -> list[str]:
    """Materialise each view from where it last stopped up to ``end``; returns the views backfilled.

    Feast's own incremental run on a never-materialised view starts at ``now - ttl`` and, on
    historical data, writes nothing without a word. Here such a view is refused with a
    :class:`FeatureStoreError`, or backfilled from ``backfill_start`` when it is given. Views
    already materialised up to ``end`` or later are left alone.
    """
    end = _utc(end)
    ends = materialized_until(handle)
    never = [name for name, until in ends.items() if until is None]
    if never and backfill_start is None:
        raise FeatureStoreError(
            f"feature views {never} were never materialised: an incremental run would start at "
            "now - ttl and, on historical data, write nothing. Backfill first with "
            "`fraud features materialize --start START --end END` (or give --start with --incremental)"
        )
    if never:
        assert backfill_start is not None
        materialize(handle, backfill_start, end, views=never)
    behind = [name for name, until in ends.items() if until is not None and until < end]
    if behind:
        try:
            handle.feast.materialize_incremental(end_date=end, feature_views=behind)
        except _store_errors() as err:
            raise FeatureStoreError(f"incremental materialize {behind} up to {end} failed: {err}") from err
    return never


# ------------------------------------------------------------------------------------- defaults


def default_columns(config: FeatureConfig, amount: np.ndarray, event_us: np.ndarray) -> dict[str, np.ndarray]:
    """The features of transactions whose customer, terminal and pair the store does not know (or
    cannot be asked about), one float64 column per feature in ``config.feature_names`` order.

    They are the exact features of a transaction with no history, so a truly new card or terminal
    is scored correctly:

    * request features (``amount``, ``tx_during_weekend``, ``tx_during_night``) are computed from
      the request itself (``event_us``: naive UTC microseconds since the epoch), by the batch
      build's own functions; never defaulted;
    * customer: ``customer_nb_tx_{n}d`` = 1 and ``customer_avg_amount_{n}d`` = ``amount`` (the
      windows include the transaction itself), ``customer_seconds_since_prev_tx`` = -1 (no
      earlier transaction), ``customer_prior_avg_amount_{h}d`` = 0, hence
      ``customer_amount_ratio_{h}d`` = ``engineering.amount_ratio(amount, 0)`` = 1.0 (neutral);
      ``customer_nb_outlier_amounts_{n}d`` = 0, ``customer_max_amount_zscore_{n}d`` = 0;
    * terminal: ``terminal_nb_tx_{n}d`` = 0 and ``terminal_risk_{n}d`` = 0 (no delayed history),
      ``terminal_last_known_fraud`` = 0, ``terminal_days_since_known_fraud`` = -1 and
      ``terminal_known_fraud_streak_days`` = -1, ``terminal_known_fraud_streak_count`` = 0 and
      ``terminal_known_fraud_streak_amount_ratio`` = -1 (no known label);
    * pair: ``customer_terminal_first_use`` = 1.
    """
    matrix = DefaultFeatures(config).matrix(amount, event_us)
    return {name: matrix[:, j] for j, name in enumerate(config.feature_names)}


def _default_spec(config: FeatureConfig) -> list[float | str]:
    """Per feature (``feature_names`` order): its constant default, or which request value it is
    (``amount``, ``weekend``, ``night``, ``ratio``: ``amount_ratio(amount, 0)``)."""
    spec: dict[str, float | str] = {
        "amount": "amount",
        "tx_during_weekend": "weekend",
        "tx_during_night": "night",
        config.prior_avg_amount_feature: 0.0,
        config.amount_ratio_feature: "ratio",
        "customer_seconds_since_prev_tx": -1.0,
        "customer_terminal_first_use": 1.0,
        "terminal_last_known_fraud": 0.0,
        "terminal_days_since_known_fraud": -1.0,
        "terminal_known_fraud_streak_days": -1.0,
        "terminal_known_fraud_streak_count": 0.0,
        "terminal_known_fraud_streak_amount_ratio": -1.0,
    }
    for n in config.outlier_windows_days:
        spec[f"customer_nb_outlier_amounts_{n}d"] = 0.0
        spec[f"customer_max_amount_zscore_{n}d"] = 0.0
    for n in config.windows_days:
        spec[f"customer_nb_tx_{n}d"] = 1.0
        spec[f"customer_avg_amount_{n}d"] = "amount"
        spec[f"terminal_nb_tx_{n}d"] = 0.0
        spec[f"terminal_risk_{n}d"] = 0.0
    missing = set(config.feature_names) - set(spec)
    if missing:  # a new feature was added to FeatureConfig without a documented default
        raise FeatureStoreError(f"no default value for features {sorted(missing)}")
    return [spec[name] for name in config.feature_names]


class DefaultFeatures:
    """:func:`default_columns` as a float64 matrix, planned once per feature config (the online
    path builds one per request)."""

    def __init__(self, config: FeatureConfig) -> None:
        spec = _default_spec(config)
        self.template = np.array([v if isinstance(v, float) else 0.0 for v in spec])
        self._columns = {
            kind: np.array([j for j, v in enumerate(spec) if v == kind], dtype=np.intp)
            for kind in _REQUEST_KINDS
        }

    def matrix(self, amount: np.ndarray, event_us: np.ndarray) -> np.ndarray:
        amount = np.asarray(amount, dtype=np.float64)
        weekend, night = engineering.time_flags_from_epoch_us(event_us)
        matrix = np.empty((len(amount), len(self.template)))
        matrix[:] = self.template
        request = {
            "amount": amount,
            "weekend": weekend,
            "night": night,
            "ratio": engineering.amount_ratio(amount, np.zeros_like(amount)),
        }
        for kind, columns in self._columns.items():
            if len(columns):
                matrix[:, columns] = request[kind][:, None]
        return matrix


_REQUEST_KINDS = ("amount", "weekend", "night", "ratio")


def epoch_us(timestamp: dt.datetime) -> int:
    """Microseconds since the epoch of ``timestamp`` in UTC (a naive one is UTC)."""
    return (_utc(timestamp) - _EPOCH) // dt.timedelta(microseconds=1)


def default_features(config: FeatureConfig, amount: float, timestamp: dt.datetime) -> dict[str, float]:
    """:func:`default_columns` for one transaction."""
    columns = default_columns(config, np.array([amount]), np.array([epoch_us(timestamp)]))
    return {name: float(column[0]) for name, column in columns.items()}


def _default_frame(config: FeatureConfig, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`default_columns` for entity rows (``amount``, ``event_timestamp``), as typed features."""
    event = pd.to_datetime(entity_rows["event_timestamp"], utc=True).dt.tz_localize(None)
    columns = default_columns(
        config,
        entity_rows["amount"].to_numpy(dtype=np.float64),
        event.to_numpy().astype("datetime64[us]").view(np.int64),
    )
    frame = pd.DataFrame(columns, index=entity_rows.index)
    integer = [name for name in ("customer_terminal_first_use", "terminal_last_known_fraud") if name in frame]
    frame[integer] = frame[integer].astype(np.int64)
    return frame


# ------------------------------------------------------------------------------------- historical


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    from fraud_detection.features.repo.definitions import INTEGER_FEATURES

    return frame.astype(
        {name: np.int64 if name in INTEGER_FEATURES else np.float64 for name in frame.columns}
    )


def historical_features(
    handle: FeatureStoreHandle,
    entity_rows: pd.DataFrame,
    *,
    missing: Literal["raise", "default"] = "raise",
    chunk_rows: int = 100_000,
) -> pd.DataFrame:
    """Point-in-time training rows through ``fraud_v1``: ``transaction_id`` + the model's features.

    ``entity_rows`` needs ``transaction_id`` (unique), ``customer_id``, ``terminal_id``,
    ``event_timestamp`` (naive = UTC) and ``amount`` (the request data). The result has one row per
    entity row, in the same order, with columns ``transaction_id`` then
    ``FeatureConfig.feature_names``.

    Feast's file offline store drops an entity row when an entity has rows in the source but none
    within ``[t - ttl, t]`` (before its first row, or older than the TTL), and returns NaN for an
    entity absent from the source. Either is a missing view. ``missing="raise"`` (the default, for
    training sets built from the feature tables, where it cannot happen) raises
    :class:`FeatureStoreError` naming how many rows and which ids; ``missing="default"`` fills the
    missing views with :func:`default_features`, as the online path does.

    Feast is asked ``chunk_rows`` entity rows at a time (in time order): its file store's memory
    grows with entity rows times each entity's history (about 13 GB for 100k rows over the
    1.76M-transaction handbook-size tables).
    """
    from fraud_detection.features.repo.definitions import (
        CUSTOMER_VIEW,
        REQUEST_AMOUNT,
        REQUEST_TIMESTAMP,
        REQUEST_VIEW,
        TTL,
    )

    if chunk_rows < 1:
        raise FeatureStoreError(f"chunk_rows must be >= 1, got {chunk_rows}")
    absent = [c for c in ENTITY_ROW_COLUMNS if c not in entity_rows.columns]
    if absent:
        raise FeatureStoreError(f"entity rows lack columns {absent}; expected {list(ENTITY_ROW_COLUMNS)}")
    rows = entity_rows.reset_index(drop=True)
    ids = rows["transaction_id"]
    if ids.duplicated().any():
        raise FeatureStoreError(
            f"entity rows repeat transaction_id {ids[ids.duplicated()].unique()[:10].tolist()}; "
            "the row id must be unique"
        )
    nulls = [c for c in ENTITY_ROW_COLUMNS if rows[c].isna().any()]
    if nulls:
        raise FeatureStoreError(f"entity rows have nulls in columns {nulls}")
    config = handle.config
    service = _service(handle)
    timestamps = pd.to_datetime(rows["event_timestamp"], utc=True)
    entity_df = pd.DataFrame(
        {
            "transaction_id": ids,
            "customer_id": rows["customer_id"].astype(np.int64),
            "terminal_id": rows["terminal_id"].astype(np.int64),
            "event_timestamp": timestamps,
            REQUEST_AMOUNT: rows["amount"].astype(np.float64),
            REQUEST_TIMESTAMP: timestamps,
        }
    )
    if entity_df.empty:
        empty = _typed(pd.DataFrame({name: pd.Series(dtype=np.float64) for name in config.feature_names}))
        empty.insert(0, "transaction_id", ids)
        return empty
    # Feast's file store joins each entity row with all of its entity's source rows before it
    # filters them: memory grows with rows x history, so large frames go in time-ordered chunks.
    order = np.argsort(timestamps.to_numpy(), kind="stable")
    parts = []
    for start in range(0, len(entity_df), chunk_rows):
        chunk = entity_df.iloc[order[start : start + chunk_rows]]
        try:
            parts.append(handle.feast.get_historical_features(entity_df=chunk, features=service).to_df())
        except _store_errors() as err:
            raise FeatureStoreError(
                f"historical retrieval of entity rows {start}..{start + len(chunk) - 1} (by time) failed: {err}"
            ) from err
    joined = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    # Simultaneous rows of one entity hold identical values, so a repeated id is a copy.
    joined = joined.drop_duplicates("transaction_id").set_index("transaction_id")
    aligned = joined.reindex(ids.to_numpy())[config.feature_names].reset_index(drop=True)
    dropped = ~ids.isin(joined.index).to_numpy()
    views = handle.definitions.view_features()
    missing_by_view = {
        name: dropped | aligned[views[name]].isna().any(axis=1).to_numpy()
        for name in handle.definitions.views
    }
    any_missing = np.logical_or.reduce(list(missing_by_view.values()))
    if any_missing.any():
        summary = f"{int(dropped.sum())} dropped by the offline store; " + ", ".join(
            f"{name} missing in {int(mask.sum())}" for name, mask in missing_by_view.items()
        )
        bad_ids = ids[any_missing].tolist()
        if missing == "raise":
            raise FeatureStoreError(
                f"Feast returned no features for {int(any_missing.sum())} of {len(ids)} entity rows "
                f"({summary}): transaction_id {bad_ids[:20]}{' ...' if len(bad_ids) > 20 else ''}. "
                f"An entity row earlier than its entity's first feature row, or more than the TTL ({TTL}) "
                "after its latest one, has none; pass missing='default' to use the documented defaults"
            )
        logger.warning(
            "filled defaults for %d of %d entity rows (%s)", int(any_missing.sum()), len(ids), summary
        )
        defaults = _default_frame(config, rows)
        for name, mask in missing_by_view.items():
            aligned.loc[mask, views[name]] = defaults.loc[mask, views[name]]
        # The on-demand view did not run for dropped rows, and its ratio used a missing prior average.
        recompute = missing_by_view[CUSTOMER_VIEW]
        aligned.loc[recompute, views[REQUEST_VIEW]] = defaults.loc[recompute, views[REQUEST_VIEW]]
    out = _typed(aligned)
    out.insert(0, "transaction_id", ids)
    return out


# ----------------------------------------------------------------------------------------- online


@dataclass(frozen=True)
class OnlineBatch:
    """Feature rows of a batch of transactions, columns in ``FeatureConfig.feature_names`` order."""

    names: tuple[str, ...]
    values: np.ndarray
    """float64, one row per transaction."""
    degraded: np.ndarray
    """bool per transaction: defaults stand in for data of a known-to-exist kind."""
    reasons: tuple[tuple[str, ...], ...]
    failure: str | None = None
    """Why the store read failed as a whole (timeout, unreachable, busy); None when it answered."""


def _entity_keys(join_keys: Sequence[str], columns: Sequence[np.ndarray]) -> list[Any]:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [
        EntityKey(join_keys=list(join_keys), entity_values=[Value(int64_val=int(v)) for v in values])
        for values in zip(*columns, strict=True)
    ]


def _read_views(
    handle: FeatureStoreHandle, keys: dict[str, tuple[list[str], list[np.ndarray]]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:meth:`FeatureStoreHandle.read_view` of every batch view of the service."""
    return {
        view_name: handle.read_view(view_name, *keys[view_name], features)
        for view_name, features in handle.definitions.view_features().items()
        if view_name in handle.definitions.views  # not the on-demand view: computed from the request
    }


def _call_with_deadline(
    handle: FeatureStoreHandle, call: Callable[[], Any], timeout_s: float
) -> tuple[Any, str | None]:
    """``call()`` (an online store read) in a worker thread; (result, None) or (None, why it failed)."""
    pool, slots = handle._workers()
    if not slots.acquire(blocking=False):
        return None, f"online store busy: {handle.max_in_flight} earlier calls still running"
    try:
        future = pool.submit(call)
    except FeatureStoreError:
        slots.release()
        raise
    future.add_done_callback(lambda _: slots.release())
    try:
        return future.result(timeout=timeout_s), None
    except FutureTimeout:
        return None, f"online store timed out after {timeout_s}s"
    except _store_errors() as err:
        return None, f"online store unreachable: {type(err).__name__}: {err}"


@overload
def online_feature_batch(
    handle: FeatureStoreHandle,
    customer_id: np.ndarray,
    terminal_id: np.ndarray,
    amount: np.ndarray,
    event_us: np.ndarray,
    *,
    timeout_s: float,
    memory_only: Literal[False] = False,
) -> OnlineBatch: ...


@overload
def online_feature_batch(
    handle: FeatureStoreHandle,
    customer_id: np.ndarray,
    terminal_id: np.ndarray,
    amount: np.ndarray,
    event_us: np.ndarray,
    *,
    timeout_s: float,
    memory_only: bool,
) -> OnlineBatch | None: ...


def online_feature_batch(
    handle: FeatureStoreHandle,
    customer_id: np.ndarray,
    terminal_id: np.ndarray,
    amount: np.ndarray,
    event_us: np.ndarray,
    *,
    timeout_s: float,
    memory_only: bool = False,
) -> OnlineBatch | None:
    """The model's features for a batch of transactions, from one read per view (one deadline for all).

    The service's batch views are read through Feast's provider (``online_read``, the store's own
    batched read: SQLite or Redis) for the batch's unique entities; the request features are
    computed here by the functions the batch build and the service's on-demand view use
    (``engineering.time_flags_from_epoch_us``, ``engineering.amount_ratio``), so there is one
    definition of each feature. ``event_us``: the transactions' times, naive UTC microseconds.

    Never raises for an unknown or stale entity, a timeout or an unreachable store: those features
    take :func:`default_columns` and the rows are ``degraded`` with the reasons. An unknown
    customer-terminal pair is not a degradation: it is the definition of a first use.

    ``memory_only``: None instead of a store read, where the in-memory mirror is not current (a
    caller that must not wait on I/O, such as the server's event loop).
    """
    if timeout_s <= 0:
        raise FeatureStoreError(f"timeout_s must be > 0, got {timeout_s}")
    plan = handle.online_plan()
    amount = np.asarray(amount, dtype=np.float64)
    event_us = np.asarray(event_us, dtype=np.int64)
    n = len(amount)
    values = plan.defaults.matrix(amount, event_us)
    if n == 0:
        return OnlineBatch(plan.names, values, np.zeros(0, dtype=bool), ())
    reasons: list[list[str]] = [[] for _ in range(n)]
    entity_columns = {plan.customer_key: customer_id, plan.terminal_key: terminal_id}
    inverse: dict[str, np.ndarray | None] = {}
    mirror = handle.mirrored_views()
    if mirror is not None:  # in memory and current: every row looked up, no I/O, no deadline needed
        read: dict[str, tuple[np.ndarray, np.ndarray]] | None = {}
        for view in plan.views:
            read[view.name] = mirror[view.name].lookup([entity_columns[k] for k in view.join_keys])
            inverse[view.name] = None  # one looked-up row per transaction
        failure = None
    elif memory_only:
        return None
    else:  # one store read per view, for the batch's unique keys
        keys = {}
        for view in plan.views:
            stacked = np.column_stack([np.asarray(entity_columns[k], np.int64) for k in view.join_keys])
            if n == 1:  # the common online case; np.unique(axis=0) costs ~0.1 ms
                unique, inverse[view.name] = stacked, np.zeros(1, dtype=np.int64)
            else:
                unique, inverse[view.name] = np.unique(stacked, axis=0, return_inverse=True)
            keys[view.name] = (list(view.join_keys), [unique[:, j] for j in range(len(view.join_keys))])
        read, failure = _call_with_deadline(handle, lambda: _read_views(handle, keys), timeout_s)
    if failure is not None:
        logger.warning("online features degraded for %d transaction(s): %s", n, failure)
        return OnlineBatch(
            plan.names, values, np.ones(n, dtype=bool), tuple((failure,) for _ in range(n)), failure
        )

    request_s = event_us / 1e6
    assert read is not None
    for view in plan.views:
        view_values, seen = read[view.name]
        rows = inverse[view.name]
        if rows is not None:
            rows = rows.reshape(-1)
            view_values, seen = view_values[rows], seen[rows]
        known = ~np.isnan(seen)
        if not known.all() and view.unknown_degrades:  # an unknown pair is a first use, not a degradation
            for i in np.flatnonzero(~known):
                reasons[i].append(f"{view.name}: unknown entity")
        if view.ttl is not None:
            age_s = request_s - seen
            stale = known & (age_s > view.ttl.total_seconds())
            if stale.any():
                for i in np.flatnonzero(stale):
                    age = dt.timedelta(seconds=round(float(age_s[i])))
                    reasons[i].append(f"{view.name}: latest row {age} old, beyond the {view.ttl} TTL")
                known &= ~stale
        if known.all():
            values[:, view.columns] = view_values
        else:
            values[np.ix_(np.flatnonzero(known), view.columns)] = view_values[known]
        if view.name == plan.customer_view:  # the ratio needs the customer's prior average
            values[known, plan.ratio_column] = engineering.amount_ratio(
                amount[known], values[known, plan.prior_column]
            )
    degraded = np.fromiter(map(bool, reasons), dtype=bool, count=n)
    return OnlineBatch(plan.names, values, degraded, tuple(map(tuple, reasons)))


@dataclass(frozen=True)
class _ViewPlan:
    name: str
    join_keys: tuple[str, ...]
    columns: np.ndarray
    """The view's features' positions in the model's feature order."""
    ttl: dt.timedelta | None
    unknown_degrades: bool


@dataclass(frozen=True)
class OnlinePlan:
    """What :func:`online_feature_batch` derives from the store's definitions, once per handle."""

    names: tuple[str, ...]
    defaults: DefaultFeatures
    views: tuple[_ViewPlan, ...]
    customer_key: str
    terminal_key: str
    customer_view: str
    prior_column: int
    ratio_column: int

    @classmethod
    def of(cls, handle: FeatureStoreHandle) -> OnlinePlan:
        from fraud_detection.features.repo.definitions import (
            CUSTOMER_KEY,
            CUSTOMER_VIEW,
            PAIR_VIEW,
            TERMINAL_KEY,
        )

        config = handle.config
        names = tuple(config.feature_names)
        column_of = {name: j for j, name in enumerate(names)}
        join_key_of = {e.name: e.join_key for e in (handle.definitions.customer, handle.definitions.terminal)}
        features = handle.definitions.view_features()
        views = tuple(
            _ViewPlan(
                name=name,
                join_keys=tuple(join_key_of[entity] for entity in view.entities),
                columns=np.array([column_of[f] for f in features[name]]),
                ttl=view.ttl or None,
                unknown_degrades=name != PAIR_VIEW,
            )
            for name, view in handle.definitions.views.items()
        )
        return cls(
            names=names,
            defaults=DefaultFeatures(config),
            views=views,
            customer_key=CUSTOMER_KEY,
            terminal_key=TERMINAL_KEY,
            customer_view=CUSTOMER_VIEW,
            prior_column=column_of[config.prior_avg_amount_feature],
            ratio_column=column_of[config.amount_ratio_feature],
        )


def online_features_many(
    handle: FeatureStoreHandle, requests: Sequence[TransactionRequest], *, timeout_s: float
) -> list[OnlineFeatures]:
    """:func:`online_features` for many transactions in one store call (one deadline for all)."""
    batch = online_feature_batch(
        handle,
        np.array([r.customer_id for r in requests], dtype=np.int64),
        np.array([r.terminal_id for r in requests], dtype=np.int64),
        np.array([r.amount for r in requests], dtype=np.float64),
        np.array([epoch_us(r.timestamp) for r in requests], dtype=np.int64),
        timeout_s=timeout_s,
    )
    return [
        OnlineFeatures(batch.names, tuple(float(v) for v in row), bool(degraded), reasons)
        for row, degraded, reasons in zip(batch.values, batch.degraded, batch.reasons, strict=True)
    ]


def online_features(
    handle: FeatureStoreHandle, request: TransactionRequest, *, timeout_s: float
) -> OnlineFeatures:
    """The model's feature vector for one transaction, through ``fraud_v1``, within ``timeout_s``.

    Never raises for an unknown or stale entity, a timeout or an unreachable store: those
    features take :func:`default_features` and the result is ``degraded`` with the reasons.
    """
    return online_features_many(handle, [request], timeout_s=timeout_s)[0]


def push_transaction_rows(handle: FeatureStoreHandle, rows: pd.DataFrame) -> int:
    """Write transactions' entity rows to the online store now (the freshness path); returns rows written.

    ``rows`` are feature rows as ``engineering.build_features`` returns them (keys plus at least the
    customer, terminal and pair features). Per view, only each entity's latest row of the batch
    is written (the stores disagree on older writes: SQLite keeps the last one, Redis the newest).
    """
    from fraud_detection.features.repo.definitions import TIMESTAMP_FIELD, VIEW_TABLES

    _service(handle)
    tables = engineering.split_feature_tables(rows, handle.config)
    written = 0
    for view_name, table_name in VIEW_TABLES.items():
        view = handle.definitions.views[view_name]
        table = tables[table_name].drop(columns="transaction_id")
        table = table.sort_values(TIMESTAMP_FIELD, kind="stable").drop_duplicates(view.join_keys, keep="last")
        if table.empty:
            continue
        try:
            handle.feast.write_to_online_store(view_name, table)
        except _store_errors() as err:
            raise FeatureStoreError(f"push of {len(table)} rows to {view_name!r} failed: {err}") from err
        written += len(table)
    return written
