"""Contract-derived pandera schemas and lazy validation with an optional quarantine.

The raw schema is never written by hand: :func:`build_raw_schema` derives it from a
:class:`~fraud_detection.data.contract.Contract`. Validation is lazy, so one report lists every
violation (column, check, failing values, count). Each kind of bad input trips its own named check:

=========================  ================================================
bad input                  check
=========================  ================================================
unknown column             ``column_in_schema``
missing column             ``column_in_dataframe``
wrong dtype                ``dtype('<dtype>')``
null where not allowed     ``not_nullable`` (``not_nan`` for float columns)
Infinity                   ``finite``
below min / above max      ``greater_than_or_equal_to(<min>)`` / ``less_than_or_equal_to(<max>)``
value outside a vocabulary ``isin([...])``
string not matching regex  ``str_matches('<regex>')``
duplicate transaction id   ``field_uniqueness``
timestamp in the future    ``not_in_future``
empty input                ``not_empty``
=========================  ================================================
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.dtypes import immutable
from pandera.engines.pandas_engine import NpString
from pydantic import BaseModel

from fraud_detection.data.contract import ColumnSpec, Contract, DType, Role
from fraud_detection.errors import DataContractError

OnError = Literal["fail", "quarantine"]
QUARANTINE_REASONS = "quarantine_reasons"
_SAMPLE_VALUES = 5
_SAMPLE_ROWS = 20


@immutable
class _StringDtype(NpString):
    """pandera's ``str``, checked in one pass of C when every value is a string or null.

    pandera tests an object column value by value in Python (0.7 s for 2M rows, most of a batch
    partition's validation); it is only needed to name the values that are not strings.
    """

    def check(self, pandera_dtype: object, data_container: object = None) -> object:  # type: ignore[override]
        if isinstance(data_container, pd.Series) and pd.api.types.infer_dtype(
            data_container, skipna=True
        ) in ("string", "empty"):
            return True
        return super().check(pandera_dtype, data_container)  # type: ignore[arg-type]


_PANDERA_DTYPES: dict[DType, object] = {
    DType.INT64: "int64",
    DType.FLOAT64: "float64",
    DType.STRING: _StringDtype(),
    DType.DATETIME: "datetime64[us]",
}


class Violation(BaseModel):
    """Every failure of one check on one column (or on the whole frame, ``column`` None)."""

    column: str | None
    source_column: str | None
    check: str
    count: int
    failing_values: list[str]
    rows: list[int]

    def describe(self) -> str:
        if self.check == "not_empty":
            return "(dataset): not_empty failed: the input has no rows"
        where = self.column or "(dataset)"
        if self.source_column and self.source_column != self.column:
            where = f"{where} (source {self.source_column!r})"
        values = ", ".join(self.failing_values)
        return f"{where}: {self.check} failed for {self.count} value(s): {values}"


@dataclass(frozen=True)
class SchemaValidation:
    """The rows that passed, the rows set aside with their reasons, and every violation found."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    violations: list[Violation]


def _duplicated(values: pd.Series) -> pd.Series:
    """True for every copy of a repeated value.

    Ids usually arrive sorted; then copies are neighbours and one O(n) pass finds them, several
    times faster than the hash table pandera's ``unique=True`` builds.
    """
    if values.is_monotonic_increasing:
        array = values.to_numpy()
        same_as_next = np.zeros(len(array), dtype=bool)
        same_as_next[:-1] = array[1:] == array[:-1]
        return pd.Series(same_as_next | np.roll(same_as_next, 1), index=values.index)
    return values.duplicated(keep=False)


def _unique() -> pa.Check:
    # Named like pandera's own uniqueness check, so reports read the same either way.
    return pa.Check(lambda s: ~_duplicated(s), name="field_uniqueness")


def _not_in_future(limit: pd.Timestamp) -> pa.Check:
    return pa.Check(lambda s: s <= limit, name="not_in_future")


def _column_checks(spec: ColumnSpec) -> list[pa.Check]:
    checks: list[pa.Check] = []
    if spec.dtype == DType.FLOAT64:
        if not spec.nullable:
            # NaN is a float's null; a named check of its own keeps it apart from Infinity.
            checks.append(pa.Check(lambda s: s.notna(), name="not_nan", ignore_na=False))
        checks.append(pa.Check(lambda s: ~np.isinf(s), name="finite"))
    if spec.min is not None:
        checks.append(pa.Check.ge(_as_dtype(spec, spec.min)))
    if spec.max is not None:
        checks.append(pa.Check.le(_as_dtype(spec, spec.max)))
    if spec.allowed is not None:
        checks.append(pa.Check.isin(spec.allowed))
    if spec.pattern is not None:
        checks.append(pa.Check.str_matches(spec.pattern))
    return checks


def _as_dtype(spec: ColumnSpec, bound: float) -> float | int:
    return int(bound) if spec.dtype == DType.INT64 and float(bound).is_integer() else bound


def build_raw_schema(contract: Contract, *, as_of: dt.datetime) -> pa.DataFrameSchema:
    """Derive the strict pandera schema of raw transactions from ``contract``.

    ``as_of`` (naive UTC) bounds event timestamps: anything later than ``as_of`` plus the contract's
    ``max_future_skew`` is in the future.
    """
    limit = pd.Timestamp(as_of) + contract.max_future_skew
    columns = {}
    for spec in contract.columns:
        checks = _column_checks(spec)
        if spec.role == Role.TIMESTAMP:
            checks.append(_not_in_future(limit))
        if spec.role == Role.ID:
            checks.append(_unique())
        columns[spec.name] = pa.Column(
            _PANDERA_DTYPES[spec.dtype],
            checks=checks,
            # Float nulls are reported by `not_nan` instead, so one bad value trips one check.
            nullable=spec.nullable or spec.dtype == DType.FLOAT64,
            required=True,
        )
    return pa.DataFrameSchema(
        columns,
        checks=[pa.Check(lambda frame: len(frame) > 0, name="not_empty")],
        strict=True,
        coerce=False,
    )


def _format_value(value: object, spec: ColumnSpec | None) -> str:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float):
        if np.isnan(value):
            return "NaN"
        # pandera's failure-case column is shared by every check, so ints may arrive as floats.
        if spec is not None and spec.dtype == DType.INT64 and value.is_integer():
            return repr(int(value))
    return repr(value)


