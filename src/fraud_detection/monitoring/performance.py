"""Model performance on delayed labels, per day, against the model's registered baseline.

Fraud labels arrive days after the scoring (a chargeback, an investigation), so the monitor joins the
labels that exist *now* to the logged predictions by ``transaction_id`` and computes, per calendar day of
``event_timestamp`` (UTC): n, labelled share, fraud rate, alert rate, average precision, ROC AUC and card
precision@k exactly as :mod:`fraud_detection.evaluation.metrics` defines them (cards = ``customer_id``;
CP@k over the period's days in order, detected cards removed, as the handbook and training do).

Decision (the guide's ``monitor_model_performance`` with AP and CP@k instead of accuracy):

* only **complete days** count: labelled share >= ``min_label_coverage`` (a day whose labels are still
  arriving looks better or worse than it is, never representative);
* the period value of a metric is AP over the complete days' rows pooled, and CP@k as the mean of their
  daily values (the baseline's CP@k is also a mean of daily values);
* **days without a fraud**: AP (and ROC AUC) are undefined there, recorded as null with
  ``ap_defined=false``; its rows still enter the pooled AP (legitimate rows can be false alerts) and
  its CP@k of 0 counts (no card was compromised that day). When the complete days hold fewer than
  ``min_frauds`` frauds, AP is not compared at all and the report says why;
* degradation = a **relative drop** ``(baseline - current) / baseline`` above ``max_ap_drop`` or
  ``max_cpk_drop``. A baseline of 0 or missing compares nothing for that metric (and says so).

The baseline is the version's test metrics, from its registry tags (``holdout_*`` first, then the
prequential ``test_*_mean``) or, for a bundle folder, the same numbers in the bundle's metadata
(``holdout_metrics``, ``test_folds``): what ``fraud train`` recorded when it registered the version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.errors import DataContractError, DataSourceError
from fraud_detection.evaluation.metrics import average_precision, card_precision_at_k_per_day, roc_auc

if TYPE_CHECKING:
    from fraud_detection.models.registry import ResolvedModel

TRANSACTION_ID = "transaction_id"
LABEL = "is_fraud"
TIMESTAMP = "event_timestamp"
CARD = "customer_id"
SCORE = "score"
DECISION = "decision"


class PerformanceThresholds(BaseModel):
    """When a drop in performance is an alert; values from the monitoring config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_ap_drop: float = Field(0.2, gt=0, le=1, description="relative drop of average precision")
    max_cpk_drop: float = Field(0.2, gt=0, le=1, description="relative drop of card precision@k")
    min_label_coverage: float = Field(
        0.95, gt=0, le=1, description="labelled share for a day to count as complete"
    )
    min_frauds: int = Field(5, ge=1, description="frauds on the complete days needed to compare AP")
    min_days: int = Field(1, ge=1, description="complete days needed to compare anything")


@dataclass(frozen=True)
class Baseline:
    """The registered model's expected performance (``None`` where it was not recorded)."""

    average_precision: float | None
    card_precision_at_k: float | None
    k: int
    source: str  # where the numbers come from, for the report


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _first(mapping: Mapping[str, Any], *keys: str) -> tuple[float | None, str | None]:
    for key in keys:
        number = _number(mapping.get(key))
        if number is not None:
            return number, key
    return None, None


def served_metrics(joined: pd.DataFrame, *, k: int = 100, threshold: float | None = None) -> dict[str, float]:
    """What this monitor measures on served traffic, for a labelled period: average precision over
    its rows pooled and the mean daily card precision@k, every card included (the training
    protocol's metrics drop the cards already known compromised, and are lower). Training records
    them on its held-out week as the served baseline (``served_holdout_*``)."""
    _require(joined, [TIMESTAMP, CARD, SCORE, LABEL], "joined predictions")
    daily = daily_performance(joined, k=k, threshold=threshold)
    return {
        "average_precision": float(
            average_precision(joined[LABEL].astype(int).to_numpy(), joined[SCORE].to_numpy())
        ),
        f"card_precision_at_{k}": float(daily[f"card_precision_at_{k}"].mean()),
    }


def baseline_from_tags(tags: Mapping[str, str], *, k: int = 100) -> Baseline:
    """The baseline in a registry version's tags (written by ``fraud train --register``): the served
    baseline (:func:`served_metrics` on the held-out week) first, then the protocol's metrics."""
    ap, ap_key = _first(
        tags, "served_holdout_average_precision", "holdout_average_precision", "test_average_precision_mean"
    )
    cpk, cpk_key = _first(
        tags,
        f"served_holdout_card_precision_at_{k}",
        f"holdout_card_precision_at_{k}",
        f"test_card_precision_at_{k}_mean",
    )
    return Baseline(ap, cpk, k, f"registry tags {ap_key}, {cpk_key}")


