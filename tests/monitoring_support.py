"""Seeded synthetic prediction events and labels for the monitoring tests."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_scored_events(
    *,
    n_days: int = 7,
    per_day: int = 2_000,
    n_cards: int = 500,
    fraud_rate: float = 0.02,
    signal: float = 3.0,
    seed: int = 0,
    start: str = "2026-11-01",
    features: int = 3,
    challenger_signal: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events in the server's event-log layout, labels) over ``n_days`` days.

    Scores are a logistic of ``signal * is_fraud + noise``: a larger ``signal`` separates better. With
    ``challenger_signal`` a ``challenger_score`` column (same noise draw structure, its own signal) is added.
    """
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    day = np.repeat(np.arange(n_days), per_day)
    seconds = day * 86_400 + rng.integers(0, 86_400, size=n)
    cards = rng.integers(0, n_cards, size=n)
    # Frauds cluster on compromised cards, as in the handbook's scenarios.
    compromised = rng.random(n_cards) < fraud_rate * 3
    is_fraud = ((compromised[cards]) & (rng.random(n) < 0.35)).astype(np.int64)

    def score(strength: float) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(strength * is_fraud + rng.normal(0.0, 1.0, size=n) - 4.0)))

    scores = score(signal)
    events = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "transaction_id": np.arange(n, dtype=np.int64),
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s"),
            "customer_id": cards.astype(np.int64),
            "terminal_id": rng.integers(0, 300, size=n).astype(np.int64),
            "amount": np.round(rng.gamma(2.0, 25.0, size=n), 2),
            "score": scores,
            "decision": scores >= 0.5,
            "degraded": np.zeros(n, dtype=bool),
            "model_version": "1",
            "scored_at": pd.Timestamp(start) + pd.to_timedelta(seconds + 1, unit="s"),
        }
    )
    for index in range(features):
        events[f"f_x{index}"] = rng.normal(0.0, 1.0, size=n)
    if challenger_signal is not None:
        events["challenger_score"] = score(challenger_signal)
    labels = pd.DataFrame({"transaction_id": events["transaction_id"], "is_fraud": is_fraud})
    return events, labels


def make_ab_frame(
    *,
    n_days: int = 7,
    per_day: int = 2_000,
    n_cards: int = 3_000,
    compromised_share: float = 0.03,
    challenger_gain: float = 0.0,
    seed: int = 0,
    start: str = "2026-11-01",
) -> pd.DataFrame:
    """Labelled transactions scored by two models sharing a latent suspiciousness (paired, as in shadow
    mode); the challenger sees ``challenger_gain`` more of the fraud signal (0: equally good)."""
    rng = np.random.default_rng(seed)
    n = n_days * per_day
    day = np.repeat(np.arange(n_days), per_day)
    cards = rng.integers(0, n_cards, size=n)
    compromised = rng.random(n_cards) < compromised_share
    is_fraud = (compromised[cards] & (rng.random(n) < 0.4)).astype(np.int64)
    shared = 1.5 * is_fraud + rng.normal(0.0, 1.0, size=n)
    champion = shared + rng.normal(0.0, 0.8, size=n)
    challenger = shared + challenger_gain * is_fraud + rng.normal(0.0, 0.8, size=n)
    seconds = day * 86_400 + rng.integers(0, 86_400, size=n)
    return pd.DataFrame(
        {
            "transaction_id": np.arange(n, dtype=np.int64),
            "event_timestamp": pd.Timestamp(start) + pd.to_timedelta(seconds, unit="s"),
            "customer_id": cards.astype(np.int64),
            "score": 1.0 / (1.0 + np.exp(-(champion - 4.0))),
            "challenger_score": 1.0 / (1.0 + np.exp(-(challenger - 4.0))),
            "is_fraud": is_fraud,
        }
    )