def _one_check_per_fault(cases: pd.DataFrame) -> pd.DataFrame:
    """Drop the knock-on failures pandera also reports, so each fault names one check.

    A column of the wrong dtype fails every value check too, and an Infinity also fails the range
    checks; the dtype and ``finite`` failures are the ones that explain them.
    """
    wrong_dtype = set(cases.loc[cases["check"].str.startswith("dtype("), "column"])
    knock_on = cases["column"].isin(wrong_dtype) & ~cases["check"].str.startswith("dtype(")
    is_range = cases["check"].str.startswith(("greater_than", "less_than"))
    values = pd.to_numeric(cases["failure_case"], errors="coerce")
    knock_on |= is_range & np.isinf(values.to_numpy(dtype=float, na_value=np.nan))
    return cases.loc[~knock_on]


def _violations_from(failure_cases: pd.DataFrame, contract: Contract) -> list[Violation]:
    canonical_to_source = {c.name: c.source_name for c in contract.columns}
    specs = {c.name: c for c in contract.columns}
    cases = failure_cases.copy()
    cases["column"] = cases["column"].where(cases["column"].notna(), None)
    violations = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=True):
        column_name = None if column is None or pd.isna(column) else str(column)
        # Frame-level checks report the offending column name as the failure case.
        if column_name is None and check in ("column_in_schema", "column_in_dataframe"):
            for name in group["failure_case"].astype(str):
                violations.append(
                    Violation(
                        column=name,
                        source_column=canonical_to_source.get(name, name),
                        check=str(check),
                        count=1,
                        failing_values=[repr(name)],
                        rows=[],
                    )
                )
            continue
        rows = group["index"].dropna()
        values = group["failure_case"].drop_duplicates().head(_SAMPLE_VALUES)
        violations.append(
            Violation(
                column=column_name,
                source_column=canonical_to_source.get(column_name) if column_name else None,
                check=str(check),
                count=len(group),
                failing_values=[_format_value(v, specs.get(column_name)) for v in values],
                rows=sorted(int(i) for i in rows.head(_SAMPLE_ROWS)),
            )
        )
    return violations


