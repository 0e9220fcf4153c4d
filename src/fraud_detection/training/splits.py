"""Time splits that respect the labelling delay: the Fraud Detection Handbook's train / delay / test protocol.

Definitions (Le Borgne et al., §3.5 ``get_train_test_set`` and §5.2 prequential validation):

* Days are calendar days of the timestamp column (naive UTC; a tz-aware column is converted to UTC first).
  Windows are half-open ``[start, end)`` in whole days.
* Fold ``k`` (``k = 0 .. n_folds - 1``) trains on ``[s_k, s_k + train_days)`` with
  ``s_k = latest_train_start - k * step_days``, skips ``delay_days`` (rows there are in neither set), and tests on
  ``[s_k + train_days + delay_days, + test_days)``. Fold 0 is the latest; later folds shift back in time.
* **Known-compromised cards are dropped from the test set** (``remove_known_compromised``): a card is known
  on test day ``i`` (0-based) if it has a fraud on any day of ``[s_k, s_k + train_days + i - 1]``, that is, in
  the training window or on the delay days up to ``i - 1``. This is the handbook's rule exactly: it starts
  from the training-window frauds and, for each test day ``i``, adds the cards with a fraud on day
  ``s_k + train_days + i - 1`` to a *cumulative* set (labels become known with the delay), so a card removed
  on test day ``i`` stays removed on every later test day. Equivalently, a test row on day ``d`` is dropped
  when its card had a fraud on a day in ``[s_k, d - delay_days - 1]``. Frauds before ``s_k`` are not used.

With the handbook's data and ``latest_train_start="2018-07-25"`` fold 0 reproduces its published chapter-3.5
sets: 67,240 training transactions (598 frauds) and 58,264 test transactions (385 frauds).

The splitter follows scikit-learn's CV-splitter protocol (``split`` / ``get_n_splits``), so it plugs into
``cross_validate``, ``GridSearchCV`` and the Optuna objective as ``cv=``.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fraud_detection.errors import SplitError

logger = logging.getLogger(__name__)

_NO_FRAUD = np.iinfo(np.int64).max  # "first fraud day" of a card without a fraud in the window


@dataclass(frozen=True)
class FoldWindows:
    """The dates of one fold; every ``*_end`` is exclusive."""

    fold: int
    train_start: datetime.datetime
    train_end: datetime.datetime
    test_start: datetime.datetime
    test_end: datetime.datetime


def _check_positive_int(name: str, value: Any) -> int:
    # bool is an int subclass; True as "1 day" is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise SplitError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise SplitError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _parse_date(value: Any) -> datetime.date:
    if isinstance(value, datetime.datetime):  # also pd.Timestamp
        if value.time() != datetime.time(0) or value.tzinfo is not None:
            raise SplitError(
                f"latest_train_start must be a calendar date (naive UTC midnight), got {value!r}"
            )
        return value.date()
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError as err:
            raise SplitError(f"latest_train_start must be an ISO date 'YYYY-MM-DD', got {value!r}") from err
    raise SplitError(
        f"latest_train_start must be a datetime.date or an ISO date string, got {value!r} ({type(value).__name__})"
    )


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(0))


def _day_numbers(timestamps: pd.Series, column: str) -> np.ndarray:
    """Calendar day of each timestamp as whole days since 1970-01-01 (naive UTC)."""
    if not pd.api.types.is_datetime64_any_dtype(timestamps):
        raise SplitError(f"column {column!r} must hold datetimes, got dtype {timestamps.dtype}")
    if isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        timestamps = timestamps.dt.tz_convert("UTC").dt.tz_localize(None)
    n_missing = int(timestamps.isna().sum())
    if n_missing:
        raise SplitError(f"column {column!r} has {n_missing} missing timestamp(s); every row needs a time")
    return timestamps.to_numpy().astype("datetime64[D]").astype(np.int64)


def _day_number(day: datetime.date) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


class DelayedTimeSplit:
    """Handbook train / delay / test splits, following the scikit-learn CV splitter protocol (split, get_n_splits).

    Fold k (k = 0..n_folds-1) trains on [train_start_k, +train_days), skips delay_days, and tests on the next
    test_days, with train_start_k = latest_train_start - k * step_days (prequential: folds shifted back in time).
    Days are calendar days of ``timestamp_column`` (naive UTC). Test rows of cards already known to be compromised
    are removed: cards with a fraud in the training window, plus, for test day i (0-based), cards with a fraud on
    day train_start + train_days + i - 1, accumulated over the test days (exactly the handbook's
    get_train_delay_test_set rule: labels become known with the delay).

    Parameters
    ----------
    latest_train_start : datetime.date or str
        Training start of fold 0 (ISO ``YYYY-MM-DD`` accepted).
    n_folds, train_days, delay_days, test_days : int
        Positive integers. ``step_days`` (default ``test_days``) is how far each fold moves back.
    timestamp_column, card_column, label_column : str
        Columns of ``X`` holding the event time, the card (customer) ID and the 0/1 fraud label.
    remove_known_compromised : bool
        Drop test rows of known-compromised cards (the handbook protocol). ``False`` keeps all test-window rows.
    """

    def __init__(
        self,
        *,
        latest_train_start: datetime.date | str,
        n_folds: int = 1,
        train_days: int = 7,
        delay_days: int = 7,
        test_days: int = 7,
        step_days: int | None = None,
        timestamp_column: str = "event_timestamp",
        card_column: str = "customer_id",
        label_column: str = "is_fraud",
        remove_known_compromised: bool = True,
    ) -> None:
        # Unlike an estimator, a splitter validates eagerly (as sklearn's KFold does): a bad window should
        # fail where it is configured, not deep inside a tuning run.
        self.latest_train_start = _parse_date(latest_train_start)
        self.n_folds = _check_positive_int("n_folds", n_folds)
        self.train_days = _check_positive_int("train_days", train_days)
        self.delay_days = _check_positive_int("delay_days", delay_days)
        self.test_days = _check_positive_int("test_days", test_days)
        self.step_days = self.test_days if step_days is None else _check_positive_int("step_days", step_days)
        self.timestamp_column = timestamp_column
        self.card_column = card_column
        self.label_column = label_column
        self.remove_known_compromised = bool(remove_known_compromised)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(latest_train_start={self.latest_train_start.isoformat()!r}, "
            f"n_folds={self.n_folds}, train_days={self.train_days}, delay_days={self.delay_days}, "
            f"test_days={self.test_days}, step_days={self.step_days}, "
            f"remove_known_compromised={self.remove_known_compromised})"
        )

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """Number of folds (``n_folds``); the arguments exist for the sklearn protocol and are ignored."""
        return self.n_folds

    def windows(self) -> list[FoldWindows]:
        """The dates of each fold, fold 0 (the latest) first, for logging and the CLI."""
        result = []
        for fold in range(self.n_folds):
            train_start = self.latest_train_start - datetime.timedelta(days=fold * self.step_days)
            train_end = train_start + datetime.timedelta(days=self.train_days)
            test_start = train_end + datetime.timedelta(days=self.delay_days)
            test_end = test_start + datetime.timedelta(days=self.test_days)
            result.append(
                FoldWindows(
                    fold=fold,
                    train_start=_midnight(train_start),
                    train_end=_midnight(train_end),
                    test_start=_midnight(test_start),
                    test_end=_midnight(test_end),
                )
            )
        return result

    def split(
        self, X: pd.DataFrame, y: Any = None, groups: Any = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` per fold, fold 0 first.

        Indices are positional (for ``X.iloc``), ascending. ``X`` must hold the timestamp, card and label
        columns; ``y``, if given, overrides ``X[label_column]``. ``groups`` is ignored. Every fold is computed
        before the first is yielded, so a fold with an empty window raises :class:`SplitError` up front.
        """
        days, cards, is_fraud = self._columns(X, y)
        folds = [self._fold_indices(window, days, cards, is_fraud) for window in self.windows()]
        yield from folds

    def _columns(self, X: pd.DataFrame, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not isinstance(X, pd.DataFrame):
            raise SplitError(
                f"X must be a pandas DataFrame with columns {self.timestamp_column!r} and {self.card_column!r}, "
                f"got {type(X).__name__}"
            )
        needed = [self.timestamp_column, self.card_column] + ([self.label_column] if y is None else [])
        missing = [column for column in needed if column not in X.columns]
        if missing:
            raise SplitError(f"X lacks the column(s) {missing} needed to split; it has {list(X.columns)}")
        labels = np.asarray(X[self.label_column] if y is None else y)
        if labels.shape != (len(X),):
            raise SplitError(f"y must have one label per row of X ({len(X)}), got shape {labels.shape}")
        days = _day_numbers(X[self.timestamp_column], self.timestamp_column)
        # Integer codes make the per-card "first fraud day" a flat array lookup; -1 marks a missing card ID.
        cards, _ = pd.factorize(X[self.card_column], use_na_sentinel=True)
        return days, cards, labels == 1

    def _fold_indices(
        self, window: FoldWindows, days: np.ndarray, cards: np.ndarray, is_fraud: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        train_start, train_end = _day_number(window.train_start), _day_number(window.train_end)
        test_start, test_end = _day_number(window.test_start), _day_number(window.test_end)
        train_mask = (days >= train_start) & (days < train_end)
        test_mask = (days >= test_start) & (days < test_end)
        for name, mask, start, end in (
            ("train", train_mask, window.train_start, window.train_end),
            ("test", test_mask, window.test_start, window.test_end),
        ):
            if not mask.any():
                raise SplitError(
                    f"fold {window.fold}: the {name} window [{start.date()}, {end.date()}) has no rows; "
                    f"{self.timestamp_column!r} covers {self._coverage(days)}"
                )
        if self.remove_known_compromised:
            test_mask &= ~self._known_compromised(train_start, days, cards, is_fraud, test_mask)
            if not test_mask.any():
                raise SplitError(
                    f"fold {window.fold}: every row of the test window [{window.test_start.date()}, "
                    f"{window.test_end.date()}) belongs to a card already known to be compromised"
                )
        train_idx, test_idx = np.flatnonzero(train_mask), np.flatnonzero(test_mask)
        logger.debug(
            "fold %d: train [%s, %s) %d rows, test [%s, %s) %d rows",
            window.fold,
            window.train_start.date(),
            window.train_end.date(),
            train_idx.size,
            window.test_start.date(),
            window.test_end.date(),
            test_idx.size,
        )
        return train_idx, test_idx

    def _known_compromised(
        self,
        train_start: int,
        days: np.ndarray,
        cards: np.ndarray,
        is_fraud: np.ndarray,
        test_mask: np.ndarray,
    ) -> np.ndarray:
        """Mask of test rows whose card had a fraud on a day in ``[train_start, day - delay_days - 1]``."""
        n_cards = int(cards.max()) + 1 if cards.size else 0
        first_fraud_day = np.full(n_cards, _NO_FRAUD, dtype=np.int64)
        counted = is_fraud & (days >= train_start) & (cards >= 0)
        np.minimum.at(first_fraud_day, cards[counted], days[counted])
        known = np.zeros_like(test_mask)
        rows = np.flatnonzero(test_mask & (cards >= 0))
        # Test day i = d - test_start knows labels up to day train_start + train_days + i - 1 = d - delay_days - 1.
        known[rows] = first_fraud_day[cards[rows]] <= days[rows] - self.delay_days - 1
        return known

    @staticmethod
    def _coverage(days: np.ndarray) -> str:
        if days.size == 0:
            return "no rows at all"
        first, last = (np.datetime64(int(day), "D") for day in (days.min(), days.max()))
        return f"{first} .. {last}"
