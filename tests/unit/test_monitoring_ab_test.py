"""The A/B comparison: exact metrics under resampling, a known difference detected, no difference not."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraud_detection.errors import DataContractError
from fraud_detection.evaluation.metrics import average_precision, card_precision_at_k
from fraud_detection.monitoring.ab_test import (
    ABTestConfig,
    _APScorer,
    _CPKScorer,
    compare_models,
    paired_scores,
)
from tests.monitoring_support import make_ab_frame

pytestmark = pytest.mark.unit

CONFIG = ABTestConfig(n_resamples=300, k=10)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_ab_frame(seed=1, per_day=1_000)


def test_fast_metrics_equal_the_evaluation_functions_on_a_resample(frame):
    y = frame["is_fraud"].to_numpy()
    scores = np.round(frame["score"].to_numpy(), 2)  # many ties
    cards, card_index = np.unique(frame["customer_id"].to_numpy(), return_inverse=True)
    days = frame["event_timestamp"].dt.floor("D").to_numpy()
    ones = np.ones(len(cards), dtype=np.int64)
    assert _APScorer(scores, y)(np.ones(len(y))) == pytest.approx(average_precision(y, scores), abs=1e-12)
    assert _CPKScorer(scores, y, card_index, days, 10)(ones) == pytest.approx(
        card_precision_at_k(y, scores, cards=card_index, days=days, k=10), abs=1e-12
    )
    # A bootstrap resample = each card's rows repeated, every copy a card of its own.
    multiplicity = np.bincount(
        np.random.default_rng(3).integers(0, len(cards), len(cards)), minlength=len(cards)
    )
    rows = np.concatenate(
        [np.flatnonzero(card_index == c) for c in range(len(cards)) for _ in range(multiplicity[c])]
    )
    copies = np.concatenate(
        [
            np.full((card_index == c).sum(), c * 100 + j)
            for c in range(len(cards))
            for j in range(multiplicity[c])
        ]
    )
    weights = multiplicity[card_index].astype(float)
    assert _APScorer(scores, y)(weights) == pytest.approx(average_precision(y[rows], scores[rows]), abs=1e-12)
    assert _CPKScorer(scores, y, card_index, days, 10)(multiplicity) == pytest.approx(
        card_precision_at_k(y[rows], scores[rows], cards=copies, days=days[rows], k=10), abs=1e-12
    )


def test_a_known_improvement_is_a_significant_win(frame):
    better = make_ab_frame(seed=1, per_day=1_000, challenger_gain=1.0)
    result = compare_models(better, config=CONFIG)
    assert result.significant_win, result.reason
    ap = result.average_precision
    assert ap.difference > 0 and ap.ci_low > 0 and ap.p_value < 0.05
    assert ap.difference == pytest.approx(
        average_precision(better["is_fraud"], better["challenger_score"])
        - average_precision(better["is_fraud"], better["score"])
    )
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["significant_win"] is True


def test_a_worse_challenger_is_refused(frame):
    worse = make_ab_frame(seed=1, per_day=1_000, challenger_gain=-1.0)
    result = compare_models(worse, config=CONFIG)
    assert not result.significant_win and "does not clear" in result.reason
    assert result.average_precision.ci_high < 0


def test_no_difference_is_rarely_a_win_across_seeds():
    # Equally good models (independent noise around one shared signal): a win is a one-sided 2.5 % event per
    # seed. The bounds are loose on purpose: at this size 100 seeds gave 0 wins, 5 rejections at 5 % and
    # 92 % interval coverage.
    config = CONFIG.model_copy(update={"n_resamples": 200})
    results = [
        compare_models(make_ab_frame(seed=100 + seed, per_day=600, n_cards=2_000), config=config)
        for seed in range(16)
    ]
    assert sum(result.significant_win for result in results) <= 2  # expected 0.4
    p_values = [result.average_precision.p_value for result in results]
    assert np.median(p_values) > 0.2, p_values
    covered = sum(r.average_precision.ci_low <= 0 <= r.average_precision.ci_high for r in results)
    assert covered >= 13  # nominal 95 %: 15 of 16


def test_the_result_is_seeded(frame):
    first = compare_models(frame, config=CONFIG)
    again = compare_models(frame, config=CONFIG)
    other = compare_models(frame, config=CONFIG.model_copy(update={"random_state": 1}))
    assert first == again
    assert other.average_precision.ci_low != first.average_precision.ci_low
    assert other.average_precision.difference == first.average_precision.difference


def test_min_improvement_raises_the_bar():
    better = make_ab_frame(seed=2, per_day=1_000, challenger_gain=0.5)
    plain = compare_models(better, config=CONFIG)
    strict = compare_models(better, config=CONFIG.model_copy(update={"min_improvement": 0.5}))
    assert plain.significant_win and not strict.significant_win


def test_bad_input_names_what_is_wrong(frame):
    with pytest.raises(DataContractError, match=r"\['challenger_score'\]"):
        compare_models(frame.drop(columns="challenger_score"))
    with pytest.raises(DataContractError, match="no fraud"):
        compare_models(frame.assign(is_fraud=0))
    with pytest.raises(DataContractError, match=r"'score'.*1 NaN"):
        compare_models(frame.assign(score=frame["score"].where(frame.index != 5)))


def test_paired_scores_pair_answers_with_shadow_rows(frame):
    events = pd.concat(
        [
            frame.drop(columns=["challenger_score", "is_fraud"]).assign(model_version="3", shadow=False),
            frame.drop(columns=["score", "is_fraud"])
            .rename(columns={"challenger_score": "score"})
            .assign(model_version="4", shadow=True)
            .iloc[:-10],  # the shadow skipped a few (its queue was full)
        ]
    )
    labels = frame[["transaction_id", "is_fraud"]]
    paired = paired_scores(events, labels)
    assert len(paired) == len(frame) - 10
    assert np.allclose(paired["challenger_score"], frame["challenger_score"].iloc[:-10])
    assert np.allclose(paired["score"], frame["score"].iloc[:-10])
    assert len(paired_scores(events, labels, champion_version="3", challenger_version="4")) == len(paired)
    with pytest.raises(DataContractError, match=r"no challenger event.*'9'.*\['4'\]"):
        paired_scores(events, labels, challenger_version="9")