def baseline_from_metadata(metadata: Mapping[str, Any]) -> Baseline:
    """The baseline in a bundle's metadata (``served_holdout_metrics``, then ``holdout_metrics``,
    then ``test_folds``)."""
    config = metadata.get("config") or {}
    k = int(config.get("top_k", 100)) if isinstance(config, Mapping) else 100
    held_out = "served_holdout_metrics" if metadata.get("served_holdout_metrics") else "holdout_metrics"
    holdout = metadata.get(held_out) or {}
    folds = metadata.get("test_folds") or {}
    ap, ap_key = _first(holdout, "average_precision")
    ap_source = f"{held_out}.{ap_key}" if ap is not None else None
    if ap is None:
        ap, ap_key = _first(folds, "average_precision_mean")
        ap_source = f"test_folds.{ap_key}" if ap is not None else None
    cpk, cpk_key = _first(holdout, f"card_precision_at_{k}")
    cpk_source = f"{held_out}.{cpk_key}" if cpk is not None else None
    if cpk is None:
        cpk, cpk_key = _first(folds, f"card_precision_at_{k}_mean")
        cpk_source = f"test_folds.{cpk_key}" if cpk is not None else None
    return Baseline(ap, cpk, k, f"bundle metadata {ap_source}, {cpk_source}")


def model_baseline(model: ResolvedModel) -> Baseline:
    """The baseline of a resolved model: its registry tags, else its bundle's metadata."""
    from_metadata = baseline_from_metadata(model.bundle.metadata)
    if model.tags:
        from_tags = baseline_from_tags(model.tags, k=from_metadata.k)
        if from_tags.average_precision is not None or from_tags.card_precision_at_k is not None:
            return from_tags
    return from_metadata


def load_labels(path: Path) -> pd.DataFrame:
    """``transaction_id`` and ``is_fraud`` from a parquet/CSV file or a folder of parquet files (e.g. the
    raw store's daily partitions); only those two columns are read."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise DataSourceError(f"labels folder {str(path)!r} holds no .parquet file; expected label files")
    elif path.is_file():
        files = [path]
    else:
        raise DataSourceError(
            f"labels path {str(path)!r} does not exist; expected a parquet/CSV file or folder"
        )
    frames = []
    for file in files:
        try:
            if file.suffix == ".csv":
                frame = pd.read_csv(file, usecols=[TRANSACTION_ID, LABEL])
            else:
                frame = pd.read_parquet(file, columns=[TRANSACTION_ID, LABEL])
        except (ValueError, KeyError) as err:
            raise DataContractError(
                f"labels file {str(file)!r} lacks {TRANSACTION_ID!r} or {LABEL!r}: {err}"
            ) from err
        except OSError as err:
            raise DataSourceError(f"labels file {str(file)!r} cannot be read: {err}") from err
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _require(frame: pd.DataFrame, columns: list[str], role: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataContractError(
            f"{role} lacks column(s) {missing}; expected {columns}, it has {[str(c) for c in frame.columns]}"
        )


def join_labels(predictions: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Predictions with an ``is_fraud`` column (NaN where no label arrived yet), one row per transaction.

    A transaction scored more than once (a client retry) keeps its latest ``scored_at`` (else its last row).
    A transaction labelled twice with different labels is a contract error; with the same label, once.
    """
    _require(predictions, [TRANSACTION_ID, TIMESTAMP, CARD, SCORE], "predictions")
    _require(labels, [TRANSACTION_ID, LABEL], "labels")
    kinds = {
        role: frame[TRANSACTION_ID].dtype
        for role, frame in (("predictions", predictions), ("labels", labels))
    }
    if pd.api.types.is_numeric_dtype(kinds["predictions"]) != pd.api.types.is_numeric_dtype(kinds["labels"]):
        raise DataContractError(
            f"transaction_id is {kinds['predictions']} in the predictions but {kinds['labels']} in the labels; "
            "expected the same type on both sides of the join"
        )
    labels = labels[[TRANSACTION_ID, LABEL]].drop_duplicates()
    conflicting = labels[TRANSACTION_ID][labels[TRANSACTION_ID].duplicated()]
    if len(conflicting):
        raise DataContractError(
            f"labels give {conflicting.nunique()} transaction(s) two different {LABEL!r} values "
            f"(first: {conflicting.tolist()[0]!r}); expected one label per transaction_id"
        )
    bad = labels[LABEL][~labels[LABEL].isin([0, 1])]
    if len(bad):
        raise DataContractError(f"labels column {LABEL!r} holds {bad.unique()[:5].tolist()}; expected 0 or 1")
    if "scored_at" in predictions.columns:
        predictions = predictions.sort_values("scored_at", kind="stable")
    predictions = predictions.drop_duplicates(TRANSACTION_ID, keep="last").drop(
        columns=LABEL, errors="ignore"
    )
    joined = predictions.merge(labels, on=TRANSACTION_ID, how="left", validate="one_to_one")
    return joined.sort_values(TIMESTAMP, kind="stable").reset_index(drop=True)


