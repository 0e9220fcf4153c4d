"""The MLflow pyfunc face of a model bundle, logged as a "model from code" (no pickle).

MLflow stores this file as source and runs it on load; the only artifact is the bundle, which is
checked against the digest recorded in the model config (outside the bundle) before use.
``predict`` returns fraud probabilities, one per row of the model's feature columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class BundleModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from fraud_detection.errors import ArtifactError
        from fraud_detection.models.bundle import load_bundle
        from fraud_detection.models.registry import BUNDLE_ARTIFACT

        expected = (context.model_config or {}).get("bundle_sha256")
        if not expected:
            raise ArtifactError(
                "the logged model has no bundle_sha256 in its model config to check the bundle against"
            )
        self.bundle = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]), expected_digest=expected)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return self.bundle.predict_proba(model_input)


mlflow.models.set_model(BundleModel())
