"""Seeded, vectorised payment-card transaction simulator: the project's embedded default dataset.

This re-implements, from its published description, the simulator of Le Borgne et al.,
*Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook* (Université
Libre de Bruxelles, 2022), §3.2 "Transaction data simulator". The generative process is the same;
the code is not: everything is vectorised with numpy (no Python loop over customers or
transactions), and all randomness comes from one seed.

Generative process (handbook defaults in brackets)
--------------------------------------------------
* Customers [5000]: location ``x, y ~ U(0, 100)``, ``mean_amount ~ U(5, 100)``,
  ``std_amount = mean_amount / 2``, ``mean_nb_tx_per_day ~ U(0, 4)``.
* Terminals [10000]: location ``x, y ~ U(0, 100)``.
* A customer can use the terminals closer than ``radius`` [5] (Euclidean). The customer x
  terminal distance test runs in customer chunks (bounded memory) and yields a CSR structure:
  ``offsets`` (n_customers + 1) into a flat array of terminal indices, ascending per customer.
* Transactions over ``n_days`` [183] from ``start_date`` [2018-04-01]: per customer-day a
  ``Poisson(mean_nb_tx_per_day)`` number of draws; each draw gets a time of day
  ``~ N(43200, 20000)`` seconds and is dropped (not redrawn) unless strictly inside (0, 86400);
  an amount ``~ N(mean_amount, std_amount)``, redrawn from ``U(0, 2 * mean_amount)`` when
  negative, rounded to cents; and a terminal drawn uniformly from the customer's reachable list
  (customers with an empty list make no transactions). Times are floored to whole seconds.
* Fraud scenarios, in this order; a later one overwrites the label of an earlier one:

  1. every transaction with ``amount > 220`` is fraud;
  2. each day ``d = 0 … n_days-2``, 2 terminals (per 10,000) are compromised: all their transactions on
     days ``d … d+27`` are fraud;
  3. each day ``d = 0 … n_days-2``, 3 customers (per 5,000) are compromised: among the union of their
     transactions on days ``d … d+13``, a third (``int(n / 3)``) are picked at random, their
     amount is multiplied by 5 (cumulatively when picked again on a later day) and they are
     fraud. The union, not each customer separately, is what the handbook samples from.

  The per-day numbers scale with the population (2 per 10,000 terminals, 3 per 5,000 customers,
  exactly 2 and 3 at the handbook's size), so a small test population keeps the handbook's fraud
  rate instead of being swamped by a fixed number of compromised cards.

  Because scenario 1 is labelled before scenario 3 inflates amounts, every genuine transaction has
  ``amount <= 220``.
* Transactions are sorted by timestamp (ties broken by customer, then terminal, via a stable
  lexsort) and numbered ``transaction_id = 0 … N-1``.

Beyond the handbook
-------------------
* ``age_band``: a protected customer attribute drawn from :data:`AGE_BANDS` with probabilities
  :data:`AGE_BAND_PROBABILITIES`, independently of everything else. With ``bias_age_band`` set,
  customers of that band are ``bias_factor`` times more likely to be drawn as compromised in
  scenario 3 (weighted sampling without replacement): a known bias for fairness checks to find.
* Drift from ``drift_start_day`` on:

  - ``"amount_shift"``: every transaction amount on or after the drift day is multiplied by
    ``drift_amount_factor`` (and re-rounded to cents) *before* any fraud labelling. So the
    ``amount > 220`` rule reacts naturally (more scenario-1 fraud when the factor is > 1), genuine
    amounts stay ``<= 220``, and scenario 3 multiplies the already shifted amount.
  - ``"new_fraud_pattern"``: a new scenario 4. Each day from the drift day to the last day,
    3 customers per 5,000 (uniform, without replacement) are compromised and each gets 5-15 extra
    transactions at night (00:00-06:00), of small amounts ``U(1, 5)``, on terminals drawn
    uniformly from *all* terminals (not the customer's reachable ones). They are generated after
    scenarios 1-3 have been labelled on the regular transactions, so those scenarios never touch
    them, and are merged in before the final sort and numbering. ``drift_fraud_multiplier`` (default 1)
    multiplies the 3 per 5,000: at the handbook's rate the pattern is ~0.3 % of the traffic, too little
    for any day-level drift test to see; the drift story (``monitoring/story.py``) runs it as a wave.

Determinism
-----------
``numpy.random.SeedSequence(seed).spawn`` gives each concern its own independent stream, so e.g.
changing ``n_days`` leaves customer profiles, age bands and terminals unchanged, and per-row draws
(profiles, locations, bands) are prefix-stable when ``n_customers``/``n_terminals`` grow. The same
config yields bit-for-bit identical frames.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AGE_BANDS",
    "AGE_BAND_PROBABILITIES",
    "SimulatedData",
    "SimulatorConfig",
    "simulate",
]

AGE_BANDS: tuple[str, ...] = ("18-25", "26-35", "36-50", "51-65", "65+")
AGE_BAND_PROBABILITIES: tuple[float, ...] = (0.15, 0.25, 0.30, 0.20, 0.10)

_SECONDS_PER_DAY: Final = 86_400
_TIME_MEAN_S: Final = 43_200.0
_TIME_STD_S: Final = 20_000.0
_SCENARIO1_THRESHOLD: Final = 220.0
# The handbook compromises 2 of its 10,000 terminals and 3 of its 5,000 customers a day. We keep
# those *rates*, so a smaller population keeps the handbook's fraud rate (see _daily_counts).
_HANDBOOK_TERMINALS: Final = 10_000
_HANDBOOK_CUSTOMERS: Final = 5_000
_SCENARIO2_TERMINALS_PER_DAY: Final = 2
_SCENARIO2_WINDOW_DAYS: Final = 28
_SCENARIO3_CUSTOMERS_PER_DAY: Final = 3
_SCENARIO3_WINDOW_DAYS: Final = 14
_SCENARIO3_AMOUNT_FACTOR: Final = 5.0
_SCENARIO4_CUSTOMERS_PER_DAY: Final = 3
_SCENARIO4_MIN_TX: Final = 5
_SCENARIO4_MAX_TX: Final = 15
_SCENARIO4_NIGHT_END_S: Final = 6 * 3_600
_SCENARIO4_AMOUNT_RANGE: Final = (1.0, 5.0)
# Cap on the customer x terminal block evaluated at once (elements, float64): ~32 MiB per temporary.
_DISTANCE_BLOCK_ELEMENTS: Final = 1 << 22

# Fixed order of the independent random streams; appending is safe, reordering changes outputs.
_STREAMS: Final = (
    "customers",
    "terminals",
    "age_bands",
    "tx_counts",
    "tx_times",
    "tx_amounts",
    "tx_amount_redraws",
    "tx_terminals",
    "scenario2",
    "scenario3",
    "scenario4",
)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class SimulatorConfig(BaseModel):
    """Parameters of :func:`simulate`; defaults reproduce the handbook's dataset size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_customers: int = Field(default=5000, gt=0, description="Number of customers.")
    n_terminals: int = Field(default=10000, gt=0, description="Number of terminals.")
    n_days: int = Field(default=183, gt=0, description="Number of simulated days.")
    start_date: datetime.date = Field(default=datetime.date(2018, 4, 1), description="Day 0.")
    seed: int = Field(default=0, ge=0, description="Root seed of every random stream.")
    radius: float = Field(default=5.0, gt=0, description="Max customer-terminal distance.")
    bias_age_band: str | None = Field(
        default=None, description="Age band over-sampled as compromised in scenario 3."
    )
    bias_factor: float = Field(
        default=1.0, gt=0, description="Sampling weight of bias_age_band relative to other bands."
    )
    drift_start_day: int | None = Field(default=None, ge=0, description="First drifted day.")
    drift_kind: Literal["amount_shift", "new_fraud_pattern"] = "amount_shift"
    drift_amount_factor: float = Field(
        default=1.5, gt=0, description="Amount multiplier of the amount_shift drift."
    )
    drift_fraud_multiplier: int = Field(
        default=1,
        ge=1,
        description="new_fraud_pattern: compromised customers per day are 3 per 5,000 times this.",
    )

    @field_validator("bias_age_band")
    @classmethod
    def _known_age_band(cls, value: str | None) -> str | None:
        if value is not None and value not in AGE_BANDS:
            raise ValueError(f"bias_age_band {value!r} is not one of {list(AGE_BANDS)}")
        return value

    @model_validator(mode="after")
    def _drift_day_in_range(self) -> SimulatorConfig:
        if self.drift_start_day is not None and self.drift_start_day >= self.n_days:
            raise ValueError(
                f"drift_start_day {self.drift_start_day} must be < n_days {self.n_days} "
                f"(days are numbered 0 … {self.n_days - 1})"
            )
        return self


