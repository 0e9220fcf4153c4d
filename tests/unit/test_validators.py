from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pytest

from fraud_detection.data.contract import Contract
from fraud_detection.data.validators import QUARANTINE_REASONS, build_raw_schema, validate_transactions
from fraud_detection.errors import DataContractError
from tests.conftest import AS_OF, make_transactions

pytestmark = pytest.mark.unit


def _checks_failed(frame: pd.DataFrame, contract: Contract) -> set[tuple[str | None, str]]:
    with pytest.raises(DataContractError) as excinfo:
        validate_transactions(frame, contract, as_of=AS_OF)
    return {(v.column, v.check) for v in excinfo.value.report}


def test_schema_is_derived_from_the_contract(simulator_contract):
    schema = build_raw_schema(simulator_contract, as_of=AS_OF)
    assert list(schema.columns) == simulator_contract.column_names
    assert schema.strict is True
    assert schema.coerce is False
    assert "field_uniqueness" in {check.name for check in schema.columns["transaction_id"].checks}
    assert str(schema.columns["amount"].dtype) == "float64"
    assert str(schema.columns["transaction_id"].dtype) == "int64"
    assert schema.columns["customer_age_band"].nullable is True
    assert schema.columns["event_timestamp"].nullable is False
    amount_checks = {check.name for check in schema.columns["amount"].checks}
    assert {"not_nan", "finite", "greater_than_or_equal_to", "less_than_or_equal_to"} <= amount_checks


def test_clean_frame_passes_untouched(simulator_contract):
    frame = make_transactions()
    result = validate_transactions(frame, simulator_contract, as_of=AS_OF)
    assert result.violations == []
    assert result.quarantined.empty
    pd.testing.assert_frame_equal(result.valid, frame)


def _unknown_column(f):
    return f.assign(merchant_name="x")


def _missing_column(f):
    return f.drop(columns="terminal_id")


def _wrong_dtype(f):
    return f.assign(amount=f["amount"].astype(str))


def _null(f):
    f.loc[3, "event_timestamp"] = pd.NaT
    return f


def _nan(f):
    f.loc[3, "amount"] = np.nan
    return f


def _infinity(f):
    f.loc[3, "amount"] = np.inf
    return f


def _negative_amount(f):
    f.loc[3, "amount"] = -5.0
    return f


def _out_of_range(f):
    f.loc[3, "amount"] = 1e9
    return f


def _unknown_label(f):
    f.loc[3, "is_fraud"] = 2
    return f


def _unknown_category(f):
    f.loc[3, "customer_age_band"] = "12-17"
    return f


def _negative_id(f):
    f.loc[3, "customer_id"] = -1
    return f


def _duplicate_id(f):
    f.loc[3, "transaction_id"] = f.loc[2, "transaction_id"]
    return f


def _future(f):
    f.loc[3, "event_timestamp"] = pd.Timestamp(AS_OF) + pd.Timedelta(hours=1)
    return f


def _empty(f):
    return f.iloc[:0]


FIXTURES = [
    (_unknown_column, ("merchant_name", "column_in_schema")),
    (_missing_column, ("terminal_id", "column_in_dataframe")),
    (_wrong_dtype, ("amount", "dtype('float64')")),
    (_null, ("event_timestamp", "not_nullable")),
    (_nan, ("amount", "not_nan")),
    (_infinity, ("amount", "finite")),
    (_negative_amount, ("amount", "greater_than_or_equal_to(0.0)")),
    (_out_of_range, ("amount", "less_than_or_equal_to(100000.0)")),
    (_unknown_label, ("is_fraud", "isin([0, 1])")),
    (_unknown_category, ("customer_age_band", "isin(['18-25', '26-35', '36-50', '51-65', '65+'])")),
    (_negative_id, ("customer_id", "greater_than_or_equal_to(0)")),
    (_duplicate_id, ("transaction_id", "field_uniqueness")),
    (_future, ("event_timestamp", "not_in_future")),
    (_empty, (None, "not_empty")),
]


@pytest.mark.parametrize(("corrupt", "expected"), FIXTURES, ids=[f.__name__.strip("_") for f, _ in FIXTURES])
def test_each_bad_input_trips_exactly_its_own_check(simulator_contract, corrupt, expected):
    assert _checks_failed(corrupt(make_transactions(200)), simulator_contract) == {expected}


def test_a_pattern_rule_trips_str_matches(simulator_contract):
    raw = simulator_contract.model_dump()
    for column in raw["columns"]:
        if column["name"] == "customer_age_band":
            column["pattern"] = r"^\d\d-\d\d$"
    contract = Contract.model_validate(raw)
    frame = make_transactions(200)
    frame["customer_age_band"] = "26-35"
    frame.loc[5, "customer_age_band"] = "65+"
    assert _checks_failed(frame, contract) == {("customer_age_band", r"str_matches('^\d\d-\d\d$')")}


