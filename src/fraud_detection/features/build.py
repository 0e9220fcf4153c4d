"""Raw transactions → validated → point-in-time features → parquet feature tables (``fraud features build``).

Output folder::

    transaction_features.parquet         every feature per transaction (the offline training row)
    customer_features.parquet            customer state per transaction   (Feast source)
    terminal_features.parquet            terminal state per transaction   (Feast source)
    customer_terminal_features.parquet   customer-terminal state          (Feast source)
    manifest.json                        input digest, feature config, sha256 and rows per file (last)

Every table carries ``transaction_id``. The raw data passes the contract and the quality gate first.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fraud_detection.data.contract import Contract
from fraud_detection.data.ingest import validate_dataset
from fraud_detection.data.quality import gate
from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.features.engineering import FeatureConfig, build_features, split_feature_tables
from fraud_detection.utils.io import atomic_write_bytes, atomic_write_json, sha256_bytes

MANIFEST_FILE = "manifest.json"


def table_file(name: str) -> str:
    return f"{name}_features.parquet"


@dataclass(frozen=True)
class FeatureBuild:
    out_dir: Path
    tables: dict[str, pd.DataFrame]
    manifest: dict


def build_feature_tables(
    source: str | Path, contract: Contract, config: FeatureConfig, out_dir: Path, *, as_of: dt.datetime
) -> FeatureBuild:
    """Validate ``source`` (quality gate included), compute every feature and write the tables."""
    validation = validate_dataset(source, contract, as_of=as_of)
    gate(validation.report)
    features = build_features(validation.valid, config)
    tables = split_feature_tables(features, config)
    out_dir = Path(out_dir)
    files = {}
    for name, table in tables.items():
        if name != "transaction":
            # Feast's file store converts naive timestamps row by row in Python; UTC-aware ones
            # (the same instants) it joins vectorised.
            table = table.assign(event_timestamp=table["event_timestamp"].dt.tz_localize("UTC"))
        data = parquet_bytes(table)
        atomic_write_bytes(out_dir / table_file(name), data)
        files[table_file(name)] = {"sha256": sha256_bytes(data), "rows": len(table)}
    manifest = {
        "source": str(source),
        "contract": contract.name,
        "input_content_digest": validation.report.content_digest,
        "feature_config": config.model_dump(mode="json"),
        "feature_names": config.feature_names,
        "files": files,
    }
    atomic_write_json(out_dir / MANIFEST_FILE, manifest)
    return FeatureBuild(out_dir, tables, manifest)
