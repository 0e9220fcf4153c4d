"""A booster's trees as flat arrays walked by a compiled loop: XGBoost's probabilities, bit for
bit, for a few rows at a fraction of the cost.

For one row XGBoost's C predict costs far more than the prediction: every call walks every node
of every tree to find the deepest (``MaxDepth``), reads the cgroup files and compiles a regex for
its thread count, and allocates its buffers; the tree walks themselves are a small part (measured
with ``perf``, BENCHMARKS.md). The numba-compiled walk here scores one row of a 300-tree booster
in a few microseconds; XGBoost stays faster from a few dozen rows on (it also uses threads).

It must never change a score: the online path would drift from batch scoring (skew). So the walk
repeats XGBoost's float32 arithmetic in XGBoost's order (``fvalue < split_condition`` goes left,
NaN takes the node's default branch, leaf values added tree after tree to the base margin in
float32, then ``1 / (1 + exp(-margin))`` in float32; a margin beyond ±80, where XGBoost clamps
the exponent, is left to XGBoost), and :func:`tree_arrays_for` accepts the
arrays only after they gave exactly XGBoost's bits on rows built to hit every split threshold, a
float32 step either side of it, and NaN. A model it does not reproduce (categorical splits, vector
leaves, another objective, dart) gets ``None``, and XGBoost keeps scoring it.

numba is imported, and the walk compiled (about a second), only on the first call of
:func:`tree_arrays_for`: serving does it before it reports ready. Nothing is cached on disk
(numba's cache files are pickles).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost

__all__ = ["TreeArrays", "tree_arrays_for"]

log = logging.getLogger(__name__)

_MARGIN_LIMIT = 80.0  # XGBoost's sigmoid clamps its exponent near 88.7: margins beyond are left to it
_VERIFY_ROWS = 4096


@dataclass(frozen=True, eq=False)
class TreeArrays:
    """Every node of every tree in flat arrays, checked so the compiled walk (which does no bounds
    checks) never reads outside them. A leaf's children are itself."""

    roots: np.ndarray  # (trees,) int64: each tree's root node
    feature: np.ndarray  # (nodes,) int64: split feature, in [0, n_features); 0 for leaves
    threshold: np.ndarray  # (nodes,) float32: split condition
    children: np.ndarray  # (2 * nodes,) int64: [2n] the left child of n, [2n + 1] the right one
    default_right: np.ndarray  # (nodes,) int64: 1 where a missing value goes right, else 0
    leaf_value: np.ndarray  # (nodes,) float32: the leaf's value; 0 for splits (never read)
    depth: int  # the deepest tree's depth: no walk takes more steps
    base_margin: np.float32
    n_features: int

    def predict_proba(self, x: np.ndarray) -> np.ndarray | None:
        """Probabilities of the rows of ``x`` (2-D, ``n_features`` columns), float64 of the float32
        values, as :func:`~fraud_detection.models.bundle._predict_dense` gives them; None when a
        row's margin is beyond ±80 (XGBoost clamps the exponent there: let it score the batch)."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-D array of {self.n_features} columns, got shape {x.shape}")
        out = np.empty(x.shape[0], dtype=np.float32)
        _walk()(
            # the one compiled layout (C order, aligned float32): a few rows copy in under a microsecond
            np.require(x, np.float32, ["C", "A"]),
            self.roots,
            self.feature,
            self.threshold,
            self.children,
            self.default_right,
            self.leaf_value,
            self.base_margin,
            self.depth,
            _MARGIN_LIMIT,
            out,
        )
        if np.isnan(out).any():  # the walk's mark for a margin beyond the limit
            return None
        return out.astype(np.float64)


@functools.cache
def _walk() -> Callable[..., None]:
    """The tree walk, compiled once per process for exactly these argument types."""
    import numba
    from numba import types

    def array(dtype: Any, ndim: int) -> Any:  # read-only too: a read-only input is scored as well
        return types.Array(dtype, ndim, "C", readonly=True)

    i64, f32 = array(types.int64, 1), array(types.float32, 1)
    signature = types.void(
        array(types.float32, 2),
        i64,
        i64,
        f32,
        i64,
        i64,
        f32,
        types.float32,
        types.int64,
        types.float32,
        types.Array(types.float32, 1, "C"),
    )

    @numba.njit(signature, nogil=True, cache=False)
    def walk(
        x, roots, feature, threshold, children, default_right, leaf_value, base_margin, depth, limit, out
    ):  # type: ignore[no-untyped-def]
        one = np.float32(1.0)
        for i in range(x.shape[0]):
            margin = base_margin  # float32 throughout, added tree after tree: XGBoost's rounding
            for tree in range(roots.size):
                node = roots[tree]
                for _ in range(depth):
                    left = children[2 * node]
                    if left == node:  # a leaf
                        break
                    value = x[i, feature[node]]
                    if np.isnan(value):
                        node = children[2 * node + default_right[node]]
                    elif value < threshold[node]:
                        node = left
                    else:
                        node = children[2 * node + 1]
                margin += leaf_value[node]
            out[i] = one / (np.exp(-margin) + one) if abs(margin) < limit else np.nan

    return walk


def tree_arrays_for(
    booster: xgboost.Booster, n_rounds: int, predict: Callable[[np.ndarray], np.ndarray]
) -> TreeArrays | None:
    """The arrays of the first ``n_rounds`` rounds of ``booster`` when their walk gives exactly
    the bits of ``predict`` (XGBoost's probabilities, float64 of float32) on the verification
    rows; None when the model is not one the walk reproduces, or when any bit differs.

    The walk is compiled first, whatever the model: a later model (a hot reload) then never
    compiles it on a thread that would hold the GIL for a second."""
    _walk()
    try:
        arrays = _build(json.loads(booster.save_raw("json")), n_rounds)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        log.info("trees not compiled, XGBoost scores every batch: %s", err)
        return None
    if arrays is None:
        return None
    rows = _verification_rows(arrays)
    expected = np.asarray(predict(rows), dtype=np.float64)
    got = arrays.predict_proba(rows)
    if got is None:  # verification rows this extreme: the model's margins are beyond the walk's range
        log.info("trees not compiled: margins beyond ±%s", _MARGIN_LIMIT)
        return None
    if not np.array_equal(expected.view(np.int64), got.view(np.int64)):
        differing = int(np.count_nonzero(expected.view(np.int64) != got.view(np.int64)))
        log.warning(
            "compiled trees differ from XGBoost on %d of %d verification rows; XGBoost scores every batch",
            differing,
            len(rows),
        )
        return None
    return arrays


def _build(model: dict[str, Any], n_rounds: int) -> TreeArrays | None:
    """The arrays of a ``binary:logistic`` gbtree model's scalar numeric trees; None otherwise."""
    learner = model["learner"]
    booster = learner["gradient_booster"]
    params = learner["learner_model_param"]
    if (
        learner["objective"]["name"] != "binary:logistic"
        or booster["name"] != "gbtree"  # dart weighs its trees
        or int(params.get("num_target", 1)) != 1
        or int(params.get("num_class", 0)) > 1
    ):
        return None
    per_round = int(booster["model"]["gbtree_model_param"]["num_parallel_tree"])
    trees = booster["model"]["trees"][: n_rounds * per_round]
    if not trees or any(int(t["tree_param"]["size_leaf_vector"]) > 1 or any(t["split_type"]) for t in trees):
        return None  # vector leaves or categorical splits
    n_features = int(params["num_feature"])
    roots, feature, threshold, children, default_right, leaf_value = [], [], [], [], [], []
    depth = offset = 0
    for tree in trees:
        left = np.asarray(tree["left_children"], dtype=np.int64)
        right = np.asarray(tree["right_children"], dtype=np.int64)
        size = left.size
        leaf = left == -1
        splits = ~leaf
        if (
            size == 0
            or not np.array_equal(leaf, right == -1)
            or (
                (left[splits] <= 0) | (left[splits] >= size) | (right[splits] <= 0) | (right[splits] >= size)
            ).any()
        ):
            raise ValueError("a tree's child indices are not a tree")
        per_node = ("split_conditions", "split_indices", "default_left")
        if any(len(tree[name]) != size for name in per_node):
            raise ValueError(f"a tree's {per_node} do not have one entry per node")
        conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
        indices = np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64))
        if ((indices < 0) | (indices >= n_features)).any():
            raise ValueError(f"a split feature is outside the booster's {n_features} features")
        own = np.arange(size, dtype=np.int64)
        pairs = np.empty(2 * size, dtype=np.int64)
        pairs[0::2] = np.where(leaf, own, left) + offset
        pairs[1::2] = np.where(leaf, own, right) + offset
        roots.append(offset)
        feature.append(indices)
        threshold.append(conditions)
        children.append(pairs)
        default_right.append(np.where(np.asarray(tree["default_left"], dtype=bool), 0, 1))
        leaf_value.append(np.where(leaf, conditions, np.float32(0.0)))
        depth = max(depth, _tree_depth(left, right))
        offset += size
    base_score = float(str(params["base_score"]).strip("[]"))
    if not 0.0 < base_score < 1.0:
        return None
    return TreeArrays(
        roots=np.asarray(roots, dtype=np.int64),
        feature=np.concatenate(feature),
        threshold=np.concatenate(threshold),
        children=np.concatenate(children),
        default_right=np.concatenate(default_right).astype(np.int64),
        leaf_value=np.concatenate(leaf_value),
        depth=depth,
        base_margin=_base_margin(base_score),
        n_features=n_features,
    )


