"""The data contract: the one declaration of a dataset's schema, from which every other schema derives.

A contract (``configs/contract/<name>.yaml``) names each column in our canonical vocabulary, maps it
from the source layout, gives its dtype, nullability and allowed range or values, and its *role*:

* ``id`` (``transaction_id``), ``timestamp`` (``event_timestamp``), ``label`` (``is_fraud``);
* ``entity``: a key of a feature-store entity (``customer_id``, ``terminal_id``);
* ``feature``: may be a model input;
* ``protected``: a protected attribute, used by fairness checks and never a model input;
* ``excluded``: never a model input (simulator ground truth, redundant encodings).

The pandera raw schema (``validators.py``) is derived from it; later stages derive the request
model, the MLflow signature and the Feast schema from the same object.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fraud_detection.config import load_yaml_config
from fraud_detection.errors import ConfigError

TRANSACTION_ID = "transaction_id"
EVENT_TIMESTAMP = "event_timestamp"
LABEL = "is_fraud"
AMOUNT = "amount"


class Role(StrEnum):
    ID = "id"
    TIMESTAMP = "timestamp"
    ENTITY = "entity"
    LABEL = "label"
    FEATURE = "feature"
    PROTECTED = "protected"
    EXCLUDED = "excluded"


class DType(StrEnum):
    INT64 = "int64"
    FLOAT64 = "float64"
    STRING = "string"
    DATETIME = "datetime"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Severity = Literal["critical", "warning"]


class ColumnSpec(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="canonical snake_case name")
    source: str | None = Field(default=None, description="column name in the source layout")
    dtype: DType
    role: Role
    entity: str | None = Field(default=None, description="entity name, for role 'entity'")
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: list[int | str] | None = None
    pattern: str | None = Field(default=None, description="regex every string value must match")
    description: str = ""

    @property
    def source_name(self) -> str:
        return self.source or self.name

    @model_validator(mode="after")
    def _check_consistency(self) -> ColumnSpec:
        if (self.role == Role.ENTITY) != (self.entity is not None):
            raise ValueError(f"column {self.name!r}: 'entity' must be set exactly when role is 'entity'")
        if self.role == Role.ENTITY and self.name != f"{self.entity}_id":
            raise ValueError(f"entity column {self.name!r} must be named '{self.entity}_id'")
        numeric = self.dtype in (DType.INT64, DType.FLOAT64)
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"column {self.name!r}: min/max need a numeric dtype, not {self.dtype}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} is above max {self.max}")
        if self.pattern is not None:
            if self.dtype != DType.STRING:
                raise ValueError(f"column {self.name!r}: pattern needs dtype 'string', not {self.dtype}")
            try:
                re.compile(self.pattern)
            except re.error as err:
                raise ValueError(
                    f"column {self.name!r}: pattern {self.pattern!r} is not a valid regex: {err}"
                ) from err
        if self.allowed is not None:
            expected_type = {DType.INT64: int, DType.STRING: str}.get(self.dtype)
            wrong = [v for v in self.allowed if expected_type is None or not isinstance(v, expected_type)]
            if wrong:
                raise ValueError(
                    f"column {self.name!r}: allowed values {wrong} do not match dtype {self.dtype}"
                )
        if self.nullable and self.role in (Role.ID, Role.TIMESTAMP, Role.LABEL, Role.ENTITY):
            raise ValueError(f"column {self.name!r}: a {self.role} column cannot be nullable")
        return self


# --- quality checks beyond the schema; each has a severity, critical ones stop the pipeline ---


class CompletenessCheck(_Frozen):
    max_null_share: Annotated[float, Field(ge=0, le=1)] = 0.0
    severity: Severity = "critical"


class MissingDaysCheck(_Frozen):
    severity: Severity = "critical"


class FreshnessCheck(_Frozen):
    max_staleness: dt.timedelta
    severity: Severity = "warning"


class VolumeCheck(_Frozen):
    window_days: Annotated[int, Field(ge=1)] = 7
    tolerance: Annotated[float, Field(gt=0)] = 0.5
    min_rows_per_day: Annotated[int, Field(ge=0)] = 1
    severity: Severity = "critical"


class FraudRateCheck(_Frozen):
    min: Annotated[float, Field(ge=0, le=1)]
    max: Annotated[float, Field(ge=0, le=1)]
    max_daily: Annotated[float, Field(ge=0, le=1)] = 1.0
    min_rows_for_daily: Annotated[int, Field(ge=1)] = 100
    severity: Severity = "critical"


class AmountDistributionCheck(_Frozen):
    mean_min: float
    mean_max: float
    max_psi: Annotated[float, Field(gt=0)] = 0.25
    window_days: Annotated[int, Field(ge=1)] = 7
    bins: Annotated[int, Field(ge=2)] = 10
    severity: Severity = "warning"


class ReferentialCheck(_Frozen):
    column: str
    table: str = Field(description="reference table path, relative to the dataset folder")
    key: str
    severity: Severity = "critical"


class LabelLeakageCheck(_Frozen):
    max_auc: Annotated[float, Field(gt=0.5, le=1)] = 0.95
    severity: Severity = "critical"


class QuarantineCheck(_Frozen):
    max_share: Annotated[float, Field(ge=0, le=1)] = 0.01
    severity: Severity = "critical"


class QualityConfig(_Frozen):
    completeness: CompletenessCheck | None = CompletenessCheck()
    missing_days: MissingDaysCheck | None = MissingDaysCheck()
    freshness: FreshnessCheck | None = None
    volume: VolumeCheck | None = VolumeCheck()
    fraud_rate: FraudRateCheck | None = None
    amount_distribution: AmountDistributionCheck | None = None
    referential: list[ReferentialCheck] = []
    label_leakage: LabelLeakageCheck | None = LabelLeakageCheck()
    quarantine: QuarantineCheck = QuarantineCheck()


class Contract(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    version: int = Field(ge=1)
    description: str = ""
    columns: list[ColumnSpec] = Field(min_length=1)
    max_future_skew: dt.timedelta = dt.timedelta(minutes=5)
    quality: QualityConfig = QualityConfig()

    @model_validator(mode="after")
    def _check_roles(self) -> Contract:
        names = [column.name for column in self.columns]
        sources = [column.source_name for column in self.columns]
        for label, values in (("name", names), ("source", sources)):
            duplicated = sorted({value for value in values if values.count(value) > 1})
            if duplicated:
                raise ValueError(f"column {label}s must be unique, repeated: {duplicated}")
        required = {
            TRANSACTION_ID: (Role.ID, DType.INT64, DType.STRING),
            EVENT_TIMESTAMP: (Role.TIMESTAMP, DType.DATETIME),
            LABEL: (Role.LABEL, DType.INT64),
            AMOUNT: (Role.FEATURE, DType.FLOAT64),
        }
        by_name = {column.name: column for column in self.columns}
        for name, (role, *dtypes) in required.items():
            column = by_name.get(name)
            if column is None:
                raise ValueError(f"the contract must declare the canonical column {name!r}")
            if column.role != role or column.dtype not in dtypes:
                expected = " or ".join(dtypes)
                raise ValueError(f"column {name!r} must have role {role} and dtype {expected}")
        for role in (Role.ID, Role.TIMESTAMP, Role.LABEL):
            count = sum(column.role == role for column in self.columns)
            if count != 1:
                raise ValueError(f"exactly one column must have role {role!r}, found {count}")
        if not self.entity_columns:
            raise ValueError("at least one column must have role 'entity'")
        known = set(names)
        for check in self.quality.referential:
            if check.column not in known:
                raise ValueError(f"referential check on unknown column {check.column!r}")
        return self

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def source_to_canonical(self) -> dict[str, str]:
        return {column.source_name: column.name for column in self.columns}

    @property
    def entity_columns(self) -> dict[str, str]:
        """Entity name -> key column, e.g. ``{"customer": "customer_id"}``."""
        return {c.entity: c.name for c in self.columns if c.role == Role.ENTITY and c.entity is not None}

    def columns_with_role(self, *roles: Role) -> list[str]:
        return [column.name for column in self.columns if column.role in roles]

    @property
    def model_input_candidates(self) -> list[str]:
        """Raw columns a model may use directly; protected and excluded ones never are."""
        return self.columns_with_role(Role.FEATURE)

    @property
    def never_model_inputs(self) -> list[str]:
        return self.columns_with_role(Role.PROTECTED, Role.EXCLUDED, Role.LABEL, Role.ID)


def load_contract(name_or_path: str | Path, contracts_dir: Path) -> Contract:
    """Load a contract by name (``<contracts_dir>/<name>.yaml``) or by explicit YAML path."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml"):
        path = candidate
    else:
        path = Path(contracts_dir) / f"{name_or_path}.yaml"
        if not Path(contracts_dir).is_dir():
            raise ConfigError(
                f"contracts folder {str(contracts_dir)!r} does not exist; run from the repository root "
                "or set FRAUD_CONTRACTS_DIR"
            )
        if not path.is_file():
            available = sorted(p.stem for p in Path(contracts_dir).glob("*.yaml"))
            raise ConfigError(
                f"contract {str(name_or_path)!r} not found in {str(contracts_dir)!r}; "
                f"expected one of {available} (set FRAUD_CONTRACTS_DIR or pass a .yaml path)"
            )
    return load_yaml_config(path, Contract)
