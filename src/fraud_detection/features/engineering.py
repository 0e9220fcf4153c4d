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
        # Dense entity codes, spaced further apart than any window can reach, keep entities apart
        # in one int64 key; a single argsort of it orders rows by (entity, time).
        codes, uniques = pd.factorize(entity, sort=True)
        self.codes, self.n_entities = codes, len(uniques)
        origin = int(micros.min()) if len(micros) else 0  # an empty frame has no minimum
        span = int(micros.max()) - origin + 2 * reach_us + 1 if len(micros) else 1
        if max(len(uniques), 1) * span >= _KEY_LIMIT:
            raise OverflowError(f"{len(uniques)} entities over {span} µs overflow the int64 window key")
        key = codes.astype(np.int64) * span + (micros - origin)
        if len(uniques) <= np.iinfo(np.uint16).max and bool(np.all(micros[1:] >= micros[:-1])):
            # Time-ordered input (the usual case): a stable sort by entity alone keeps each
            # entity's rows in time order, and numpy radix-sorts 16-bit keys in O(n).
            self.order = np.argsort(codes.astype(np.uint16), kind="stable")
        else:
            self.order = np.argsort(key)  # rows with equal keys are simultaneous: order is moot
        self.key = key[self.order]
        self.group_of_row = codes[self.order]
        starts = np.r_[True, self.group_of_row[1:] != self.group_of_row[:-1]][: len(key)]
        self.group_start = np.flatnonzero(starts)
        # Each row's group start, as an index per row (used by every window sum).
        self.row_group_start = (
            self.group_start[np.cumsum(starts) - 1] if len(key) else np.zeros(0, dtype=np.int64)
        )
        self._inverse: np.ndarray | None = None

    def after(self, offset_us: int) -> np.ndarray:
        """Sorted position of the first row of the same entity later than ``t - offset``.

        Used as a window's exclusive lower bound (``t - offset`` itself is outside the window) and,
        with ``offset = 0``, as the end of the rows at or before ``t``, simultaneous ones included.
        """
        return np.searchsorted(self.key, self.key - offset_us, side="right")

    def prefix_sums(self, values: np.ndarray) -> np.ndarray:
        """Per-entity prefix sums of ``values`` in sorted order, with a 0 before each entity's block.

        Entity g's rows [s, e) occupy slots s + g .. e + g: slot x + g holds the sum of the rows
        [s, x), so a window sum is two lookups with no masking. Restarting at each entity keeps
        the numbers small (one entity's total), so sums stay exact to ~1e-12.
        """
        sorted_values = values[self.order].astype(np.float64)
        within = pd.Series(sorted_values).groupby(self.group_of_row).cumsum().to_numpy()
        return np.insert(within, self.group_start, 0.0)

    def window_sum(self, prefix: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        # lo and hi lie in the row's own entity block; shift both by the block's slot offset.
        return prefix.take(hi + self.group_of_row) - prefix.take(lo + self.group_of_row)

    def unsort(self, sorted_columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Back to input row order: one gather per column through the inverse permutation."""
        if self._inverse is None:
            self._inverse = np.empty_like(self.order)
            self._inverse[self.order] = np.arange(len(self.order))
        return {name: np.asarray(values).take(self._inverse) for name, values in sorted_columns.items()}


def build_features(transactions: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Compute every feature for each transaction; returns the key columns plus the features.

    ``transactions`` holds canonical, validated columns (``transaction_id``, ``event_timestamp``,
    ``customer_id``, ``terminal_id``, ``amount``, ``is_fraud``). Row order is kept.
    """
    micros = transactions["event_timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    label = transactions["is_fraud"].to_numpy(dtype=np.float64)
    day = _US_PER_DAY
    delay = config.label_delay_days * day
    columns: dict[str, np.ndarray | pd.Series] = {key: transactions[key].to_numpy() for key in KEYS}
    columns["amount"] = amount
    flags = time_features(transactions["event_timestamp"])
    columns.update({name: flags[name].to_numpy() for name in flags})

    # Customer windows (t - n, t]: one upper bound for every window (rows at or before t,
    # simultaneous included), one lower bound per window length. Computed in sorted order.
    customers = _EntityIndex(
        transactions["customer_id"].to_numpy(), micros, max(*config.windows_days, config.history_days) * day
    )
    amounts = customers.prefix_sums(amount)
    upto_t = customers.after(0)
    lower = {n: customers.after(n * day) for n in {*config.windows_days, config.history_days}}
    by_customer: dict[str, np.ndarray] = {}
    for n in config.windows_days:
        count = (upto_t - lower[n]).astype(np.float64)
        by_customer[f"customer_nb_tx_{n}d"] = count
        by_customer[f"customer_avg_amount_{n}d"] = customers.window_sum(amounts, lower[n], upto_t) / count
    # Strictly earlier rows (t - h, t): up to the first row simultaneous with this one.
    first_simultaneous = np.searchsorted(customers.key, customers.key, side="left")
    prior_count = (first_simultaneous - lower[config.history_days]).astype(np.float64)
    prior_sum = customers.window_sum(amounts, lower[config.history_days], first_simultaneous)
    by_customer[config.prior_avg_amount_feature] = np.divide(
        prior_sum, prior_count, out=np.zeros_like(prior_sum), where=prior_count > 0
    )
    # The latest strictly earlier transaction is the row just before the simultaneous group.
    has_prev = first_simultaneous > customers.row_group_start
    sorted_micros = micros[customers.order]
    gap = (sorted_micros - sorted_micros[np.maximum(first_simultaneous - 1, 0)]) / _US_PER_SECOND
    by_customer["customer_seconds_since_prev_tx"] = np.where(has_prev, gap, -1.0)
    columns.update(customers.unsort(by_customer))
    columns[config.amount_ratio_feature] = amount_ratio(amount, columns[config.prior_avg_amount_feature])

    # Terminal windows (t - delay - n, t - delay]: labels only once they are known.
    terminals = _EntityIndex(
        transactions["terminal_id"].to_numpy(), micros, max(config.windows_days) * day + delay
    )
    frauds_prefix = terminals.prefix_sums(label)
    upto_known = terminals.after(delay)
    by_terminal: dict[str, np.ndarray] = {}
    for n in config.windows_days:
        lower_n = terminals.after(delay + n * day)
        count = (upto_known - lower_n).astype(np.float64)
        frauds = terminals.window_sum(frauds_prefix, lower_n, upto_known)
        by_terminal[f"terminal_nb_tx_{n}d"] = count
        by_terminal[f"terminal_risk_{n}d"] = np.divide(
            frauds, count, out=np.zeros_like(count), where=count > 0
        )
    columns.update(terminals.unsort(by_terminal))

    # First use: the pair's rows in (customer, time) order; the first one has the pair's earliest
    # time, and every row at that time (simultaneous first uses) is a first use too.
    pair = (
        customers.group_of_row.astype(np.int64) * max(terminals.n_entities, 1)
        + terminals.codes[customers.order]
    )
    first_of_pair = ~pd.Series(pair).duplicated().to_numpy()
    first_time = pd.Series(sorted_micros[first_of_pair], index=pair[first_of_pair]).reindex(pair).to_numpy()
    first_use = np.empty(len(pair), dtype=np.int64)
    first_use[customers.order] = sorted_micros == first_time
    columns["customer_terminal_first_use"] = first_use
    # One frame from the finished columns; copy=False keeps each as its own block (no
    # consolidating copy of the whole table).
    return pd.DataFrame(
        {name: columns[name] for name in [*KEYS, *config.feature_names]}, index=transactions.index, copy=False
    )


def split_feature_tables(features: pd.DataFrame, config: FeatureConfig) -> dict[str, pd.DataFrame]:
    """The per-entity tables the feature store serves, each keyed by its entities and timestamp.

    Each row is an entity's state as of one transaction (``transaction_id`` kept for lineage). The
    request features are not stored: they are recomputed from the request by the same functions.
    """
    base = ["transaction_id", "event_timestamp"]
    return {
        "transaction": features,
        "customer": features[[*base, "customer_id", *config.customer_features]],
        "terminal": features[[*base, "terminal_id", *config.terminal_features]],
        "customer_terminal": features[[*base, "customer_id", "terminal_id", *config.pair_features]],
    }
