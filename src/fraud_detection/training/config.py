"""Training configuration: the schema of ``configs/training/*.yaml`` and ``--set key=value`` overrides.

One file says everything a run needs: which data (source + contract), which features (feature
config + feature set + Feast service name), the time protocol (window lengths, validation and test
fold starts), the model and its hyperparameters, the search space, the decision threshold and the
seed. The resolved config is logged with every run, so a run can be re-executed from it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fraud_detection.config import format_validation_error, load_yaml_config
from fraud_detection.errors import ConfigError
from fraud_detection.evaluation.metrics import CostModel

# The handbook's 15 model inputs (§3.4): amount, the two calendar flags and the 12 window features.
HANDBOOK_FEATURES = (
    "amount",
    "tx_during_weekend",
    "tx_during_night",
    *(f"customer_{kind}_{n}d" for n in (1, 7, 30) for kind in ("nb_tx", "avg_amount")),
    *(f"terminal_{kind}_{n}d" for n in (1, 7, 30) for kind in ("nb_tx", "risk")),
)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Strict):
    source: str = Field(description="Raw transactions: file, folder or fsspec URL.")
    contract: str = "simulator"


class FeaturesConfig(_Strict):
    config: Path = Path("configs/features/default.yaml")
    feature_set: Literal["all", "handbook"] = Field(
        "all", description="all: every feature of the service; handbook: the handbook's 15 inputs only."
    )
    feature_service: str = "fraud_v1"


class FoldsConfig(_Strict):
    latest_train_start: dt.date
    n_folds: int = Field(4, ge=1)


class SplitConfig(_Strict):
    """The handbook's protocol: train, then a delay gap (labels not yet known), then test."""

    train_days: int = Field(7, ge=1)
    delay_days: int = Field(7, ge=1)
    test_days: int = Field(7, ge=1)
    validation: FoldsConfig
    test: FoldsConfig

    @model_validator(mode="after")
    def _validation_before_test(self) -> SplitConfig:
        """Selection must not see the test periods: the last validation test day comes before
        the first test-fold test day."""
        days = dt.timedelta(days=self.train_days + self.delay_days)
        validation_end = self.validation.latest_train_start + days + dt.timedelta(days=self.test_days)
        earliest_test_train = self.test.latest_train_start - dt.timedelta(
            days=self.test_days * (self.test.n_folds - 1)
        )
        test_start = earliest_test_train + days
        if validation_end > test_start:
            raise ValueError(
                f"validation folds end {validation_end} (exclusive) after the earliest test fold's test period "
                f"starts ({test_start}): move validation.latest_train_start earlier"
            )
        return self


class XGBoostParams(_Strict):
    n_estimators: int = Field(100, ge=1)
    max_depth: int = Field(6, ge=1, le=20)
    learning_rate: float = Field(0.3, gt=0, le=1)
    min_child_weight: float = Field(1.0, ge=0)
    subsample: float = Field(1.0, gt=0, le=1)
    colsample_bytree: float = Field(1.0, gt=0, le=1)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    gamma: float = Field(0.0, ge=0)
    scale_pos_weight: float = Field(1.0, gt=0)
    max_bin: int = Field(256, ge=2)
    tree_method: Literal["hist", "approx", "exact"] = "hist"
    base_score: float | None = Field(None, gt=0, lt=1)
    early_stopping_rounds: int | None = Field(
        None, ge=1, description="Stop on the last day of the training window; unused trees are trimmed."
    )
    n_jobs: int = Field(2, ge=1, description="Threads; fixed so that retraining is byte-identical.")
    monotone_increasing: list[str] = Field(
        default_factory=list,
        description="Features along which the score may never decrease (XGBoost monotone constraints); "
        "the behaviour gate checks the same directions.",
    )


class LogisticParams(_Strict):
    C: float = Field(1.0, gt=0)
    max_iter: int = Field(1000, ge=1)


