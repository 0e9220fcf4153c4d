"""Batch inference (``inference/batch.py``): features, scores, exactly-once commit, B2 and B4-B7 of
RELIABILITY.md 6.3, Dask parity and the CLI. Crash and concurrency tests (B1, B3) are in
``test_batch_crash.py``, the Prefect flow in ``test_batch_flow.py``."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_detection.errors import DataContractError, DataIntegrityError, FeatureStoreError, StorageError
from fraud_detection.features import offline
from fraud_detection.features.engineering import build_features, load_feature_config
from fraud_detection.inference import batch
from fraud_detection.models.registry import resolve_model
from fraud_detection.utils import commit
from tests import batch_support
from tests.batch_support import FEATURE_CONFIG_PATH, BatchWorld

pytestmark = pytest.mark.integration

DAY = dt.date(2018, 5, 10)  # the small world's last day


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, serving_world) -> BatchWorld:  # type: ignore[no-untyped-def]
    return batch_support.small_world(tmp_path_factory, serving_world)


@pytest.fixture(scope="module")
def model(world: BatchWorld):  # type: ignore[no-untyped-def]
    return resolve_model(str(world.bundle_dir))


@pytest.fixture(scope="module")
def contract():  # type: ignore[no-untyped-def]
    return batch_support.contract()


def _parts(partition: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(partition.glob("part-*.parquet"))}


def _nothing_published(out: Path) -> None:
    visible = [
        p
        for p in out.rglob("*")
        if p.is_file() and not any(x.startswith(".") for x in p.relative_to(out).parts)
    ]
    assert visible == []
    assert not list(out.rglob(".staging/*"))


# ------------------------------------------------------------------------------- features


def _entity_rows(transactions: pd.DataFrame) -> pd.DataFrame:
    """Real transactions and shifted copies that hit every branch of the point-in-time join."""
    rng = np.random.default_rng(0)
    base = transactions.iloc[rng.choice(len(transactions), 40, replace=False)]
    last_of_customer = transactions.groupby("customer_id")["event_timestamp"].max()
    at_ttl = base[["customer_id", "terminal_id", "amount"]].assign(
        event_timestamp=base["customer_id"].map(last_of_customer).to_numpy() + pd.Timedelta(days=90)
    )
    variants = [
        base,  # the transaction's own row exists
        base.assign(
            event_timestamp=base["event_timestamp"] + pd.Timedelta(days=3, hours=7)
        ),  # latest earlier row
        base.assign(event_timestamp=base["event_timestamp"] - pd.Timedelta(microseconds=1)),
        base.assign(
            event_timestamp=base["event_timestamp"] + pd.Timedelta(days=100)
        ),  # beyond the 90-day TTL
        base.assign(event_timestamp=pd.Timestamp("2018-03-01")),  # before any row
        base.assign(customer_id=10**7),  # unknown customer
        at_ttl,  # exactly at the TTL: inclusive
        at_ttl.assign(event_timestamp=at_ttl["event_timestamp"] + pd.Timedelta(microseconds=1)),
    ]
    rows = pd.concat([v[["customer_id", "terminal_id", "event_timestamp", "amount"]] for v in variants])
    rows = rows.reset_index(drop=True)
    rows.insert(0, "transaction_id", np.arange(len(rows), dtype=np.int64) + 10**8)
    return rows


def test_offline_join_equals_feast_historical_features(world: BatchWorld, tmp_path: Path) -> None:
    from fraud_detection.features import store
    from fraud_detection.features.repo import definitions

    config = load_feature_config(FEATURE_CONFIG_PATH)
    # the module's copy of the view layout is the definitions' own
    built = definitions.build_definitions(config, str(world.features_dir.resolve()))
    assert {v.name: v.table for v in offline.VIEWS} == definitions.VIEW_TABLES
    assert {v.name: v.features(config) for v in offline.VIEWS} == {
        name: feats for name, feats in built.view_features().items() if name in built.views
    }
    assert {v.name: v.ttl or dt.timedelta(0) for v in offline.VIEWS} == {
        n: v.ttl for n, v in built.views.items()
    }
    join_key = {e.name: e.join_key for e in (built.customer, built.terminal)}
    assert {v.name: list(v.join_keys) for v in offline.VIEWS} == {
        n: [join_key[e] for e in v.entities] for n, v in built.views.items()
    }
    assert offline.INTEGER_FEATURES == definitions.INTEGER_FEATURES

    rows = _entity_rows(world.transactions)
    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=tmp_path / "fs"), world.features_dir, config
    )
    try:
        store.apply(handle)
        expected = store.historical_features(handle, rows, missing="default")
    finally:
        handle.close()
    joined = offline.point_in_time_features(offline.load_offline_tables(world.features_dir, config), rows)
    got = joined.frame(rows["transaction_id"].to_numpy())
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    # the sample did reach the fallbacks: a missing customer view in the shifted and unknown rows
    assert 0 < joined.missing["customer_windows"].sum() < len(rows)


def test_offline_features_of_a_transaction_are_its_build_features_row(world: BatchWorld) -> None:
    config = load_feature_config(FEATURE_CONFIG_PATH)
    tx = world.transactions
    joined = offline.point_in_time_features(offline.load_offline_tables(world.features_dir, config), tx)
    expected = build_features(tx, config)[config.feature_names].to_numpy(np.float64)
    np.testing.assert_array_equal(joined.values, expected)
    assert not any(mask.any() for mask in joined.missing.values())
    # batch scoring's float32 matrix: each value rounded once from its float64 value
    in_float32 = offline.point_in_time_features(
        offline.load_offline_tables(world.features_dir, config), tx, dtype=np.float32
    )
    assert in_float32.values.dtype == np.float32
    np.testing.assert_array_equal(in_float32.values, expected.astype(np.float32))


def test_own_row_lookup_equals_the_as_of_join(world: BatchWorld) -> None:
    """The join finds a transaction's own row by id; without ids (every query through the as-of
    join) the features are the same, for own rows, later queries and unknown entities alike."""
    config = load_feature_config(FEATURE_CONFIG_PATH)
    tx = world.transactions
    rows = pd.concat(
        [
            tx.iloc[::7],
            tx.iloc[::11].assign(  # not in the tables: an hour later, new ids
                transaction_id=lambda f: f["transaction_id"] + 10**9,
                event_timestamp=lambda f: f["event_timestamp"] + pd.Timedelta(hours=1),
            ),
            tx.iloc[:5].assign(customer_id=10**7),  # own id, another customer: not its own row
        ],
        ignore_index=True,
    )
    tables = offline.load_offline_tables(world.features_dir, config)
    assert all(offline.TRANSACTION_ID in t.column_names for t in tables.tables.values())
    with_ids = offline.point_in_time_features(tables, rows)
    without = offline.OfflineTables(
        tables.manifest,
        config,
        {name: t.drop_columns([offline.TRANSACTION_ID]) for name, t in tables.tables.items()},
    )
    as_of = offline.point_in_time_features(without, rows)
    np.testing.assert_array_equal(with_ids.values, as_of.values)
    for name in with_ids.missing:
        np.testing.assert_array_equal(with_ids.missing[name], as_of.missing[name])
    assert as_of.missing["customer_windows"][-5:].all()  # the unknown customer fell back to defaults
    # the rows the tables were not built with are told apart (batch scoring warns of them)
    n_own = len(tx.iloc[::7])
    assert not with_ids.not_in_tables[:n_own].any() and with_ids.not_in_tables[n_own:].all()


# ------------------------------------------------------------------------------- scoring


def test_batch_scores_equal_fraud_score_and_carry_the_run(
    world: BatchWorld, model, contract, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.inference.scoring import score_transactions

    spec = world.spec(tmp_path / "out", DAY, explain=True, top_reasons=2, rows_per_part=100)
    result = batch.run_batch(spec, model, contract)
    assert result.committed
    assert result.partition_dir == tmp_path / "out" / "bundle" / model.version / "date=2018-05-10"
    predictions = batch.read_predictions(result.partition_dir)
    day = world.transactions[world.transactions["event_timestamp"].dt.date == DAY]
    assert len(predictions) == len(day) == result.rows and len(result.manifest.role("part")) == 4
    assert predictions["transaction_id"].tolist() == day["transaction_id"].tolist()

    # `fraud score` (features from the input's own history) gives bitwise the same scores
    history = world.transactions[
        world.transactions["event_timestamp"] < pd.Timestamp(DAY + dt.timedelta(days=1))
    ]
    online_way = score_transactions(model, history).set_index("transaction_id").loc[day["transaction_id"]]
    np.testing.assert_array_equal(predictions["score"].to_numpy(), online_way["score"].to_numpy())
    np.testing.assert_array_equal(predictions["decision"].to_numpy(), online_way["decision"].to_numpy())

    assert set(predictions["model_version"]) == {model.version}
    assert set(predictions["inference_timestamp"]) == {pd.Timestamp("2018-05-11", tz="UTC")}
    reasons = predictions["top_reasons"].map(json.loads)
    assert reasons.map(len).between(0, 2).all() and reasons.map(len).max() == 2
    assert set(reasons.iloc[0][0]) == {"feature", "value", "contribution"}
    inputs = result.manifest.inputs
    assert inputs["raw_partition"]["path"] == "transactions/2018-05-10.parquet"
    assert inputs["model_digest"] == model.digest and inputs["logical_time"] == "2018-05-11T00:00:00"
    assert len(inputs["features_manifest_sha256"]) == 64 and len(inputs["raw_partition"]["sha256"]) == 64


def test_dask_local_cluster_gives_the_same_bytes(world: BatchWorld, model, contract, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    single = batch.run_batch(world.spec(tmp_path / "single", DAY, rows_per_part=90), model, contract)
    on_dask = batch.run_batch(
        world.spec(tmp_path / "dask", DAY, rows_per_part=90, dask="local"), model, contract
    )
    assert len(single.manifest.role("part")) == 4
    assert _parts(on_dask.partition_dir) == _parts(single.partition_dir)
    assert on_dask.manifest.files == single.manifest.files


# ------------------------------------------------------------------------------- B2, B4


def test_b2_rerun_of_a_committed_partition_is_a_no_op(
    world: BatchWorld, model, contract, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec(tmp_path / "out", DAY)
    first = batch.run_batch(spec, model, contract)
    manifest_path = first.partition_dir / commit.MANIFEST_NAME
    stamp = {p.name: p.stat().st_mtime_ns for p in first.partition_dir.iterdir()}
    second = batch.run_batch(spec, model, contract)
    assert first.committed and not second.committed
    assert second.manifest == first.manifest
    assert {p.name: p.stat().st_mtime_ns for p in first.partition_dir.iterdir()} == stamp
    assert manifest_path.exists()
    assert batch.read_predictions(first.partition_dir)["transaction_id"].is_unique


def test_b4_pinned_inputs_appending_upstream_gives_identical_output(
    world: BatchWorld, model, contract, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # a private copy of the inputs, up to DAY - 1, then the next day appended upstream
    upto = world.transactions[world.transactions["event_timestamp"] < pd.Timestamp("2018-05-10")]
    later = world.transactions[world.transactions["event_timestamp"] >= pd.Timestamp("2018-05-10")]
    own = batch_support.write_batch_inputs(tmp_path / "inputs", upto, world.bundle_dir)
    day = dt.date(2018, 5, 9)
    spec = own.spec(tmp_path / "out", day)
    first = batch.run_batch(spec, model, contract)
    parts = _parts(first.partition_dir)
    raw_manifest = (own.raw_dir / "manifest.json").read_bytes()

    appended = batch_support.write_batch_inputs(
        tmp_path / "inputs", pd.concat([upto, later]), world.bundle_dir
    )
    assert (own.raw_dir / "manifest.json").read_bytes() != raw_manifest  # upstream did change
    pinned = batch.pin_inputs(spec, model, contract)
    assert pinned.features_manifest_sha256 != first.manifest.inputs["features_manifest_sha256"]
    assert pinned.raw_partition.model_dump() == first.manifest.inputs["raw_partition"]

    again = batch.run_batch(appended.spec(tmp_path / "out", day), model, contract)
    assert not again.committed and again.manifest == first.manifest
    assert _parts(again.partition_dir) == parts
    # scored afresh elsewhere from the new snapshot: byte-identical parts
    fresh = batch.run_batch(appended.spec(tmp_path / "fresh", day), model, contract)
    assert _parts(fresh.partition_dir) == parts

    # other inputs that change the output (another logical time) are refused, never overwritten
    with pytest.raises(DataIntegrityError, match=r"committed from other inputs.*logical_time"):
        batch.run_batch(
            appended.spec(tmp_path / "out", day, logical_time=dt.datetime(2018, 5, 11, 6)), model, contract
        )
    assert _parts(first.partition_dir) == parts


def test_tables_built_before_the_day_are_warned_of_and_counted(
    world: BatchWorld, model, contract, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from fraud_detection.cli import app

    before = world.transactions[world.transactions["event_timestamp"] < pd.Timestamp(DAY)]
    stale = batch_support.write_batch_inputs(tmp_path / "stale", before, world.bundle_dir)
    args = ["batch", "score", "--model", str(world.bundle_dir), "--raw", str(world.raw_dir)]
    args += ["--date", DAY.isoformat(), "--features-dir", str(stale.features_dir)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    n = result.stdout.split(":")[1].split()[0]  # "<day>: <n> predictions, ..."
    assert f"warning: {n} of {n} transactions are not in the feature tables" in result.stderr
    committed = commit.read_manifest(batch.partition_dir(tmp_path / "out", model, DAY))
    assert committed is not None and committed.details["n_rows_not_in_feature_tables"] == int(n) > 0
    # tables that include the day: no warning, and the count is 0
    fresh = CliRunner().invoke(app, [*args[:-1], str(world.features_dir), "--out", str(tmp_path / "fresh")])
    assert fresh.exit_code == 0 and "warning" not in fresh.stderr, fresh.output
    fresh_manifest = commit.read_manifest(batch.partition_dir(tmp_path / "fresh", model, DAY))
    assert fresh_manifest is not None and fresh_manifest.details["n_rows_not_in_feature_tables"] == 0


# ------------------------------------------------------------------------------- B5


def test_b5_feature_fetch_is_retried_then_fails_loudly_with_nothing_committed(
    world: BatchWorld,
    model,
    contract,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    real = offline.load_offline_tables
    calls: list[int] = []

    def failing(n_failures: int):  # type: ignore[no-untyped-def]
        def load(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) <= n_failures:
                raise OSError(errno.EIO, "Input/output error (simulated)")
            return real(*args, **kwargs)

        return load

    monkeypatch.setattr(offline, "load_offline_tables", failing(2))
    result = batch.run_batch(world.spec(tmp_path / "ok", DAY), model, contract)
    assert result.committed and len(calls) == 3

    # the tables read ahead (while the partition is validated) failing: the retry reads them anew
    monkeypatch.setattr(offline, "load_offline_tables", real)
    real_read = offline._read_tables
    reads: list[int] = []

    def read_failing_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(1)
        if len(reads) == 1:
            raise OSError(errno.EIO, "Input/output error (simulated)")
        return real_read(*args, **kwargs)

    monkeypatch.setattr(offline, "_read_tables", read_failing_once)
    result = batch.run_batch(world.spec(tmp_path / "ahead", DAY), model, contract)
    assert result.committed and len(reads) == 2

    calls.clear()
    monkeypatch.setattr(offline, "load_offline_tables", failing(5))
    out = tmp_path / "failed"
    with pytest.raises(FeatureStoreError, match=r"feature tables .* failed after 4 attempt"):
        batch.run_batch(world.spec(out, DAY), model, contract)
    assert len(calls) == 4
    _nothing_published(out)


# ------------------------------------------------------------------------------- B6


def test_b6_disk_full_exits_non_zero_with_staging_cleaned(
    world: BatchWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from fraud_detection.cli import app

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "out"
    monkeypatch.setattr(os, "fsync", no_space)
    args = ["batch", "score", "--model", str(world.bundle_dir), "--raw", str(world.raw_dir)]
    args += ["--date", DAY.isoformat(), "--features-dir", str(world.features_dir), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    monkeypatch.undo()
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output
    _nothing_published(out)
    # the same command with a disk that works commits once
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "committed" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already committed" in again.output


def test_b6_permission_denied_leaves_the_final_path_untouched(
    world: BatchWorld, model, contract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    earlier = batch.run_batch(world.spec(out, dt.date(2018, 5, 9)), model, contract)
    before = {p: p.read_bytes() for p in earlier.partition_dir.iterdir()}
    real_rename = os.rename

    def denied(src, dst):  # type: ignore[no-untyped-def]
        if ".staging" in str(src):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_rename(src, dst)

    if os.geteuid() != 0:  # a real read-only folder; root ignores permissions, so simulate it there
        version_dir = earlier.partition_dir.parent
        version_dir.chmod(0o555)
    else:
        monkeypatch.setattr(os, "rename", denied)
    try:
        with pytest.raises(StorageError, match="Permission denied"):
            batch.run_batch(world.spec(out, DAY), model, contract)
    finally:
        monkeypatch.undo()
        earlier.partition_dir.parent.chmod(0o755)
    assert not (earlier.partition_dir.parent / "date=2018-05-10").exists()
    assert not list(earlier.partition_dir.parent.glob(".staging/*"))
    assert {p: p.read_bytes() for p in earlier.partition_dir.iterdir()} == before


# ------------------------------------------------------------------------------- B7


def test_b7_rejected_rows_are_quarantined_with_reasons(
    model, contract, serving_world, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    tx = serving_world.transactions
    tx = tx[tx["event_timestamp"] >= pd.Timestamp("2018-05-01")].reset_index(drop=True)
    bad = tx.copy()
    on_day = np.flatnonzero(bad["event_timestamp"].dt.date == DAY)
    bad.loc[on_day[0], "amount"] = -5.0
    bad.loc[on_day[1], "customer_age_band"] = "teen"
    bad.loc[on_day[2], "transaction_id"] = bad.loc[on_day[3], "transaction_id"]  # both copies rejected
    # the feature build refuses bad rows, so the tables come from the clean frame
    clean = batch_support.write_batch_inputs(tmp_path / "clean", tx, serving_world.bundle_dir)
    from fraud_detection.data.raw_store import write_raw_dataset

    write_raw_dataset(tmp_path / "bad_raw", bad, contract_name="simulator")
    spec = clean.spec(tmp_path / "out", DAY).model_copy(update={"raw_dir": tmp_path / "bad_raw"})
    result = batch.run_batch(spec, model, contract)
    quarantine = batch.read_quarantine(result.partition_dir)
    n_day = len(on_day)
    assert result.rejected == 4 == len(quarantine)
    assert result.rows == n_day - 4 == len(batch.read_predictions(result.partition_dir))
    reasons = dict(zip(quarantine["transaction_id"], quarantine["quarantine_reasons"], strict=False))
    assert "amount:greater_than_or_equal_to(0.0)" in reasons[bad.loc[on_day[0], "transaction_id"]]
    assert "customer_age_band:isin" in reasons[bad.loc[on_day[1], "transaction_id"]]
    assert "transaction_id:field_uniqueness" in reasons[bad.loc[on_day[3], "transaction_id"]]
    assert result.manifest.details["n_rejected_rows"] == 4


def test_b7_output_validation_blocks_publishing(
    world: BatchWorld, model, contract, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.inference.scorer import FraudScorer

    real = FraudScorer.score_features

    def broken(self, features):  # type: ignore[no-untyped-def]
        probability, decision = real(self, features)
        probability = probability.copy()
        probability[3] = np.nan
        return probability, decision

    monkeypatch.setattr(FraudScorer, "score_features", broken)
    out = tmp_path / "nan"
    with pytest.raises(DataContractError, match=r"score: (not_nullable|finite|in_range)"):
        batch.run_batch(world.spec(out, DAY), model, contract)
    _nothing_published(out)
    monkeypatch.undo()

    # a part that loses a row: the row-count audit (input - rejected) blocks it
    real_parts = batch.score_parts

    def lossy(*args, **kwargs):  # type: ignore[no-untyped-def]
        parts = real_parts(*args, **{**kwargs, "rows_per_part": 10**6})
        data, rows = parts[0]
        return [(data, rows - 1)]

    monkeypatch.setattr(batch, "score_parts", lossy)
    out = tmp_path / "lossy"
    with pytest.raises(DataContractError, match=r"expected .* input rows - 0 rejected"):
        batch.run_batch(world.spec(out, DAY), model, contract)
    _nothing_published(out)


# ------------------------------------------------------------------------------- readers, inputs


def test_readers_trust_only_a_verified_manifest(world: BatchWorld, model, contract, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = batch.run_batch(world.spec(tmp_path / "out", DAY), model, contract)
    part = result.partition_dir / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[:-20])  # a torn file
    with pytest.raises(DataIntegrityError, match=r"part-00000\.parquet"):
        batch.read_predictions(result.partition_dir)
    with pytest.raises(DataIntegrityError, match="nothing was committed"):
        batch.read_predictions(tmp_path / "out" / "bundle" / "nowhere")


def test_bad_inputs_name_the_field_and_value(world: BatchWorld, model, contract, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.errors import ConfigError, DataSourceError

    with pytest.raises(
        DataSourceError,
        match=r"no partition for date '2019-01-01'; it holds 40 day\(s\): 2018-04-01 .. 2018-05-10",
    ):
        batch.run_batch(world.spec(tmp_path / "out", dt.date(2019, 1, 1)), model, contract)
    with pytest.raises(DataSourceError, match=r"has no manifest\.json"):
        batch.run_batch(world.spec(tmp_path / "out", DAY, features_dir=tmp_path), model, contract)
    early = world.spec(tmp_path / "out", DAY, logical_time=dt.datetime.combine(DAY, dt.time(12)))
    with pytest.raises(ConfigError, match=rf"logical time {DAY.isoformat()}T12:00:00 is before the end"):
        batch.run_batch(early, model, contract)
    _nothing_published(tmp_path / "out")