def _base_margin(base_score: float) -> np.float32:
    """The margin XGBoost starts every row from, ``-log(1 / p - 1)`` in float32, computed by
    XGBoost itself: a booster of no trees with that base score, asked for a margin. (numpy's
    float32 ``log`` is not the C library's ``logf`` and differs in the last bit for ~5 % of
    base scores in the fraud range.) The string round trip is exact: ``base_score`` is the
    shortest decimal of a float32, which XGBoost reads back to that float32."""
    empty = xgboost.train(
        {"objective": "binary:logistic", "base_score": base_score, "nthread": 1},
        xgboost.DMatrix(np.zeros((1, 1), dtype=np.float32), label=[0.0]),
        num_boost_round=0,
    )
    margin = empty.inplace_predict(np.zeros((1, 1), dtype=np.float32), predict_type="margin")
    return np.float32(margin[0])


def _tree_depth(left: np.ndarray, right: np.ndarray) -> int:
    """Edges from the root to the deepest leaf; a cycle is refused (the walk would loop)."""
    depth, level = 0, np.array([0])
    while True:
        level = level[left[level] != -1]
        if level.size == 0:
            return depth
        level = np.unique(np.concatenate([left[level], right[level]]))  # shared children: once
        depth += 1
        if depth > left.size:
            raise ValueError("a tree's child indices form a cycle")


def _verification_rows(arrays: TreeArrays) -> np.ndarray:
    """Rows whose every value is a split threshold of its feature, a float32 step either side of
    one, or NaN: both sides of every comparison and every default branch, over many paths."""
    rng = np.random.default_rng(0)
    is_split = arrays.children[0::2] != np.arange(arrays.threshold.size)
    rows = np.empty((_VERIFY_ROWS, arrays.n_features), dtype=np.float32)
    for j in range(arrays.n_features):
        thresholds = np.unique(arrays.threshold[is_split & (arrays.feature == j)])
        if thresholds.size == 0:  # a feature no split reads
            rows[:, j] = rng.standard_normal(_VERIFY_ROWS).astype(np.float32)
            continue
        picked = rng.choice(thresholds, size=_VERIFY_ROWS)
        step = rng.integers(-1, 2, size=_VERIFY_ROWS)
        below = np.nextafter(picked, np.float32(-np.inf))
        above = np.nextafter(picked, np.float32(np.inf))
        values = np.where(step < 0, below, np.where(step > 0, above, picked))
        rows[:, j] = np.where(rng.random(_VERIFY_ROWS) < 0.05, np.float32(np.nan), values)
    return rows
