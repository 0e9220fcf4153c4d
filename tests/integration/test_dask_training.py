"""The same training config trains on Dask (``xgboost.dask`` on a ``LocalCluster``) and on one machine."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fraud_detection.errors import ConfigError
from fraud_detection.models.bundle import ModelBundle, load_bundle
from fraud_detection.training.config import TrainingConfig
from fraud_detection.training.distributed import dask_client
from fraud_detection.training.runs import train
from fraud_detection.training.trainer import fit_bundle, score_metrics, splitter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    # "local": an in-process LocalCluster (processes=False), started once for the module.
    with dask_client("local", n_jobs=2) as started:
        yield started


@pytest.fixture(scope="module")
def fold(config: TrainingConfig, table):  # type: ignore[no-untyped-def]
    """The first test fold: its training rows, its delayed test rows and its window."""
    split = splitter(config, config.split.test)
    (train_rows, test_rows), windows = next(zip(split.split(table.frame), split.windows(), strict=True))
    return table.frame.iloc[train_rows], table.frame.iloc[test_rows], windows


def _fit(config: TrainingConfig, table, fold, client: Any = None) -> ModelBundle:  # type: ignore[no-untyped-def]
    from fraud_detection.models.bundle import TrainingWindow

    train_rows, _, windows = fold
    return fit_bundle(
        train_rows,
        table.feature_names,
        config.model,
        seed=config.seed,
        window=TrainingWindow(start=windows.train_start, end=windows.train_end),
        threshold=config.threshold.value,
        feature_service=config.features.feature_service,
        dask_client=client,
    )


def _auc(bundle: ModelBundle, table, fold, config: TrainingConfig) -> float:  # type: ignore[no-untyped-def]
    from fraud_detection.training.trainer import feature_matrix

    test_rows = fold[1]
    scores = bundle.predict_proba(feature_matrix(test_rows, table.feature_names))
    return score_metrics(test_rows, scores, config.top_k)["roc_auc"]


def _with_xgboost(config: TrainingConfig, **params: Any) -> TrainingConfig:
    xgboost = config.model.xgboost.model_copy(update=params)
    return config.model_copy(update={"model": config.model.model_copy(update={"xgboost": xgboost})})


def test_dask_training_reaches_the_single_machine_auc(config: TrainingConfig, table, fold, client) -> None:  # type: ignore[no-untyped-def]
    single = _auc(_fit(config, table, fold), table, fold, config)
    distributed = _auc(_fit(config, table, fold, client), table, fold, config)
    print(f"roc_auc single {single:.5f} dask {distributed:.5f}")
    assert single > 0.6 and distributed > 0.6  # both learnt something on this data
    assert abs(distributed - single) <= 0.01


def test_two_dask_workers_split_the_rows_and_still_learn(config: TrainingConfig, table, fold, client) -> None:  # type: ignore[no-untyped-def]
    from distributed import Client, LocalCluster

    # Two workers: rows split between them, quantile sketches merged, gradients allreduced. The
    # merged sketch gives other bin edges, so AUC is not pinned to 0.01 here: on this tiny data
    # (29-43 test frauds) it moved by up to 0.05 from one machine, about as much as changing max_bin
    # alone does on one machine. Rows and labels out of line would give chance level (0.5).
    with (
        LocalCluster(
            processes=False,
            n_workers=2,
            threads_per_worker=1,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as two,
    ):
        distributed = _auc(_fit(config, table, fold, two), table, fold, config)
    single = _auc(_fit(config, table, fold), table, fold, config)
    print(f"roc_auc single {single:.5f} dask (2 workers) {distributed:.5f}")
    assert distributed > 0.6


def test_early_stopping_on_dask_holds_out_the_windows_last_day(
    config: TrainingConfig, table, fold, client
) -> None:  # type: ignore[no-untyped-def]
    stopping = _with_xgboost(config, n_estimators=300, early_stopping_rounds=5, learning_rate=0.5)
    single = _fit(stopping, table, fold)
    distributed = _fit(stopping, table, fold, client)
    print(
        f"early stopping rounds single {single.booster.num_boosted_rounds() if single.booster else None} "
        f"dask {distributed.booster.num_boosted_rounds() if distributed.booster else None}"
    )
    assert distributed.booster is not None and single.booster is not None
    assert distributed.booster.attr("best_iteration") is not None
    assert distributed.booster.num_boosted_rounds() < 300
    assert abs(_auc(distributed, table, fold, config) - _auc(single, table, fold, config)) <= 0.01


def test_train_writes_a_bundle_trained_on_dask(config: TrainingConfig, table, client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start = dt.date(2018, 4, 22)
    single = train(config, table, tmp_path / "single", train_start=start, assess_folds=False)
    result = train(
        config, table, tmp_path / "dask", train_start=start, assess_folds=False, dask_client=client
    )
    saved = load_bundle(tmp_path / "dask", expected_digest=result.digest)
    assert saved.metadata["trained_with"] == "xgboost.dask"
    assert "trained_with" not in single.bundle.metadata
    assert result.holdout_metrics is not None and single.holdout_metrics is not None
    print(
        f"window holdout roc_auc single {single.holdout_metrics['roc_auc']:.5f} dask {result.holdout_metrics['roc_auc']:.5f}"
    )
    assert abs(result.holdout_metrics["roc_auc"] - single.holdout_metrics["roc_auc"]) <= 0.01


def test_logistic_regression_refuses_dask(config: TrainingConfig, table, fold, client) -> None:  # type: ignore[no-untyped-def]
    logistic = config.model_copy(
        update={"model": config.model.model_copy(update={"type": "logistic_regression"})}
    )
    with pytest.raises(ConfigError, match="logistic_regression trains on one machine only"):
        _fit(logistic, table, fold, client)


def test_exact_tree_method_refuses_dask(config: TrainingConfig, table, fold, client) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="'exact' trains on one machine only"):
        _fit(_with_xgboost(config, tree_method="exact"), table, fold, client)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "not-an-address"])
def test_unreachable_scheduler_is_a_config_error_naming_the_address(address: str) -> None:
    started = time.perf_counter()
    with (
        pytest.raises(ConfigError, match=re.escape(f"Dask scheduler at '{address}'")),
        dask_client(address, timeout_s=1),
    ):
        pass
    assert time.perf_counter() - started < 5
