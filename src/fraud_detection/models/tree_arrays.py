"""A booster's trees as sorted arrays scored by a compiled bit-vector loop: XGBoost's
probabilities, bit for bit, an order of magnitude faster than XGBoost for a few rows.

For one row XGBoost's C predict costs far more than the prediction: every call walks every node
of every tree to find the deepest (``MaxDepth``), reads the cgroup files and compiles a regex for
its thread count, and allocates its buffers (measured with ``perf``, BENCHMARKS.md). For many rows
it walks each tree node by node, a chain of dependent loads and unpredictable branches.

Here, QuickScorer's way (Lucchese et al., SIGIR 2015): each tree's leaves are numbered left to
right, one bit each in a 64-bit word per tree. Every split node, grouped by feature and sorted by
threshold, carries the mask of the leaves of its left subtree. For a row, a node whose test sends
the row right ("false") clears those bits: for each feature, the false nodes are a prefix of its
sorted thresholds (``threshold <= value``). The exit leaf of each tree is then its lowest set bit
(the leftmost leaf no false node ruled out). A sequential scan with few branches to mispredict;
its cost grows with the false nodes (~2,400 of 5,568 for a fraud row), so XGBoost, which walks
only each tree's path, catches up from a few dozen rows on (``COMPILED_TREES_MAX_ROWS``).

It must never change a score: the online path would drift from batch scoring (skew). So it
repeats XGBoost's semantics and float32 arithmetic in XGBoost's order (``value < threshold`` goes
left, NaN takes the node's default branch, leaf values added tree after tree to XGBoost's own base
margin in float32, then ``1 / (1 + exp(-margin))`` in float32 with the C library's ``expf``, which
numba calls; a margin beyond ±80, where XGBoost clamps the exponent, is left to XGBoost), and
:func:`tree_arrays_for` accepts the arrays only after they gave exactly XGBoost's bits on rows
built to hit every split threshold, a float32 step either side of it, and NaN. A model it does not
reproduce (categorical splits, vector leaves, more than 64 leaves in a tree, another objective,
dart) gets ``None``, and XGBoost keeps scoring it.

numba is imported, and the loop compiled (about a second), only on the first call of
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
_MAX_LEAVES = 64  # one bit per leaf in a 64-bit word
_ALL_LEAVES = np.uint64(0xFFFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True, eq=False)
class TreeArrays:
    """The split nodes of every tree, by feature then threshold, and the leaves by tree, checked
    so the compiled loop (which does no bounds checks) never reads outside them."""

    offsets: np.ndarray  # (n_features + 1,) int64: feature j's nodes are [offsets[j], offsets[j+1])
    threshold: np.ndarray  # (splits,) float32: ascending within each feature
    tree: np.ndarray  # (splits,) int64: the node's tree
    left_leaves: np.ndarray  # (splits,) uint64: every bit set but those of the left subtree's leaves
    default_right: np.ndarray  # (splits,) uint8: 1 where a missing value goes right
    leaf_value: np.ndarray  # (trees, 65) float32: by tree and leaf; NaN past the tree's leaves
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
            # the one compiled layout (C order, aligned float32): a copy only when x is another
            np.require(x, np.float32, ["C", "A"]),
            self.offsets,
            self.threshold,
            self.tree,
            self.left_leaves,
            self.default_right,
            self.leaf_value,
            self.base_margin,
            _MARGIN_LIMIT,
            out,
        )
        if np.isnan(out).any():  # the loop's mark for a margin beyond the limit
            return None
        return out.astype(np.float64)


@functools.cache
def _walk() -> Callable[..., None]:
    """The tree walk, compiled once per process for exactly these argument types."""
    import numba
    from numba import types
    from numba.cpython.unsafe.numbers import trailing_zeros

    def array(dtype: Any, ndim: int) -> Any:  # read-only too: a read-only input is scored as well
        return types.Array(dtype, ndim, "C", readonly=True)

    signature = types.void(
        array(types.float32, 2),
        array(types.int64, 1),
        array(types.float32, 1),
        array(types.int64, 1),
        array(types.uint64, 1),
        array(types.uint8, 1),
        array(types.float32, 2),
        types.float32,
        types.float32,
        types.Array(types.float32, 1, "C"),
    )

    @numba.njit(signature, nogil=True, cache=False)
    def walk(x, offsets, threshold, tree, left_leaves, default_right, leaf_value, base_margin, limit, out):  # type: ignore[no-untyped-def]
        one = np.float32(1.0)
        n_trees = leaf_value.shape[0]
        alive = np.empty(n_trees, dtype=np.uint64)
        for i in range(x.shape[0]):
            alive[:] = _ALL_LEAVES
            for j in range(x.shape[1]):
                value = x[i, j]
                end = offsets[j + 1]
                k = offsets[j]
                if np.isnan(value):  # the nodes whose default branch is the right one are false
                    while k < end:
                        if default_right[k]:
                            alive[tree[k]] &= left_leaves[k]
                        k += 1
                else:  # not (value < threshold): the row goes right, its left leaves are out
                    while k < end and threshold[k] <= value:
                        alive[tree[k]] &= left_leaves[k]
                        k += 1
            margin = base_margin  # float32 throughout, added tree after tree: XGBoost's rounding
            for t in range(n_trees):
                # the exit leaf: the lowest bit left (64 if none, a NaN column: never for a tree)
                margin += leaf_value[t, trailing_zeros(alive[t])]
            out[i] = one / (np.exp(-margin) + one) if abs(margin) < limit else np.nan

    return walk


def tree_arrays_for(
    booster: xgboost.Booster, n_rounds: int, predict: Callable[[np.ndarray], np.ndarray]
) -> TreeArrays | None:
    """The arrays of the first ``n_rounds`` rounds of ``booster`` when their walk gives exactly
    the bits of ``predict`` (XGBoost's probabilities, float64 of float32) on the verification
    rows; None when the model is not one the walk reproduces, or when any bit differs. A tree
    that is not a tree raises ValueError (the bundle then keeps XGBoost, as for any failure).

    The walk is compiled first, whatever the model: a later model (a hot reload) then never
    compiles it on a thread that would hold the GIL for a second."""
    _walk()
    arrays = _build(json.loads(booster.save_raw("json")), n_rounds)
    if arrays is None:
        return None
    rows = _verification_rows(arrays)
    expected = np.asarray(predict(rows), dtype=np.float64)
    got = arrays.predict_proba(rows)
    if got is None:  # verification rows this extreme: the model's margins are beyond the walk's range
        log.info("trees not compiled: margins beyond ±%s", _MARGIN_LIMIT)
        return None
    differing = int(np.count_nonzero(expected.view(np.int64) != got.view(np.int64)))
    if differing:
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
    feature, threshold, tree_of, left_leaves, default_right = [], [], [], [], []
    leaf_value = np.full((len(trees), _MAX_LEAVES + 1), np.nan, dtype=np.float32)
    for t, tree in enumerate(trees):
        left = np.asarray(tree["left_children"], dtype=np.int64)
        right = np.asarray(tree["right_children"], dtype=np.int64)
        size = left.size
        per_node = ("split_conditions", "split_indices", "default_left")
        if size == 0 or any(len(tree[name]) != size for name in per_node):
            raise ValueError(f"a tree's {per_node} do not have one entry per node")
        splits = left != -1
        if (
            not np.array_equal(splits, right != -1)
            or (
                (left[splits] <= 0) | (left[splits] >= size) | (right[splits] <= 0) | (right[splits] >= size)
            ).any()
        ):
            raise ValueError("a tree's child indices are not a tree")
        conditions = np.asarray(tree["split_conditions"], dtype=np.float32)
        indices = np.asarray(tree["split_indices"], dtype=np.int64)
        if ((indices[splits] < 0) | (indices[splits] >= n_features)).any():
            raise ValueError(f"a split feature is outside the booster's {n_features} features")
        first, count, leaves = _leaf_ranges(left, right)
        if len(leaves) > _MAX_LEAVES:
            return None  # one 64-bit word per tree
        leaf_value[t, : len(leaves)] = conditions[leaves]
        nodes = np.flatnonzero(splits)
        left_first, left_count = first[left[nodes]], count[left[nodes]]
        left_bits = ((np.uint64(1) << left_count.astype(np.uint64)) - np.uint64(1)) << left_first.astype(
            np.uint64
        )
        feature.append(indices[nodes])
        threshold.append(conditions[nodes])
        tree_of.append(np.full(nodes.size, t, dtype=np.int64))
        left_leaves.append(_ALL_LEAVES ^ left_bits)
        default_right.append(
            np.where(np.asarray(tree["default_left"], dtype=bool)[nodes], 0, 1).astype(np.uint8)
        )
    features = np.concatenate(feature)
    thresholds = np.concatenate(threshold)
    order = np.lexsort((thresholds, features))  # by feature, then ascending threshold
    base_score = float(str(params["base_score"]).strip("[]"))
    if not 0.0 < base_score < 1.0:
        return None
    return TreeArrays(
        offsets=np.searchsorted(features[order], np.arange(n_features + 1)).astype(np.int64),
        threshold=thresholds[order],
        tree=np.concatenate(tree_of)[order],
        left_leaves=np.concatenate(left_leaves)[order],
        default_right=np.concatenate(default_right)[order],
        leaf_value=leaf_value,
        base_margin=_base_margin(base_score),
        n_features=n_features,
    )


def _leaf_ranges(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Per node, the left-to-right number of its subtree's first leaf and its number of leaves
    (a subtree's leaves are consecutive in that order); and the leaves, left to right. A node
    reached twice or never (not a tree) is refused."""
    size = left.size
    first = np.zeros(size, dtype=np.int64)
    count = np.zeros(size, dtype=np.int64)
    leaves: list[int] = []
    seen = np.zeros(size, dtype=bool)
    stack = [(0, False)]
    while stack:  # depth first, left before right; each split revisited once its children are done
        node, done = stack.pop()
        if done:
            first[node] = first[left[node]]
            count[node] = count[left[node]] + count[right[node]]
            continue
        if seen[node]:
            raise ValueError("a tree's child indices are not a tree")
        seen[node] = True
        if left[node] == -1:
            first[node], count[node] = len(leaves), 1
            leaves.append(node)
        else:
            stack += [(node, True), (int(right[node]), False), (int(left[node]), False)]
    if not seen.all():
        raise ValueError("a tree has nodes its root does not reach")
    return first, count, leaves


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


def _verification_rows(arrays: TreeArrays) -> np.ndarray:
    """Rows whose every value is a split threshold of its feature, a float32 step either side of
    one, or NaN: both sides of every comparison and every default branch, over many paths."""
    rng = np.random.default_rng(0)
    rows = np.empty((_VERIFY_ROWS, arrays.n_features), dtype=np.float32)
    for j in range(arrays.n_features):
        thresholds = np.unique(arrays.threshold[arrays.offsets[j] : arrays.offsets[j + 1]])
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
