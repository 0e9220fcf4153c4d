"""The model under test: ``--model-uri`` (the promotion gate) or, without it, a small model trained here.

The evaluation rows are always the small simulated dataset's last two weeks, so a given model and
the fallback one are checked on the same rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from fraud_detection.models.bundle import ModelBundle
from fraud_detection.training.config import TrainingConfig
from fraud_detection.training.dataset import TrainingTable, load_training_table
from fraud_detection.training.runs import train
from tests.conftest import AS_OF, training_config

PROTECTED = "customer_age_band"
EVALUATION_DAYS = 14


@dataclasses.dataclass(frozen=True)
class EvaluationRows:
    rows: pd.DataFrame  # every feature column plus the raw protected attribute
    labels: pd.Series
    start: dt.date  # first day of the evaluation rows


@pytest.fixture(scope="module")
def behaviour_config(small_raw: Path) -> TrainingConfig:
    return TrainingConfig.model_validate(training_config(small_raw))


@pytest.fixture(scope="module")
def behaviour_table(behaviour_config: TrainingConfig, simulator_contract) -> TrainingTable:  # type: ignore[no-untyped-def]
    return load_training_table(behaviour_config, simulator_contract, as_of=AS_OF)


@pytest.fixture(scope="module")
def evaluation(behaviour_table: TrainingTable) -> EvaluationRows:
    frame = behaviour_table.frame
    last_day = frame["event_timestamp"].max().normalize()
    start = last_day - pd.Timedelta(days=EVALUATION_DAYS - 1)
    recent = frame[frame["event_timestamp"] >= start]
    columns = [*behaviour_table.feature_config.feature_names, PROTECTED]
    return EvaluationRows(
        recent[columns].reset_index(drop=True), recent["is_fraud"].reset_index(drop=True), start.date()
    )


def _train_fallback(
    config: TrainingConfig, table: TrainingTable, evaluation: EvaluationRows, out: Path
) -> ModelBundle:
    # Trained on the window whose delayed test period is the evaluation rows, so the metrics of the
    # no-regression check are out of sample (the default window would overlap them).
    start = evaluation.start - dt.timedelta(days=config.split.delay_days + config.split.train_days)
    return train(config, table, out, train_start=start, assess_folds=False).bundle


def _reseeded(config: TrainingConfig) -> TrainingConfig:
    # A seed alone changes nothing without row subsampling (see tests/integration/test_training.py).
    xgb = config.model.xgboost.model_copy(update={"subsample": 0.7})
    return config.model_copy(update={"seed": 1, "model": config.model.model_copy(update={"xgboost": xgb})})


@pytest.fixture(scope="module")
def model(
    request: pytest.FixtureRequest,
    behaviour_config: TrainingConfig,
    behaviour_table: TrainingTable,
    evaluation: EvaluationRows,
    tmp_path_factory: pytest.TempPathFactory,
) -> ModelBundle:
    uri = request.config.getoption("--model-uri")
    if uri:
        from fraud_detection.models.registry import resolve_model

        return resolve_model(uri).bundle
    return _train_fallback(behaviour_config, behaviour_table, evaluation, tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def champion(
    request: pytest.FixtureRequest,
    behaviour_config: TrainingConfig,
    behaviour_table: TrainingTable,
    evaluation: EvaluationRows,
    tmp_path_factory: pytest.TempPathFactory,
) -> ModelBundle:
    """``--champion-uri`` with ``--model-uri``; otherwise the fallback model retrained with another seed."""
    uri = request.config.getoption("--champion-uri")
    if uri and request.config.getoption("--model-uri"):
        from fraud_detection.models.registry import resolve_model

        return resolve_model(uri).bundle
    out = tmp_path_factory.mktemp("champion")
    return _train_fallback(_reseeded(behaviour_config), behaviour_table, evaluation, out)
