"""The trained-model bundle: the only code that reads or writes a model artifact.

A bundle is a folder of plain files, nothing in it is ever unpickled:

``model.ubj``
    The XGBoost booster in XGBoost's native UBJSON format, trimmed to the trees early stopping
    kept (the file KServe's xgbserver reads too). A logistic-regression baseline has
    ``linear.json`` instead: its standardisation and coefficients as plain numbers.
``bundle.json``
    Format version, model type, the ordered feature names, the decision threshold, the Feast
    FeatureService name, the training window, free JSON metadata (params, metrics, data digest,
    seed, config) and the library versions that wrote it.
``manifest.json``
    Written last: the sha256 and size of every other file. Its own sha256 is the bundle's digest
    (:func:`bundle_digest`), which pins the whole bundle and is recorded *outside* it (registry
    tag, deployment config), so a swapped model whose manifest was rewritten too is still caught.
``model.sig`` (optional)
    An OpenSSF model-signing signature (elliptic-curve key, offline, no Sigstore network) over
    every other file in the folder, written by :func:`sign_bundle`.

:func:`save_bundle` writes the folder atomically (a temporary sibling, fsync'ed, then renamed).
:func:`load_bundle` checks the manifest, every file's sha256 and size, that no file is missing or
extra, the expected digest and the signature, all *before* parsing anything, and raises
:class:`~fraud_detection.errors.ArtifactError` naming the file or value on any mismatch.

The production profile verifies the signature before use: it loads with both
``expected_digest`` (from the deployment config) and ``public_key`` set, so a bundle that was not
signed by the release key, or was changed after signing, never scores a transaction.
"""

from __future__ import annotations

import base64
import ctypes
import datetime
import json
import logging
import math
import os
import re
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import xgboost

from fraud_detection.errors import ArtifactError, DataContractError, StorageError
from fraud_detection.models.tree_arrays import TreeArrays, tree_arrays_for
from fraud_detection.utils.io import _fsync_dir, _umask, atomic_write_bytes, sha256_bytes

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "ArtifactError",
    "LinearModel",
    "ModelBundle",
    "TrainingWindow",
    "bundle_digest",
    "load_bundle",
    "save_bundle",
    "sign_bundle",
    "verify_bundle_signature",
]

logger = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
BUNDLE_FILE = "bundle.json"
SIGNATURE_FILE = "model.sig"
XGBOOST_FILE = "model.ubj"
LINEAR_FILE = "linear.json"
_MODEL_FILES: dict[str, str] = {"xgboost": XGBOOST_FILE, "logistic_regression": LINEAR_FILE}
# Files that may sit beside the manifest's entries: the manifest itself and the signature (which is
# written after the manifest, so the manifest cannot list it).
_UNLISTED_FILES = frozenset({MANIFEST_FILE, SIGNATURE_FILE})
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# predict_proba returns the booster's output as a probability; only this objective makes it one.
_XGBOOST_OBJECTIVE = "binary:logistic"


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class TrainingWindow:
    """The time range of the training labels: naive UTC, ``start`` inclusive, ``end`` exclusive."""

    start: datetime.datetime
    end: datetime.datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime.datetime):
                raise ValueError(f"training window {name} {value!r} is not a datetime.datetime")
            if value.tzinfo is not None:
                raise ValueError(f"training window {name} {value.isoformat()} must be naive UTC, not aware")
        if not self.start < self.end:
            raise ValueError(
                f"training window start {self.start.isoformat()} is not before its end {self.end.isoformat()}"
            )


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields make the generated __eq__ ambiguous
class LinearModel:
    """Standardise-then-logistic baseline as plain numbers: margin = ((x - mean) / scale) @ coef + intercept."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("mean", "scale", "coef"):
            try:
                array = np.array(getattr(self, name), dtype=np.float64)  # a private copy
            except (TypeError, ValueError) as err:
                raise ValueError(f"linear model {name} is not numeric: {err}") from err
            if array.ndim != 1 or array.size == 0:
                raise ValueError(
                    f"linear model {name} has shape {array.shape}; expected a non-empty 1-D array"
                )
            if not np.isfinite(array).all():
                raise ValueError(f"linear model {name} holds NaN or infinite values: {array.tolist()}")
            array.flags.writeable = False  # frozen means frozen: no in-place edits of the coefficients
            arrays[name] = array
        sizes = {name: array.size for name, array in arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"linear model mean, scale and coef differ in length: {sizes}")
        if (arrays["scale"] <= 0).any():
            raise ValueError(f"linear model scale must be > 0, got {arrays['scale'].tolist()}")
        if isinstance(self.intercept, bool) or not isinstance(self.intercept, int | float | np.floating):
            raise ValueError(f"linear model intercept {self.intercept!r} is not a number")
        if not math.isfinite(self.intercept):
            raise ValueError(f"linear model intercept {self.intercept!r} is not finite")
        for name, array in arrays.items():
            object.__setattr__(self, name, array)
        object.__setattr__(self, "intercept", float(self.intercept))

    @property
    def n_features(self) -> int:
        return int(self.coef.size)

    def margin(self, features: np.ndarray) -> np.ndarray:
        """Log-odds of fraud for each row of a 2-D float array in the model's feature order."""
        return self._standardised(features) @ self.coef + self.intercept

    def _standardised(self, features: np.ndarray) -> np.ndarray:
        # C order: the matrix product sums in an order that depends on the layout, and a row's
        # score must not depend on how the caller's array was laid out.
        x = np.ascontiguousarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ArtifactError(
                f"features have shape {x.shape}; the linear model expects (n, {self.n_features})"
            )
        # NaN has no meaning for a linear model; a NaN probability would silently read as "not fraud".
        bad = ~np.isfinite(x).all(axis=0)
        if bad.any():
            raise DataContractError(
                f"features in columns {np.flatnonzero(bad).tolist()} hold NaN or infinite values, "
                "which the logistic-regression model cannot score"
            )
        return (x - self.mean) / self.scale


