"""Training config rules that protect the protocol: selection never sees the test periods."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraud_detection.errors import ConfigError
from fraud_detection.features.engineering import FeatureConfig
from fraud_detection.training.config import HANDBOOK_FEATURES, TrainingConfig
from fraud_detection.training.dataset import select_features
from tests.conftest import training_config

pytestmark = pytest.mark.unit


def test_validation_folds_must_end_before_the_test_periods_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    TrainingConfig.model_validate(training_config(tmp_path))  # the shipped layout passes
    overlapping = training_config(
        tmp_path, split={"validation": {"latest_train_start": "2018-04-29", "n_folds": 2}}
    )
    with pytest.raises(ValidationError, match="validation folds end 2018-05-20"):
        TrainingConfig.model_validate(overlapping)


def test_handbook_feature_set_needs_the_handbook_windows() -> None:
    assert (
        select_features(
            FeatureConfig(windows_days=[1, 7, 30], label_delay_days=7, history_days=30), "handbook"
        )
        == HANDBOOK_FEATURES
    )
    with pytest.raises(ConfigError, match=r"needs \['customer_nb_tx_30d'"):
        select_features(FeatureConfig(windows_days=[1, 7], label_delay_days=7, history_days=30), "handbook")
