"""Per-segment evaluation with bootstrap CIs, and the amount/risk band helpers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from fraud_detection.evaluation.analysis import (
    SEGMENT_COLUMNS,
    _bootstrap_average_precision,
    amount_band,
    evaluate_by_segment,
    risk_band,
)

pytestmark = pytest.mark.unit

THRESHOLD = 0.5


def synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1,500 rows in A, 1,400 in B, 50 in C (below min_size); scores rounded to create ties."""
    rng = np.random.default_rng(seed)
    segments = np.array(["A"] * 1_500 + ["B"] * 1_400 + ["C"] * 50)
    y = (rng.random(segments.size) < 0.1).astype(np.int64)
    score = np.round(np.clip(0.35 * y + rng.random(segments.size) * 0.7, 0, 1), 2)
    return y, score, segments


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    y, score, segments = synthetic()
    return evaluate_by_segment(y, score, segments, threshold=THRESHOLD, min_size=100, n_boot=200)


def test_one_row_per_segment_with_the_documented_columns(table):
    assert list(table.columns) == list(SEGMENT_COLUMNS)
    assert table.index.name == "segment"
    assert table.index.tolist() == ["A", "B", "C"]
    assert table["n"].tolist() == [1_500, 1_400, 50]
    assert table["too_small"].tolist() == [False, False, True]


def test_point_estimates_match_sklearn_on_each_segment(table):
    y, score, segments = synthetic()
    for name in ["A", "B"]:
        member = segments == name
        flagged = (score[member] >= THRESHOLD).astype(int)
        row = table.loc[name]
        assert row["n_positive"] == y[member].sum()
        assert row["positive_rate"] == pytest.approx(y[member].mean())
        assert row["n_flagged"] == flagged.sum()
        assert row["roc_auc"] == pytest.approx(roc_auc_score(y[member], score[member]))
        assert row["average_precision"] == pytest.approx(average_precision_score(y[member], score[member]))
        assert row["precision"] == pytest.approx(precision_score(y[member], flagged))
        assert row["recall"] == pytest.approx(recall_score(y[member], flagged))


def test_confidence_intervals_contain_the_point_estimate(table):
    for name in ["A", "B"]:
        row = table.loc[name]
        for metric in ["average_precision", "recall"]:
            low, high = row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]
            assert low < row[metric] < high, (name, metric, low, row[metric], high)
            assert high - low < 0.5  # informative, not the whole [0, 1]


def test_too_small_segment_keeps_counts_but_gets_nan_metrics(table):
    row = table.loc["C"]
    assert row["too_small"]
    assert row["n"] == 50
    assert not math.isnan(row["positive_rate"])
    metrics = [
        "roc_auc",
        "average_precision",
        "precision",
        "recall",
        "recall_ci_low",
        "average_precision_ci_high",
    ]
    assert row[metrics].isna().all()


def test_seeded_and_deterministic(table):
    y, score, segments = synthetic()
    again = evaluate_by_segment(y, score, segments, threshold=THRESHOLD, min_size=100, n_boot=200)
    pd.testing.assert_frame_equal(table, again)
    other = evaluate_by_segment(
        y, score, segments, threshold=THRESHOLD, min_size=100, n_boot=200, random_state=1
    )
    pd.testing.assert_series_equal(table["average_precision"], other["average_precision"])  # no randomness
    assert not np.allclose(table["recall_ci_low"].iloc[:2], other["recall_ci_low"].iloc[:2])


def test_vectorised_bootstrap_average_precision_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.1).astype(np.int64)
    score = np.round(rng.random(300) * 0.5 + 0.4 * y, 1)  # few distinct scores: many ties
    order = np.argsort(-score, kind="stable")
    y_sorted, score_sorted = y[order], score[order]
    blocks = np.concatenate([[0], np.cumsum(score_sorted[1:] != score_sorted[:-1])])
    idx = rng.integers(0, 300, size=(40, 300))
    fast = _bootstrap_average_precision(y_sorted, blocks, idx)
    slow = [average_precision_score(y_sorted[row], score_sorted[row]) for row in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_segment_without_positives_gives_nan_without_warnings():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, dtype=int), (rng.random(200) < 0.2).astype(int)]
    score = rng.random(400)
    segments = np.array(["clean"] * 200 + ["mixed"] * 200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = evaluate_by_segment(y, score, segments, threshold=0.5, n_boot=50)
    clean = table.loc["clean"]
    assert clean["n_positive"] == 0 and not clean["too_small"]
    assert (
        clean[["roc_auc", "average_precision", "recall", "recall_ci_low", "average_precision_ci_low"]]
        .isna()
        .all()
    )
    assert clean["precision"] == 0.0  # flagged rows exist, none is fraud
    assert not table.loc["mixed"][["average_precision_ci_low", "recall_ci_high"]].isna().any()


def test_categorical_bands_list_every_band_and_missing_segments_get_a_row():
    y, score, _ = synthetic()
    amounts = np.r_[np.full(1_000, 10.0), np.full(1_000, 75.0), np.full(900, 500.0), np.full(50, np.nan)]
    table = evaluate_by_segment(y, score, amount_band(amounts), threshold=THRESHOLD, n_boot=20)
    assert table.index[:5].tolist() == ["[0, 20)", "[20, 50)", "[50, 100)", "[100, 220)", "[220, inf)"]
    assert math.isnan(table.index[5])  # the missing amounts
    assert table["n"].tolist() == [1_000, 0, 1_000, 0, 900, 50]
    assert table["too_small"].tolist() == [False, True, False, True, False, True]
    assert table.loc["[20, 50)", ["positive_rate", "average_precision"]].isna().all()


def test_invalid_inputs_name_the_bad_values():
    with pytest.raises(ValueError, match="same length, got 3, 3 and 2"):
        evaluate_by_segment([0, 1, 0], [0.1, 0.2, 0.3], ["a", "b"], threshold=0.5)
    with pytest.raises(ValueError, match="1 NaN"):
        evaluate_by_segment([0, 1, 0], [0.1, np.nan, 0.3], ["a", "a", "b"], threshold=0.5)


# ------------------------------------------------------------------------------------------------- bands


def test_amount_band_labels_are_half_open_and_ordered():
    amounts = pd.Series([0.0, 19.99, 20.0, 99.0, 220.0, 1e6, -1.0, np.nan], index=list("abcdefgh"))
    bands = amount_band(amounts)
    assert bands.name == "amount_band"
    assert bands.index.tolist() == list("abcdefgh")  # a Series keeps its index
    assert bands.tolist()[:6] == ["[0, 20)", "[0, 20)", "[20, 50)", "[50, 100)", "[220, inf)", "[220, inf)"]
    assert bands.iloc[6:].isna().all()  # below the first edge, and missing
    assert bands.cat.ordered
    assert bands.cat.categories.tolist() == ["[0, 20)", "[20, 50)", "[50, 100)", "[100, 220)", "[220, inf)"]


def test_risk_band_with_custom_edges():
    bands = risk_band(np.array([0.0, 0.05, 0.1, 0.49, 0.5, 1.0]), edges=(0, 0.1, 0.5, math.inf))
    assert bands.tolist() == ["[0, 0.1)", "[0, 0.1)", "[0.1, 0.5)", "[0.1, 0.5)", "[0.5, inf)", "[0.5, inf)"]
    assert bands.name == "risk_band"
    with pytest.raises(ValueError, match="strictly increasing"):
        risk_band([1.0], edges=(0, 0.5, 0.5))
    with pytest.raises(ValueError, match="at least two"):
        risk_band([1.0], edges=(0,))
