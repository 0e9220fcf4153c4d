"""Fraud metrics with scikit-learn signatures ``(y_true, y_score, *, ...)``, so ``make_scorer`` can wrap them.

Definitions (Le Borgne et al., Fraud Detection Handbook, §4.2-4.3):

* ``roc_auc``: area under the ROC curve (``sklearn.metrics.roc_auc_score``). Reported, never optimised.
  NaN when ``y_true`` holds fewer than two classes (a quiet test day is not an error).
* ``average_precision``: ``sklearn.metrics.average_precision_score``, the optimisation target. NaN when
  ``y_true`` holds no positive.
* ``card_precision_at_k`` (CP@k): for each day, ascending,

  1. drop the cards detected on earlier days (only when ``remove_detected``; "detected" means the card was in
     that day's top k and its label max was 1);
  2. aggregate to one row per card: score = max score of its transactions that day, label = max label;
  3. sort cards by score descending; **ties keep ascending card-ID order** (a stable, documented rule, so the
     result is deterministic; the handbook's unstable sort leaves tie order unspecified);
  4. precision = compromised cards among the top k / k. The divisor is k even when fewer than k cards
     transacted that day, as in the handbook, so a day with few cards cannot reach 1.0.

  CP@k is the mean of the daily values over every day present in the input (a day whose cards were all
  detected earlier counts as 0). ``days`` may be datetimes (their calendar day is used; tz-aware values are
  converted to UTC) or integer day numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def roc_auc(y_true: Any, y_score: Any) -> float:
    """ROC AUC, or NaN when ``y_true`` does not hold both classes."""
    y_true = np.asarray(y_true)
    if np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision, or NaN when ``y_true`` holds no positive (sklearn would warn and return 0)."""
    y_true = np.asarray(y_true)
    if not (y_true == 1).any():
        return float("nan")
    return float(average_precision_score(y_true, y_score))


def _calendar_days(days: Any) -> pd.Series:
    series = pd.Series(days).reset_index(drop=True)  # positional, like the other inputs
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return series
    if not pd.api.types.is_datetime64_any_dtype(series):
        try:  # datetime.date / datetime objects arrive as object dtype
            series = pd.Series(pd.to_datetime(series))
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"days must be datetimes or integer day numbers, got dtype {series.dtype}"
            ) from err
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return series.dt.normalize()


def _check_same_length(**arrays: Any) -> None:
    lengths = {name: len(value) for name, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"y_true, y_score, cards and days must have the same length, got {lengths}")


def card_precision_at_k_per_day(
    y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100, remove_detected: bool = True
) -> pd.Series:
    """Daily card precision@k (index: the day, ascending); see the module docstring for the definition."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    _check_same_length(y_true=y_true, y_score=y_score, cards=cards, days=days)
    frame = pd.DataFrame(
        {
            "label": np.asarray(y_true),
            "score": np.asarray(y_score, dtype=np.float64),
            "card": np.asarray(cards),
        }
    )
    n_missing = int(frame["score"].isna().sum())
    if n_missing:
        raise ValueError(f"y_score has {n_missing} NaN value(s); every transaction needs a score")
    frame["day"] = _calendar_days(days).to_numpy()
    name = f"card_precision_at_{k}"
    if frame.empty:
        return pd.Series([], index=pd.Index([], name="day"), dtype=np.float64, name=name)

    # One row per (day, card): max score and max label, as the handbook's groupby(...).max().
    per_card = frame.groupby(["day", "card"], sort=True).agg(score=("score", "max"), label=("label", "max"))
    per_card = per_card.reset_index()
    # Rank within a day by score descending; the stable sort keeps the (ascending) card order among ties.
    per_card = per_card.sort_values(["day", "score"], ascending=[True, False], kind="stable")
    per_card["compromised"] = per_card["label"].to_numpy() == 1

    values: dict[Any, float] = {}
    detected: set[Any] = set()
    for day, day_cards in per_card.groupby("day", sort=True):
        if detected:
            day_cards = day_cards[~day_cards["card"].isin(detected)]
        top = day_cards.head(k)
        hits = top["card"][top["compromised"]]
        values[day] = len(hits) / k
        if remove_detected:
            detected.update(hits.tolist())
    return pd.Series(values, name=name, dtype=np.float64).rename_axis("day")


def card_precision_at_k(
    y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100, remove_detected: bool = True
) -> float:
    """Card precision@k: the mean over days of :func:`card_precision_at_k_per_day` (NaN on empty input)."""
    per_day = card_precision_at_k_per_day(
        y_true, y_score, cards=cards, days=days, k=k, remove_detected=remove_detected
    )
    return float(per_day.mean()) if len(per_day) else float("nan")


def fraud_metrics(y_true: Any, y_score: Any, *, cards: Any, days: Any, k: int = 100) -> dict[str, float]:
    """ROC AUC, average precision and card precision@k (detected cards removed) in one dict."""
    return {
        "roc_auc": roc_auc(y_true, y_score),
        "average_precision": average_precision(y_true, y_score),
        f"card_precision_at_{k}": card_precision_at_k(y_true, y_score, cards=cards, days=days, k=k),
    }