@dataclass(frozen=True)
class SimulatedData:
    """The three simulated tables (see the module docstring for columns and semantics)."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame


@dataclass(frozen=True)
class _Transactions:
    """Column arrays of transactions before sorting; ``seconds`` is the time of day."""

    customer: IntArray
    day: IntArray
    seconds: IntArray
    terminal: IntArray
    amount: FloatArray
    scenario: IntArray


def simulate(config: SimulatorConfig) -> SimulatedData:
    """Simulate customers, terminals and labelled transactions, deterministically from ``config``."""
    streams = dict(
        zip(
            _STREAMS,
            (np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(len(_STREAMS))),
            strict=True,
        )
    )

    customer_xy, mean_amount, mean_nb_tx = _customer_profiles(streams["customers"], config.n_customers)
    std_amount = mean_amount / 2.0
    terminal_xy = streams["terminals"].uniform(0.0, 100.0, size=(config.n_terminals, 2))
    age_band_idx = (
        streams["age_bands"]
        .choice(len(AGE_BANDS), size=config.n_customers, p=np.asarray(AGE_BAND_PROBABILITIES))
        .astype(np.int64)
    )

    offsets, reachable = _reachable_terminals(customer_xy, terminal_xy, config.radius)
    tx = _generate_transactions(streams, config, offsets, reachable, mean_amount, std_amount, mean_nb_tx)

    drift_day = config.drift_start_day
    if drift_day is not None and config.drift_kind == "amount_shift":
        # Before labelling on purpose: the amount > 220 rule then sees the shifted amounts.
        shifted = tx.day >= drift_day
        tx.amount[shifted] = np.round(tx.amount[shifted] * config.drift_amount_factor, 2)

    tx.scenario[tx.amount > _SCENARIO1_THRESHOLD] = 1
    _apply_scenario2(streams["scenario2"], tx, config.n_terminals, config.n_days)
    weights = _scenario3_weights(age_band_idx, config)
    _apply_scenario3(streams["scenario3"], tx, config.n_customers, config.n_days, weights)

    if drift_day is not None and config.drift_kind == "new_fraud_pattern":
        tx = _concat(tx, _scenario4(streams["scenario4"], config, drift_day))

    age_band_names = np.asarray(AGE_BANDS, dtype=object)
    return SimulatedData(
        transactions=_transactions_frame(tx, config.start_date, age_band_names[age_band_idx]),
        customers=pd.DataFrame(
            {
                "customer_id": np.arange(config.n_customers, dtype=np.int64),
                "x": customer_xy[:, 0],
                "y": customer_xy[:, 1],
                "mean_amount": mean_amount,
                "std_amount": std_amount,
                "mean_nb_tx_per_day": mean_nb_tx,
                "age_band": age_band_names[age_band_idx],
            }
        ),
        terminals=pd.DataFrame(
            {
                "terminal_id": np.arange(config.n_terminals, dtype=np.int64),
                "x": terminal_xy[:, 0],
                "y": terminal_xy[:, 1],
            }
        ),
    )


def _customer_profiles(rng: np.random.Generator, n: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Locations, mean amounts and mean daily transaction counts of ``n`` customers."""
    # One row of draws per customer keeps customer i's profile independent of n.
    u = rng.random(size=(n, 4))
    xy = u[:, :2] * 100.0
    mean_amount = 5.0 + u[:, 2] * 95.0
    mean_nb_tx = u[:, 3] * 4.0
    return xy, mean_amount, mean_nb_tx


