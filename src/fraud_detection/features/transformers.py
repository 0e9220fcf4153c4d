"""Fitted preprocessing of the feature frame, as an sklearn estimator, saved with skops.

:class:`FeatureTransformer` standardises the numeric features (mean and standard deviation
learned in ``fit``) and one-hot encodes the optional categorical ones; a category not seen in
``fit`` (or a missing one) becomes an all-zeros block, the "unknown" category, and never an
error. The output is float32 in the fixed order of :meth:`FeatureTransformer.get_feature_names_out`.

It is persisted with skops, never pickle or joblib. :func:`load_transformer` lists the types the
file would instantiate (``skops.io.get_untrusted_types``), refuses the file unless every one of
them is in :data:`TRUSTED_TYPES`, and only then loads it, trusting exactly those types.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils import assert_all_finite, check_array
from sklearn.utils.validation import check_is_fitted, validate_data

from fraud_detection.errors import ArtifactError
from fraud_detection.utils.io import atomic_write_bytes

__all__ = ["TRUSTED_TYPES", "ArtifactError", "FeatureTransformer", "load_transformer", "save_transformer"]

# Every type a saved FeatureTransformer may ask skops to instantiate beyond skops' own defaults
# (builtins, numpy arrays and dtypes, which skops trusts already). Review before adding to it.
TRUSTED_TYPES: frozenset[str] = frozenset({"fraud_detection.features.transformers.FeatureTransformer"})


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """Standardise numeric features and one-hot encode categorical ones, unseen categories as zeros.

    Parameters
    ----------
    numeric_features : sequence of str or int, default=None
        Columns to standardise (names for a DataFrame, positions otherwise). ``None``: every column
        not in ``categorical_features``. Columns in neither list are ignored (e.g. keys).
    categorical_features : sequence of str or int, default=None
        Columns to one-hot encode, categories sorted. ``None``: none.

    Attributes
    ----------
    numeric_columns_ : list of int
        Positions of the standardised columns in the input.
    mean_, scale_ : ndarray of shape (n_numeric,)
        Learned centre and scale; a constant column gets its value as centre and a scale of 1.
    categorical_columns_ : list of int
        Positions of the encoded columns in the input.
    categories_ : list of list
        The categories seen in ``fit``, sorted, one list per categorical column.
    n_features_in_, feature_names_in_
        As in scikit-learn.
    """

    def __init__(
        self,
        numeric_features: Sequence[str | int] | None = None,
        categorical_features: Sequence[str | int] | None = None,
    ) -> None:
        self.numeric_features = numeric_features
        self.categorical_features = categorical_features

    def fit(self, X: Any, y: Any = None) -> FeatureTransformer:
        X = self._validate(X, reset=True)
        self.categorical_columns_ = self._positions(self.categorical_features or [], "categorical_features")
        if self.numeric_features is None:
            taken = set(self.categorical_columns_)
            self.numeric_columns_ = [i for i in range(self.n_features_in_) if i not in taken]
        else:
            self.numeric_columns_ = self._positions(self.numeric_features, "numeric_features")
            overlap = sorted(set(self.numeric_columns_) & set(self.categorical_columns_))
            if overlap:
                raise ValueError(
                    f"columns {[self._input_names()[i] for i in overlap]} are both numeric and categorical"
                )
        numeric = self._numeric(X)
        low, high = numeric.min(axis=0), numeric.max(axis=0)
        constant = low == high
        # A constant column is centred on its exact value (so it transforms to exactly 0), scaled by 1.
        self.mean_ = np.where(constant, low, numeric.mean(axis=0))
        self.scale_ = np.where(constant, 1.0, numeric.std(axis=0))
        self.categories_ = [self._categories(X, i) for i in self.categorical_columns_]
        return self

    def transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = self._validate(X, reset=False)
        n_rows = len(X)
        n_numeric = len(self.numeric_columns_)
        widths = [len(categories) for categories in self.categories_]
        out = np.zeros((n_rows, n_numeric + sum(widths)), dtype=np.float32)
        if n_numeric:
            out[:, :n_numeric] = (self._numeric(X) - self.mean_) / self.scale_
        offset = n_numeric
        rows = np.arange(n_rows)
        for column, categories, width in zip(
            self.categorical_columns_, self.categories_, widths, strict=True
        ):
            # -1 for a category not seen in fit or a missing value: the all-zeros "unknown".
            codes = pd.Categorical(self._column(X, column), categories=categories).codes
            known = codes >= 0
            out[rows[known], offset + codes[known]] = 1.0
            offset += width
        return out

    def get_feature_names_out(self, input_features: Sequence[str] | None = None) -> np.ndarray:
        check_is_fitted(self)
        names = self._input_names()
        if input_features is not None:
            given = [str(name) for name in input_features]
            if len(given) != self.n_features_in_ or (
                hasattr(self, "feature_names_in_") and given != list(self.feature_names_in_)
            ):
                raise ValueError(f"input_features {given} do not match the features seen in fit {names}")
            names = given
        out = [names[i] for i in self.numeric_columns_]
        for column, categories in zip(self.categorical_columns_, self.categories_, strict=True):
            out.extend(f"{names[column]}_{category}" for category in categories)
        return np.asarray(out, dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]  # float32 in, float32 out (always float32)
        return tags

    # -------------------------------------------------------------- helpers

    def _validate(self, X: Any, *, reset: bool) -> Any:
        """Check the shape and names without copying a DataFrame into one object array."""
        if not isinstance(X, pd.DataFrame):
            X = check_array(
                X, dtype=None, ensure_all_finite=False, ensure_min_samples=1, ensure_min_features=1
            )
        elif X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(
                f"Found array with shape={X.shape}; a minimum of 1 sample and 1 feature is required."
            )
        validate_data(self, X, reset=reset, skip_check_array=True)
        return X

    def _input_names(self) -> list[str]:
        if hasattr(self, "feature_names_in_"):
            return [str(name) for name in self.feature_names_in_]
        return [f"x{i}" for i in range(self.n_features_in_)]

    def _positions(self, columns: Sequence[str | int], parameter: str) -> list[int]:
        names = self._input_names()
        positions = []
        for column in columns:
            if isinstance(column, str) and column in names:
                positions.append(names.index(column))
            elif isinstance(column, int | np.integer) and 0 <= column < self.n_features_in_:
                positions.append(int(column))
            else:
                raise ValueError(f"{parameter} names column {column!r}, which is not in the input {names}")
        if len(set(positions)) != len(positions):
            raise ValueError(f"{parameter} {list(columns)} names a column twice")
        return positions

    @staticmethod
    def _column(X: Any, position: int) -> np.ndarray:
        return X.iloc[:, position].to_numpy() if isinstance(X, pd.DataFrame) else X[:, position]

    def _numeric(self, X: Any) -> np.ndarray:
        """The numeric columns as one float64 array; NaN or infinity is an error naming the column."""
        names = self._input_names()
        numeric = np.empty((len(X), len(self.numeric_columns_)), dtype=np.float64)
        for j, column in enumerate(self.numeric_columns_):
            try:
                numeric[:, j] = np.asarray(self._column(X, column), dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"numeric feature {names[column]!r} holds non-numeric values: {err}"
                ) from err
            assert_all_finite(numeric[:, j], input_name=f"X (feature {names[column]!r})")
        return numeric

    def _categories(self, X: Any, position: int) -> list[Any]:
        values = pd.unique(pd.Series(self._column(X, position)).dropna())
        try:
            categories = sorted(values.tolist())
        except TypeError as err:
            name = self._input_names()[position]
            raise ValueError(f"categorical feature {name!r} mixes incomparable types: {err}") from err
        return categories


def save_transformer(transformer: FeatureTransformer, path: Path) -> Path:
    """Write a fitted ``transformer`` to ``path`` with skops (atomically); returns the path."""
    import skops.io as sio

    check_is_fitted(transformer)
    path = Path(path)
    atomic_write_bytes(path, sio.dumps(transformer))
    return path


def load_transformer(path: Path, *, trusted_types: frozenset[str] = TRUSTED_TYPES) -> FeatureTransformer:
    """Load a transformer saved by :func:`save_transformer`, instantiating only trusted types.

    Raises :class:`ArtifactError` when the file is missing or not a skops file, when it asks for a
    type outside ``trusted_types`` (nothing is instantiated then), or when it does not hold a
    fitted :class:`FeatureTransformer`.
    """
    import skops.io as sio

    path = Path(path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except FileNotFoundError as err:
        raise ArtifactError(f"transformer file {str(path)!r} does not exist") from err
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ArtifactError(f"transformer file {str(path)!r} is not a readable skops file: {err}") from err
    refused = sorted(set(untrusted) - trusted_types)
    if refused:
        raise ArtifactError(
            f"transformer file {str(path)!r} asks to load types that are not trusted: {refused}; "
            f"trusted: {sorted(trusted_types)}"
        )
    transformer = sio.load(path, trusted=untrusted)
    if not isinstance(transformer, FeatureTransformer):
        raise ArtifactError(
            f"transformer file {str(path)!r} holds a {type(transformer).__name__}, expected a FeatureTransformer"
        )
    try:
        check_is_fitted(transformer)
    except NotFittedError as err:
        raise ArtifactError(f"transformer file {str(path)!r} holds an unfitted FeatureTransformer") from err
    return transformer
