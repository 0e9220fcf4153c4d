"""Score raw transactions with a bundle: point-in-time features from the input's own history, then
the model, then the decision at the bundle's threshold.

The features are computed by the training code with the feature definitions stored in the bundle,
so a score here equals the score the model gave the same row when it was assessed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fraud_detection.data.raw_store import parquet_bytes
from fraud_detection.errors import ArtifactError
from fraud_detection.features.engineering import FeatureConfig, build_features
from fraud_detection.models.registry import ResolvedModel
from fraud_detection.utils.io import atomic_write_bytes

OUTPUT_COLUMNS = ["transaction_id", "score", "decision", "model_version"]


def bundle_feature_config(model: ResolvedModel) -> FeatureConfig:
    stored = model.bundle.metadata.get("feature_config")
    if stored is None:
        raise ArtifactError(
            f"model {model.uri!r} does not record its feature definitions (metadata.feature_config)"
        )
    return FeatureConfig.model_validate(stored)


def score_transactions(model: ResolvedModel, transactions: pd.DataFrame) -> pd.DataFrame:
    """``transaction_id``, ``score`` (fraud probability), ``decision`` (1 = alert), ``model_version``."""
    features = build_features(transactions, bundle_feature_config(model))
    scores = model.bundle.predict_proba(features[list(model.bundle.feature_names)].to_numpy(dtype=np.float32))
    return pd.DataFrame(
        {
            "transaction_id": features["transaction_id"].to_numpy(),
            "score": scores.astype(np.float64),
            "decision": (scores >= model.bundle.threshold).astype(np.int8),
            "model_version": model.version,
        }
    )


def write_scores(scores: pd.DataFrame, out: Path) -> Path:
    atomic_write_bytes(Path(out), parquet_bytes(scores))
    return Path(out)
