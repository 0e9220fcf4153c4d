"""The Feast feature store on the embedded profile (SQLite online store, file offline store), in tmp_path.

Data: the simulator (200 customers, 400 terminals, 40 days, ~14k transactions), features from
``build_features`` + ``split_feature_tables``, the three entity tables written as ``fraud features
build`` names them, with UTC event times (Feast's file store converts naive ones row by row).
Registry, online store and tables all live under ``tmp_path``.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.data.simulator import SimulatorConfig, simulate
from fraud_detection.errors import ConfigError, FeatureStoreError
from fraud_detection.features import store
from fraud_detection.features.build import table_file
from fraud_detection.features.engineering import FeatureConfig, build_features, split_feature_tables
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

FEATURE_CONFIG = FeatureConfig(windows_days=[1, 7, 30], label_delay_days=7, history_days=30)
ENTITY_TABLES = ("customer", "terminal", "customer_terminal")
TOLERANCE = 1e-9


@dataclass(frozen=True)
class FeatureData:
    transactions: pd.DataFrame
    features: pd.DataFrame  # build_features output: the offline truth, indexed like transactions

    def rows(self, ids: np.ndarray | pd.Series) -> pd.DataFrame:
        """The offline rows (transaction_id + model features) of ``ids``, in that order."""
        frame = self.features.set_index("transaction_id").loc[np.asarray(ids), FEATURE_CONFIG.feature_names]
        return frame.reset_index()


def simulate_features(n_customers: int = 200, n_terminals: int = 400, n_days: int = 40) -> FeatureData:
    config = SimulatorConfig(n_customers=n_customers, n_terminals=n_terminals, n_days=n_days, seed=3)
    transactions = simulate(config).transactions
    return FeatureData(transactions, build_features(transactions, FEATURE_CONFIG))


def write_entity_tables(features: pd.DataFrame, out_dir: Path) -> Path:
    """The three Feast source tables, as ``fraud features build`` names them, with UTC event times."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = split_feature_tables(features, FEATURE_CONFIG)
    for name in ENTITY_TABLES:
        table = tables[name].assign(event_timestamp=tables[name]["event_timestamp"].dt.tz_localize("UTC"))
        (out_dir / table_file(name)).write_bytes(parquet_bytes(table))
    return out_dir


def open_applied(feature_dir: Path, store_dir: Path, **settings: object) -> store.FeatureStoreHandle:
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=store_dir, **settings), feature_dir, FEATURE_CONFIG
    )
    store.apply(handle)
    return handle


def entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    return transactions[list(store.ENTITY_ROW_COLUMNS)]


def request_of(row: pd.Series) -> store.TransactionRequest:
    return store.TransactionRequest(
        customer_id=int(row["customer_id"]),
        terminal_id=int(row["terminal_id"]),
        amount=float(row["amount"]),
        timestamp=row["event_timestamp"].to_pydatetime(),
    )


def max_abs_diff(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(expected, dtype=np.float64))))


def latest_for_all_entities(transactions: pd.DataFrame) -> pd.DataFrame:
    """Transactions that are the latest of their customer, their terminal and their pair."""
    ts = transactions["event_timestamp"]
    latest = (
        (ts == ts.groupby(transactions["customer_id"]).transform("max"))
        & (ts == ts.groupby(transactions["terminal_id"]).transform("max"))
        & (ts == ts.groupby([transactions["customer_id"], transactions["terminal_id"]]).transform("max"))
    )
    return transactions[latest]


@pytest.fixture(scope="module")
def data() -> FeatureData:
    return simulate_features()


