"""Point-in-time transaction features: the Fraud Detection Handbook's 14 baseline features and ours.

Every feature of a transaction at time ``t`` uses only transactions at or before ``t``, and labels
only of transactions at or before ``t - label_delay`` (they are not known earlier). Appending later
transactions never changes an earlier row's features (tested).

**Ties.** Transactions with the same timestamp are simultaneous: a window that includes ``t``
includes all of them, a window of "earlier" transactions (``< t``) includes none of them. So two
transactions of one customer in the same second get the same customer window values, whatever
their order in the file, and each row's features are a function of its timestamp and entity only
(plus its own amount in the request-time features).

Handbook features (Le Borgne et al., §3.4; names ours, definitions theirs), for n in ``windows_days``:

* ``tx_during_weekend``: 1 on Saturday or Sunday; ``tx_during_night``: 1 when the hour is <= 6;
* ``customer_nb_tx_{n}d`` / ``customer_avg_amount_{n}d``: count and mean amount of the customer's
  transactions in ``(t - n days, t]``, the current one included;
* ``terminal_nb_tx_{n}d`` / ``terminal_risk_{n}d``: count of the terminal's transactions in
  ``(t - (delay + n) days, t - delay]`` and the share of them that are fraud (0 when empty).

Ours, each with its point-in-time rule:

* ``customer_prior_avg_amount_{h}d``: mean amount of the customer's transactions in
  ``(t - h days, t)`` (strictly earlier: the current and simultaneous ones are excluded); 0 when
  there are none. ``customer_amount_ratio_{h}d``: ``amount`` divided by it, 1.0 when it is 0
  (neutral). Scenario-3 frauds multiply a card's amounts by 5.
* ``customer_seconds_since_prev_tx``: seconds since the customer's latest strictly earlier
  transaction (any age); -1 when there is none.
* ``customer_terminal_first_use``: 1 when the customer has no strictly earlier transaction on this
  terminal (the whole history available), else 0.

Computation is vectorised: rows are sorted by (entity, time) once, window bounds come from
``searchsorted`` on a composite (entity, time) key, and sums from per-entity prefix sums. There is
no Python loop over entities or rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud_detection.config import load_yaml_config

_US_PER_DAY = 86_400 * 1_000_000
_US_PER_SECOND = 1_000_000
_KEY_LIMIT = 2**62  # composite keys stay well inside int64

KEYS = ["transaction_id", "event_timestamp", "customer_id", "terminal_id"]


class FeatureConfig(BaseModel):
    """Feature definitions; values live in ``configs/features/*.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows_days: list[int] = Field(min_length=1)
    label_delay_days: int = Field(ge=0)
    history_days: int = Field(ge=1)

    @field_validator("windows_days")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value) or len(set(value)) != len(value):
            raise ValueError(f"windows_days must be distinct positive day counts, got {value}")
        return sorted(value)

    @property
    def request_features(self) -> list[str]:
        """Computed from the transaction itself (and customer history), at request time."""
        return [
            "amount",
            "tx_during_weekend",
            "tx_during_night",
            f"customer_amount_ratio_{self.history_days}d",
        ]

    @property
    def amount_ratio_feature(self) -> str:
        return f"customer_amount_ratio_{self.history_days}d"

    @property
    def prior_avg_amount_feature(self) -> str:
        """Customer state behind the amount ratio: mean amount strictly before t (0 when none)."""
        return f"customer_prior_avg_amount_{self.history_days}d"

    @property
    def customer_features(self) -> list[str]:
        names = [f"customer_{kind}_{n}d" for n in self.windows_days for kind in ("nb_tx", "avg_amount")]
        return [*names, "customer_seconds_since_prev_tx", self.prior_avg_amount_feature]

    @property
    def terminal_features(self) -> list[str]:
        return [f"terminal_{kind}_{n}d" for n in self.windows_days for kind in ("nb_tx", "risk")]

    @property
    def pair_features(self) -> list[str]:
        return ["customer_terminal_first_use"]

    @property
    def feature_names(self) -> list[str]:
        """Every model feature, in the model's column order."""
        return [*self.request_features, *self.customer_features, *self.terminal_features, *self.pair_features]


def load_feature_config(path: Path) -> FeatureConfig:
    return load_yaml_config(path, FeatureConfig)


def time_features(timestamps: pd.Series) -> pd.DataFrame:
    """Weekend and night flags; one function for batch and request-time use, so they cannot skew."""
    return pd.DataFrame(
        {
            "tx_during_weekend": (timestamps.dt.dayofweek >= 5).astype(np.int64),
            "tx_during_night": (timestamps.dt.hour <= 6).astype(np.int64),
        },
        index=timestamps.index,
    )


def amount_ratio(amount: np.ndarray, prior_avg_amount: np.ndarray) -> np.ndarray:
    """``amount`` over the customer's earlier mean amount; 1.0 (neutral) when that mean is 0 (none).

    Shared by the batch build and the request-time (on-demand) transform, so they cannot skew.
    """
    amount = np.asarray(amount, dtype=np.float64)
    prior_avg_amount = np.asarray(prior_avg_amount, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prior_avg_amount > 0, amount / prior_avg_amount, 1.0)


class _EntityIndex:
    """Rows sorted by (entity, time) with a composite int64 key for window searches."""

    def __init__(self, entity: np.ndarray, micros: np.ndarray, reach_us: int) -> None:
        self.order = np.lexsort((micros, entity))
        entity_sorted = entity[self.order]
        micros_sorted = micros[self.order]
        # Dense entity ranks, spaced further apart than any window can reach, keep entities apart.
        starts = np.r_[True, entity_sorted[1:] != entity_sorted[:-1]][: len(entity_sorted)]
        rank = np.cumsum(starts) - 1
        span = int(micros_sorted.max() - micros_sorted.min()) + 2 * reach_us + 1 if len(micros) else 1
        if (int(rank[-1]) + 1 if len(rank) else 1) * span >= _KEY_LIMIT:
            raise OverflowError(f"{int(rank[-1]) + 1} entities over {span} µs overflow the int64 window key")
        origin = micros_sorted.min() if len(micros) else 0  # an empty frame has no minimum
        self.key = rank.astype(np.int64) * span + (micros_sorted - origin)
        self.group_start = np.flatnonzero(starts)
        self.group_of_row = rank

    def bounds(
        self, start_offset_us: int, end_offset_us: int, *, include_end: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted-row positions [lo, hi) of each row's window (t - start, t - end] (or [..., t - end))."""
        lo = np.searchsorted(self.key, self.key - start_offset_us, side="right")
        hi = np.searchsorted(self.key, self.key - end_offset_us, side="right" if include_end else "left")
        return lo, hi

    def prefix_sums(self, values: np.ndarray) -> np.ndarray:
        """Prefix sums of ``values`` in sorted order, restarting at each entity, with a leading 0.

        Restarting keeps the numbers small (one entity's total, not the dataset's), so window sums
        are exact to ~1e-12 instead of losing digits to a dataset-wide running total.
        """
        sorted_values = values[self.order].astype(np.float64)
        return np.r_[0.0, pd.Series(sorted_values).groupby(self.group_of_row).cumsum().to_numpy()]

    def window_sum(self, prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        # lo and hi lie in the row's own entity block, where the prefix restarted at its start.
        start = self.group_start[self.group_of_row]
        return np.where(hi > start, prefix[hi], 0.0) - np.where(lo > start, prefix[lo], 0.0)

    def unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out


def build_features(transactions: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Compute every feature for each transaction; returns the key columns plus the features.

    ``transactions`` holds canonical, validated columns (``transaction_id``, ``event_timestamp``,
    ``customer_id``, ``terminal_id``, ``amount``, ``is_fraud``). Row order is kept.
    """
    micros = transactions["event_timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    label = transactions["is_fraud"].to_numpy(dtype=np.float64)
    longest = max(config.windows_days) * _US_PER_DAY
    delay = config.label_delay_days * _US_PER_DAY
    history = config.history_days * _US_PER_DAY
    out = transactions[KEYS].copy()
    out["amount"] = amount
    out[["tx_during_weekend", "tx_during_night"]] = time_features(transactions["event_timestamp"])

    customers = _EntityIndex(transactions["customer_id"].to_numpy(), micros, max(longest, history))
    amounts = customers.prefix_sums(amount)
    lo, hi = customers.bounds(history, 0, include_end=False)
    prior_count = (hi - lo).astype(np.float64)
    prior_sum = customers.window_sum(amounts, lo, hi)
    prior_avg = customers.unsort(
        np.divide(prior_sum, prior_count, out=np.zeros_like(prior_sum), where=prior_count > 0)
    )
    out[config.prior_avg_amount_feature] = prior_avg
    out[config.amount_ratio_feature] = amount_ratio(amount, prior_avg)
    for n in config.windows_days:
        lo, hi = customers.bounds(n * _US_PER_DAY, 0, include_end=True)
        count = (hi - lo).astype(np.float64)
        total = customers.window_sum(amounts, lo, hi)
        out[f"customer_nb_tx_{n}d"] = customers.unsort(count)
        out[f"customer_avg_amount_{n}d"] = customers.unsort(total / count)
    # Latest strictly earlier transaction of the same customer: the row just below the first of
    # this row's simultaneous group, if it belongs to the same customer.
    first_simultaneous = np.searchsorted(customers.key, customers.key, side="left")
    has_prev = first_simultaneous > customers.group_start[customers.group_of_row]
    sorted_micros = micros[customers.order]
    gap = (sorted_micros - sorted_micros[np.maximum(first_simultaneous - 1, 0)]) / _US_PER_SECOND
    out["customer_seconds_since_prev_tx"] = customers.unsort(np.where(has_prev, gap, -1.0))

    terminals = _EntityIndex(transactions["terminal_id"].to_numpy(), micros, longest + delay)
    frauds_prefix = terminals.prefix_sums(label)
    for n in config.windows_days:
        lo, hi = terminals.bounds(delay + n * _US_PER_DAY, delay, include_end=True)
        count = (hi - lo).astype(np.float64)
        frauds = terminals.window_sum(frauds_prefix, lo, hi)
        out[f"terminal_nb_tx_{n}d"] = terminals.unsort(count)
        out[f"terminal_risk_{n}d"] = terminals.unsort(
            np.divide(frauds, count, out=np.zeros_like(count), where=count > 0)
        )

    by_pair = [transactions["customer_id"].to_numpy(), transactions["terminal_id"].to_numpy()]
    first_seen = pd.Series(micros).groupby(by_pair).transform("min").to_numpy()
    out["customer_terminal_first_use"] = (micros == first_seen).astype(np.int64)
    return out[[*KEYS, *config.feature_names]]


def split_feature_tables(features: pd.DataFrame, config: FeatureConfig) -> dict[str, pd.DataFrame]:
    """The per-entity tables the feature store serves, each keyed by its entities and timestamp.

    Each row is an entity's state as of one transaction (``transaction_id`` kept for lineage). The
    request features are not stored: they are recomputed from the request by the same functions.
    """
    base = ["transaction_id", "event_timestamp"]
    return {
        "transactions": features,
        "customer": features[[*base, "customer_id", *config.customer_features]],
        "terminal": features[[*base, "terminal_id", *config.terminal_features]],
        "customer_terminal": features[[*base, "customer_id", "terminal_id", *config.pair_features]],
    }