class ModelConfig(_Strict):
    type: Literal["xgboost", "logistic_regression"] = "xgboost"
    xgboost: XGBoostParams = XGBoostParams()
    logistic_regression: LogisticParams = LogisticParams()

    def params(self) -> dict[str, Any]:
        return getattr(self, self.type).model_dump()


class SearchDimension(_Strict):
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(
                f"a {self.type} dimension needs low <= high, got low={self.low}, high={self.high}"
            )
        return self


class FairnessConstraint(_Strict):
    """Select only models whose fairness gap stays within ``max_difference`` on every validation fold.

    With ``privileged`` the gap is ``|metric|`` as :func:`fraud_detection.evaluation.assess_fairness`
    defines it (unprivileged vs privileged, the evaluation gate's numbers); without it, the largest
    difference of the rate between any two groups. Decisions use the threshold the bundle would get.
    """

    protected_attribute: str
    metric: Literal[
        "statistical_parity_difference", "equal_opportunity_difference", "average_odds_difference"
    ] = "equal_opportunity_difference"
    privileged: list[str] | None = None
    max_difference: float = Field(0.1, gt=0)


class SearchConfig(_Strict):
    selected_by: str | None = Field(
        None,
        description="Written by `fraud tune --write-config`: which study and trial chose the parameters.",
    )
    n_trials: int = Field(20, ge=1)
    space: dict[str, SearchDimension] = Field(default_factory=dict)
    pruner_warmup_folds: int = Field(1, ge=0, description="Folds a trial runs before it may be pruned.")
    storage: str | None = Field(
        None, description="None: in memory; a .journal/.log path: journal file; a database URL: RDB."
    )
    study_name: str | None = None
    fairness: FairnessConstraint | None = None


class ThresholdConfig(_Strict):
    """The decision threshold stored in the bundle.

    ``fixed``: ``value``. ``cost``: the threshold with the least expected cost (``cost``) on the
    validation folds' out-of-sample scores. ``alert_budget``: the lowest threshold that raises at
    most ``alerts_per_day`` alerts per day on average on those scores.
    """

    strategy: Literal["fixed", "cost", "alert_budget"] = "fixed"
    value: float = Field(0.5, ge=0, le=1)
    cost: CostModel = CostModel()
    alerts_per_day: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _budget_given(self) -> ThresholdConfig:
        if self.strategy == "alert_budget" and self.alerts_per_day is None:
            raise ValueError("threshold.strategy 'alert_budget' needs threshold.alerts_per_day")
        return self


class TrainingConfig(_Strict):
    experiment: str = "fraud-detection"
    registered_model: str = "fraud-detector"
    seed: int = Field(0, ge=0)
    top_k: int = Field(100, ge=1, description="k of card precision@k.")
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    split: SplitConfig
    model: ModelConfig = ModelConfig()
    search: SearchConfig = SearchConfig()
    threshold: ThresholdConfig = ThresholdConfig()

    @field_validator("experiment", "registered_model")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _search_matches_model(self) -> TrainingConfig:
        allowed = set(type(getattr(self.model, self.model.type)).model_fields)
        unknown = sorted(set(self.search.space) - allowed)
        if unknown:
            raise ValueError(
                f"search.space names {unknown}, which are not {self.model.type} parameters "
                f"(expected some of {sorted(allowed)})"
            )
        return self


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    node = target
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is a value, not a section")
        node = child
    node[leaf] = value


def load_training_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainingConfig:
    """Load ``path`` and apply ``key.sub=value`` overrides (values parsed as YAML: 3, 0.1, true, [1, 2])."""
    config = load_yaml_config(path, TrainingConfig)
    if not overrides:
        return config
    raw = config.model_dump(mode="json")
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. model.xgboost.max_depth=4")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from err
        _set_dotted(raw, key.strip(), value)
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(
            f"config {str(path)!r} with --set overrides is invalid: {format_validation_error(err)}"
        ) from err