@pytest.fixture(scope="module")
def feature_dir(data: FeatureData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_entity_tables(data.features, tmp_path_factory.mktemp("features"))


@pytest.fixture(scope="module")
def materialized(feature_dir: Path, data: FeatureData, tmp_path_factory: pytest.TempPathFactory):
    """An applied store with every row materialised (SQLite), shared by the read-only online tests."""
    handle = open_applied(feature_dir, tmp_path_factory.mktemp("store"))
    ts = data.transactions["event_timestamp"]
    store.materialize(handle, ts.min() - pd.Timedelta(days=1), ts.max() + pd.Timedelta(seconds=1))
    yield handle
    handle.close()


# --- configuration and definitions ----------------------------------------------------------------


def test_importing_store_does_not_import_feast() -> None:
    code = "import sys, fraud_detection.features.store; assert 'feast' not in sys.modules, 'feast imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_local_profile_equals_the_packaged_default() -> None:
    packaged = REPO_ROOT / "src" / "fraud_detection" / "features" / "repo" / "feature_store.yaml"
    local = REPO_ROOT / "deployments" / "feast" / "local" / "feature_store.yaml"
    assert yaml.safe_load(local.read_text()) == yaml.safe_load(packaged.read_text())


def test_profile_paths_resolve_against_the_store_dir_not_the_cwd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = store.FeatureStoreSettings(feature_store_dir=Path("somewhere/store"), feast_project="fraud_x")
    config = store.load_repo_config(settings, Path("tables"))
    assert Path(config.registry.path) == (tmp_path / "somewhere" / "store" / "registry.db")
    assert Path(config.online_store.path) == (tmp_path / "somewhere" / "store" / "online_store.db")
    assert config.repo_path == tmp_path / "tables"
    assert config.project == "fraud_x"


def test_prod_profile_is_redis_with_env_expanded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FRAUD_FEAST_REGISTRY_URL", f"sqlite:///{tmp_path}/registry.db")
    monkeypatch.setenv("FRAUD_REDIS_HOST_PORT", "redis.internal:6380")
    settings = store.FeatureStoreSettings(
        feature_store_dir=tmp_path,
        feast_config=REPO_ROOT / "deployments" / "feast" / "prod" / "feature_store.yaml",
    )
    config = store.load_repo_config(settings, tmp_path)
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string.startswith("redis.internal:6380,")
    assert config.registry.path == f"sqlite:///{tmp_path}/registry.db"


def test_bad_profile_is_a_config_error(tmp_path: Path) -> None:
    profile = tmp_path / "feature_store.yaml"
    profile.write_text("project: fraud\nonline_store: {type: sqlite, path: x.db, colour: blue}\n")
    with pytest.raises(ConfigError, match="is invalid"):
        store.load_repo_config(store.FeatureStoreSettings(feast_config=profile), tmp_path)
    with pytest.raises(ConfigError, match="cannot be read"):
        store.load_repo_config(store.FeatureStoreSettings(feast_config=tmp_path / "none.yaml"), tmp_path)


def test_service_fields_follow_the_feature_config(data: FeatureData) -> None:
    from feast.types import Float64, Int64

    from fraud_detection.features.repo.definitions import FEATURE_SERVICE_NAME, build_definitions

    definitions = build_definitions(FEATURE_CONFIG, "/features")
    assert definitions.service.name == FEATURE_SERVICE_NAME
    served = [field for p in definitions.service.feature_view_projections for field in p.features]
    assert [field.name for field in served] == FEATURE_CONFIG.feature_names
    for field in served:  # declared dtypes are the dtypes the batch build produces
        expected = Int64 if np.issubdtype(data.features[field.name].dtype, np.integer) else Float64
        assert field.dtype == expected, field.name


def test_apply_checks_the_tables(tmp_path: Path, feature_dir: Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="fraud_detection.features.store")
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=tmp_path / "store"), tmp_path / "empty", FEATURE_CONFIG
    )
    with pytest.raises(FeatureStoreError, match=r"cannot be read.*fraud features build"):
        store.apply(handle)
    naive = tmp_path / "naive"
    naive.mkdir()
    for name in ENTITY_TABLES:
        table = pd.read_parquet(feature_dir / table_file(name))
        table["event_timestamp"] = table["event_timestamp"].dt.tz_localize(None)
        table.to_parquet(naive / table_file(name))
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=tmp_path / "s2"), naive, FEATURE_CONFIG
    )
    store.apply(handle)
    assert "timezone-naive" in caplog.text