def validate_transactions(
    frame: pd.DataFrame,
    contract: Contract,
    *,
    as_of: dt.datetime,
    on_error: OnError = "fail",
    load_failures: pd.DataFrame | None = None,
) -> SchemaValidation:
    """Validate ``frame`` (canonical names, RangeIndex) lazily against ``contract``.

    ``on_error="fail"`` raises :class:`DataContractError` listing every violation.
    ``on_error="quarantine"`` sets failing rows aside with their reasons and keeps the rest;
    violations that no row can be blamed for (a missing column, a wrong dtype, empty input) still
    raise, because no subset of the rows would fix them. ``load_failures`` are the failure cases
    the reader found (``RawSource.load_failures``); they are reported and quarantined alike.
    """
    if frame.empty:
        # Nothing else can be judged on no rows (a header-only CSV has no dtypes to speak of).
        violation = Violation(
            column=None, source_column=None, check="not_empty", count=1, failing_values=[], rows=[]
        )
        raise DataContractError(
            f"data violates contract {contract.name!r}: the input has no rows", report=[violation]
        )
    schema = build_raw_schema(contract, as_of=as_of)
    try:
        schema.validate(frame, lazy=True, inplace=True)  # coerce=False: nothing is changed; no copy
    except pa.errors.SchemaErrors as err:
        failure_cases = err.failure_cases
    else:
        failure_cases = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    if load_failures is not None and len(load_failures):
        # A value the reader could not hold (reported by it) also trips the schema's checks on the
        # placeholder left in its place; the reader's finding is the one that explains the row.
        loaded = set(zip(load_failures["column"], load_failures["index"].astype(np.int64), strict=True))
        rows = failure_cases["index"].map(lambda i: -1 if pd.isna(i) else int(i))
        knock_on = [(c, i) in loaded for c, i in zip(failure_cases["column"], rows, strict=True)]
        failure_cases = pd.concat(
            [failure_cases.loc[~np.array(knock_on, dtype=bool)], load_failures], ignore_index=True
        )
    if failure_cases.empty:
        return SchemaValidation(frame, frame.iloc[:0].assign(**{QUARANTINE_REASONS: []}), [])

    failure_cases = _one_check_per_fault(failure_cases)
    violations = _violations_from(failure_cases, contract)
    row_cases = failure_cases[failure_cases["index"].notna()]
    structural = [v for v in violations if v.check.startswith(("column_in_", "dtype(", "not_empty"))]
    if on_error == "fail" or structural or row_cases.empty:
        summary = "; ".join(v.describe() for v in violations)
        raise DataContractError(
            f"data violates contract {contract.name!r} with {len(violations)} violation(s): {summary}",
            report=violations,
        )

    reasons = (
        (row_cases["column"].astype(str) + ":" + row_cases["check"].astype(str))
        .groupby(row_cases["index"].astype(np.int64))
        .agg(lambda parts: "; ".join(sorted(set(parts))))
    )
    bad_rows = frame.index.isin(reasons.index)
    quarantined = frame.loc[bad_rows].assign(**{QUARANTINE_REASONS: reasons})
    valid = frame.loc[~bad_rows].reset_index(drop=True)
    return SchemaValidation(valid, quarantined.reset_index(drop=True), violations)
