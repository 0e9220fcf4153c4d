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
* ``customer_nb_outlier_amounts_{n}d`` and ``customer_max_amount_zscore_{n}d`` (n in
  ``outlier_windows_days``): how many of the customer's strictly earlier transactions in
  ``(t - n days, t)`` were amount outliers when they happened, and their largest z-score (0 when
  there are none). A transaction's z-score is against *its own* strictly earlier ``history_days``
  (population std over at least 2 transactions; a flat or shorter history scores 0); an outlier
  has z >= ``outlier_zscore``. A compromised card (scenario 3) shows a run of them. No labels.
* ``terminal_last_known_fraud``, ``terminal_days_since_known_fraud``,
  ``terminal_known_fraud_streak_days``: the terminal's latest *known* labels (transactions at or
  before ``t - delay``): whether the latest known one is a fraud, the age of the latest known
  fraud, and the age of the current run of known frauds (see :func:`_known_fraud_features`). A
  compromised terminal (scenario 2) turns every transaction into fraud for weeks, so a run of
  known frauds says it still is.

Computation is vectorised: rows are sorted by (entity, time) once (an O(n) radix sort of entity
codes when the input is in time order), window bounds come from ``searchsorted`` on a composite
(entity, time) key (the needles are sorted too, so each chunk of them is searched only in the
short slice of keys it can reach), simultaneous rows from runs of equal keys, and sums from prefix
sums (per entity for amounts; one global sum for the 0/1 labels, exact). First use comes from a
stable sort of the rows by (terminal, customer, time). There is no Python loop over entities or
rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fraud_detection.config import load_yaml_config
from fraud_detection.errors import ConfigError

_US_PER_DAY = 86_400 * 1_000_000
_US_PER_SECOND = 1_000_000
_US_PER_HOUR = 3_600 * 1_000_000
_SEARCH_CHUNK = 4_096  # needles per window search; see _EntityIndex.after
_KEY_LIMIT = 2**62  # composite keys stay well inside int64

KEYS = ["transaction_id", "event_timestamp", "customer_id", "terminal_id"]
TERMINAL_KNOWN_FRAUD_FEATURES = [
    "terminal_last_known_fraud",
    "terminal_days_since_known_fraud",
    "terminal_known_fraud_streak_days",
    "terminal_known_fraud_streak_count",
    "terminal_known_fraud_streak_amount_ratio",
]


class FeatureConfig(BaseModel):
    """Feature definitions; values live in ``configs/features/*.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    windows_days: list[int] = Field(min_length=1)
    label_delay_days: int = Field(ge=0)
    history_days: int = Field(ge=1)
    outlier_windows_days: list[int] = Field(default=[7, 14], min_length=1)
    outlier_zscore: float = Field(default=3.0, gt=0)

    @field_validator("windows_days", "outlier_windows_days")
    @classmethod
    def _positive_unique(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value) or len(set(value)) != len(value):
            raise ValueError(f"window lengths must be distinct positive day counts, got {value}")
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
        outliers = [
            f"customer_{kind}_{n}d"
            for n in self.outlier_windows_days
            for kind in ("nb_outlier_amounts", "max_amount_zscore")
        ]
        return [*names, "customer_seconds_since_prev_tx", self.prior_avg_amount_feature, *outliers]

    @property
    def terminal_features(self) -> list[str]:
        names = [f"terminal_{kind}_{n}d" for n in self.windows_days for kind in ("nb_tx", "risk")]
        return [*names, *TERMINAL_KNOWN_FRAUD_FEATURES]

    @property
    def pair_features(self) -> list[str]:
        return ["customer_terminal_first_use"]

    @property
    def feature_names(self) -> list[str]:
        """Every model feature, in the model's column order."""
        return [*self.request_features, *self.customer_features, *self.terminal_features, *self.pair_features]


def load_feature_config(path: Path) -> FeatureConfig:
    return load_yaml_config(path, FeatureConfig)


