"""Metrics, slices, fairness, explanations and promotion gates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fraud_detection.evaluation.analysis import FairnessThresholds, assess_fairness, fairness_violations
    from fraud_detection.evaluation.drift import DriftConfig, DriftResult, detect_drift

__all__ = [
    "DriftConfig",
    "DriftResult",
    "FairnessThresholds",
    "assess_fairness",
    "detect_drift",
    "fairness_violations",
]
_DRIFT = frozenset({"DriftConfig", "DriftResult", "detect_drift"})


def __getattr__(name: str) -> Any:
    # Resolved on first use (PEP 562): importing the package stays free of sklearn/pydantic, and
    # ``import fraud_detection.evaluation.metrics`` never drags the analysis module in.
    if name in _DRIFT:
        from fraud_detection.evaluation import drift

        return getattr(drift, name)
    if name in __all__:
        from fraud_detection.evaluation import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