@dataclass(frozen=True, eq=False)  # eq=False: a Booster and numpy arrays have no value equality
class ModelBundle:
    """A trained model with everything needed to score with it safely.

    Exactly one of ``booster`` / ``linear`` is set, matching ``model_type``. An XGBoost booster that
    carries a ``best_iteration`` attribute (early stopping) scores with trees ``0..best_iteration``
    only, here and after :func:`save_bundle` (which drops the unused trees).
    """

    model_type: Literal["xgboost", "logistic_regression"]
    feature_names: tuple[str, ...]
    threshold: float
    feature_service: str
    training_window: TrainingWindow
    metadata: dict[str, Any]
    booster: xgboost.Booster | None = None
    linear: LinearModel | None = None
    # Boosting rounds scored: best_iteration + 1 after early stopping, else all. Derived, not passed.
    _n_rounds: int = field(init=False, repr=False, default=0)
    # The C prediction call's JSON arguments, built once (see _predict_dense).
    _predict_args: bytes = field(init=False, repr=False, default=b"")
    # The compiled trees (models/tree_arrays.py), once prepare_compiled_trees verified them.
    _compiled_trees: TreeArrays | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        if self.model_type not in _MODEL_FILES:
            raise ValueError(f"model_type {self.model_type!r} is not one of {sorted(_MODEL_FILES)}")
        if isinstance(self.feature_names, str):  # tuple("amount") would be six one-letter features
            raise ValueError(
                f"feature_names {self.feature_names!r} must be a sequence of names, not a string"
            )
        names = tuple(self.feature_names)
        if not names or not all(isinstance(name, str) and name for name in names):
            raise ValueError(f"feature_names {list(names)} must be a non-empty sequence of non-empty strings")
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"feature_names name {duplicated} more than once")
        object.__setattr__(self, "feature_names", names)
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float | np.floating)
            or not 0.0 <= float(self.threshold) <= 1.0
        ):
            raise ValueError(f"threshold {self.threshold!r} is not a probability in [0, 1]")
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.feature_service, str) or not self.feature_service:
            raise ValueError(f"feature_service {self.feature_service!r} must be a non-empty string")
        if not isinstance(self.training_window, TrainingWindow):
            raise ValueError(f"training_window {self.training_window!r} is not a TrainingWindow")
        if not isinstance(self.metadata, dict):
            raise ValueError(f"metadata must be a dict, got {type(self.metadata).__name__}")
        _dumps(self.metadata, what="metadata")  # fail now, not when the bundle is saved
        if self.model_type == "xgboost":
            if self.booster is None or self.linear is not None:
                raise ValueError("an 'xgboost' bundle needs booster set and linear None")
            object.__setattr__(self, "_n_rounds", _check_booster(self.booster, names))
            object.__setattr__(self, "_predict_args", _predict_args(self._n_rounds))
        else:
            if self.linear is None or self.booster is not None:
                raise ValueError("a 'logistic_regression' bundle needs linear set and booster None")
            if not isinstance(self.linear, LinearModel):
                raise ValueError(f"linear {self.linear!r} is not a LinearModel")
            if self.linear.n_features != len(names):
                raise ValueError(
                    f"the linear model has {self.linear.n_features} coefficients for {len(names)} feature_names"
                )

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def predict_proba(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Fraud probability per row, 1-D float64.

        A DataFrame is reordered to ``feature_names`` (extra columns are ignored; a missing one is an
        :class:`ArtifactError` naming it). A numpy array must already be in that order.
        """
        if self.booster is not None:
            x = self._matrix(features, np.float32)
            if 0 < x.shape[0] <= COMPILED_TREES_MAX_ROWS and self._compiled_trees is not None:
                proba = self._compiled_trees.predict_proba(x)
                if proba is not None:  # None: a margin XGBoost clamps, which it scores itself
                    return proba
            return self._xgboost_proba(x)
        assert self.linear is not None
        margin = self.linear.margin(self._matrix(features, np.float64))
        return np.exp(-np.logaddexp(0.0, -margin))  # sigmoid without overflow for large |margin|

    def _xgboost_proba(self, x: np.ndarray) -> np.ndarray:
        assert self.booster is not None
        # inplace_predict on float32 numpy is XGBoost's fastest path (no DMatrix); the range
        # scores exactly the kept trees, whatever best_iteration the booster carries.
        if x.shape[0] and _PREDICT_FROM_DENSE is not None:
            return _predict_dense(self.booster, x, self._predict_args)
        proba = self.booster.inplace_predict(x, iteration_range=(0, self._n_rounds))
        return np.asarray(proba, dtype=np.float64).reshape(-1)

    def prepare_compiled_trees(self) -> bool:
        """Score batches of up to :data:`COMPILED_TREES_MAX_ROWS` rows with the compiled trees of
        :mod:`~fraud_detection.models.tree_arrays` from now on, once they have reproduced XGBoost's
        probabilities bit for bit (about a second the first time in a process: numba compiles the
        loop). False when they could not: XGBoost keeps scoring. The same scores either way: one
        row in ~10-20 µs instead of XGBoost's 0.2-0.4 ms. Serving calls this before it reports
        ready; batch scoring, whose batches are large, does not."""
        if self.booster is None:
            return False
        if self._compiled_trees is None:
            try:
                arrays = tree_arrays_for(self.booster, self._n_rounds, self._xgboost_proba)
            except Exception as err:  # an optional speed-up: any failure leaves XGBoost scoring
                logger.warning(
                    "compiled trees unavailable, XGBoost scores every batch: %s: %s", type(err).__name__, err
                )
                return False
            object.__setattr__(self, "_compiled_trees", arrays)
        return self._compiled_trees is not None

    def contributions(self, features: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Per-feature contributions in margin (log-odds) space, shape (n, n_features + 1).

        The last column is the bias; each row sums to the row's margin. XGBoost gives TreeSHAP
        values; the linear model gives ``((x - mean) / scale) * coef`` and the intercept.
        """
        if self.booster is not None:
            x = self._matrix(features, np.float32)
            # validate_features=False: the column order is already ours, and a booster trained with
            # feature names refuses an unnamed DMatrix otherwise.
            contribs = self.booster.predict(
                xgboost.DMatrix(x),
                pred_contribs=True,
                iteration_range=(0, self._n_rounds),
                validate_features=False,
            )
            return np.asarray(contribs, dtype=np.float64)
        assert self.linear is not None
        terms = self.linear._standardised(self._matrix(features, np.float64)) * self.linear.coef
        bias = np.full((terms.shape[0], 1), self.linear.intercept)
        return np.hstack([terms, bias])

    def _matrix(self, features: np.ndarray | pd.DataFrame, dtype: type[np.floating]) -> np.ndarray:
        """The features as a 2-D ``dtype`` array in ``feature_names`` order.

        An array already of ``dtype`` is used as it is, whatever its memory layout: XGBoost and
        numpy read strided arrays, so a batch's column-major matrix (and any row slice of it) is
        scored without a copy.
        """
        if isinstance(features, pd.DataFrame):
            missing = [name for name in self.feature_names if name not in features.columns]
            if missing:
                raise ArtifactError(
                    f"features lack columns {missing} that the model bundle expects "
                    f"(feature service {self.feature_service!r}, features {list(self.feature_names)})"
                )
            features = features.loc[:, list(self.feature_names)]
        try:
            x = np.asarray(features, dtype=dtype)
        except (TypeError, ValueError) as err:
            raise DataContractError(
                f"features cannot be read as {np.dtype(dtype).name} numbers: {err}"
            ) from err
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ArtifactError(
                f"features have shape {x.shape}; the model bundle expects (n, {self.n_features}) "
                f"with columns {list(self.feature_names)}"
            )
        return x


# Up to this many rows, a prepared bundle scores with its compiled trees; XGBoost (which walks a
# block of rows per tree) is as fast from ~30-130 rows on, depending on the trees
# (bench/bench_serving_internals.py, BENCHMARKS.md).
COMPILED_TREES_MAX_ROWS = 32

# XGBoost's C entry point behind Booster.inplace_predict for dense arrays (public C API since 1.4).
# Calling it directly skips the Python wrapper, which costs more than the prediction itself for a
# few rows: it rebuilds JSON, a class and numpy views on every call (0.30 of 0.47 ms for one row of
# a 300-tree booster, measured in BENCHMARKS.md). Without it (a future XGBoost), the wrapper is used.
_PREDICT_FROM_DENSE = getattr(getattr(xgboost.core, "_LIB", None), "XGBoosterPredictFromDense", None)


def _predict_args(n_rounds: int) -> bytes:
    """The JSON arguments ``inplace_predict`` passes for probabilities of trees ``0..n_rounds``."""
    return json.dumps(
        {
            "type": 0,  # the objective's transformed output: probabilities for binary:logistic
            "training": False,
            "iteration_begin": 0,
            "iteration_end": n_rounds,
            "missing": math.nan,  # json writes NaN, which XGBoost's reader takes, as the wrapper does
            "strict_shape": False,
            "cache_id": 0,
        }
    ).encode()


def _predict_dense(booster: xgboost.Booster, x: np.ndarray, args: bytes) -> np.ndarray:
    """``booster.inplace_predict(x)`` for a 2-D float32 array with rows, as float64, the same bits."""
    if not x.flags.aligned:  # as the wrapper does: XGBoost refuses or misreads unaligned data
        x = np.require(x, requirements="A")
    interface = x.__array_interface__
    strides = (
        "null" if interface["strides"] is None else f"[{interface['strides'][0]}, {interface['strides'][1]}]"
    )
    array = (
        f'{{"data": [{interface["data"][0]}, false], "strides": {strides}, "typestr": "<f4", '
        f'"shape": [{x.shape[0]}, {x.shape[1]}], "version": 3}}'
    ).encode()
    # Out-parameters per call: XGBoost keeps each thread's result apart, and so must we.
    shape = ctypes.POINTER(ctypes.c_uint64)()
    dims = ctypes.c_uint64()
    result = ctypes.POINTER(ctypes.c_float)()
    xgboost.core._check_call(
        _PREDICT_FROM_DENSE(
            booster.handle, array, args, None, ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(result)
        )
    )
    if dims.value != 1 or shape[0] != x.shape[0]:  # binary:logistic gives one value per row
        raise ArtifactError(f"XGBoost returned a prediction of {dims.value} dimensions for {x.shape[0]} rows")
    # The result lives in the booster's per-thread buffer until this thread's next call: copy it.
    return np.ctypeslib.as_array(result, shape=(x.shape[0],)).astype(np.float64)


def _check_booster(booster: Any, feature_names: tuple[str, ...]) -> int:
    """Check the booster fits the bundle; return the number of boosting rounds to score with."""
    if not isinstance(booster, xgboost.Booster):
        raise ValueError(f"booster is a {type(booster).__name__}, expected an xgboost.Booster")
    objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
    if objective != _XGBOOST_OBJECTIVE:
        raise ValueError(f"booster objective is {objective!r}; predict_proba needs {_XGBOOST_OBJECTIVE!r}")
    if booster.num_features() != len(feature_names):
        raise ValueError(
            f"the booster was trained on {booster.num_features()} features, feature_names lists {len(feature_names)}"
        )
    if booster.feature_names is not None and tuple(booster.feature_names) != feature_names:
        raise ValueError(
            f"the booster's feature names {booster.feature_names} differ from feature_names {list(feature_names)}"
        )
    rounds = booster.num_boosted_rounds()
    best = booster.attr("best_iteration")
    if best is None:
        return rounds
    if not 0 <= int(best) < rounds:
        raise ValueError(f"the booster's best_iteration {best} is outside its {rounds} rounds")
    return int(best) + 1


# --------------------------------------------------------------------------- save


def save_bundle(bundle: ModelBundle, out_dir: Path, *, signing_key: Path | None = None) -> str:
    """Write ``bundle`` as a folder at ``out_dir`` and return its digest (see :func:`bundle_digest`).

    Everything is written into a temporary sibling folder (each file fsync'ed), signed there when
    ``signing_key`` is given, then renamed into place, so a crash or a failed signature never leaves
    a partial or unsigned bundle at ``out_dir``. Raises :class:`StorageError` when
    ``out_dir`` exists and is not an empty folder (nothing is changed then), or cannot be written.
    """
    out_dir = Path(out_dir)
    _refuse_existing(out_dir)
    files = _serialise(bundle)
    manifest = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()},
    }
    manifest_bytes = _dumps(manifest, what="manifest")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as err:
        raise StorageError(f"cannot write bundle {str(out_dir)!r}: {err.strerror or err}") from err
    try:
        os.chmod(tmp_dir, 0o777 & ~_umask())  # mkdtemp makes 0700; a published bundle is readable
        for name, data in files.items():
            atomic_write_bytes(tmp_dir / name, data)
        atomic_write_bytes(tmp_dir / MANIFEST_FILE, manifest_bytes)  # last: it vouches for the rest
        if signing_key is not None:
            sign_bundle(tmp_dir, signing_key)
        _refuse_existing(out_dir)  # someone may have written there meanwhile
        # rename(2) replaces only a missing or empty folder, so a racing writer's bundle is never lost.
        os.rename(tmp_dir, out_dir)
        _fsync_dir(out_dir.parent)
    except OSError as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise StorageError(f"cannot write bundle {str(out_dir)!r}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    digest = sha256_bytes(manifest_bytes)
    logger.info("saved %s bundle to %s (digest %s)", bundle.model_type, out_dir, digest)
    return digest


def _refuse_existing(out_dir: Path) -> None:
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if not out_dir.is_dir() or out_dir.is_symlink():
        raise StorageError(
            f"bundle path {str(out_dir)!r} exists and is not a folder; refusing to overwrite it"
        )
    if any(out_dir.iterdir()):
        raise StorageError(
            f"bundle folder {str(out_dir)!r} exists and is not empty; refusing to overwrite it"
        )


def _serialise(bundle: ModelBundle) -> dict[str, bytes]:
    """The bundle's files (all but the manifest) as bytes."""
    document: dict[str, Any] = {
        "format_version": BUNDLE_FORMAT_VERSION,
        "model_type": bundle.model_type,
        "feature_names": list(bundle.feature_names),
        "threshold": bundle.threshold,
        "feature_service": bundle.feature_service,
        "training_window": {
            "start": bundle.training_window.start.isoformat(),
            "end": bundle.training_window.end.isoformat(),
        },
        "metadata": bundle.metadata,
        "xgboost_version": xgboost.__version__,
    }
    if bundle.booster is not None:
        booster = bundle.booster
        if booster.attr("best_iteration") is not None:
            # Early stopping keeps the trees after the best one; raw Booster predictions would use
            # them. Slicing keeps trees 0..best_iteration and drops the attribute with them.
            booster = booster[: bundle._n_rounds]
        document["num_boosted_rounds"] = booster.num_boosted_rounds()
        model_file, model_bytes = XGBOOST_FILE, bytes(booster.save_raw(raw_format="ubj"))
    else:
        assert bundle.linear is not None
        linear = bundle.linear
        payload = {
            "mean": linear.mean.tolist(),
            "scale": linear.scale.tolist(),
            "coef": linear.coef.tolist(),
            "intercept": linear.intercept,
        }
        model_file, model_bytes = LINEAR_FILE, _dumps(payload, what="linear model")
    return {model_file: model_bytes, BUNDLE_FILE: _dumps(document, what="bundle.json")}


def _dumps(payload: Any, *, what: str) -> bytes:
    """Deterministic JSON bytes. No ``default=str``: a value that would not round-trip is an error."""
    try:
        return (json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not JSON-serialisable (finite numbers, str, list, dict): {err}") from err


# --------------------------------------------------------------------------- digest and load


def bundle_digest(path: Path) -> str:
    """sha256 hex of the bundle's ``manifest.json`` bytes: one value that pins every file in it."""
    return sha256_bytes(_read_manifest_bytes(Path(path)))


def load_bundle(
    path: Path, *, expected_digest: str | None = None, public_key: Path | None = None
) -> ModelBundle:
    """Load a bundle written by :func:`save_bundle`, checking it fully before parsing anything.

    Checks, in order: the manifest is present and valid; ``expected_digest`` (when given) equals
    :func:`bundle_digest`; the folder holds exactly the listed files (plus ``model.sig``), each a
    regular file whose size and sha256 match; the signature verifies against ``public_key`` (when
    given). Any failure is an :class:`ArtifactError` naming the file or value and what was expected.
    """
    path = Path(path)
    digest = None
    try:
        manifest_bytes = _read_manifest_bytes(path)
        digest = sha256_bytes(manifest_bytes)
        if expected_digest is not None and digest != expected_digest.strip().lower():
            raise ArtifactError(
                f"bundle {str(path)!r} has digest {digest} (sha256 of {MANIFEST_FILE}), "
                f"expected {expected_digest}: the bundle is not the one that was registered"
            )
        files = _verified_files(path, _parse_manifest(path, manifest_bytes))
        if public_key is not None:
            verify_bundle_signature(path, public_key)
        bundle = _parse_bundle(path, files)
    except ArtifactError as err:  # named in the refusal's audit line (see ArtifactError)
        err.bundle, err.digest = err.bundle or str(path), err.digest or digest
        raise
    logger.info("loaded %s bundle from %s (digest %s)", bundle.model_type, path, digest)
    return bundle


def _read_manifest_bytes(path: Path) -> bytes:
    if not path.is_dir():
        raise ArtifactError(f"model bundle {str(path)!r} is not a folder")
    manifest_path = path / MANIFEST_FILE
    if manifest_path.is_symlink() or not manifest_path.is_file():
        raise ArtifactError(
            f"model bundle {str(path)!r} has no {MANIFEST_FILE} (or it is not a regular file)"
        )
    try:
        return manifest_path.read_bytes()
    except OSError as err:
        raise ArtifactError(
            f"cannot read {MANIFEST_FILE} of bundle {str(path)!r}: {err.strerror or err}"
        ) from err


def _parse_manifest(path: Path, manifest_bytes: bytes) -> dict[str, tuple[str, int]]:
    """The manifest's ``{file name: (sha256, size)}``, every entry checked for shape."""
    where = f"{MANIFEST_FILE} of bundle {str(path)!r}"
    try:
        manifest = json.loads(manifest_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict) or set(manifest) != {"format_version", "files"}:
        keys = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{where} has keys {keys}, expected ['files', 'format_version']")
    if manifest["format_version"] != BUNDLE_FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format_version {manifest['format_version']!r}, expected {BUNDLE_FORMAT_VERSION}"
        )
    entries = manifest["files"]
    if not isinstance(entries, dict) or not entries:
        raise ArtifactError(f"{where} 'files' must be a non-empty object, got {entries!r}")
    listed: dict[str, tuple[str, int]] = {}
    for name, entry in entries.items():
        # A plain name in the folder: no separators, no '..', nothing that escapes the bundle.
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name:
            raise ArtifactError(f"{where} lists {name!r}, which is not a plain file name")
        if name in _UNLISTED_FILES:
            raise ArtifactError(f"{where} lists {name!r}, which a manifest never lists")
        sha = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not isinstance(sha, str) or not _SHA256_HEX.fullmatch(sha):
            raise ArtifactError(
                f"{where} entry {name!r} has sha256 {sha!r}, expected 64 lowercase hex digits"
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ArtifactError(f"{where} entry {name!r} has bytes {size!r}, expected a non-negative integer")
        listed[name] = (sha, size)
    if BUNDLE_FILE not in listed:
        raise ArtifactError(f"{where} does not list {BUNDLE_FILE}")
    models = sorted(set(listed) & set(_MODEL_FILES.values()))
    if len(models) != 1:
        raise ArtifactError(
            f"{where} lists model files {models}, expected exactly one of {sorted(_MODEL_FILES.values())}"
        )
    unknown = sorted(set(listed) - {BUNDLE_FILE, *_MODEL_FILES.values()})
    if unknown:
        raise ArtifactError(f"{where} lists unknown files {unknown}")
    return listed


def _verified_files(path: Path, listed: dict[str, tuple[str, int]]) -> dict[str, bytes]:
    """Read every listed file once, checking presence, type, size and sha256; refuse extra files."""
    present = {entry.name for entry in path.iterdir()}
    extra = sorted(present - set(listed) - _UNLISTED_FILES)
    if extra:
        raise ArtifactError(
            f"bundle {str(path)!r} holds unexpected files {extra}; expected only {sorted(listed)} "
            f"plus {MANIFEST_FILE} and an optional {SIGNATURE_FILE}"
        )
    missing = sorted(set(listed) - present)
    if missing:
        raise ArtifactError(f"bundle {str(path)!r} lacks files {missing} that its {MANIFEST_FILE} lists")
    files: dict[str, bytes] = {}
    for name, (expected_sha, expected_size) in sorted(listed.items()):
        file_path = path / name
        mode = file_path.lstat().st_mode
        if not stat.S_ISREG(mode):  # a symlink could point anywhere; only regular files are bundle content
            raise ArtifactError(f"{name} in bundle {str(path)!r} is not a regular file")
        size = file_path.stat().st_size
        if size != expected_size:  # cheap check first: no need to read a swapped multi-GB file
            raise ArtifactError(
                f"{name} in bundle {str(path)!r} has {size} bytes, but the manifest says {expected_size}"
            )
        try:
            data = file_path.read_bytes()
        except OSError as err:
            raise ArtifactError(f"cannot read {name} in bundle {str(path)!r}: {err.strerror or err}") from err
        actual_sha = sha256_bytes(data)
        if actual_sha != expected_sha:
            raise ArtifactError(
                f"{name} sha256 {actual_sha} does not match the manifest's {expected_sha} "
                f"(bundle {str(path)!r}): the file was changed after the bundle was written"
            )
        files[name] = data  # parsed from these exact bytes, so a later swap on disk cannot sneak in
    return files


def _parse_bundle(path: Path, files: dict[str, bytes]) -> ModelBundle:
    where = f"{BUNDLE_FILE} of bundle {str(path)!r}"
    document = _loads(files[BUNDLE_FILE], where)
    required = {
        "format_version",
        "model_type",
        "feature_names",
        "threshold",
        "feature_service",
        "training_window",
        "metadata",
    }
    missing = sorted(required - set(document))
    if missing:
        raise ArtifactError(f"{where} lacks keys {missing}")
    if document["format_version"] != BUNDLE_FORMAT_VERSION:
        raise ArtifactError(
            f"{where} has format_version {document['format_version']!r}, expected {BUNDLE_FORMAT_VERSION}"
        )
    model_type = document["model_type"]
    model_file = _MODEL_FILES.get(model_type) if isinstance(model_type, str) else None
    if model_file is None or model_file not in files:
        raise ArtifactError(
            f"{where} has model_type {model_type!r}, but the bundle holds {sorted(set(files) - {BUNDLE_FILE})}"
        )
    if not isinstance(document["feature_names"], list):
        raise ArtifactError(f"{where} feature_names {document['feature_names']!r} is not a list")
    saved_version = document.get("xgboost_version")
    if model_type == "xgboost" and saved_version != xgboost.__version__:
        logger.warning(
            "bundle %s was written by xgboost %s, loading with %s", path, saved_version, xgboost.__version__
        )
    try:
        window = document["training_window"]
        training_window = TrainingWindow(
            start=datetime.datetime.fromisoformat(window["start"]),
            end=datetime.datetime.fromisoformat(window["end"]),
        )
        booster = linear = None
        if model_type == "xgboost":
            booster = _load_booster(path, files[XGBOOST_FILE])
            rounds = document.get("num_boosted_rounds")
            if booster.num_boosted_rounds() != rounds:
                raise ArtifactError(
                    f"{XGBOOST_FILE} in bundle {str(path)!r} has {booster.num_boosted_rounds()} boosting rounds, "
                    f"{BUNDLE_FILE} says {rounds!r}"
                )
        else:
            payload = _loads(files[LINEAR_FILE], f"{LINEAR_FILE} of bundle {str(path)!r}")
            linear = LinearModel(
                mean=np.asarray(payload["mean"], dtype=np.float64),
                scale=np.asarray(payload["scale"], dtype=np.float64),
                coef=np.asarray(payload["coef"], dtype=np.float64),
                intercept=payload["intercept"],
            )
        return ModelBundle(
            model_type=model_type,
            feature_names=tuple(document["feature_names"]),
            threshold=document["threshold"],
            feature_service=document["feature_service"],
            training_window=training_window,
            metadata=document["metadata"],
            booster=booster,
            linear=linear,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"bundle {str(path)!r} has invalid content: {err!s}") from err


def _loads(data: bytes, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise ArtifactError(f"{where} holds a JSON {type(document).__name__}, expected an object")
    return document


def _load_booster(path: Path, data: bytes) -> xgboost.Booster:
    booster = xgboost.Booster()
    try:
        # bytearray, not bytes: XGBoost treats other types as a file name and, on failure, puts the
        # whole buffer into the error message.
        booster.load_model(bytearray(data))
    except xgboost.core.XGBoostError as err:
        raise ArtifactError(
            f"{XGBOOST_FILE} in bundle {str(path)!r} is not a readable XGBoost model: {err}"
        ) from err
    return booster


# --------------------------------------------------------------------------- signing


def sign_bundle(path: Path, private_key: Path) -> Path:
    """Sign the bundle folder offline with OpenSSF model-signing and an elliptic-curve PEM key.

    The bundle is checked against its manifest first (a tampered bundle is never signed). The
    signature covers every file in the folder except ``model.sig`` itself, git files included, and
    is written atomically to ``path / "model.sig"``, replacing an older one. Returns its path.
    """
    import model_signing

    path = Path(path)
    _verified_files(path, _parse_manifest(path, _read_manifest_bytes(path)))
    signature_path = path / SIGNATURE_FILE
    try:
        signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=Path(private_key))
        signer.set_hashing_config(_hashing_config())
        # Sign into a scratch folder, then publish: model-signing writes the file in place, and a
        # torn signature would make a good bundle unloadable.
        with tempfile.TemporaryDirectory() as scratch:
            scratch_path = Path(scratch) / SIGNATURE_FILE
            signer.sign(path, scratch_path)
            signature = scratch_path.read_bytes()
    # A bad PEM or curve is a ValueError, an encrypted key a TypeError, a non-EC key an AttributeError.
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ArtifactError(f"cannot sign bundle {str(path)!r} with key {str(private_key)!r}: {err}") from err
    atomic_write_bytes(signature_path, signature)
    logger.info("signed bundle %s (%s)", path, signature_path)
    return signature_path


def verify_bundle_signature(path: Path, public_key: Path) -> None:
    """Check ``model.sig`` in the bundle against ``public_key``; any failure is an :class:`ArtifactError`.

    Fails when the signature is missing or unreadable, was made with another key, or when any file
    in the folder (other than ``model.sig``) was added, removed or changed after signing.
    """
    import model_signing
    from cryptography.exceptions import InvalidSignature

    path = Path(path)
    signature_path = path / SIGNATURE_FILE
    if signature_path.is_symlink() or not signature_path.is_file():
        raise ArtifactError(
            f"bundle {str(path)!r} has no signature file {SIGNATURE_FILE}; it was never signed"
        )
    try:
        verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=Path(public_key))
        # Our own hashing config, not the one model-signing guesses from the signature: the guessed
        # one ignores .git*/.github paths, so files added under those names would pass.
        verifier.set_hashing_config(_hashing_config())
        verifier.verify(path, signature_path)
        _check_signed_ignores(signature_path)
    # model-signing reports a bad key, bad JSON and a file mismatch as ValueError, a missing field as
    # KeyError, a forged signature as InvalidSignature, a non-EC key as AttributeError.
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidSignature) as err:
        reason = str(err) or type(err).__name__
        raise ArtifactError(
            f"signature {SIGNATURE_FILE} of bundle {str(path)!r} does not verify with public key "
            f"{str(public_key)!r}: {reason}"
        ) from err


def _hashing_config() -> Any:
    import model_signing

    # ignore_git_paths=False: sign and verify every file but the signature; load_bundle refuses
    # extra files anyway, but verify_bundle_signature must stand on its own.
    return model_signing.hashing.Config().set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def _check_signed_ignores(signature_path: Path) -> None:
    """Refuse a (validly signed) signature that exempts more than itself from the check.

    model-signing adds the ignore list recorded in the signed payload to the verifier's own, so a
    signature made with a wider list would leave those files unchecked. Runs after verification,
    when the payload is known to be authentic.
    """
    envelope = json.loads(signature_path.read_bytes())["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    ignored = statement["predicate"]["serialization"].get("ignore_paths", [])
    if set(ignored) - {SIGNATURE_FILE}:
        raise ValueError(
            f"the signature exempts {sorted(ignored)} from checking; only {SIGNATURE_FILE} may be"
        )