def _reachable_terminals(
    customer_xy: FloatArray, terminal_xy: FloatArray, radius: float
) -> tuple[IntArray, IntArray]:
    """CSR structure of the terminals strictly closer than ``radius`` to each customer.

    Returns ``(offsets, terminals)``: customer ``c`` reaches ``terminals[offsets[c]:offsets[c+1]]``,
    ascending. Customers are processed in chunks so memory stays bounded whatever the sizes.
    """
    n_customers, n_terminals = len(customer_xy), len(terminal_xy)
    chunk = max(1, _DISTANCE_BLOCK_ELEMENTS // max(n_terminals, 1))
    # Squared distances avoid a sqrt per pair; d < r and d² < r² agree except on the boundary.
    r2 = radius * radius
    tx_, ty_ = terminal_xy[:, 0], terminal_xy[:, 1]
    counts = np.empty(n_customers, dtype=np.int64)
    parts: list[IntArray] = []
    for start in range(0, n_customers, chunk):
        stop = min(start + chunk, n_customers)
        dx = customer_xy[start:stop, 0, None] - tx_
        dy = customer_xy[start:stop, 1, None] - ty_
        dx *= dx
        dy *= dy
        dx += dy
        rows, cols = np.nonzero(dx < r2)  # row-major: grouped by customer, terminals ascending
        counts[start:stop] = np.bincount(rows, minlength=stop - start)
        parts.append(cols.astype(np.int64, copy=False))
    offsets = np.zeros(n_customers + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    terminals = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    return offsets, terminals


def _generate_transactions(
    streams: dict[str, np.random.Generator],
    config: SimulatorConfig,
    offsets: IntArray,
    reachable: IntArray,
    mean_amount: FloatArray,
    std_amount: FloatArray,
    mean_nb_tx: FloatArray,
) -> _Transactions:
    """Draw the regular (genuine until labelled) transactions of every customer-day."""
    n_customers, n_days = config.n_customers, config.n_days
    # Day-major so that the first days' counts do not depend on n_days.
    counts = streams["tx_counts"].poisson(mean_nb_tx, size=(n_days, n_customers))
    cell = np.repeat(np.arange(counts.size, dtype=np.int64), counts.ravel())
    day, customer = np.divmod(cell, n_customers)

    times = streams["tx_times"].normal(_TIME_MEAN_S, _TIME_STD_S, size=cell.size)
    n_reachable = np.diff(offsets)
    # Out-of-day times are dropped, not redrawn (as in the handbook); so are the draws of customers
    # with no terminal in reach.
    keep = (times > 0.0) & (times < _SECONDS_PER_DAY) & (n_reachable[customer] > 0)
    day, customer, times = day[keep], customer[keep], times[keep]

    amount = streams["tx_amounts"].normal(mean_amount[customer], std_amount[customer])
    negative = np.flatnonzero(amount < 0.0)
    amount[negative] = streams["tx_amount_redraws"].uniform(0.0, 2.0 * mean_amount[customer[negative]])
    amount = np.round(amount, 2)

    pick = streams["tx_terminals"].integers(0, n_reachable[customer])
    terminal = reachable[offsets[customer] + pick]

    return _Transactions(
        customer=customer,
        day=day,
        seconds=np.floor(times).astype(np.int64),
        terminal=terminal,
        amount=amount,
        scenario=np.zeros(customer.size, dtype=np.int64),
    )


def _daily_counts(per_day: int, population: int, reference: int, n_days: int) -> IntArray:
    """How many entities to compromise on each day: ``per_day`` per ``reference`` entities.

    Day d gets floor((d+1)k) - floor(dk) with k = per_day * population / reference, in exact
    integer arithmetic: exactly ``per_day`` every day at the handbook's size, and the same rate on
    average (never a rounded-up 1 a day) for a small population.
    """
    cumulative = (np.arange(n_days + 1, dtype=np.int64) * per_day * population) // reference
    return np.minimum(np.diff(cumulative), population)


def _apply_scenario2(rng: np.random.Generator, tx: _Transactions, n_terminals: int, n_days: int) -> None:
    """Compromised terminals: every transaction there in the next 28 days is fraud."""
    compromised = np.zeros((n_terminals, n_days), dtype=np.bool_)
    counts = _daily_counts(_SCENARIO2_TERMINALS_PER_DAY, n_terminals, _HANDBOOK_TERMINALS, n_days)
    for d in range(n_days - 1):
        if counts[d] == 0:
            continue
        terminals = rng.choice(n_terminals, size=counts[d], replace=False)
        compromised[terminals, d : d + _SCENARIO2_WINDOW_DAYS] = True
    # One lookup for all transactions instead of a per-transaction test.
    tx.scenario[compromised[tx.terminal, tx.day]] = 2


def _scenario3_weights(age_band_idx: IntArray, config: SimulatorConfig) -> FloatArray | None:
    """Sampling probabilities of compromised customers, or None for uniform sampling."""
    if config.bias_age_band is None:
        return None
    weights = np.where(age_band_idx == AGE_BANDS.index(config.bias_age_band), config.bias_factor, 1.0)
    return weights / weights.sum()


def _apply_scenario3(
    rng: np.random.Generator,
    tx: _Transactions,
    n_customers: int,
    n_days: int,
    p: FloatArray | None,
) -> None:
    """Compromised customers: a third of their next 14 days' transactions are multiplied by 5, fraud."""
    # Transactions sorted by (customer, day): one customer's window is a contiguous slice found by
    # binary search, so each day costs O(log N) plus the window, never a scan of all transactions.
    key = tx.customer * n_days + tx.day
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    counts = _daily_counts(_SCENARIO3_CUSTOMERS_PER_DAY, n_customers, _HANDBOOK_CUSTOMERS, n_days)
    for d in range(n_days - 1):
        if counts[d] == 0:
            continue
        customers = rng.choice(n_customers, size=counts[d], replace=False, p=p).astype(np.int64)
        lo = np.searchsorted(sorted_key, customers * n_days + d, side="left")
        hi = np.searchsorted(sorted_key, customers * n_days + min(d + _SCENARIO3_WINDOW_DAYS, n_days))
        candidates = np.concatenate([order[a:b] for a, b in zip(lo, hi, strict=True)])
        n_picked = candidates.size // 3
        if n_picked == 0:
            continue
        picked = rng.choice(candidates, size=n_picked, replace=False)
        tx.amount[picked] = np.round(tx.amount[picked] * _SCENARIO3_AMOUNT_FACTOR, 2)
        tx.scenario[picked] = 3


def _scenario4(rng: np.random.Generator, config: SimulatorConfig, drift_day: int) -> _Transactions:
    """New fraud pattern: bursts of small night-time transactions on arbitrary terminals."""
    counts = _daily_counts(
        _SCENARIO4_CUSTOMERS_PER_DAY * config.drift_fraud_multiplier,
        config.n_customers,
        _HANDBOOK_CUSTOMERS,
        config.n_days,
    )
    days = np.arange(drift_day, config.n_days, dtype=np.int64)
    customers = np.concatenate(
        [rng.choice(config.n_customers, size=counts[d], replace=False) for d in days]
    ).astype(np.int64)
    n_extra = rng.integers(_SCENARIO4_MIN_TX, _SCENARIO4_MAX_TX + 1, size=customers.size)
    customer = np.repeat(customers, n_extra)
    day = np.repeat(np.repeat(days, counts[days]), n_extra)
    n = customer.size
    low, high = _SCENARIO4_AMOUNT_RANGE
    return _Transactions(
        customer=customer,
        day=day,
        seconds=rng.integers(0, _SCENARIO4_NIGHT_END_S, size=n, dtype=np.int64),
        terminal=rng.integers(0, config.n_terminals, size=n, dtype=np.int64),
        amount=np.round(rng.uniform(low, high, size=n), 2),
        scenario=np.full(n, 4, dtype=np.int64),
    )


def _concat(a: _Transactions, b: _Transactions) -> _Transactions:
    return _Transactions(
        customer=np.concatenate([a.customer, b.customer]),
        day=np.concatenate([a.day, b.day]),
        seconds=np.concatenate([a.seconds, b.seconds]),
        terminal=np.concatenate([a.terminal, b.terminal]),
        amount=np.concatenate([a.amount, b.amount]),
        scenario=np.concatenate([a.scenario, b.scenario]),
    )


def _transactions_frame(
    tx: _Transactions, start_date: datetime.date, customer_band: npt.NDArray[np.object_]
) -> pd.DataFrame:
    """Sort by time (ties: customer, then terminal; lexsort is stable) and build the final frame."""
    elapsed = tx.day * _SECONDS_PER_DAY + tx.seconds
    order = np.lexsort((tx.terminal, tx.customer, elapsed))
    customer = tx.customer[order]
    timestamps = np.datetime64(start_date, "us") + elapsed[order].astype("timedelta64[s]")
    scenario = tx.scenario[order]
    return pd.DataFrame(
        {
            "transaction_id": np.arange(order.size, dtype=np.int64),
            "event_timestamp": timestamps.astype("datetime64[us]"),
            "customer_id": customer,
            "terminal_id": tx.terminal[order],
            "amount": tx.amount[order],
            "is_fraud": (scenario > 0).astype(np.int64),
            "fraud_scenario": scenario,
            "customer_age_band": customer_band[customer],
        }
    )
