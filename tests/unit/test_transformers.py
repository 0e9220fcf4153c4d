"""FeatureTransformer: the sklearn contract, unseen categories, and a safe skops round trip."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from fraud_detection.errors import ArtifactError, FraudDetectionError
from fraud_detection.features.engineering import FeatureConfig, build_features
from fraud_detection.features.transformers import (
    TRUSTED_TYPES,
    FeatureTransformer,
    load_transformer,
    save_transformer,
)
from tests.conftest import make_transactions

pytestmark = pytest.mark.unit

CONFIG = FeatureConfig(windows_days=[1, 7, 30], label_delay_days=7, history_days=30)


@parametrize_with_checks(
    [FeatureTransformer(), FeatureTransformer(categorical_features=[0])],
    expected_failed_checks=lambda estimator: (
        {
            "check_estimators_nan_inf": "by design a missing value in a categorical column is the "
            "unknown category (all zeros), not an error; the check puts its NaN in column 0, which "
            "this instance encodes as categorical. NaN in a numeric column is refused (the default "
            "instance passes this check)."
        }
        if estimator.categorical_features
        else {}
    ),
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def feature_frame() -> pd.DataFrame:
    """The real feature frame of ``build_features`` plus a categorical column."""
    transactions = make_transactions(400, seed=3)
    features = build_features(transactions, CONFIG)
    return features[CONFIG.feature_names].assign(customer_age_band=transactions["customer_age_band"])


@pytest.fixture
def fitted(feature_frame) -> FeatureTransformer:
    return FeatureTransformer(categorical_features=["customer_age_band"]).fit(feature_frame)


def test_output_is_float32_standardised_in_a_fixed_order(fitted, feature_frame):
    out = fitted.transform(feature_frame)
    names = list(fitted.get_feature_names_out())
    bands = ["18-25", "26-35", "36-50", "51-65", "65+"]
    assert names == [*CONFIG.feature_names, *(f"customer_age_band_{band}" for band in bands)]
    assert out.dtype == np.float32 and out.shape == (len(feature_frame), len(names))
    numeric = out[:, : len(CONFIG.feature_names)].astype(np.float64)
    varying = feature_frame[CONFIG.feature_names].nunique().to_numpy() > 1
    np.testing.assert_allclose(numeric[:, varying].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(numeric[:, varying].std(axis=0), 1.0, atol=1e-5)
    one_hot = out[:, len(CONFIG.feature_names) :]
    assert set(np.unique(one_hot)) == {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    # Fitted on names: the same columns in another order are refused, not silently misread.
    with pytest.raises(ValueError, match="feature names"):
        fitted.transform(feature_frame[feature_frame.columns[::-1]])


def test_constant_columns_are_safe():
    X = pd.DataFrame({"constant": [0.1] * 5, "zero": [0.0] * 5, "varies": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = FeatureTransformer().fit(X).transform(X)
    assert np.isfinite(out).all()
    assert (out[:, :2] == 0.0).all()  # exactly 0, not a rounding residue or a NaN from 0 / 0
    single = FeatureTransformer().fit(X.iloc[:1]).transform(X)
    assert np.isfinite(single).all()


def test_unseen_and_missing_categories_become_all_zeros(fitted, feature_frame):
    new = feature_frame.head(4).copy()
    new["customer_age_band"] = ["99+", None, np.nan, "26-35"]
    out = fitted.transform(new)[:, len(CONFIG.feature_names) :]
    assert out[:3].sum() == 0.0
    assert out[3].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]


def test_integer_categories_and_array_input():
    X = np.array([[1.0, 7], [2.0, 8], [3.0, 7]])
    transformer = FeatureTransformer(categorical_features=[1]).fit(X)
    assert list(transformer.get_feature_names_out()) == ["x0", "x1_7.0", "x1_8.0"]
    out = transformer.transform(np.array([[2.0, 9], [2.0, 8]]))
    assert out[:, 1:].tolist() == [[0.0, 0.0], [0.0, 1.0]]


def test_extra_columns_are_ignored_when_numeric_features_are_named(feature_frame):
    framed = feature_frame.assign(transaction_id=np.arange(len(feature_frame)))
    transformer = FeatureTransformer(numeric_features=CONFIG.feature_names).fit(framed)
    assert list(transformer.get_feature_names_out()) == CONFIG.feature_names


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"categorical_features": ["no_such_column"]}, "no_such_column"),
        ({"numeric_features": ["amount"], "categorical_features": ["amount"]}, "amount"),
        ({"numeric_features": ["amount", "amount"]}, "twice"),
    ],
)
def test_bad_column_parameters_name_the_column(feature_frame, params, match):
    with pytest.raises(ValueError, match=match):
        FeatureTransformer(**params).fit(feature_frame)


def test_non_finite_numeric_input_is_refused_naming_the_feature(fitted, feature_frame):
    broken = feature_frame.head(3).assign(amount=[1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"feature 'amount'\) contains NaN"):
        fitted.transform(broken)


# ------------------------------------------------------------------ skops persistence


def test_save_load_round_trip_is_bit_identical(fitted, feature_frame, tmp_path):
    path = save_transformer(fitted, tmp_path / "transformer.skops")
    loaded = load_transformer(path)
    assert loaded is not fitted and isinstance(loaded, FeatureTransformer)
    assert loaded.get_params() == fitted.get_params()
    before, after = fitted.transform(feature_frame), loaded.transform(feature_frame)
    assert before.dtype == after.dtype and before.tobytes() == after.tobytes()
    assert list(loaded.get_feature_names_out()) == list(fitted.get_feature_names_out())
    unseen = feature_frame.head(2).assign(customer_age_band="unheard-of")
    assert loaded.transform(unseen).tobytes() == fitted.transform(unseen).tobytes()


def test_only_our_own_class_needs_trusting(fitted, tmp_path):
    import skops.io as sio

    path = save_transformer(fitted, tmp_path / "transformer.skops")
    assert set(sio.get_untrusted_types(file=path)) == set(TRUSTED_TYPES)
    with zipfile.ZipFile(path) as archive:
        assert "schema.json" in archive.namelist()  # a skops archive, not a pickle


def test_a_file_carrying_an_untrusted_type_is_refused(fitted, tmp_path):
    import skops.io as sio

    smuggled = FeatureTransformer().fit(pd.DataFrame({"a": [1.0, 2.0]}))
    # A pandas object in a fitted attribute (an easy slip: ``X.mean()`` instead of its values).
    smuggled.extra_ = pd.Series([1.0, 2.0])
    path = tmp_path / "smuggled.skops"
    sio.dump(smuggled, path)
    with pytest.raises(ArtifactError, match=r"pandas\.core\.series\.Series") as info:
        load_transformer(path)
    assert isinstance(info.value, FraudDetectionError)


def _rewrite_schema(source, target, edit) -> None:
    with zipfile.ZipFile(source) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    members["schema.json"] = json.dumps(edit(json.loads(members["schema.json"]))).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())


def test_a_tampered_file_naming_another_class_is_refused_before_loading(fitted, tmp_path):
    path = save_transformer(fitted, tmp_path / "transformer.skops")
    tampered = tmp_path / "tampered.skops"
    _rewrite_schema(
        path, tampered, lambda schema: schema | {"__module__": "subprocess", "__class__": "Popen"}
    )
    with pytest.raises(ArtifactError, match=r"subprocess\.Popen"):
        load_transformer(tampered)


def test_unreadable_or_missing_files_and_unfitted_saves(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_transformer(tmp_path / "missing.skops")
    junk = tmp_path / "junk.skops"
    junk.write_bytes(b"\x80\x04 not a zip archive")
    with pytest.raises(ArtifactError, match="not a readable skops file"):
        load_transformer(junk)
    with pytest.raises(NotFittedError):
        save_transformer(FeatureTransformer(), tmp_path / "unfitted.skops")
