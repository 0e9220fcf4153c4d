"""DelayedTimeSplit reproduces the handbook's published chapter-3.5 train / test sets on its own data."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from fraud_detection.training.splits import DelayedTimeSplit
from tests.conftest import HANDBOOK_RAW

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HANDBOOK_RAW.is_file(), reason=f"handbook data not found at {HANDBOOK_RAW}"),
]


def test_chapter_3_5_split_counts():
    frame = pd.read_parquet(HANDBOOK_RAW, columns=["TX_DATETIME", "CUSTOMER_ID", "TX_FRAUD"]).rename(
        columns={"TX_DATETIME": "event_timestamp", "CUSTOMER_ID": "customer_id", "TX_FRAUD": "is_fraud"}
    )
    splitter = DelayedTimeSplit(latest_train_start="2018-07-25", train_days=7, delay_days=7, test_days=7)
    ((train_idx, test_idx),) = list(splitter.split(frame))
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]

    # README, "Chapter 3.5: one split": 67,240 / 598 in training, 58,264 / 385 in test after removal.
    assert (len(train), int(train["is_fraud"].sum())) == (67_240, 598)
    assert (len(test), int(test["is_fraud"].sum())) == (58_264, 385)
    assert train["event_timestamp"].dt.date.agg(["min", "max"]).tolist() == [
        dt.date(2018, 7, 25),
        dt.date(2018, 7, 31),
    ]
    assert test["event_timestamp"].dt.date.agg(["min", "max"]).tolist() == [
        dt.date(2018, 8, 8),
        dt.date(2018, 8, 14),
    ]
