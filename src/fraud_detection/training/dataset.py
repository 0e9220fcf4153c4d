"""The training table: validated transactions → point-in-time features → one frame with the label.

Features are computed over the whole history in the source (each row only sees its past, so
training windows cut out of this table carry no leakage), with the very functions that fill the
Feast tables: the offline rows a model trains on are the rows the feature store serves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud_detection.data.contract import Contract, Role
from fraud_detection.data.ingest import validate_dataset
from fraud_detection.data.quality import gate
from fraud_detection.errors import ConfigError
from fraud_detection.features.engineering import FeatureConfig, build_features, load_feature_config
from fraud_detection.training.config import HANDBOOK_FEATURES, TrainingConfig

LABEL = "is_fraud"


@dataclass(frozen=True)
class TrainingTable:
    """Keys, features, label and protected attributes of every validated transaction."""

    frame: pd.DataFrame
    feature_config: FeatureConfig
    feature_names: tuple[str, ...]
    protected: tuple[str, ...]
    source: str
    content_digest: str  # digest of the validated input rows (lineage)
    quality: dict[str, object] | None = None  # the quality gate's outcome on this data

    @property
    def label(self) -> pd.Series:
        return self.frame[LABEL]


def select_features(config: FeatureConfig, feature_set: str) -> tuple[str, ...]:
    if feature_set == "all":
        return tuple(config.feature_names)
    missing = [name for name in HANDBOOK_FEATURES if name not in config.feature_names]
    if missing:
        raise ConfigError(
            f"features.feature_set='handbook' needs {missing}, which the feature config does not define "
            f"(its windows_days are {config.windows_days}; the handbook's are [1, 7, 30])"
        )
    return HANDBOOK_FEATURES


def build_training_table(
    transactions: pd.DataFrame, contract: Contract, feature_config: FeatureConfig
) -> pd.DataFrame:
    """Features plus the label and the contract's protected columns (kept for fairness, never inputs)."""
    features = build_features(transactions, feature_config)
    protected = contract.columns_with_role(Role.PROTECTED)
    extra = transactions[[LABEL, *protected]]
    return pd.concat([features, extra], axis=1, copy=False)


def load_training_table(config: TrainingConfig, contract: Contract, *, as_of: dt.datetime) -> TrainingTable:
    """Validate the configured source (quality gate included) and compute its training table."""
    feature_config = load_feature_config(Path(config.features.config))
    if feature_config.label_delay_days < config.split.delay_days:
        raise ConfigError(
            f"the features use labels {feature_config.label_delay_days} days old (label_delay_days in "
            f"{str(config.features.config)!r}) but split.delay_days={config.split.delay_days} says labels "
            "are known only after that: the test folds would see labels not yet known"
        )
    feature_names = select_features(feature_config, config.features.feature_set)
    unknown = [n for n in config.model.xgboost.monotone_increasing if n not in feature_config.feature_names]
    if unknown:
        raise ConfigError(
            f"model.xgboost.monotone_increasing names {unknown}, which are not features "
            f"(expected some of {feature_config.feature_names})"
        )
    validation = validate_dataset(config.data.source, contract, as_of=as_of)
    gate(validation.report)
    frame = build_training_table(validation.valid, contract, feature_config)
    return TrainingTable(
        frame=frame,
        feature_config=feature_config,
        feature_names=feature_names,
        protected=tuple(contract.columns_with_role(Role.PROTECTED)),
        source=config.data.source,
        content_digest=validation.report.content_digest or "",
        quality={
            "passed": validation.report.passed,
            "checks": len(validation.report.checks),
            "warnings": [
                c.name for c in validation.report.checks if not c.passed and c.severity == "warning"
            ],
            "rows": validation.report.n_valid_rows,
        },
    )


TRAINING_TABLE_FILE = "training_table.parquet"
TRAINING_TABLE_META = "training_table.json"


def write_training_table(table: TrainingTable, out_dir: Path) -> Path:
    """Persist ``table`` in ``out_dir`` (parquet rows, then a JSON sidecar written last); returns the folder.

    What the training flow's steps pass between them instead of the frame itself.
    """
    from fraud_detection.data.raw_store import parquet_bytes
    from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, sha256_bytes

    out_dir = Path(out_dir)
    data = parquet_bytes(table.frame)
    atomic_write_bytes(out_dir / TRAINING_TABLE_FILE, data)
    meta = {
        "feature_config": table.feature_config.model_dump(mode="json"),
        "feature_names": list(table.feature_names),
        "protected": list(table.protected),
        "source": table.source,
        "content_digest": table.content_digest,
        "quality": table.quality,
        "rows": len(table.frame),
        "sha256": sha256_bytes(data),
    }
    atomic_write_json(out_dir / TRAINING_TABLE_META, meta)
    return out_dir


def read_training_table(folder: Path) -> TrainingTable:
    """The table :func:`write_training_table` wrote; refuses a folder whose rows do not match the sidecar."""
    import json

    from fraud_detection.errors import DataIntegrityError, DataSourceError
    from fraud_detection.utils.io import sha256_bytes

    folder = Path(folder)
    try:
        meta = json.loads((folder / TRAINING_TABLE_META).read_text(encoding="utf-8"))
        data = (folder / TRAINING_TABLE_FILE).read_bytes()
    except (OSError, ValueError) as err:
        raise DataSourceError(
            f"{str(folder)!r} holds no readable training table ({TRAINING_TABLE_META} and "
            f"{TRAINING_TABLE_FILE} expected): {err}"
        ) from err
    if sha256_bytes(data) != meta["sha256"]:
        raise DataIntegrityError(
            f"{str(folder / TRAINING_TABLE_FILE)!r} does not match the sha256 in its {TRAINING_TABLE_META}"
        )
    import io

    frame = pd.read_parquet(io.BytesIO(data))
    return TrainingTable(
        frame=frame,
        feature_config=FeatureConfig.model_validate(meta["feature_config"]),
        feature_names=tuple(meta["feature_names"]),
        protected=tuple(meta["protected"]),
        source=meta["source"],
        content_digest=meta["content_digest"],
        quality=meta["quality"],
    )
