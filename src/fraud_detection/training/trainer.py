"""Fit a model on one training window and assess it with the handbook's delayed-time protocol.

Models: XGBoost (default; ``xgboost.train`` on a float32 matrix, a fixed thread count and seed, so
the same data and config give a byte-identical booster) and a logistic-regression baseline
(standardised inputs, as the handbook does), kept as plain numbers in the bundle.

With ``early_stopping_rounds``, the last day of the training window is the evaluation set (time
order kept, no shuffling) and the bundle keeps only the trees up to the best iteration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import structlog

from fraud_detection.errors import ConfigError, SplitError
from fraud_detection.evaluation.metrics import fraud_metrics
from fraud_detection.models.bundle import LinearModel, ModelBundle, TrainingWindow
from fraud_detection.training.config import FoldsConfig, ModelConfig, TrainingConfig
from fraud_detection.training.dataset import LABEL, TrainingTable
from fraud_detection.training.splits import DelayedTimeSplit, FoldWindows

if TYPE_CHECKING:
    from distributed import Client

_log = structlog.get_logger(__name__)

TIMESTAMP = "event_timestamp"
CARD = "customer_id"


@dataclass(frozen=True)
class FoldResult:
    windows: FoldWindows
    n_train: int
    n_train_frauds: int
    n_test: int
    n_test_frauds: int
    metrics: dict[str, float]
    y_true: np.ndarray = field(repr=False)
    y_score: np.ndarray = field(repr=False)
    test_rows: np.ndarray = field(repr=False)  # positions in the training table


@dataclass(frozen=True)
class ProtocolResult:
    folds: list[FoldResult]
    summary: dict[str, float] = field(default_factory=dict)  # "<metric>_mean" / "<metric>_std"

    @classmethod
    def of(cls, folds: list[FoldResult]) -> ProtocolResult:
        summary: dict[str, float] = {}
        for name in folds[0].metrics:
            values = np.array([fold.metrics[name] for fold in folds], dtype=np.float64)
            summary[f"{name}_mean"] = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            summary[f"{name}_std"] = float(np.nanstd(values)) if np.isfinite(values).any() else float("nan")
        return cls(folds, summary)


def feature_matrix(frame: pd.DataFrame, feature_names: tuple[str, ...] | list[str]) -> np.ndarray:
    """The model's input: float32, columns in the bundle's order (what serving builds too)."""
    return frame[list(feature_names)].to_numpy(dtype=np.float32)


def booster_params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    """Our ``XGBoostParams`` as ``xgboost.train`` parameters: the one translation both the
    single-machine and the Dask path use, so the two cannot drift apart."""
    translated = {
        "objective": "binary:logistic",
        "eval_metric": "aucpr",
        "max_depth": params["max_depth"],
        "eta": params["learning_rate"],
        "min_child_weight": params["min_child_weight"],
        "subsample": params["subsample"],
        "colsample_bytree": params["colsample_bytree"],
        "lambda": params["reg_lambda"],
        "alpha": params["reg_alpha"],
        "gamma": params["gamma"],
        "scale_pos_weight": params["scale_pos_weight"],
        "tree_method": params["tree_method"],
        "nthread": params["n_jobs"],
        "seed": seed,
    }
    if params["tree_method"] != "exact":
        translated["max_bin"] = params["max_bin"]
    if params["base_score"] is not None:
        translated["base_score"] = params["base_score"]
    if params["monotone_increasing"]:
        # By name: the DMatrix carries the feature names, so the order cannot slip.
        translated["monotone_constraints"] = dict.fromkeys(params["monotone_increasing"], 1)
    return translated


def last_day_holdout(y: Any, days: Any) -> Any:
    """Rows on the training window's last day: the early-stopping set, later than everything the
    model is fit on, like the future. Works on NumPy and Dask arrays alike (Dask computes the checks)."""
    holdout = days == days.max()
    if bool(holdout.all()) or not bool(y[holdout].any()):
        raise SplitError("early stopping needs a training window of 2+ days with a fraud on its last day")
    return holdout


def _fit_xgboost(
    x: np.ndarray, y: np.ndarray, days: np.ndarray, names: list[str], params: dict[str, Any], seed: int
) -> Any:
    import xgboost as xgb

    translated = booster_params(params, seed)
    rounds = params["n_estimators"]
    stop = params["early_stopping_rounds"]
    if stop is None:
        return xgb.train(
            translated, xgb.DMatrix(x, label=y, feature_names=names, nthread=params["n_jobs"]), rounds
        )
    holdout = last_day_holdout(y, days)
    train = xgb.DMatrix(x[~holdout], label=y[~holdout], feature_names=names, nthread=params["n_jobs"])
    evaluation = xgb.DMatrix(x[holdout], label=y[holdout], feature_names=names, nthread=params["n_jobs"])
    return xgb.train(
        translated,
        train,
        rounds,
        evals=[(evaluation, "last_day")],
        early_stopping_rounds=stop,
        verbose_eval=False,
    )


def _fit_logistic(x: np.ndarray, y: np.ndarray, params: dict[str, Any], seed: int) -> LinearModel:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x.astype(np.float64))
    model = LogisticRegression(C=params["C"], max_iter=params["max_iter"], random_state=seed)
    model.fit(scaler.transform(x.astype(np.float64)), y)
    return LinearModel(
        mean=scaler.mean_.astype(np.float64),
        scale=scaler.scale_.astype(np.float64),
        coef=model.coef_[0].astype(np.float64),
        intercept=float(model.intercept_[0]),
    )


def fit_bundle(
    train: pd.DataFrame,
    feature_names: tuple[str, ...],
    model: ModelConfig,
    *,
    seed: int,
    window: TrainingWindow,
    threshold: float,
    feature_service: str,
    metadata: dict[str, Any] | None = None,
    dask_client: Client | None = None,
) -> ModelBundle:
    """Fit ``model`` on ``train`` (rows of one training window) and wrap it in a bundle.

    With ``dask_client``, XGBoost trains on that Dask cluster (``xgboost.dask``) from the same
    parameters; the logistic-regression baseline has no distributed path and refuses.
    """
    if dask_client is not None and model.type != "xgboost":
        raise ConfigError(
            f"{model.type} trains on one machine only; drop the Dask option or use model.type xgboost"
        )
    if train.empty:
        raise SplitError(f"training window {window.start} .. {window.end} holds no transactions")
    y = train[LABEL].to_numpy(dtype=np.int8)
    if y.min() == y.max():
        raise SplitError(
            f"training window {window.start} .. {window.end} holds only one class ({int(y[0])}); "
            "a fraud model needs both frauds and genuine transactions"
        )
    x = feature_matrix(train, feature_names)
    params = model.params()
    if model.type == "xgboost":
        # Constraints on features outside this feature set (e.g. the handbook's 15) do not apply.
        params["monotone_increasing"] = [n for n in params["monotone_increasing"] if n in feature_names]
    common = {
        "model_type": model.type,
        "feature_names": tuple(feature_names),
        "threshold": threshold,
        "feature_service": feature_service,
        "training_window": window,
        "metadata": {"params": params, "seed": seed, **(metadata or {})},
    }
    if model.type == "xgboost":
        days = train[TIMESTAMP].to_numpy().astype("datetime64[D]")
        if dask_client is None:
            return ModelBundle(**common, booster=_fit_xgboost(x, y, days, list(feature_names), params, seed))
        from fraud_detection.training.distributed import fit_xgboost_dask

        booster = fit_xgboost_dask(dask_client, x, y, list(feature_names), params, seed, days=days)
        # Lineage: the same config may give a (slightly) different booster on a cluster.
        common["metadata"] = {**common["metadata"], "trained_with": "xgboost.dask"}
        return ModelBundle(**common, booster=booster)
    return ModelBundle(**common, linear=_fit_logistic(x, y, params, seed))


def _window_of(windows: FoldWindows) -> TrainingWindow:
    return TrainingWindow(start=windows.train_start, end=windows.train_end)


def splitter(config: TrainingConfig, folds: FoldsConfig) -> DelayedTimeSplit:
    return DelayedTimeSplit(
        latest_train_start=folds.latest_train_start,
        n_folds=folds.n_folds,
        train_days=config.split.train_days,
        delay_days=config.split.delay_days,
        test_days=config.split.test_days,
        timestamp_column=TIMESTAMP,
        card_column=CARD,
        label_column=LABEL,
    )


def score_metrics(test: pd.DataFrame, scores: np.ndarray, top_k: int) -> dict[str, float]:
    return fraud_metrics(
        test[LABEL].to_numpy(),
        scores,
        cards=test[CARD].to_numpy(),
        days=test[TIMESTAMP].to_numpy().astype("datetime64[D]"),
        k=top_k,
    )


def run_protocol(
    table: TrainingTable,
    config: TrainingConfig,
    folds: FoldsConfig,
    *,
    model: ModelConfig | None = None,
    after_fold: Callable[[int, FoldResult], None] | None = None,
    dask_client: Client | None = None,
) -> ProtocolResult:
    """Train on each fold's window and score its delayed test window (known-compromised cards removed).

    ``after_fold(index, result)`` runs after each fold (the tuner reports to its pruner there);
    ``dask_client`` trains each fold on that Dask cluster (scoring stays local).
    """
    model = model or config.model
    split = splitter(config, folds)
    results = []
    frame = table.frame
    for index, ((train_rows, test_rows), windows) in enumerate(
        zip(split.split(frame), split.windows(), strict=True)
    ):
        train, test = frame.iloc[train_rows], frame.iloc[test_rows]
        bundle = fit_bundle(
            train,
            table.feature_names,
            model,
            seed=config.seed,
            window=_window_of(windows),
            threshold=config.threshold.value,
            feature_service=config.features.feature_service,
            dask_client=dask_client,
        )
        scores = bundle.predict_proba(feature_matrix(test, table.feature_names))
        result = FoldResult(
            windows=windows,
            n_train=len(train),
            n_train_frauds=int(train[LABEL].sum()),
            n_test=len(test),
            n_test_frauds=int(test[LABEL].sum()),
            metrics=score_metrics(test, scores, config.top_k),
            y_true=test[LABEL].to_numpy(),
            y_score=scores,
            test_rows=test_rows,
        )
        _log.info("fold assessed", fold=index, train_start=str(windows.train_start.date()), **result.metrics)
        results.append(result)
        if after_fold is not None:
            after_fold(index, result)
    return ProtocolResult.of(results)


def latest_labelled_train_start(table: TrainingTable, config: TrainingConfig) -> dt.date:
    """The most recent training window whose labels are all known by the end of the data."""
    last_day = pd.Timestamp(table.frame[TIMESTAMP].max()).date()
    return last_day - dt.timedelta(days=config.split.delay_days + config.split.train_days - 1)


def fold_at(config: TrainingConfig, train_start: dt.date) -> DelayedTimeSplit:
    """The one fold that trains from ``train_start`` (its test window may lie beyond the data)."""
    return splitter(config, FoldsConfig(latest_train_start=train_start, n_folds=1))


def window_rows(
    table: TrainingTable, config: TrainingConfig, train_start: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame | None, FoldWindows]:
    """The training rows of the window from ``train_start``, its delayed test rows (known-compromised
    cards removed), and its dates. The test rows are None unless the data reaches the test week's
    last day (only a complete week is a fair held-out period) and some test card is not yet known
    to be compromised."""
    split = fold_at(config, train_start)
    windows = split.windows()[0]
    frame = table.frame
    stamps = frame[TIMESTAMP]
    train = frame[(stamps >= windows.train_start) & (stamps < windows.train_end)]
    if pd.Timestamp(stamps.max()) < pd.Timestamp(windows.test_end) - pd.Timedelta(days=1):
        return train, None, windows
    try:
        _, test_rows = next(split.split(frame))
    except SplitError:
        return train, None, windows
    return train, frame.iloc[test_rows], windows
