"""`fraud promote --require-ab-win`'s decision: refused on no difference and on a worse challenger,
accepted on a clear win; the challenger's shadow rows and the champion's answers are told apart by version."""

from __future__ import annotations

import pandas as pd
import pytest

from fraud_detection.errors import ModelGateFailed
from fraud_detection.monitoring.ab_test import ABTestConfig, require_significant_win
from tests.monitoring_support import make_ab_frame

pytestmark = pytest.mark.unit

CONFIG = ABTestConfig(n_resamples=300, k=10)


def as_events(frame: pd.DataFrame, *, swap: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The server's event log for ``frame``: version 1 answers (``score``), version 2 in shadow
    (``challenger_score``); ``swap`` exchanges the two models' scores."""
    answer, shadow = ("challenger_score", "score") if swap else ("score", "challenger_score")
    keys = frame[["transaction_id", "event_timestamp", "customer_id"]]
    events = pd.concat(
        [
            keys.assign(score=frame[answer], model_version="1", shadow=False),
            keys.assign(score=frame[shadow], model_version="2", shadow=True),
        ],
        ignore_index=True,
    )
    return events, frame[["transaction_id", "is_fraud"]]


def test_a_clear_win_passes_the_gate():
    events, labels = as_events(make_ab_frame(seed=3, per_day=1_000, challenger_gain=1.5))
    result = require_significant_win(
        events, labels, champion_version="1", challenger_version="2", config=CONFIG
    )
    assert result.significant_win
    assert result.average_precision.ci_low > 0


@pytest.mark.parametrize(
    ("gain", "swap", "why"),
    [(0.0, False, "no difference"), (1.5, True, "a worse challenger")],
)
def test_no_difference_or_a_worse_challenger_is_refused(gain, swap, why):
    events, labels = as_events(make_ab_frame(seed=3, per_day=1_000, challenger_gain=gain), swap=swap)
    with pytest.raises(ModelGateFailed, match=r"ab_test: average_precision difference") as caught:
        require_significant_win(events, labels, champion_version="1", challenger_version="2", config=CONFIG)
    assert "version 2 (challenger) against version 1 (champion)" in str(caught.value), why
    assert len(caught.value.failures) == 1


def test_the_versions_pick_the_sides():
    """Another shadow version in the log (a worse one) does not enter the comparison of version 2."""
    frame = make_ab_frame(seed=3, per_day=1_000, challenger_gain=1.5)
    events, labels = as_events(frame)
    worse = events[events["shadow"]].assign(score=frame["score"].to_numpy() * 0.0 + 0.5, model_version="3")
    events = pd.concat([events, worse], ignore_index=True)
    assert require_significant_win(
        events, labels, champion_version="1", challenger_version="2", config=CONFIG
    ).significant_win
    with pytest.raises(ModelGateFailed, match="version 3"):
        require_significant_win(events, labels, champion_version="1", challenger_version="3", config=CONFIG)


def test_the_champion_cannot_be_its_own_challenger():
    events, labels = as_events(make_ab_frame(seed=3, per_day=1_000))
    with pytest.raises(ModelGateFailed, match="already the champion"):
        require_significant_win(events, labels, champion_version="1", challenger_version="1", config=CONFIG)