def _days(timestamps: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(timestamps)
    if stamps.dt.tz is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.floor("D")


def _alerts(frame: pd.DataFrame, threshold: float | None) -> pd.Series:
    if DECISION in frame.columns:
        return frame[DECISION].astype(bool)
    if threshold is None:
        raise DataContractError(
            f"predictions lack a {DECISION!r} column and no threshold was given; expected either"
        )
    return frame[SCORE] >= threshold


def daily_performance(joined: pd.DataFrame, *, k: int = 100, threshold: float | None = None) -> pd.DataFrame:
    """One row per day: ``n``, ``n_labelled``, ``label_coverage``, ``n_frauds``, ``fraud_rate``,
    ``alert_rate``, ``average_precision``, ``roc_auc``, ``card_precision_at_k`` (on labelled rows) and
    ``ap_defined`` (False on a day without a fraud, where AP is NaN)."""
    _require(joined, [TIMESTAMP, CARD, SCORE, LABEL], "joined predictions")
    frame = joined.assign(_day=_days(joined[TIMESTAMP]), _alert=_alerts(joined, threshold))
    labelled = frame[frame[LABEL].notna()]
    cpk = pd.Series(dtype=np.float64)
    if len(labelled):
        cpk = card_precision_at_k_per_day(
            labelled[LABEL].astype(int).to_numpy(),
            labelled[SCORE].to_numpy(),
            cards=labelled[CARD].to_numpy(),
            days=labelled["_day"].to_numpy(),
            k=k,
        )
        cpk.index = pd.to_datetime(cpk.index)
    rows = []
    for day, rows_of_day in frame.groupby("_day", sort=True):
        known = rows_of_day[rows_of_day[LABEL].notna()]
        y = known[LABEL].astype(int).to_numpy()
        frauds = int(y.sum())
        rows.append(
            {
                "day": day.date(),
                "n": len(rows_of_day),
                "n_labelled": len(known),
                "label_coverage": len(known) / len(rows_of_day),
                "n_frauds": frauds,
                "fraud_rate": frauds / len(known) if len(known) else math.nan,
                "alert_rate": float(rows_of_day["_alert"].mean()),
                "average_precision": average_precision(y, known[SCORE]) if frauds else math.nan,
                "roc_auc": roc_auc(y, known[SCORE]) if len(known) else math.nan,
                f"card_precision_at_{k}": float(cpk.get(day, math.nan)),
                "ap_defined": frauds > 0,
            }
        )
    columns = [
        "day", "n", "n_labelled", "label_coverage", "n_frauds", "fraud_rate", "alert_rate",
        "average_precision", "roc_auc", f"card_precision_at_{k}", "ap_defined",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class PerformanceReport:
    """The per-day table, the period's values against the baseline, and the decision with its reasons."""

    daily: pd.DataFrame
    baseline: Baseline
    thresholds: PerformanceThresholds
    n_predictions: int
    n_labelled: int
    complete_days: list[str]
    average_precision: float | None  # pooled over the complete days; None when not comparable
    card_precision_at_k: float | None  # mean of the complete days' values
    ap_drop: float | None  # relative drop against the baseline
    cpk_drop: float | None
    degraded: bool
    reasons: list[str] = field(default_factory=list)  # why degraded
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON (NaN as null)."""
        daily = self.daily.astype(object).where(self.daily.notna(), None)
        daily["day"] = [str(day) for day in self.daily["day"]]
        return {
            "degraded": self.degraded,
            "reasons": self.reasons,
            "notes": self.notes,
            "n_predictions": self.n_predictions,
            "n_labelled": self.n_labelled,
            "complete_days": self.complete_days,
            "k": self.baseline.k,
            "current": {
                "average_precision": self.average_precision,
                "card_precision_at_k": self.card_precision_at_k,
            },
            "baseline": {
                "average_precision": self.baseline.average_precision,
                "card_precision_at_k": self.baseline.card_precision_at_k,
                "source": self.baseline.source,
            },
            "relative_drop": {"average_precision": self.ap_drop, "card_precision_at_k": self.cpk_drop},
            "thresholds": self.thresholds.model_dump(),
            "daily": daily.to_dict(orient="records"),
        }


def _relative_drop(baseline: float | None, current: float | None) -> float | None:
    if baseline is None or current is None or baseline <= 0:
        return None
    return (baseline - current) / baseline


def monitor_performance(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    baseline: Baseline,
    thresholds: PerformanceThresholds | None = None,
    *,
    threshold: float | None = None,
) -> PerformanceReport:
    """Join labels to predictions, compute the daily table, compare the complete days with ``baseline``.

    ``threshold`` is only used when the predictions carry no ``decision`` column (for the alert rate).
    """
    thresholds = thresholds or PerformanceThresholds()
    joined = join_labels(predictions, labels)
    k = baseline.k
    daily = daily_performance(joined, k=k, threshold=threshold)
    complete = daily[daily["label_coverage"] >= thresholds.min_label_coverage]
    notes: list[str] = []
    incomplete = daily.loc[daily["label_coverage"] < thresholds.min_label_coverage, "day"]
    if len(incomplete):
        notes.append(
            f"{len(incomplete)} day(s) with labels still arriving (coverage < {thresholds.min_label_coverage}) "
            f"not compared: {[str(day) for day in incomplete]}"
        )
    no_fraud = complete.loc[~complete["ap_defined"], "day"]
    if len(no_fraud):
        notes.append(
            f"AP undefined on {len(no_fraud)} complete day(s) without a fraud: {[str(d) for d in no_fraud]}"
        )

    ap = cpk = None
    if len(complete) < thresholds.min_days:
        notes.append(
            f"{len(complete)} complete day(s), fewer than min_days={thresholds.min_days}: nothing compared"
        )
    else:
        complete_days = set(complete["day"])
        rows = joined[_days(joined[TIMESTAMP]).dt.date.isin(complete_days) & joined[LABEL].notna()]
        n_frauds = int(rows[LABEL].sum())
        if n_frauds >= thresholds.min_frauds:
            ap = average_precision(rows[LABEL].astype(int).to_numpy(), rows[SCORE].to_numpy())
        else:
            notes.append(
                f"{n_frauds} fraud(s) on the complete days, fewer than min_frauds={thresholds.min_frauds}: "
                "AP not compared"
            )
        cpk = float(complete[f"card_precision_at_{k}"].mean())

    ap_drop = _relative_drop(baseline.average_precision, ap)
    cpk_drop = _relative_drop(baseline.card_precision_at_k, cpk)
    for name, base, current in (
        ("average_precision", baseline.average_precision, ap),
        (f"card_precision_at_{k}", baseline.card_precision_at_k, cpk),
    ):
        if current is not None and (base is None or base <= 0):
            notes.append(f"no positive baseline {name} ({baseline.source}): not compared")
    reasons = []
    if ap_drop is not None and ap_drop > thresholds.max_ap_drop:
        reasons.append(
            f"average precision {ap:.4f} is {ap_drop:.1%} below the baseline {baseline.average_precision:.4f} "
            f"(max drop {thresholds.max_ap_drop:.0%})"
        )
    if cpk_drop is not None and cpk_drop > thresholds.max_cpk_drop:
        reasons.append(
            f"card precision@{k} {cpk:.4f} is {cpk_drop:.1%} below the baseline {baseline.card_precision_at_k:.4f} "
            f"(max drop {thresholds.max_cpk_drop:.0%})"
        )
    return PerformanceReport(
        daily=daily,
        baseline=baseline,
        thresholds=thresholds,
        n_predictions=len(joined),
        n_labelled=int(joined[LABEL].notna().sum()),
        complete_days=[str(day) for day in complete["day"]],
        average_precision=ap,
        card_precision_at_k=cpk,
        ap_drop=ap_drop,
        cpk_drop=cpk_drop,
        degraded=bool(reasons),
        reasons=reasons,
        notes=notes,
    )
