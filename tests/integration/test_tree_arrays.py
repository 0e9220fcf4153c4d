"""The compiled tree walk for small batches gives XGBoost's probabilities bit for bit, or is not used.

Integration tier: it trains boosters and numba compiles the walk (about a second, once per process).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fraud_detection.models import tree_arrays
from fraud_detection.models.tree_arrays import tree_arrays_for
from tests.integration.test_bundle import FEATURES, PARAMS, make_data, packed_field, unaligned, xgb_bundle

pytestmark = pytest.mark.integration


def with_missing(X: np.ndarray, seed: int = 1) -> np.ndarray:
    """``X`` as float32 with a tenth of its values missing: trees learn default branches both ways."""
    out = X.astype(np.float32)
    out[np.random.default_rng(seed).random(out.shape) < 0.1] = np.nan
    return out


@pytest.fixture(scope="module")
def deep_booster() -> xgb.Booster:
    """Depth-6 trees (up to 64 leaves, the most one word holds), trained on missing values,
    early-stopped (the bundle scores only the kept rounds)."""
    X, y = make_data(2000, seed=3)
    X = with_missing(X)
    booster = xgb.train(
        {**PARAMS, "max_depth": 6, "eta": 0.1},
        xgb.DMatrix(X[:1500], label=y[:1500]),
        num_boost_round=300,
        evals=[(xgb.DMatrix(X[1500:], label=y[1500:]), "val")],
        early_stopping_rounds=10,
        verbose_eval=False,
    )
    assert booster.best_iteration + 1 < booster.num_boosted_rounds()
    return booster


@pytest.fixture(scope="module")
def prepared(deep_booster: xgb.Booster):  # type: ignore[no-untyped-def]
    bundle = xgb_bundle(deep_booster)
    assert bundle.prepare_compiled_trees()
    return bundle


def xgboost_bits(booster: xgb.Booster, X: np.ndarray) -> np.ndarray:
    kept = booster.best_iteration + 1
    return booster.inplace_predict(X, iteration_range=(0, kept)).astype(np.float64)


def test_every_batch_size_and_layout_gives_xgboosts_bits(prepared, deep_booster) -> None:  # type: ignore[no-untyped-def]
    X = with_missing(make_data(1200, seed=9)[0], seed=5)
    for n in [*range(1, 40), 64, 1000, 1200]:  # the bundle's path, and the loop itself at every size
        expected = xgboost_bits(deep_booster, X[:n])
        np.testing.assert_array_equal(prepared.predict_proba(X[:n]), expected)
        np.testing.assert_array_equal(prepared._compiled_trees.predict_proba(X[:n]), expected)
    layouts = {
        "fortran": np.asfortranarray(X[:9]),
        "strided": X[:18:2],
        "unaligned": unaligned(X[:5]),
        "packed field": packed_field(X[:5]),
        "float64": X[:3].astype(np.float64),
    }
    for name, matrix in layouts.items():
        expected = xgboost_bits(deep_booster, np.asarray(matrix, dtype=np.float32))
        np.testing.assert_array_equal(prepared.predict_proba(matrix), expected, err_msg=name)


def test_a_row_scores_the_same_alone_and_inside_a_large_batch(prepared, deep_booster) -> None:  # type: ignore[no-untyped-def]
    """The same bits alone, inside 200 rows, and from XGBoost (no skew by batch size or path)."""
    X = with_missing(make_data(200, seed=11)[0])
    together = prepared.predict_proba(X)
    assert together.tobytes() == xgboost_bits(deep_booster, X).tobytes()
    alone = np.concatenate([prepared.predict_proba(X[i : i + 1]) for i in range(len(X))])
    assert alone.tobytes() == together.tobytes()


# values the trees compare against: exact thresholds, a float32 step either side, NaN, infinities,
# signed zeros, huge and tiny magnitudes
FLOATS = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 3.4e38, -3.4e38]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=hnp.arrays(np.float32, st.tuples(st.integers(1, 16), st.just(len(FEATURES))), elements=FLOATS),
    thresholds=st.data(),
)
def test_any_values_give_xgboosts_bits(prepared, deep_booster, rows, thresholds) -> None:  # type: ignore[no-untyped-def]
    # half the cells replaced by a split threshold of the booster (or a step off it): the edges
    splits = prepared._compiled_trees.threshold
    mask = thresholds.draw(hnp.arrays(bool, rows.shape))
    picks = thresholds.draw(hnp.arrays(np.int64, rows.shape, elements=st.integers(0, len(splits) - 1)))
    steps = thresholds.draw(hnp.arrays(np.int64, rows.shape, elements=st.integers(-1, 1)))
    edge = np.nextafter(splits[picks], np.where(steps < 0, -np.inf, np.inf).astype(np.float32))
    rows = np.where(mask, np.where(steps == 0, splits[picks], edge), rows).astype(np.float32)
    np.testing.assert_array_equal(prepared.predict_proba(rows), xgboost_bits(deep_booster, rows))


def test_threads_scoring_at_once_keep_their_own_answers(prepared) -> None:  # type: ignore[no-untyped-def]
    X = with_missing(make_data(64, seed=13)[0])
    expected = [prepared.predict_proba(X[i : i + 1]) for i in range(len(X))]
    wrong: list[int] = []

    def score(start: int) -> None:
        for _ in range(50):
            for i in range(start, len(X), 4):
                if prepared.predict_proba(X[i : i + 1]).tobytes() != expected[i].tobytes():
                    wrong.append(i)

    threads = [threading.Thread(target=score, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def train(params: dict, X: np.ndarray, y: np.ndarray, **kwargs) -> xgb.Booster:  # type: ignore[type-arg,no-untyped-def]
    return xgb.train({**PARAMS, **params}, xgb.DMatrix(X, label=y, **kwargs), num_boost_round=20)


@pytest.mark.parametrize("kind", ["dart", "categorical", "more-than-64-leaves"])
def test_models_the_walk_does_not_reproduce_keep_xgboost(kind: str) -> None:
    X, y = make_data(2000, seed=2)
    if kind == "dart":
        booster = train({"booster": "dart", "rate_drop": 0.3}, X, y)
    elif kind == "more-than-64-leaves":
        booster = train(
            {"max_depth": 0, "max_leaves": 100, "grow_policy": "lossguide", "min_child_weight": 0}, X, y
        )
        trees = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
        assert max(len(t["left_children"]) // 2 + 1 for t in trees) > 64
    else:
        X = X.copy()
        X[:, 1] = np.floor(np.abs(X[:, 1]) * 3)  # a small-cardinality category
        booster = train(
            {"max_cat_to_onehot": 1}, X, y, feature_types=["q", "c", "q", "q"], enable_categorical=True
        )
    bundle = xgb_bundle(booster)
    assert not bundle.prepare_compiled_trees()
    one = X[:1].astype(np.float32)
    np.testing.assert_array_equal(bundle.predict_proba(one), booster.inplace_predict(one).astype(np.float64))


def test_arrays_that_differ_from_xgboost_by_one_bit_are_refused(deep_booster, caplog) -> None:  # type: ignore[no-untyped-def]
    kept = deep_booster.best_iteration + 1

    def off_by_one_ulp(rows: np.ndarray) -> np.ndarray:
        proba = deep_booster.inplace_predict(rows, iteration_range=(0, kept))
        proba[17] = np.nextafter(proba[17], np.float32(1.0))
        return proba.astype(np.float64)

    with caplog.at_level(logging.WARNING):
        assert tree_arrays_for(deep_booster, kept, off_by_one_ulp) is None
    assert "differ from XGBoost on 1 of 4096 verification rows" in caplog.text
    exact = tree_arrays_for(deep_booster, kept, lambda rows: xgboost_bits(deep_booster, rows))
    assert exact is not None and exact.leaf_value.shape == (kept, 65)


def test_a_margin_xgboost_would_clamp_is_left_to_xgboost(deep_booster) -> None:  # type: ignore[no-untyped-def]
    """Beyond ±80 XGBoost clamps the exponent of its sigmoid; the walk gives None and the bundle
    asks XGBoost (shown by arrays shifted so far that their own answers would be wrong)."""
    bundle = xgb_bundle(deep_booster)
    assert bundle.prepare_compiled_trees()
    shifted = dataclasses.replace(bundle._compiled_trees, base_margin=np.float32(85.0))
    one = with_missing(make_data(3, seed=17)[0])[:1]
    assert shifted.predict_proba(one) is None
    object.__setattr__(bundle, "_compiled_trees", shifted)
    np.testing.assert_array_equal(bundle.predict_proba(one), xgboost_bits(deep_booster, one))


@pytest.mark.parametrize("base_score", [0.3, 0.6001005, 0.5622656, 0.5228285, 0.0076583982, 0.0213])
def test_the_base_margin_is_xgboosts_own(base_score: float) -> None:
    """numpy's float32 ``log`` differs from the C library's ``logf`` in the last bit for these
    base scores; the walk takes XGBoost's own margin, so such models are compiled too."""
    X, y = make_data(400, seed=4)
    booster = train({"base_score": base_score}, X, y)
    bundle = xgb_bundle(booster)
    assert bundle.prepare_compiled_trees()
    rows = with_missing(X[:16])
    np.testing.assert_array_equal(
        bundle.predict_proba(rows), booster.inplace_predict(rows).astype(np.float64)
    )