def test_future_means_beyond_the_allowed_clock_skew(simulator_contract):
    frame = make_transactions(200)
    frame.loc[3, "event_timestamp"] = pd.Timestamp(AS_OF) + pd.Timedelta(minutes=4)
    assert validate_transactions(frame, simulator_contract, as_of=AS_OF).violations == []


def test_one_report_lists_every_violation_with_values_and_counts(simulator_contract):
    frame = make_transactions(200)
    frame.loc[[3, 4, 5], "amount"] = [-1.0, -2.0, -3.0]
    frame.loc[7, "is_fraud"] = 5
    frame["extra"] = 1
    with pytest.raises(DataContractError) as excinfo:
        validate_transactions(frame, simulator_contract, as_of=AS_OF)
    by_check = {v.check: v for v in excinfo.value.report}
    assert set(by_check) == {"greater_than_or_equal_to(0.0)", "isin([0, 1])", "column_in_schema"}
    negative = by_check["greater_than_or_equal_to(0.0)"]
    assert negative.count == 3
    assert negative.failing_values == ["-1.0", "-2.0", "-3.0"]
    assert negative.rows == [3, 4, 5]
    message = str(excinfo.value)
    assert "amount: greater_than_or_equal_to(0.0) failed for 3 value(s): -1.0, -2.0, -3.0" in message
    assert "is_fraud: isin([0, 1]) failed for 1 value(s): 5" in message


def test_violations_name_the_source_column(handbook_contract):
    frame = (
        make_transactions(100).drop(columns=["customer_age_band"]).assign(tx_time_seconds=0, tx_time_days=0)
    )
    frame.loc[1, "amount"] = -1.0
    with pytest.raises(DataContractError) as excinfo:
        validate_transactions(frame, handbook_contract, as_of=AS_OF)
    (violation,) = excinfo.value.report
    assert violation.source_column == "TX_AMOUNT"
    assert "amount (source 'TX_AMOUNT')" in str(excinfo.value)


def test_quarantine_sets_bad_rows_aside_with_reasons(simulator_contract):
    frame = make_transactions(300)
    frame.loc[10, "amount"] = -1.0
    frame.loc[20, "amount"] = np.inf
    frame.loc[20, "is_fraud"] = 3
    result = validate_transactions(frame, simulator_contract, as_of=AS_OF, on_error="quarantine")
    assert len(result.valid) == 298
    assert result.valid.index.equals(pd.RangeIndex(298))
    assert set(result.quarantined["transaction_id"]) == {10, 20}
    reasons = dict(
        zip(result.quarantined["transaction_id"], result.quarantined[QUARANTINE_REASONS], strict=True)
    )
    assert reasons[10] == "amount:greater_than_or_equal_to(0.0)"
    assert reasons[20] == "amount:finite; is_fraud:isin([0, 1])"
    assert not result.valid["transaction_id"].isin([10, 20]).any()
    # What remains is clean.
    assert validate_transactions(result.valid, simulator_contract, as_of=AS_OF).violations == []


def test_quarantine_drops_every_copy_of_a_duplicated_id(simulator_contract):
    frame = make_transactions(100)
    frame.loc[4, "transaction_id"] = 3
    result = validate_transactions(frame, simulator_contract, as_of=AS_OF, on_error="quarantine")
    assert list(result.quarantined["transaction_id"]) == [3, 3]
    assert result.valid["transaction_id"].is_unique


def test_duplicates_are_found_in_unsorted_ids_too(simulator_contract):
    frame = make_transactions(100).sample(frac=1.0, random_state=1).reset_index(drop=True)
    frame.loc[10, "transaction_id"] = frame.loc[50, "transaction_id"]
    with pytest.raises(DataContractError) as excinfo:
        validate_transactions(frame, simulator_contract, as_of=AS_OF)
    (violation,) = excinfo.value.report
    assert violation.check == "field_uniqueness"
    assert violation.rows == [10, 50]


@pytest.mark.parametrize("corrupt", [_missing_column, _wrong_dtype, _unknown_column, _empty])
def test_quarantine_cannot_fix_structural_problems(simulator_contract, corrupt):
    with pytest.raises(DataContractError):
        validate_transactions(
            corrupt(make_transactions(100)), simulator_contract, as_of=AS_OF, on_error="quarantine"
        )


def test_validation_is_deterministic_in_as_of(simulator_contract):
    frame = make_transactions(100)
    late = frame["event_timestamp"].max()
    validate_transactions(frame, simulator_contract, as_of=late.to_pydatetime())
    with pytest.raises(DataContractError, match="not_in_future"):
        validate_transactions(frame, simulator_contract, as_of=(late - dt.timedelta(hours=1)).to_pydatetime())


def test_pandera_is_imported_through_its_pandas_namespace():
    # `import pandera as pa` is deprecated for pandas schemas; make sure we built the pandas kind.
    assert isinstance(build_raw_schema.__globals__["pa"].DataFrameSchema, type)
    assert pa.DataFrameSchema.__module__.startswith("pandera.api.pandas")
