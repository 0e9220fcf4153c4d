"""A slow, obviously correct reference of every feature in ``fraud_detection.features.engineering``.

Written straight from the definitions in that module's docstring, with plain Python loops over
rows and Python ``datetime`` arithmetic (exact, to the microsecond): for each row, every other row
is tested against the row's window. No sorting, no prefix sums, no searchsorted. It is O(n^2), so
use it on a few hundred rows, or on the rows of the entities a few target rows touch
(:func:`rows_sharing_an_entity`).

The tie rule it encodes: a window that includes ``t`` includes every transaction stamped ``t``
(``t_j <= t``), a window of "earlier" transactions includes none of them (``t_j < t``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from fraud_detection.features.engineering import FeatureConfig


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def _zscore(j: int, times: list, customers: list, amounts: list[float], history: dt.timedelta) -> float:
    """Transaction j's amount z-score against its customer's strictly earlier ``history`` (two-pass)."""
    prior = [
        amounts[k]
        for k in range(len(times))
        if customers[k] == customers[j] and times[j] - history < times[k] < times[j]
    ]
    if len(prior) < 2:
        return 0.0
    mean = sum(prior) / len(prior)
    std = (sum((a - mean) ** 2 for a in prior) / len(prior)) ** 0.5
    return 0.0 if std == 0 else (amounts[j] - mean) / std


def _amount_ratio(j: int, times: list, customers: list, amounts: list[float], history: dt.timedelta) -> float:
    """Transaction j's amount over its customer's strictly earlier mean in ``history`` (1.0 if none)."""
    prior = [
        amounts[k]
        for k in range(len(times))
        if customers[k] == customers[j] and times[j] - history < times[k] < times[j]
    ]
    prior_avg = _mean(prior, empty=0.0)
    return amounts[j] / prior_avg if prior_avg > 0 else 1.0


def reference_features(
    transactions: pd.DataFrame, config: FeatureConfig, rows: Sequence[int] | None = None
) -> pd.DataFrame:
    """Every feature of ``transactions`` (canonical columns), in ``config.feature_names`` order.

    ``rows`` picks the positions to compute (default: all); every row of ``transactions`` is the
    history they see. The result is indexed by those positions.
    """
    times: list[dt.datetime] = [ts.to_pydatetime() for ts in transactions["event_timestamp"]]
    customers = transactions["customer_id"].tolist()
    terminals = transactions["terminal_id"].tolist()
    amounts = [float(a) for a in transactions["amount"].tolist()]
    labels = [int(y) for y in transactions["is_fraud"].tolist()]
    delay = dt.timedelta(days=config.label_delay_days)
    history = dt.timedelta(days=config.history_days)
    everyone = range(len(times))

    records = []
    for i in everyone if rows is None else rows:
        t = times[i]
        # The customer's transactions at or before t (simultaneous ones included) ...
        customer_rows = [j for j in everyone if customers[j] == customers[i] and times[j] <= t]
        # ... and strictly before t (simultaneous ones excluded).
        earlier_rows = [j for j in customer_rows if times[j] < t]
        record: dict[str, float] = {
            "amount": amounts[i],
            "tx_during_weekend": float(t.weekday() >= 5),  # Monday is 0: 5, 6 are Sat, Sun
            "tx_during_night": float(t.hour <= 6),
        }
        prior = [amounts[j] for j in earlier_rows if times[j] > t - history]
        prior_avg = _mean(prior, empty=0.0)
        record[config.amount_ratio_feature] = amounts[i] / prior_avg if prior_avg > 0 else 1.0
        for n in config.windows_days:
            window = [amounts[j] for j in customer_rows if times[j] > t - dt.timedelta(days=n)]
            record[f"customer_nb_tx_{n}d"] = float(len(window))
            record[f"customer_avg_amount_{n}d"] = _mean(window, empty=float("nan"))  # never empty
        latest = max((times[j] for j in earlier_rows), default=None)
        record["customer_seconds_since_prev_tx"] = -1.0 if latest is None else (t - latest).total_seconds()
        record[config.prior_avg_amount_feature] = prior_avg
        for n in config.outlier_windows_days:
            recent = [j for j in earlier_rows if times[j] > t - dt.timedelta(days=n)]
            zscores = [_zscore(j, times, customers, amounts, history) for j in recent]
            record[f"customer_nb_outlier_amounts_{n}d"] = float(
                sum(z >= config.outlier_zscore for z in zscores)
            )
            record[f"customer_max_amount_zscore_{n}d"] = max(zscores, default=0.0)
        for n in config.windows_days:
            oldest = t - delay - dt.timedelta(days=n)
            newest = t - delay  # labels up to here are known at t
            window_labels = [
                labels[j] for j in everyone if terminals[j] == terminals[i] and oldest < times[j] <= newest
            ]
            record[f"terminal_nb_tx_{n}d"] = float(len(window_labels))
            record[f"terminal_risk_{n}d"] = _mean([float(y) for y in window_labels], empty=0.0)
        known = [j for j in everyone if terminals[j] == terminals[i] and times[j] <= t - delay]
        fraud_times = [times[j] for j in known if labels[j] == 1]
        genuine_times = [times[j] for j in known if labels[j] == 0]
        f = max(fraud_times, default=None)
        g = max(genuine_times, default=None)
        last_is_fraud = f is not None and (g is None or f > g)
        record["terminal_last_known_fraud"] = float(last_is_fraud)
        record["terminal_days_since_known_fraud"] = -1.0 if f is None else (t - f).total_seconds() / 86_400
        streak = [j for j in known if labels[j] == 1 and (g is None or times[j] > g)] if last_is_fraud else []
        if streak:
            streak_start = min(times[j] for j in streak)
            record["terminal_known_fraud_streak_days"] = (t - streak_start).total_seconds() / 86_400
            ratios = [_amount_ratio(j, times, customers, amounts, history) for j in streak]
            record["terminal_known_fraud_streak_amount_ratio"] = sum(ratios) / len(ratios)
        else:
            record["terminal_known_fraud_streak_days"] = -1.0
            record["terminal_known_fraud_streak_amount_ratio"] = -1.0
        record["terminal_known_fraud_streak_count"] = float(len(streak))
        used_before = any(terminals[j] == terminals[i] for j in earlier_rows)
        record["customer_terminal_first_use"] = 0.0 if used_before else 1.0
        records.append(record)
    index = list(everyone if rows is None else rows)
    return pd.DataFrame.from_records(records, index=index, columns=config.feature_names)


def rows_sharing_an_entity(transactions: pd.DataFrame, rows: Sequence[int]) -> pd.DataFrame:
    """The rows whose customer or terminal is one of ``rows``'s: all the history their features see.

    Keeps the original positions as the index (``reset_index`` is up to the caller).
    """
    picked = transactions.iloc[list(rows)]
    mask = transactions["customer_id"].isin(picked["customer_id"]) | transactions["terminal_id"].isin(
        picked["terminal_id"]
    )
    return transactions[mask]