def _time_flags(timestamps: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Weekend and night flags (int64) of ``timestamps``, as pandas' ``.dt`` fields give them."""
    values = timestamps.to_numpy()
    if values.dtype.kind == "M" and not timestamps.hasnans:
        return time_flags_from_epoch_us(values.astype("datetime64[us]", copy=False).view(np.int64))
    # Time-zone aware (local fields) or with NaT (flags 0): pandas' own accessors.
    return (
        (timestamps.dt.dayofweek >= 5).astype(np.int64).to_numpy(),
        (timestamps.dt.hour <= 6).astype(np.int64).to_numpy(),
    )


def time_flags_from_epoch_us(micros: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weekend and night flags (int64) of naive (UTC) timestamps given as microseconds since the epoch.

    Integer arithmetic on hours since the epoch (a Thursday, 72 hours after a Monday midnight) is
    several times faster than pandas' field extraction; the batch build and online scoring share it.
    """
    hours = np.asarray(micros, dtype=np.int64) // _US_PER_HOUR
    return ((hours + 72) % 168 >= 120).astype(np.int64), (hours % 24 <= 6).astype(np.int64)


def time_features(timestamps: pd.Series) -> pd.DataFrame:
    """Weekend and night flags; one function for batch and request-time use, so they cannot skew."""
    weekend, night = _time_flags(timestamps)
    return pd.DataFrame({"tx_during_weekend": weekend, "tx_during_night": night}, index=timestamps.index)


def amount_ratio(amount: np.ndarray, prior_avg_amount: np.ndarray) -> np.ndarray:
    """``amount`` over the customer's earlier mean amount; 1.0 (neutral) when that mean is 0 (none).

    Shared by the batch build and the request-time (on-demand) transform, so they cannot skew.
    """
    amount = np.asarray(amount, dtype=np.float64)
    prior_avg_amount = np.asarray(prior_avg_amount, dtype=np.float64)
    return np.divide(amount, prior_avg_amount, out=np.ones_like(amount), where=prior_avg_amount > 0)


def _dense_codes(entity: np.ndarray) -> tuple[np.ndarray, int]:
    """Codes 0..k-1 of ``entity`` in sorted order of its distinct values, and k."""
    if entity.dtype.kind in "iu" and len(entity):
        low, high = int(entity.min()), int(entity.max())
        if high - low <= 4 * len(entity):
            # Compact integer ids (the usual case): rank by a presence table, O(n), no hashing.
            shifted = (entity - low if low else entity).astype(np.intp, copy=False)
            rank = np.cumsum(np.bincount(shifted) > 0) - 1
            return rank.take(shifted), int(rank[-1]) + 1
    codes, uniques = pd.factorize(entity, sort=True)
    return codes, len(uniques)


def _stable_order(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Stable argsort of dense codes in O(n): numpy radix-sorts 16-bit keys, one pass per 16 bits."""
    order = np.argsort(codes.astype(np.uint16), kind="stable")  # the low 16 bits (the cast wraps)
    shift = 16
    while n_codes > 1 << shift:
        order = order.take(np.argsort((codes.take(order) >> shift).astype(np.uint16), kind="stable"))
        shift += 16
    return order


class _EntityIndex:
    """Rows sorted by (entity, time) with a composite int64 key for window searches."""

    def __init__(self, entity: np.ndarray, micros: np.ndarray, reach_us: int, time_ordered: bool) -> None:
        # Dense entity codes, spaced further apart than any window can reach, keep entities apart
        # in one int64 key, sorted by (entity, time).
        codes, n_entities = _dense_codes(entity)
        self.codes, self.n_entities = codes, n_entities
        origin = int(micros.min()) if len(micros) else 0  # an empty frame has no minimum
        span = int(micros.max()) - origin + 2 * reach_us + 1 if len(micros) else 1
        if max(n_entities, 1) * span >= _KEY_LIMIT:
            raise OverflowError(f"{n_entities} entities over {span} µs overflow the int64 window key")
        if time_ordered:
            # A stable sort by entity alone keeps each entity's rows in time order.
            self.order = _stable_order(codes, n_entities)
        else:  # rows with equal keys are simultaneous: their order is moot
            self.order = np.argsort(codes.astype(np.int64) * span + (micros - origin))
        counts = np.bincount(codes, minlength=n_entities)  # every code occurs: no empty entity
        self.group_start = np.cumsum(counts) - counts
        self.group_of_row = np.repeat(np.arange(n_entities), counts)  # codes in sorted order
        self.micros = micros.take(self.order)
        self.key = self.group_of_row * span + (self.micros - origin)

    def simultaneous(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted positions of the first row simultaneous with each row, and of the first later one.

        Equal keys are adjacent, so these are run boundaries: O(n), no search.
        """
        n = len(self.key)
        boundary = np.empty(n + 1, dtype=bool)
        boundary[0] = boundary[n] = True
        np.not_equal(self.key[1:], self.key[:-1], out=boundary[1:n])
        if boundary.all():  # no two rows of one entity at the same time (the usual case)
            return np.arange(n), np.arange(1, n + 1)
        bounds = np.flatnonzero(boundary)
        run = np.cumsum(boundary[:n]) - 1
        return bounds[:-1].take(run), bounds[1:].take(run)

    def after(self, offset_us: int) -> np.ndarray:
        """Sorted position of the first row of the same entity later than ``t - offset``.

        Used as a window's exclusive lower bound (``t - offset`` itself is outside the window).
        Needles and keys are both sorted, so each chunk of needles is searched only in the slice
        of keys its first and last needle bound: a shorter binary search that stays in cache.
        """
        key, n = self.key, len(self.key)
        if n <= 2 * _SEARCH_CHUNK:
            return np.searchsorted(key, key - offset_us, side="right")
        starts = np.arange(0, n, _SEARCH_CHUNK)
        ends = np.minimum(starts + _SEARCH_CHUNK, n)
        firsts_lasts = key.take(np.column_stack([starts, ends - 1]).ravel()) - offset_us
        edges = np.searchsorted(key, firsts_lasts, side="right")
        found = np.empty(n, dtype=np.intp)
        for start, end, low, high in zip(
            starts.tolist(), ends.tolist(), edges[0::2].tolist(), edges[1::2].tolist(), strict=True
        ):
            # Needles made per chunk: small, cache-resident temporaries instead of one large array.
            found[start:end] = np.searchsorted(key[low:high], key[start:end] - offset_us, side="right")
            found[start:end] += low
        return found

    def prefix_sums(self, sorted_values: np.ndarray) -> np.ndarray:
        """Per-entity prefix sums of ``sorted_values`` (sorted order), a 0 before each entity's block.

        Entity g's rows [s, e) occupy slots s + g .. e + g: slot x + g holds the sum of the rows
        [s, x), so a window sum is two lookups with no masking. Restarting at each entity keeps
        the numbers small (one entity's total), so sums stay exact to ~1e-12.
        """
        within = pd.Series(sorted_values).groupby(self.group_of_row, sort=False).cumsum().to_numpy()
        return np.insert(within, self.group_start, 0.0)

    def unsort(self, sorted_values: np.ndarray) -> np.ndarray:
        """Back to input row order: one scatter through the sort permutation."""
        values = np.empty_like(sorted_values)
        values[self.order] = sorted_values
        return values


def _check_keys(transactions: pd.DataFrame) -> None:
    """The features and the feature store key on integer transaction, customer and terminal ids: a
    contract may declare other entities or string keys, which the data layer accepts, so say here
    what this feature set needs (not a KeyError or an int() failure later, at materialisation)."""
    for key in ("transaction_id", "customer_id", "terminal_id"):
        if key not in transactions.columns:
            raise ConfigError(
                f"the features need column {key!r} (the data contract's "
                f"{'id' if key == 'transaction_id' else 'entity ' + repr(key[:-3])}); "
                f"the data has {sorted(map(str, transactions.columns))}"
            )
        if not pd.api.types.is_integer_dtype(transactions[key].dtype):
            raise ConfigError(
                f"column {key!r} has dtype {transactions[key].dtype}; the features and the feature "
                "store expect int64 ids: declare it int64 in the data contract (map string keys such "
                "as card numbers or merchant codes to integer ids upstream)"
            )


def build_features(transactions: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    """Compute every feature for each transaction; returns the key columns plus the features.

    ``transactions`` holds canonical, validated columns (``transaction_id``, ``event_timestamp``,
    ``customer_id``, ``terminal_id``, ``amount``, ``is_fraud``). Row order is kept.
    """
    _check_keys(transactions)
    timestamps = transactions["event_timestamp"]
    micros = timestamps.to_numpy().astype("datetime64[us]", copy=False).view(np.int64)
    amount = transactions["amount"].to_numpy(dtype=np.float64)
    day = _US_PER_DAY
    delay = config.label_delay_days * day
    time_ordered = bool(np.all(micros[1:] >= micros[:-1]))
    columns: dict[str, np.ndarray] = {key: transactions[key].to_numpy() for key in KEYS}
    columns["amount"] = amount
    columns["tx_during_weekend"], columns["tx_during_night"] = _time_flags(timestamps)

    # Customer windows (t - n, t]: one upper bound for every window (rows at or before t,
    # simultaneous included), one lower bound per window length. Computed in sorted order.
    customers = _EntityIndex(
        transactions["customer_id"].to_numpy(),
        micros,
        max(*config.windows_days, *config.outlier_windows_days, config.history_days) * day,
        time_ordered,
    )
    group = customers.group_of_row
    amounts = customers.prefix_sums(amount.take(customers.order))
    first_simultaneous, upto_t = customers.simultaneous()
    sum_upto_t = amounts.take(upto_t + group)
    lower = {n: customers.after(n * day) for n in sorted({*config.windows_days, config.history_days})}
    for n in config.windows_days:
        count = (upto_t - lower[n]).astype(np.float64)
        columns[f"customer_nb_tx_{n}d"] = customers.unsort(count)
        window_sum = sum_upto_t - amounts.take(lower[n] + group)
        columns[f"customer_avg_amount_{n}d"] = customers.unsort(window_sum / count)
    # Strictly earlier rows (t - h, t): up to the first row simultaneous with this one.
    prior_count = (first_simultaneous - lower[config.history_days]).astype(np.float64)
    prior_sum = amounts.take(first_simultaneous + group) - amounts.take(lower[config.history_days] + group)
    prior_avg = np.divide(prior_sum, prior_count, out=np.zeros_like(prior_sum), where=prior_count > 0)
    columns[config.prior_avg_amount_feature] = customers.unsort(prior_avg)
    # The latest strictly earlier transaction is the row just before the simultaneous group.
    has_prev = first_simultaneous > customers.group_start.take(group)
    gap = (customers.micros - customers.micros.take(np.maximum(first_simultaneous - 1, 0))) / _US_PER_SECOND
    columns["customer_seconds_since_prev_tx"] = customers.unsort(np.where(has_prev, gap, -1.0))
    columns[config.amount_ratio_feature] = amount_ratio(amount, columns[config.prior_avg_amount_feature])
    # Outliers: each row's z-score against its own strictly earlier history (t - h, t) (a
    # population std over 2+ rows; 0 when it is flat or shorter), then counts of the customer's
    # strictly earlier outliers (z >= threshold) in (t - n, t).
    squares = customers.prefix_sums(np.square(amount).take(customers.order))
    prior_squares = squares.take(first_simultaneous + group) - squares.take(
        lower[config.history_days] + group
    )
    variance = np.divide(prior_squares, prior_count, out=np.zeros_like(prior_squares), where=prior_count > 1)
    variance -= np.where(prior_count > 1, prior_avg * prior_avg, 0.0)
    # Cancellation leaves a flat history ~1e-13 above zero: treat that as flat.
    spread = variance > 1e-12 * np.maximum(prior_avg * prior_avg, 1.0)
    std = np.sqrt(np.where(spread, variance, 1.0))
    zscore = np.where(spread, (amount.take(customers.order) - prior_avg) / std, 0.0)
    outliers = np.concatenate([[0.0], np.cumsum(zscore >= config.outlier_zscore, dtype=np.float64)])
    outliers_before_t = outliers.take(first_simultaneous)
    for n in config.outlier_windows_days:
        lower_n = lower[n] if n in lower else customers.after(n * day)
        columns[f"customer_nb_outlier_amounts_{n}d"] = customers.unsort(
            outliers_before_t - outliers.take(lower_n)
        )
        columns[f"customer_max_amount_zscore_{n}d"] = customers.unsort(
            _window_max(zscore, lower_n, first_simultaneous, empty=0.0)
        )

    # Terminal windows (t - delay - n, t - delay]: labels only once they are known.
    terminals = _EntityIndex(
        transactions["terminal_id"].to_numpy(), micros, max(config.windows_days) * day + delay, time_ordered
    )
    # Labels are 0/1, so one global prefix sum is exact and a window's fraud count is two lookups.
    labels = transactions["is_fraud"].to_numpy(dtype=np.float64).take(terminals.order)
    frauds_prefix = np.concatenate([[0.0], np.cumsum(labels)])
    upto_known = terminals.after(delay)
    frauds_upto_known = frauds_prefix.take(upto_known)
    for n in config.windows_days:
        lower_n = terminals.after(delay + n * day)
        count = (upto_known - lower_n).astype(np.float64)
        frauds = frauds_upto_known - frauds_prefix.take(lower_n)
        columns[f"terminal_nb_tx_{n}d"] = terminals.unsort(count)
        risk = np.divide(frauds, count, out=np.zeros_like(count), where=count > 0)
        columns[f"terminal_risk_{n}d"] = terminals.unsort(risk)
    ratios = columns[config.amount_ratio_feature].take(terminals.order)
    columns.update(_known_fraud_features(terminals, labels, ratios, upto_known))

    # First use: a stable sort by terminal of the (customer, time) order gives (terminal,
    # customer, time) order, where each pair's rows are adjacent and the first has its earliest
    # time; every row at that time (simultaneous first uses) is a first use too.
    by_pair = _stable_order(terminals.codes.take(customers.order), terminals.n_entities)
    customer_of_row = group.take(by_pair)
    pair_key = customers.key.take(by_pair)  # same customer: equal keys are equal times
    new_pair = np.empty(len(by_pair), dtype=bool)
    np.not_equal(customer_of_row[1:], customer_of_row[:-1], out=new_pair[1:])
    new_pair[terminals.group_start] = True  # terminal blocks: the same sizes as in terminals' order
    pair_start = np.flatnonzero(new_pair)
    first_key = np.repeat(pair_key.take(pair_start), np.diff(pair_start, append=len(by_pair)))
    first_use = np.empty(len(by_pair), dtype=np.int64)
    first_use[customers.order.take(by_pair)] = pair_key == first_key
    columns["customer_terminal_first_use"] = first_use
    # One frame from the finished columns; copy=False keeps each as its own block (no
    # consolidating copy of the whole table).
    return pd.DataFrame(
        {name: columns[name] for name in [*KEYS, *config.feature_names]}, index=transactions.index, copy=False
    )


def _window_max(values: np.ndarray, lower: np.ndarray, upper: np.ndarray, empty: float) -> np.ndarray:
    """``max(values[lower:upper])`` per row (``empty`` when the range is empty), by a sparse table.

    Level j holds the max of each run of 2**j values; a range of length L is covered by two
    (overlapping) runs of the largest 2**j <= L. Levels are built one at a time and each answers
    its own ranges, so memory stays at two arrays: O(n log L) time, no loop over rows.
    """
    length = upper - lower
    result = np.full(len(values), empty, dtype=np.float64)
    if not (length > 0).any():
        return result
    level_of = np.zeros(len(values), dtype=np.int64)
    positive = length > 0
    level_of[positive] = np.floor(np.log2(length[positive])).astype(np.int64)
    # log2 of an exact power of two is exact; guard the float floor on the other side anyway.
    level_of[positive & ((1 << (level_of + 1)) <= length)] += 1
    level, run = values.astype(np.float64, copy=True), 1
    for j in range(int(level_of[positive].max()) + 1):
        if j:
            np.maximum(level[:-run], level[run:], out=level[:-run])  # runs of 2**j from runs of 2**(j-1)
            run *= 2
        rows = np.flatnonzero(positive & (level_of == j))
        result[rows] = np.maximum(level.take(lower.take(rows)), level.take(upper.take(rows) - run))
    return result


def _known_fraud_features(
    terminals: _EntityIndex, labels: np.ndarray, amount_ratios: np.ndarray, upto_known: np.ndarray
) -> dict[str, np.ndarray]:
    """The terminal's latest known labels (transactions at or before ``t - delay``), in input order.

    With f the time of the latest known fraud and g of the latest known genuine transaction:
    ``terminal_last_known_fraud`` is 1 when f exists and is later than g (a tie counts as
    genuine: a compromised terminal makes every transaction fraud); ``terminal_days_since_known_fraud``
    is ``(t - f)`` in days (-1 without a known fraud); ``terminal_known_fraud_streak_days`` is the age
    ``(t - s)`` in days of the run of known frauds after g, s its first one (-1 when the latest
    known transaction is not a fraud); ``terminal_known_fraud_streak_count`` is how many known
    frauds that run holds (0 without a run) and ``terminal_known_fraud_streak_amount_ratio`` their
    mean customer amount ratio (-1 without a run): a run of frauds at ordinary amounts points at
    the terminal (a common point of compromise), one at an unusual amount at a stolen card. Rows
    are in (terminal, time) order, so "latest at or before position p" is a running maximum of
    positions, and every known row later than g is a fraud.
    """
    n = len(labels)
    positions = np.arange(n)
    start = terminals.group_start.take(terminals.group_of_row)
    last_known = upto_known - 1  # the terminal's known rows are [start, upto_known)
    safe = np.maximum(last_known, 0)
    latest_fraud = np.maximum.accumulate(np.where(labels == 1, positions, -1)).take(safe)
    latest_genuine = np.maximum.accumulate(np.where(labels == 0, positions, -1)).take(safe)
    has_fraud = (last_known >= start) & (latest_fraud >= start)
    has_genuine = (last_known >= start) & (latest_genuine >= start)
    t = terminals.micros
    fraud_time = t.take(np.maximum(latest_fraud, 0))
    genuine_time = t.take(np.maximum(latest_genuine, 0))
    last_is_fraud = has_fraud & (~has_genuine | (fraud_time > genuine_time))
    _, first_later = terminals.simultaneous()
    streak_start = np.where(has_genuine, first_later.take(np.maximum(latest_genuine, 0)), start)
    streak_start_time = t.take(np.minimum(streak_start, n - 1))
    streak_count = np.where(last_is_fraud, last_known + 1 - streak_start, 0).astype(np.float64)
    group = terminals.group_of_row
    ratio_sums = terminals.prefix_sums(amount_ratios)
    streak_ratio_sum = ratio_sums.take(np.maximum(last_known + 1, 0) + group) - ratio_sums.take(
        np.minimum(streak_start, n - 1) + group
    )
    streak_ratio = np.divide(
        streak_ratio_sum, streak_count, out=np.full(n, -1.0), where=last_is_fraud & (streak_count > 0)
    )
    return {
        "terminal_last_known_fraud": terminals.unsort(last_is_fraud.astype(np.int64)),
        "terminal_days_since_known_fraud": terminals.unsort(
            np.where(has_fraud, (t - fraud_time) / _US_PER_DAY, -1.0)
        ),
        "terminal_known_fraud_streak_days": terminals.unsort(
            np.where(last_is_fraud, (t - streak_start_time) / _US_PER_DAY, -1.0)
        ),
        "terminal_known_fraud_streak_count": terminals.unsort(streak_count),
        "terminal_known_fraud_streak_amount_ratio": terminals.unsort(streak_ratio),
    }


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
