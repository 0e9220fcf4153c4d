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
from fraud_detection.features.engineering import build_features
from fraud_detection.inference.scorer import FraudScorer
from fraud_detection.models.registry import ResolvedModel
from fraud_detection.utils.io import atomic_write_bytes

OUTPUT_COLUMNS = ["transaction_id", "score", "decision", "model_version"]


def score_transactions(model: ResolvedModel, transactions: pd.DataFrame) -> pd.DataFrame:
    """``transaction_id``, ``score`` (fraud probability), ``decision`` (1 = alert), ``model_version``."""
    scorer = FraudScorer(model, threads=None)  # batch: XGBoost's own thread count
    features = build_features(transactions, scorer.feature_config)
    probability, decision = scorer.score_features(
        features[list(model.bundle.feature_names)].to_numpy(dtype=np.float32)
    )
    return pd.DataFrame(
        {
            "transaction_id": features["transaction_id"].to_numpy(),
            "score": probability,
            "decision": decision,
            "model_version": model.version,
        }
    )


def write_scores(scores: pd.DataFrame, out: Path) -> Path:
    atomic_write_bytes(Path(out), parquet_bytes(scores))
    return Path(out)
