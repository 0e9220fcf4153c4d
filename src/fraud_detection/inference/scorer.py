"""``FraudScorer``: one scoring path for online and batch use, free of any web framework.

bundle → validated transactions (:class:`~fraud_detection.inference.requests.TransactionBatch`) →
online features (Feast, one batched read per view) → the model's feature matrix → probability →
decision at the bundle's threshold → reasons (XGBoost ``pred_contribs``) on request.

The KServe adapter (``inference/server.py``) and the batch scorer (``inference/scoring.py``) both
call it, so a transaction gets the same score whichever way it comes in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraud_detection.errors import ArtifactError
from fraud_detection.evaluation.explain import reason_codes
from fraud_detection.features.engineering import FeatureConfig
from fraud_detection.features.store import (
    FeatureStoreHandle,
    OnlineBatch,
    default_columns,
    online_feature_batch,
)
from fraud_detection.inference.requests import TransactionBatch
from fraud_detection.models.registry import ResolvedModel


@dataclass(frozen=True)
class Scores:
    """The answer for a batch, one entry per transaction."""

    transaction_id: np.ndarray
    probability: np.ndarray
    decision: np.ndarray
    degraded: np.ndarray
    degraded_reasons: tuple[tuple[str, ...], ...]
    features: np.ndarray
    """float32 [n, n_model_features] in the bundle's feature order (for the prediction log)."""
    reasons: list[list[dict[str, float | str]]] | None = None
    feature_fetch_s: float = 0.0
    """Wall time of the batch's online feature read (shared by every slice of the batch)."""
    feature_fetch_failed: bool = False
    """The store read failed as a whole (timeout, unreachable, busy): every row has defaults."""

    def __len__(self) -> int:
        return len(self.transaction_id)

    def slice(self, start: int, stop: int) -> Scores:
        return Scores(
            self.transaction_id[start:stop],
            self.probability[start:stop],
            self.decision[start:stop],
            self.degraded[start:stop],
            self.degraded_reasons[start:stop],
            self.features[start:stop],
            None if self.reasons is None else self.reasons[start:stop],
            self.feature_fetch_s,
            self.feature_fetch_failed,
        )


def bundle_feature_config(model: ResolvedModel) -> FeatureConfig:
    stored = model.bundle.metadata.get("feature_config")
    if stored is None:
        raise ArtifactError(
            f"model {model.uri!r} does not record its feature definitions (metadata.feature_config)"
        )
    return FeatureConfig.model_validate(stored)


class FraudScorer:
    """Scores transactions with one model; cheap to call, safe to share between threads.

    ``store`` is the online feature store (online scoring); batch scoring passes features it
    computed itself to :meth:`score_features`. Without a store, :meth:`score` uses the documented
    default features (a transaction with no known history) and flags every row as degraded.
    """

    def __init__(
        self,
        model: ResolvedModel,
        store: FeatureStoreHandle | None = None,
        *,
        threads: int | None = 1,
    ) -> None:
        self.model = model
        self.bundle = model.bundle
        self.store = store
        self.feature_config = bundle_feature_config(model)
        if store is not None:
            self._check_store(store)
        names = self.feature_config.feature_names
        self._columns = np.array([names.index(name) for name in self.bundle.feature_names])
        if threads is not None and self.bundle.booster is not None:
            # one thread: a single row scores fastest so, and concurrent requests are merged into
            # one call by the server's micro-batcher instead
            self.bundle.booster.set_param({"nthread": threads})

    @property
    def version(self) -> str:
        return self.model.version

    def _check_store(self, store: FeatureStoreHandle) -> None:
        """The store must serve every model feature, computed with the model's feature definitions."""
        if store.config != self.feature_config:
            raise ArtifactError(
                f"model {self.model.uri!r} was trained with feature config "
                f"{self.feature_config.model_dump(mode='json')}, the feature store serves "
                f"{store.config.model_dump(mode='json')}"
            )
        if self.bundle.feature_service != store.definitions.service.name:
            raise ArtifactError(
                f"model {self.model.uri!r} expects feature service {self.bundle.feature_service!r}, "
                f"the store serves {store.definitions.service.name!r}"
            )
        missing = [name for name in self.bundle.feature_names if name not in store.config.feature_names]
        if missing:
            raise ArtifactError(
                f"model {self.model.uri!r} needs features {missing} that feature service "
                f"{store.definitions.service.name!r} does not serve"
            )

    def score_features(self, features: np.ndarray | pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(probability float64, decision int8) for a feature matrix in the bundle's order (or a frame)."""
        probability = self.bundle.predict_proba(features)
        return probability, (probability >= self.bundle.threshold).astype(np.int8)

    def reasons(self, features: np.ndarray, top_k: int) -> list[list[dict[str, float | str]]]:
        frame = pd.DataFrame(features, columns=list(self.bundle.feature_names))
        return [[r.as_dict() for r in row] for row in reason_codes(self.bundle, frame, top_k=top_k)]

    def score(self, batch: TransactionBatch, *, explain: bool = False, top_reasons: int = 3) -> Scores:
        """Online scoring: features from the store at each transaction's time, then the model."""
        started = time.perf_counter()
        online = self._online_features(batch)
        assert online is not None
        return self._scores(batch, online, time.perf_counter() - started, explain, top_reasons)

    def score_from_memory(self, batch: TransactionBatch) -> Scores | None:
        """:meth:`score` where it waits on no I/O: with no store (default features) or the store's
        in-memory mirror current; otherwise None, and nothing was read."""
        started = time.perf_counter()
        online = self._online_features(batch, memory_only=True)
        if online is None:
            return None
        return self._scores(batch, online, time.perf_counter() - started, False, 0)

    def _scores(
        self, batch: TransactionBatch, online: OnlineBatch, fetch_s: float, explain: bool, top_reasons: int
    ) -> Scores:
        features = np.ascontiguousarray(online.values[:, self._columns], dtype=np.float32)
        probability, decision = self.score_features(features)
        return Scores(
            transaction_id=batch.transaction_id,
            probability=probability,
            decision=decision,
            degraded=online.degraded,
            degraded_reasons=online.reasons,
            features=features,
            reasons=self.reasons(features, top_reasons) if explain else None,
            feature_fetch_s=fetch_s,
            feature_fetch_failed=online.failure is not None,
        )

    def _online_features(self, batch: TransactionBatch, *, memory_only: bool = False) -> OnlineBatch | None:
        if self.store is not None:
            return online_feature_batch(
                self.store,
                batch.customer_id,
                batch.terminal_id,
                batch.amount,
                batch.event_us,
                # the store's deadline per 100 transactions: a 1,000-row request reads 10x the rows
                timeout_s=self.store.online_timeout_s * max(1.0, len(batch) / 100),
                memory_only=memory_only,
            )
        columns = default_columns(self.feature_config, batch.amount, batch.event_us)
        n = len(batch)
        return OnlineBatch(
            tuple(columns),
            np.column_stack(list(columns.values())) if n else np.empty((0, len(columns))),
            np.ones(n, dtype=bool),
            tuple(("no online feature store configured",) for _ in range(n)),
        )
