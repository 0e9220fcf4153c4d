"""Training on a small simulated dataset: reproducibility, both model types, the protocol, tuning."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from fraud_detection.errors import ConfigError
from fraud_detection.models.bundle import load_bundle
from fraud_detection.training.config import HANDBOOK_FEATURES, TrainingConfig
from fraud_detection.training.dataset import load_training_table
from fraud_detection.training.runs import train
from fraud_detection.training.trainer import feature_matrix, run_protocol
from tests.conftest import AS_OF, training_config

pytestmark = pytest.mark.integration


def test_training_table_holds_features_label_and_protected_column(table) -> None:  # type: ignore[no-untyped-def]
    assert set(table.feature_names) <= set(table.frame.columns)
    assert {"is_fraud", "customer_age_band"} <= set(table.frame.columns)
    assert "customer_age_band" not in table.feature_names  # protected: kept for fairness, never an input
    assert set(HANDBOOK_FEATURES) <= set(table.feature_names)
    assert table.content_digest.startswith("sha256:")


def test_same_data_config_and_seed_give_a_byte_identical_booster_and_metrics(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    first = train(config, table, tmp_path / "a", assess_folds=True)
    second = train(config, table, tmp_path / "b", assess_folds=True)
    assert (tmp_path / "a" / "model.ubj").read_bytes() == (tmp_path / "b" / "model.ubj").read_bytes()
    assert first.digest == second.digest
    assert first.protocol is not None and second.protocol is not None
    assert first.protocol.summary == second.protocol.summary
    # A different seed with row subsampling gives a different model: the check above can fail.
    reseeded = config.model_copy(
        update={
            "seed": 1,
            "model": config.model.model_copy(
                update={"xgboost": config.model.xgboost.model_copy(update={"subsample": 0.7})}
            ),
        }
    )
    train(reseeded, table, tmp_path / "c", assess_folds=False)
    assert (tmp_path / "c" / "model.ubj").read_bytes() != (tmp_path / "a" / "model.ubj").read_bytes()


def test_bundle_records_window_features_service_and_the_test_fold_metrics(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    result = train(config, table, tmp_path / "bundle", train_start=dt.date(2018, 4, 22))
    bundle = load_bundle(tmp_path / "bundle", expected_digest=result.digest)
    assert bundle.training_window.start == dt.datetime(2018, 4, 22)
    assert bundle.training_window.end == dt.datetime(2018, 4, 29)
    assert bundle.feature_names == table.feature_names
    assert bundle.feature_service == "fraud_v1"
    assert bundle.metadata["data"]["content_digest"] == table.content_digest
    assert set(bundle.metadata["test_folds"]) >= {"average_precision_mean", "roc_auc_mean"}
    # The window's delayed test period (2018-05-06 .. 05-12) is inside the data: scored too.
    assert result.holdout_metrics is not None
    assert bundle.metadata["holdout_metrics"]["roc_auc"] == pytest.approx(result.holdout_metrics["roc_auc"])
    # ... and measured as the monitor measures served traffic (every card of the week)
    served = bundle.metadata["served_holdout_metrics"]
    assert set(served) == {"average_precision", f"card_precision_at_{config.top_k}"}
    assert 0.0 < served["average_precision"] <= 1.0
    # Only rows of the window were used.
    assert bundle.metadata["data"]["train_rows"] == int(
        table.frame["event_timestamp"]
        .between(dt.datetime(2018, 4, 22), dt.datetime(2018, 4, 29), inclusive="left")
        .sum()
    )


def test_default_window_is_the_latest_whose_labels_are_known(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    result = train(config, table, tmp_path / "bundle", assess_folds=False)
    last_day = table.frame["event_timestamp"].max().date()
    assert result.window.end.date() == last_day - dt.timedelta(days=config.split.delay_days) + dt.timedelta(
        days=1
    )
    assert result.holdout_metrics is None  # its test period lies beyond the data


def test_logistic_regression_baseline_trains_and_scores_sensibly(config: TrainingConfig, table) -> None:  # type: ignore[no-untyped-def]
    logistic = config.model.model_copy(update={"type": "logistic_regression"})
    result = run_protocol(table, config, config.split.test, model=logistic)
    assert result.summary["roc_auc_mean"] > 0.6  # far above chance on this data
    assert len(result.folds) == 2


def test_early_stopping_keeps_only_the_trees_up_to_the_best_iteration(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    stopping = config.model_copy(
        update={
            "model": config.model.model_copy(
                update={
                    "xgboost": config.model.xgboost.model_copy(
                        update={"n_estimators": 300, "early_stopping_rounds": 5, "learning_rate": 0.5}
                    )
                }
            )
        }
    )
    result = train(stopping, table, tmp_path / "bundle", assess_folds=False, train_start=dt.date(2018, 4, 22))
    saved = load_bundle(tmp_path / "bundle")
    assert saved.booster is not None
    assert saved.booster.num_boosted_rounds() < 300
    rows = feature_matrix(table.frame.head(500), table.feature_names)
    np.testing.assert_allclose(saved.predict_proba(rows), result.bundle.predict_proba(rows), rtol=1e-6)


def test_protocol_trains_only_inside_each_fold_window(config: TrainingConfig, table) -> None:  # type: ignore[no-untyped-def]
    result = run_protocol(table, config, config.split.test)
    for fold in result.folds:
        test_times = table.frame["event_timestamp"].to_numpy()[fold.test_rows]
        assert test_times.min() >= np.datetime64(fold.windows.test_start)
        assert (fold.windows.test_start - fold.windows.train_end).days == config.split.delay_days
        assert fold.n_train > 0 and fold.n_test == len(fold.y_score)


def test_overrides_reach_the_model_and_bad_ones_are_refused(small_raw: Path, tmp_path: Path) -> None:
    from fraud_detection.training.config import load_training_config
    from tests.conftest import write_training_config

    path = write_training_config(tmp_path / "train.yaml", small_raw)
    loaded = load_training_config(path, ["model.xgboost.max_depth=5", "seed=7"])
    assert loaded.model.xgboost.max_depth == 5 and loaded.seed == 7
    with pytest.raises(ConfigError, match=r"model.xgboost.max_depth='deep'"):
        load_training_config(path, ["model.xgboost.max_depth=deep"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_training_config(path, ["max_depth"])
    with pytest.raises(ConfigError, match=r"search.space names \['depth'\]"):
        load_training_config(path, ["search.space={depth: {type: int, low: 1, high: 3}}"])


def test_tuning_selects_on_validation_and_logs_one_nested_run_per_trial(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import mlflow

    from fraud_detection.training import tracking
    from fraud_detection.training.tuning import tune

    handle = tracking.Tracking(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    tracking.open_tracking(handle)
    experiment = tracking.experiment_id("tune-test", handle)
    result = tune(config, table, experiment_id=experiment, n_trials=3)
    assert result.n_complete + result.n_pruned == 3
    assert set(result.best_params) == {"max_depth", "learning_rate"}
    children = mlflow.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == 3
    tuned = result.tuned_config(config)
    assert tuned.model.xgboost.max_depth == result.best_params["max_depth"]
    assert tuned.search.selected_by is not None and f"trial {result.best_trial}" in tuned.search.selected_by
    # Seeded: a second study in memory proposes the same parameters.
    again = tune(config, table, n_trials=3)
    assert again.best_params == result.best_params


def test_fairness_constraint_keeps_only_feasible_trials(config: TrainingConfig, table) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.training.tuning import tune

    raw = config.model_dump()
    raw["threshold"] = {"value": 0.05}
    raw["search"]["fairness"] = {"protected_attribute": "customer_age_band", "max_difference": 1e-9}
    strict = TrainingConfig.model_validate(raw)
    with pytest.raises(ConfigError, match="no complete trial meets the constraints"):
        tune(strict, table, n_trials=2)
    loose = TrainingConfig.model_validate(
        {
            **strict.model_dump(),
            "search": {
                **strict.search.model_dump(),
                "fairness": {"protected_attribute": "customer_age_band", "max_difference": 1.0},
            },
        }
    )
    assert tune(loose, table, n_trials=2).n_infeasible == 0


def test_fairness_constraint_must_name_a_protected_column(config: TrainingConfig, table) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.training.tuning import tune

    bad = TrainingConfig.model_validate(
        {
            **config.model_dump(),
            "search": {**config.search.model_dump(), "fairness": {"protected_attribute": "amount"}},
        }
    )
    with pytest.raises(ConfigError, match=r"protected_attribute='amount' is not a protected column"):
        tune(bad, dataclasses.replace(table), n_trials=1)


def test_features_may_not_use_labels_the_protocol_says_are_unknown(
    small_raw: Path, simulator_contract
) -> None:  # type: ignore[no-untyped-def]
    longer_delay = TrainingConfig.model_validate(
        training_config(
            small_raw,
            split={
                "delay_days": 14,
                "validation": {"latest_train_start": "2018-04-15", "n_folds": 1},
                "test": {"latest_train_start": "2018-04-29", "n_folds": 1},
            },
        )
    )
    with pytest.raises(ConfigError, match=r"labels 7 days old .* split.delay_days=14"):
        load_training_table(longer_delay, simulator_contract, as_of=AS_OF)


def test_a_window_whose_labels_are_not_all_known_is_refused(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.errors import SplitError

    with pytest.raises(SplitError, match="labels of that window are not all known"):
        train(config, table, tmp_path / "b", train_start=dt.date(2018, 5, 27), assess_folds=False)
    assert not (tmp_path / "b").exists()


def test_a_stored_study_only_continues_with_the_same_space_and_data(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.training.tuning import tune

    raw = config.model_dump(mode="json")
    raw["search"]["storage"] = str(tmp_path / "study.journal")
    raw["search"]["study_name"] = "pinned"
    stored = TrainingConfig.model_validate(raw)
    first = tune(stored, table, n_trials=1)
    assert first.n_complete + first.n_pruned == 1
    assert tune(stored, table, n_trials=1).n_complete == 2  # the same study continues
    raw["search"]["space"]["max_depth"]["high"] = 6
    with pytest.raises(ConfigError, match=r"give this search a new search\.study_name"):
        tune(TrainingConfig.model_validate(raw), table, n_trials=1)


def test_cost_threshold_is_chosen_on_the_validation_folds_and_kept_in_the_bundle(
    config: TrainingConfig, table, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.evaluation.metrics import CostModel, select_threshold_by_cost

    raw = config.model_dump(mode="json")
    raw["threshold"] = {"strategy": "cost", "cost": {"false_negative_cost": 200, "false_positive_cost": 2}}
    costed = TrainingConfig.model_validate(raw)
    result = train(costed, table, tmp_path / "bundle", assess_folds=False)
    validation = run_protocol(table, costed, costed.split.validation)
    expected = select_threshold_by_cost(
        np.concatenate([f.y_true for f in validation.folds]),
        np.concatenate([f.y_score for f in validation.folds]),
        CostModel(false_negative_cost=200, false_positive_cost=2),
    )
    assert result.bundle.threshold == pytest.approx(expected)
    evidence = load_bundle(tmp_path / "bundle").metadata["threshold_selection"]
    assert evidence["strategy"] == "cost" and evidence["chosen_on"].startswith("validation")
    assert evidence["threshold"] == pytest.approx(expected)


def test_alert_budget_needs_a_budget(config: TrainingConfig) -> None:
    from pydantic import ValidationError

    raw = config.model_dump(mode="json")
    raw["threshold"] = {"strategy": "alert_budget"}
    with pytest.raises(ValidationError, match=r"needs threshold\.alerts_per_day"):
        TrainingConfig.model_validate(raw)


def test_monotone_constraints_must_name_features(small_raw: Path, simulator_contract) -> None:  # type: ignore[no-untyped-def]
    raw = training_config(small_raw)
    raw["model"]["xgboost"]["monotone_increasing"] = ["terminal_risk_7d", "terminal_riks_30d"]
    with pytest.raises(ConfigError, match=r"names \['terminal_riks_30d'\], which are not features"):
        load_training_table(TrainingConfig.model_validate(raw), simulator_contract, as_of=AS_OF)


def test_fairness_constraint_with_privileged_groups_uses_the_evaluation_metric(
    config: TrainingConfig, table
) -> None:  # type: ignore[no-untyped-def]
    from fraud_detection.evaluation import assess_fairness
    from fraud_detection.training.config import FairnessConstraint
    from fraud_detection.training.tuning import group_rate_gap

    constraint = FairnessConstraint(
        protected_attribute="customer_age_band", privileged=["26-35", "36-50", "51-65"], max_difference=0.1
    )
    fold = run_protocol(table, config, config.split.validation).folds[0]
    groups = table.frame["customer_age_band"].to_numpy(dtype=object)[fold.test_rows]
    expected = assess_fairness(fold.y_true, (fold.y_score >= 0.2).astype(int), groups, constraint.privileged)
    assert group_rate_gap(fold, groups, 0.2, constraint) == pytest.approx(
        abs(expected["equal_opportunity_difference"])
    )
