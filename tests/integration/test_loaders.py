"""Reading raw transactions through a contract: files, folders, manifests, URLs and normalisation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pytest

from fraud_detection.data.loaders import read_transactions
from fraud_detection.data.raw_store import MANIFEST_NAME, write_raw_dataset
from fraud_detection.data.validators import validate_transactions
from fraud_detection.errors import DataContractError, DataIntegrityError, DataSourceError
from tests.conftest import AS_OF, make_transactions

pytestmark = pytest.mark.integration

HEADER = ",".join(make_transactions(1).columns) + "\n"  # the simulator layout, for hand-written CSV


@pytest.fixture
def frame() -> pd.DataFrame:
    """A small canonical frame with one unknown (null) age band, as the loader should return it."""
    frame = make_transactions(240, seed=1, n_days=4)
    frame.loc[3, "customer_age_band"] = None
    return frame


@pytest.fixture
def memory_root() -> Iterator[str]:
    fs = fsspec.filesystem("memory")
    root = f"/fraud-loaders-{uuid.uuid4().hex}"
    yield root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _assert_canonical(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert isinstance(got.index, pd.RangeIndex)
    pd.testing.assert_frame_equal(got, expected.reset_index(drop=True))


# --- single files ---------------------------------------------------------------------------------


def test_reads_a_parquet_file(tmp_path: Path, frame: pd.DataFrame, simulator_contract) -> None:
    path = tmp_path / "tx.parquet"
    frame.to_parquet(path, index=False)

    got, source = read_transactions(str(path), simulator_contract)

    _assert_canonical(got, frame)
    assert source.files == [str(path)] and not source.is_dir and source.manifest is None


def test_reads_a_csv_file_with_typed_columns(tmp_path: Path, frame: pd.DataFrame, simulator_contract) -> None:
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    assert "2024-01-01 " in path.read_text()  # the timestamps really are text in the file

    got, _ = read_transactions(str(path), simulator_contract)

    assert got["event_timestamp"].dtype == "datetime64[us]"
    assert got.loc[3, "customer_age_band"] is None
    _assert_canonical(got, frame)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (
            ["2024-01-01T00:00:00", "2024-01-01T01:00:00.123456"],
            ["2024-01-01 00:00:00", "2024-01-01 01:00:00.123456"],
        ),
        (["2024-01-01T00:00:00Z", "2024-01-01T01:00:00"], ["2024-01-01 00:00:00", "2024-01-01 01:00:00"]),
        (
            ["2024-03-30 12:00:00+01:00", "2024-04-01 12:00:00+02:00"],
            ["2024-03-30 11:00:00", "2024-04-01 10:00:00"],
        ),
        (["2024-01-01", "2024-01-02"], ["2024-01-01 00:00:00", "2024-01-02 00:00:00"]),
        (["2024-01-01 08:00:00", ""], ["2024-01-01 08:00:00", None]),
    ],
    ids=["iso-t", "z-and-naive", "dst-offsets", "date-only", "missing"],
)
def test_csv_timestamps_become_naive_utc_microseconds(
    tmp_path: Path, simulator_contract, texts: list[str], expected: list[str | None]
) -> None:
    path = tmp_path / "tx.csv"
    path.write_text(HEADER + "".join(f"{i},{t},1,1,1.5,0,0,18-25\n" for i, t in enumerate(texts)))

    got, _ = read_transactions(str(path), simulator_contract)

    assert got["event_timestamp"].dtype == "datetime64[us]"
    pd.testing.assert_series_equal(
        got["event_timestamp"],
        pd.Series([pd.Timestamp(t) for t in expected], name="event_timestamp").astype("datetime64[us]"),
    )


def test_unparseable_csv_timestamps_are_reported_with_their_values(
    tmp_path: Path, simulator_contract
) -> None:
    path = tmp_path / "tx.csv"
    texts = ["2024-01-01 00:00:00", "yesterday", "2024-01-01 02:00:00", "2024-13-45 00:00:00"]
    path.write_text(HEADER + "".join(f"{i},{t},1,1,1.5,0,0,18-25\n" for i, t in enumerate(texts)))

    frame, source = read_transactions(str(path), simulator_contract)

    # Reported lazily, with the row and value, for validation to list (and quarantine) them.
    failures = source.load_failures
    assert list(failures["check"]) == ["parseable_timestamp", "parseable_timestamp"]
    assert list(failures["index"]) == [1, 3]
    assert list(failures["failure_case"]) == ["yesterday", "2024-13-45 00:00:00"]
    assert frame["event_timestamp"].isna().tolist() == [False, True, False, True]
    with pytest.raises(DataContractError) as info:
        validate_transactions(frame, simulator_contract, as_of=AS_OF, load_failures=failures)
    message = str(info.value)
    for part in (
        "event_timestamp: parseable_timestamp failed for 2 value(s)",
        "'yesterday'",
        "'2024-13-45 00:00:00'",
    ):
        assert part in message, (part, message)
    assert "not_nullable" not in message  # the placeholder NaT is not reported twice


def test_nulls_in_an_integer_csv_column_are_row_level_and_quarantinable(
    tmp_path: Path, simulator_contract
) -> None:
    path = tmp_path / "tx.csv"
    rows = [f"{i},2024-01-01 0{i}:00:00,{'' if i == 2 else 1},1,1.5,0,0,18-25\n" for i in range(4)]
    path.write_text(HEADER + "".join(rows))

    frame, source = read_transactions(str(path), simulator_contract)

    assert frame["customer_id"].dtype == "int64"
    result = validate_transactions(
        frame, simulator_contract, as_of=AS_OF, on_error="quarantine", load_failures=source.load_failures
    )
    assert [(v.column, v.check) for v in result.violations] == [("customer_id", "not_nullable")]
    assert list(result.quarantined["transaction_id"]) == [2]
    assert len(result.valid) == 3


def test_tz_aware_timestamps_become_naive_utc_microseconds(
    tmp_path: Path, frame: pd.DataFrame, simulator_contract
) -> None:
    # Brussels local times across the 2024-03-31 DST change, stored tz-aware with nanoseconds.
    utc = pd.date_range("2024-03-30 22:00", periods=len(frame), freq="7min").astype("datetime64[us]")
    local = frame.assign(
        event_timestamp=utc.tz_localize("UTC")
        .tz_convert("Europe/Brussels")
        .astype("datetime64[ns, Europe/Brussels]")
    )
    path = tmp_path / "tx.parquet"
    local.to_parquet(path, index=False)

    got, _ = read_transactions(str(path), simulator_contract)

    assert got["event_timestamp"].dtype == "datetime64[us]"
    assert got["event_timestamp"].dt.tz is None
    _assert_canonical(got, frame.assign(event_timestamp=utc))


def test_narrow_ints_are_widened_to_int64(tmp_path: Path, frame: pd.DataFrame, simulator_contract) -> None:
    narrow = frame.astype({"transaction_id": "int32", "customer_id": "int32", "terminal_id": "int16"})
    path = tmp_path / "tx.parquet"
    narrow.to_parquet(path, index=False)
    assert pd.read_parquet(path)["customer_id"].dtype == "int32"

    got, _ = read_transactions(str(path), simulator_contract)

    assert got["transaction_id"].dtype == got["customer_id"].dtype == got["terminal_id"].dtype == "int64"
    _assert_canonical(got, frame)


def test_handbook_layout_is_renamed_to_canonical_names(tmp_path: Path, handbook_contract) -> None:
    rng = np.random.default_rng(2)
    n = 50
    seconds = np.sort(rng.integers(0, 3 * 86_400, size=n))
    raw = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(n, dtype=np.int64),
            "TX_DATETIME": pd.Timestamp("2018-04-01")
            + pd.to_timedelta(seconds, unit="s"),  # ns, as pandas makes it
            "CUSTOMER_ID": rng.integers(0, 30, size=n),
            "TERMINAL_ID": rng.integers(0, 60, size=n),
            "TX_AMOUNT": np.round(rng.gamma(2.0, 25.0, size=n), 2),
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86_400,
            "TX_FRAUD": (rng.random(n) < 0.1).astype(np.int64),
            "TX_FRAUD_SCENARIO": np.zeros(n, dtype=np.int64),
        }
    )
    parquet_path, csv_path = tmp_path / "raw.parquet", tmp_path / "raw.csv"
    raw.to_parquet(parquet_path, index=False)
    raw.to_csv(csv_path, index=False)
    renames = {c.source_name: c.name for c in handbook_contract.columns}
    expected = raw.rename(columns=renames).astype({"event_timestamp": "datetime64[us]"})

    for path in (parquet_path, csv_path):
        got, _ = read_transactions(str(path), handbook_contract)
        assert list(got.columns) == handbook_contract.column_names
        _assert_canonical(got, expected)


# --- folders and manifests ------------------------------------------------------------------------


def test_reads_a_folder_of_parquet_files_without_a_manifest(
    tmp_path: Path, frame: pd.DataFrame, simulator_contract
) -> None:
    for i, start in enumerate(range(0, len(frame), 100)):
        frame.iloc[start : start + 100].to_parquet(tmp_path / f"part-{i}.parquet", index=False)
    # Not data: hidden temporaries, markers and other suffixes are skipped.
    frame.iloc[:10].to_parquet(tmp_path / ".part-9.parquet.tmp.parquet", index=False)
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "notes.txt").write_text("not data")

    got, source = read_transactions(str(tmp_path), simulator_contract)

    _assert_canonical(got, frame)
    assert source.is_dir and source.manifest is None
    assert source.files == [str(tmp_path / f"part-{i}.parquet") for i in range(3)]


@pytest.fixture
def raw_folder(tmp_path: Path, frame: pd.DataFrame) -> Path:
    folder = tmp_path / "raw"
    write_raw_dataset(folder, frame, contract_name="simulator")
    return folder


def test_reads_exactly_the_partitions_the_manifest_lists(
    raw_folder: Path, frame: pd.DataFrame, simulator_contract
) -> None:
    extra = raw_folder / "transactions" / "2024-01-09.parquet"  # a day the manifest does not list
    make_transactions(30, seed=9, start="2024-01-09", n_days=1).to_parquet(extra, index=False)

    got, source = read_transactions(str(raw_folder), simulator_contract)

    _assert_canonical(got, frame)
    listed = [
        str(raw_folder / entry["path"])
        for entry in source.manifest.model_dump(mode="json", exclude_none=True)["partitions"]
    ]
    assert source.files == listed and len(listed) == 4
    assert str(extra) not in source.files


def test_a_tampered_partition_is_refused_naming_the_file(
    raw_folder: Path, frame: pd.DataFrame, simulator_contract
) -> None:
    victim = raw_folder / "transactions" / "2024-01-02.parquet"
    part = pd.read_parquet(victim)
    part.loc[0, "amount"] += 1.0
    part.to_parquet(victim, index=False)  # same rows, other bytes

    with pytest.raises(DataIntegrityError, match="sha256") as info:
        read_transactions(str(raw_folder), simulator_contract)

    assert str(victim) in str(info.value)


def test_a_listed_but_deleted_partition_is_refused(raw_folder: Path, simulator_contract) -> None:
    victim = raw_folder / "transactions" / "2024-01-03.parquet"
    victim.unlink()

    with pytest.raises(DataIntegrityError, match="missing") as info:
        read_transactions(str(raw_folder), simulator_contract)

    assert str(victim) in str(info.value)


# --- URLs -----------------------------------------------------------------------------------------


def test_reads_a_memory_url_file(memory_root: str, frame: pd.DataFrame, simulator_contract) -> None:
    url = f"memory://{memory_root}/tx.parquet"
    with fsspec.open(url, "wb") as handle:
        frame.to_parquet(handle, index=False)

    got, _ = read_transactions(url, simulator_contract)

    _assert_canonical(got, frame)


def test_reads_a_raw_dataset_from_a_memory_url_checking_its_manifest(
    memory_root: str, raw_folder: Path, frame: pd.DataFrame, simulator_contract
) -> None:
    fs = fsspec.filesystem("memory")
    for path in raw_folder.rglob("*.*"):
        fs.pipe(f"{memory_root}/ds/{path.relative_to(raw_folder).as_posix()}", path.read_bytes())
    url = f"memory://{memory_root}/ds"

    got, source = read_transactions(url, simulator_contract)
    _assert_canonical(got, frame)
    assert source.manifest is not None

    victim = f"{memory_root}/ds/transactions/2024-01-04.parquet"
    fs.pipe(victim, fs.cat(f"{memory_root}/ds/transactions/2024-01-01.parquet"))
    with pytest.raises(DataIntegrityError, match=r"2024-01-04\.parquet"):
        read_transactions(url, simulator_contract)


def test_reads_a_file_url(raw_folder: Path, frame: pd.DataFrame, simulator_contract) -> None:
    got, source = read_transactions(raw_folder.as_uri(), simulator_contract)

    _assert_canonical(got, frame)
    assert (raw_folder / MANIFEST_NAME).exists() and source.manifest is not None


# --- bad sources ----------------------------------------------------------------------------------


def test_a_missing_path_is_named(tmp_path: Path, simulator_contract) -> None:
    missing = tmp_path / "nowhere" / "tx.parquet"
    with pytest.raises(DataSourceError, match="does not exist") as info:
        read_transactions(str(missing), simulator_contract)
    assert str(missing) in str(info.value)


def test_an_unsupported_suffix_is_named_with_the_expected_ones(tmp_path: Path, simulator_contract) -> None:
    path = tmp_path / "tx.txt"
    path.write_text(HEADER)
    with pytest.raises(DataSourceError) as info:
        read_transactions(str(path), simulator_contract)
    message = str(info.value)
    assert "'.txt'" in message and "'.parquet'" in message and "'.csv'" in message


@pytest.mark.parametrize("content", [[], ["notes.txt", ".hidden.parquet"]], ids=["empty", "no-data-files"])
def test_a_folder_without_data_files_is_refused(
    tmp_path: Path, simulator_contract, content: list[str]
) -> None:
    for name in content:
        (tmp_path / name).write_text("x")
    with pytest.raises(DataSourceError, match="holds no data files") as info:
        read_transactions(str(tmp_path), simulator_contract)
    assert str(tmp_path) in str(info.value)