def test_a_read_only_input_is_scored(prepared, deep_booster) -> None:  # type: ignore[no-untyped-def]
    rows = with_missing(make_data(4, seed=19)[0])
    rows.flags.writeable = False
    np.testing.assert_array_equal(prepared.predict_proba(rows), xgboost_bits(deep_booster, rows))


def test_malformed_trees_are_refused_before_the_walk_could_read_outside_them(deep_booster) -> None:  # type: ignore[no-untyped-def]
    model = json.loads(deep_booster.save_raw("json"))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["default_left"] = tree["default_left"][:1]
    with pytest.raises(ValueError, match="one entry per node"):
        tree_arrays._build(model, 1)
    model = json.loads(deep_booster.save_raw("json"))
    tree = model["learner"]["gradient_booster"]["model"]["trees"][0]
    tree["split_indices"][0] = 10_000
    with pytest.raises(ValueError, match="outside the booster's"):
        tree_arrays._build(model, 1)


def test_any_failure_to_prepare_leaves_xgboost_scoring(deep_booster, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    def broken(*args: object) -> None:
        raise RuntimeError("numba failed to import")

    monkeypatch.setattr("fraud_detection.models.bundle.tree_arrays_for", broken)
    bundle = xgb_bundle(deep_booster)
    with caplog.at_level(logging.WARNING):
        assert not bundle.prepare_compiled_trees()
    assert "RuntimeError: numba failed to import" in caplog.text
    one = with_missing(make_data(2, seed=23)[0])[:1]
    np.testing.assert_array_equal(bundle.predict_proba(one), xgboost_bits(deep_booster, one))
