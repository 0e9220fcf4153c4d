"""Fixtures of the integration tier: the small simulated dataset's training config and table."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraud_detection.training.config import TrainingConfig
from fraud_detection.training.dataset import load_training_table
from tests.conftest import AS_OF, training_config


@pytest.fixture(scope="module")
def config(small_raw: Path) -> TrainingConfig:
    """The small dataset's training config: 2 validation and 2 test folds."""
    return TrainingConfig.model_validate(training_config(small_raw))


@pytest.fixture(scope="module")
def table(config: TrainingConfig, simulator_contract):  # type: ignore[no-untyped-def]
    """Its training table: validated transactions, features, label, protected column."""
    return load_training_table(config, simulator_contract, as_of=AS_OF)