def test_open_store_rejects_tables_built_with_another_config(tmp_path: Path, feature_dir: Path) -> None:
    other = FeatureConfig(windows_days=[1, 7], label_delay_days=7, history_days=30)
    (tmp_path / "manifest.json").write_text(f'{{"feature_config": {other.model_dump_json()}}}')
    with pytest.raises(FeatureStoreError, match="were built with feature config"):
        store.open_store(store.FeatureStoreSettings(feature_store_dir=tmp_path), tmp_path, FEATURE_CONFIG)


def test_retrieval_before_apply_says_so(tmp_path: Path, feature_dir: Path, data: FeatureData) -> None:
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=tmp_path), feature_dir, FEATURE_CONFIG
    )
    with pytest.raises(FeatureStoreError, match="fraud features apply"):
        store.historical_features(handle, entity_rows(data.transactions.head(3)))


# --- historical (training) retrieval ---------------------------------------------------------------


def test_historical_rows_equal_build_features_in_caller_order(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    tx = data.transactions
    period = tx[tx["event_timestamp"] >= tx["event_timestamp"].max() - pd.Timedelta(days=10)]
    shuffled = entity_rows(period).sample(frac=1.0, random_state=0)
    shuffled.index = shuffled.index[::-1]  # any index: the row order is what counts

    got = store.historical_features(materialized, shuffled)

    assert len(got) == len(shuffled)
    assert list(got.columns) == ["transaction_id", *FEATURE_CONFIG.feature_names]
    np.testing.assert_array_equal(got["transaction_id"].to_numpy(), shuffled["transaction_id"].to_numpy())
    expected = data.rows(shuffled["transaction_id"])
    assert (
        max_abs_diff(got[FEATURE_CONFIG.feature_names], expected[FEATURE_CONFIG.feature_names]) <= TOLERANCE
    )
    assert period["event_timestamp"].duplicated().any()  # simultaneous transactions are covered


def test_entity_rows_without_feature_rows_raise_or_take_defaults(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    tx = data.transactions
    known = entity_rows(tx.tail(5)).copy()
    before_first = entity_rows(tx.head(1)).assign(
        transaction_id=-1, event_timestamp=tx["event_timestamp"].min() - pd.Timedelta(days=1)
    )  # its customer and terminal have rows, all later: Feast's file store drops this row
    unknown = entity_rows(tx.tail(1)).assign(transaction_id=-2, customer_id=10**9)  # never in the source
    rows = pd.concat([before_first, known, unknown], ignore_index=True)

    with pytest.raises(FeatureStoreError, match=r"no features for 2 of 7 entity rows.*\[-1, -2\]"):
        store.historical_features(materialized, rows)

    got = store.historical_features(materialized, rows, missing="default")
    np.testing.assert_array_equal(got["transaction_id"].to_numpy(), rows["transaction_id"].to_numpy())
    names = FEATURE_CONFIG.feature_names
    assert max_abs_diff(got[names].iloc[1:6], data.rows(known["transaction_id"])[names]) <= TOLERANCE
    for position in (0, 6):  # every feature of a new customer's first transaction
        row = rows.iloc[position]
        defaults = store.default_features(
            FEATURE_CONFIG, row["amount"], row["event_timestamp"].to_pydatetime()
        )
        customer = [*FEATURE_CONFIG.customer_features, FEATURE_CONFIG.amount_ratio_feature, "amount"]
        assert max_abs_diff(got.loc[position, customer], [defaults[n] for n in customer]) == 0
    # the unknown customer's row kept its known terminal's real values
    terminal = FEATURE_CONFIG.terminal_features
    last = data.rows(tx.tail(1)["transaction_id"])
    assert max_abs_diff(got.loc[6, terminal], last.loc[0, terminal]) <= TOLERANCE
    assert got.dtypes["customer_terminal_first_use"] == np.int64
    # Asked in chunks (in time order), the answer is the same, in the caller's order.
    pd.testing.assert_frame_equal(
        store.historical_features(materialized, rows, missing="default", chunk_rows=3), got
    )


def test_historical_rejects_repeated_ids(materialized: store.FeatureStoreHandle, data: FeatureData) -> None:
    rows = entity_rows(data.transactions.head(3))
    with pytest.raises(FeatureStoreError, match="repeat transaction_id"):
        store.historical_features(materialized, pd.concat([rows, rows.head(1)]))


# --- materialisation ---------------------------------------------------------------------------------


def test_incremental_on_a_never_materialised_view_refuses_then_backfills(
    feature_dir: Path, data: FeatureData, tmp_path: Path
) -> None:
    handle = open_applied(feature_dir, tmp_path / "store")
    tx = data.transactions
    start = tx["event_timestamp"].min().to_pydatetime()
    middle = start + dt.timedelta(days=20)
    end = tx["event_timestamp"].max().to_pydatetime() + dt.timedelta(seconds=1)

    with pytest.raises(FeatureStoreError, match="never materialised"):
        store.materialize_incremental(handle, end)
    assert all(until is None for until in store.materialized_until(handle).values())

    assert store.materialize_incremental(handle, middle, backfill_start=start) == list(
        handle.definitions.views
    )
    assert set(store.materialized_until(handle).values()) == {middle.replace(tzinfo=dt.UTC)}
    assert store.materialize_incremental(handle, end) == []  # continues from `middle`
    assert set(store.materialized_until(handle).values()) == {end.replace(tzinfo=dt.UTC)}

    latest = latest_for_all_entities(tx).tail(3)
    for _, row in latest.iterrows():
        got = store.online_features(handle, request_of(row), timeout_s=2.0)
        assert not got.degraded, got.reasons
        assert max_abs_diff(got.values, data.rows([row["transaction_id"]]).iloc[0, 1:]) <= TOLERANCE
    handle.close()


# --- online retrieval ----------------------------------------------------------------------------------


def test_online_vector_of_a_known_transaction_equals_its_offline_row(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    latest = latest_for_all_entities(data.transactions)
    assert len(latest) >= 20
    for _, row in latest.iterrows():
        got = store.online_features(materialized, request_of(row), timeout_s=2.0)
        assert got.names == tuple(FEATURE_CONFIG.feature_names)
        assert not got.degraded, got.reasons
        expected = data.rows([row["transaction_id"]]).iloc[0]
        assert max_abs_diff(got.values, expected[FEATURE_CONFIG.feature_names]) <= TOLERANCE


def test_unknown_customer_gets_defaults_and_is_degraded(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    row = latest_for_all_entities(data.transactions).iloc[-1]
    request = store.TransactionRequest(10**9, int(row["terminal_id"]), 42.5, dt.datetime(2018, 5, 12, 3, 0))

    got = store.online_features(materialized, request, timeout_s=2.0)

    assert got.degraded
    assert got.reasons == ("customer_windows: unknown entity",)
    values = got.as_dict()
    defaults = store.default_features(FEATURE_CONFIG, 42.5, request.timestamp)
    for name in [
        *FEATURE_CONFIG.customer_features,
        *FEATURE_CONFIG.pair_features,
        *FEATURE_CONFIG.request_features,
    ]:
        assert values[name] == defaults[name], name
    assert values["customer_nb_tx_1d"] == 1.0 and values["customer_avg_amount_30d"] == 42.5
    assert values["customer_amount_ratio_30d"] == 1.0 and values["customer_seconds_since_prev_tx"] == -1.0
    assert values["tx_during_weekend"] == 1.0 and values["tx_during_night"] == 1.0  # Saturday 03:00
    expected_terminal = data.rows([row["transaction_id"]]).iloc[0][FEATURE_CONFIG.terminal_features]
    assert max_abs_diff([values[n] for n in FEATURE_CONFIG.terminal_features], expected_terminal) <= TOLERANCE


def test_new_pair_of_known_entities_is_a_first_use_not_a_degradation(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    tx = data.transactions
    row = latest_for_all_entities(tx).iloc[-1]
    used = set(tx.loc[tx["customer_id"] == row["customer_id"], "terminal_id"])
    other_terminal = next(t for t in tx["terminal_id"].unique() if t not in used)
    request = store.TransactionRequest(
        int(row["customer_id"]), int(other_terminal), 10.0, row["event_timestamp"]
    )

    got = store.online_features(materialized, request, timeout_s=2.0)

    assert not got.degraded, got.reasons
    assert got.as_dict()["customer_terminal_first_use"] == 1.0


def test_rows_older_than_the_ttl_are_treated_as_unknown(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    row = latest_for_all_entities(data.transactions).iloc[-1]
    late = row["event_timestamp"].to_pydatetime() + dt.timedelta(days=91)
    request = store.TransactionRequest(int(row["customer_id"]), int(row["terminal_id"]), 7.0, late)

    got = store.online_features(materialized, request, timeout_s=2.0)

    assert got.degraded
    assert [reason.split(":")[0] for reason in got.reasons] == ["customer_windows", "terminal_windows"]
    assert got.as_dict() == {
        **store.default_features(FEATURE_CONFIG, 7.0, late),
        "customer_terminal_first_use": got.as_dict()["customer_terminal_first_use"],
    }


def test_unreachable_store_gives_defaults_within_the_timeout(
    feature_dir: Path, data: FeatureData, tmp_path: Path
) -> None:
    profile = tmp_path / "feature_store.yaml"
    profile.write_text(
        yaml.safe_dump(
            {
                "project": "fraud",
                "provider": "local",
                "registry": "registry.db",
                "online_store": {
                    "type": "redis",
                    "connection_string": "127.0.0.1:1,socket_connect_timeout=0.1",
                },
                "offline_store": {"type": "file"},
                "entity_key_serialization_version": 3,
            }
        )
    )
    handle = open_applied(feature_dir, tmp_path, feast_config=profile, online_max_in_flight=2)
    row = data.transactions.iloc[-1]
    for _ in range(3):  # redis-py keeps retrying a refused connection for seconds: calls must not wait
        started = time.perf_counter()
        got = store.online_features(handle, request_of(row), timeout_s=0.2)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0
        assert got.degraded
        assert got.reasons[0].startswith(
            ("online store timed out", "online store unreachable", "online store busy")
        )
        expected = store.default_features(
            FEATURE_CONFIG, row["amount"], row["event_timestamp"].to_pydatetime()
        )
        assert got.as_dict() == expected
    handle.close()


def test_sqlite_store_that_cannot_open_degrades(feature_dir: Path, data: FeatureData, tmp_path: Path) -> None:
    handle = open_applied(feature_dir, tmp_path)
    db = Path(handle.feast.config.online_store.path)
    handle.close()
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=tmp_path), feature_dir, FEATURE_CONFIG
    )
    db.unlink()
    db.mkdir()  # a folder where the database file should be: sqlite3 cannot open it

    got = store.online_features(handle, request_of(data.transactions.iloc[-1]), timeout_s=2.0)

    assert got.degraded
    assert got.reasons[0].startswith("online store unreachable: OperationalError")
    handle.close()


def test_slow_store_times_out_and_busy_workers_degrade_at_once(
    materialized: store.FeatureStoreHandle, data: FeatureData, feature_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    # the in-memory mirror does no I/O and cannot hang: the store's own reads are what time out
    handle = open_applied(feature_dir, tmp_path, online_max_in_flight=1, online_mirror=False)
    release = __import__("threading").Event()

    def stuck(*args, **kwargs):
        release.wait(5)
        raise AssertionError("never answers in time")

    monkeypatch.setattr(handle, "read_view", stuck)
    request = request_of(data.transactions.iloc[-1])
    started = time.perf_counter()
    first = store.online_features(handle, request, timeout_s=0.1)
    second = store.online_features(handle, request, timeout_s=0.1)  # the only worker is still stuck
    elapsed = time.perf_counter() - started
    release.set()

    assert first.degraded and first.reasons == ("online store timed out after 0.1s",)
    assert second.degraded and second.reasons[0].startswith("online store busy")
    assert elapsed < 0.5
    handle.close()


def test_push_makes_rows_visible_at_once(feature_dir: Path, data: FeatureData, tmp_path: Path) -> None:
    handle = open_applied(feature_dir, tmp_path)  # applied, nothing materialised
    tx = data.transactions
    row = tx.iloc[-1]
    assert store.online_features(handle, request_of(row), timeout_s=2.0).degraded

    written = store.push_transaction_rows(handle, data.features.loc[tx.index[-200:]])

    assert written > 0
    got = store.online_features(handle, request_of(row), timeout_s=2.0)
    assert not got.degraded, got.reasons
    assert max_abs_diff(got.values, data.rows([row["transaction_id"]]).iloc[0, 1:]) <= TOLERANCE
    handle.close()


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_apply_and_materialize(feature_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from fraud_detection import cli

    monkeypatch.setenv("FRAUD_FEATURE_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("FRAUD_FEAST_CONFIG", raising=False)
    monkeypatch.setattr(cli._state, "settings", None)
    config = REPO_ROOT / "configs" / "features" / "default.yaml"
    common = ["--features-dir", str(feature_dir), "--feature-config", str(config)]
    runner = CliRunner()

    result = runner.invoke(cli.app, ["features", "apply", *common])
    assert result.exit_code == 0, result.output
    assert "fraud_v1" in result.output

    result = runner.invoke(
        cli.app, ["features", "materialize", "--incremental", "--end", "2018-06-01", *common]
    )
    assert result.exit_code == 1
    assert "never materialised" in result.output

    result = runner.invoke(cli.app, ["features", "materialize", "--end", "2018-06-01", *common])
    assert result.exit_code == 2
    assert "--start is required" in result.output

    args = ["features", "materialize", "--start", "2018-04-01", "--end", "2018-05-01", *common]
    assert runner.invoke(cli.app, args).exit_code == 0
    args = ["features", "materialize", "--incremental", "--end", "2018-06-01", *common]
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "materialised incrementally up to 2018-06-01" in result.output


def test_sqlite_reader_equals_feasts_own_online_read(
    materialized: store.FeatureStoreHandle, data: FeatureData, monkeypatch
) -> None:
    """The vectorised SQLite reader decodes Feast's table layout exactly as Feast's provider does
    (guards against a layout change in a Feast upgrade)."""
    tx = data.transactions
    picks = tx.iloc[np.r_[0:5, len(tx) - 200 : len(tx)]]
    keys = {
        "customer_windows": (["customer_id"], [np.unique(picks["customer_id"].to_numpy())]),
        "terminal_windows": (["terminal_id"], [np.unique(picks["terminal_id"].to_numpy())]),
        "customer_terminal_usage": (
            ["customer_id", "terminal_id"],
            [picks["customer_id"].to_numpy(), picks["terminal_id"].to_numpy()],
        ),
    }
    keys["customer_windows"][1][0][0] = 10**9  # an unknown entity among known ones
    fast = store._read_views(materialized, keys)
    monkeypatch.setattr(store, "_sqlite_path", lambda config: None)  # Feast's provider path
    reference = store._read_views(materialized, keys)

    assert set(fast) == set(reference)
    for view, (values, seen) in reference.items():
        np.testing.assert_array_equal(fast[view][0], values, err_msg=view)
        np.testing.assert_array_equal(fast[view][1], seen, err_msg=view)
    assert np.isnan(fast["customer_windows"][0][0]).all()
    assert not np.isnan(fast["terminal_windows"][0]).any()


# --- the in-memory mirror of the SQLite online store ------------------------------------------------


def test_vectorised_entity_keys_equal_feasts_serialisation() -> None:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from fraud_detection.features.sqlite_online import serialize_int64_keys

    rng = np.random.default_rng(0)
    ids = rng.integers(-(2**62), 2**62, size=(50, 2))
    ids[0] = [0, -1]
    for join_keys in (["customer_id"], ["terminal_id", "customer_id"], ["customer_id", "terminal_id"]):
        columns = [ids[:, j] for j in range(len(join_keys))]
        expected = [
            serialize_entity_key(
                EntityKey(join_keys=join_keys, entity_values=[Value(int64_val=int(v)) for v in row]),
                entity_key_serialization_version=3,
            )
            for row in zip(*columns, strict=True)
        ]
        assert serialize_int64_keys(join_keys, columns) == expected, join_keys


def test_mirror_answers_as_the_direct_reader_does(
    materialized: store.FeatureStoreHandle, data: FeatureData
) -> None:
    reader = materialized.sqlite_reader()
    assert reader is not None and reader.refresh()
    mirror = materialized.mirrored_views()
    assert mirror is not None, "nothing was written since the refresh: the mirror must be current"
    tx = data.transactions
    picks = tx.iloc[np.r_[0:5, len(tx) - 300 : len(tx)]]
    customers = np.append(picks["customer_id"].to_numpy(), 10**9)  # and an unknown entity
    terminals = np.append(picks["terminal_id"].to_numpy(), 7)
    for view, columns in (
        ("customer_windows", [customers]),
        ("terminal_windows", [terminals]),
        ("customer_terminal_usage", [customers, terminals]),
    ):
        unique, inverse = np.unique(np.column_stack(columns), axis=0, return_inverse=True)
        unique_columns = [unique[:, j] for j in range(unique.shape[1])]
        got_values, got_seen = mirror[view].lookup(unique_columns)
        values, seen = reader.read(view, unique_columns)  # the direct reader takes unique keys
        np.testing.assert_array_equal(got_values, values, err_msg=view)
        np.testing.assert_array_equal(got_seen, seen, err_msg=view)
        every_values, every_seen = mirror[view].lookup(columns)  # repeated keys: one row each
        np.testing.assert_array_equal(every_values, values[inverse.reshape(-1)], err_msg=view)
        np.testing.assert_array_equal(every_seen, seen[inverse.reshape(-1)], err_msg=view)
    assert np.isnan(mirror["customer_windows"].lookup([customers])[1][-1])
    assert not np.isnan(mirror["terminal_windows"].lookup([terminals])[0][:-1]).any()


def test_mirror_is_never_staler_than_the_store(feature_dir: Path, data: FeatureData, tmp_path: Path) -> None:
    """A write by another process is visible to the very next read (the mirror is bypassed until a
    fresh one is loaded), then served from the reloaded mirror."""
    tx = data.transactions
    reader_handle = open_applied(feature_dir, tmp_path)
    writer_handle = open_applied(feature_dir, tmp_path)
    cutoff = len(tx) - 2000
    store.push_transaction_rows(writer_handle, data.features.loc[tx.index[:cutoff]])
    sqlite_reader = reader_handle.sqlite_reader()
    assert sqlite_reader is not None and sqlite_reader.refresh()
    loads = sqlite_reader.mirror_loads
    row = tx.iloc[-1]
    before = store.online_features(reader_handle, request_of(row), timeout_s=2.0)
    assert reader_handle.mirrored_views() is not None  # that read came from the mirror

    store.push_transaction_rows(writer_handle, data.features.loc[tx.index[cutoff:]])
    after = store.online_features(reader_handle, request_of(row), timeout_s=2.0)

    expected = data.rows([row["transaction_id"]]).iloc[0, 1:]
    assert not after.degraded, after.reasons
    assert max_abs_diff(after.values, expected) <= TOLERANCE
    assert max_abs_diff(before.values, expected) > TOLERANCE  # the write did change this row
    assert wait_for(lambda: reader_handle.mirrored_views() is not None, 10), "no fresh mirror loaded"
    assert sqlite_reader.mirror_loads > loads
    again = store.online_features(reader_handle, request_of(row), timeout_s=2.0)
    assert again == after
    reader_handle.close()
    writer_handle.close()


def wait_for(predicate, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
