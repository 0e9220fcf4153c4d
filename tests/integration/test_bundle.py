"""The model bundle: round trips, trimming, integrity checks, signatures, and no pickle anywhere."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fraud_detection.errors import ArtifactError, StorageError
from fraud_detection.models.bundle import (
    LinearModel,
    ModelBundle,
    TrainingWindow,
    bundle_digest,
    load_bundle,
    save_bundle,
    sign_bundle,
    verify_bundle_signature,
)
from fraud_detection.utils.io import sha256_bytes

FEATURES = ("amount", "card_txn_count_7d", "card_amount_mean_7d", "terminal_fraud_rate_30d")
WINDOW = TrainingWindow(start=dt.datetime(2024, 1, 1), end=dt.datetime(2024, 2, 1))
PARAMS = {
    "objective": "binary:logistic",
    "tree_method": "hist",
    "nthread": 1,
    "seed": 7,
    "max_depth": 3,
    "eta": 0.3,
}


def make_data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FEATURES)))
    X[:, 0] = rng.gamma(2.0, 25.0, size=n)  # an amount-like, unscaled column for the linear model
    score = 0.03 * (X[:, 0] - 50) + X[:, 1] - 0.5 * X[:, 3] + rng.normal(scale=1.0, size=n)
    return X, (score > 1.0).astype(np.int64)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_data()


@pytest.fixture(scope="module")
def early_stopped_booster(data: tuple[np.ndarray, np.ndarray]) -> xgb.Booster:
    X, y = data
    booster = xgb.train(
        PARAMS,
        xgb.DMatrix(X[:300], label=y[:300]),
        num_boost_round=200,
        evals=[(xgb.DMatrix(X[300:], label=y[300:]), "val")],
        early_stopping_rounds=5,
        verbose_eval=False,
    )
    assert booster.best_iteration + 1 < booster.num_boosted_rounds()  # the test data must leave extra trees
    return booster


@pytest.fixture(scope="module")
def plain_booster(data: tuple[np.ndarray, np.ndarray]) -> xgb.Booster:
    X, y = data
    return xgb.train(PARAMS, xgb.DMatrix(X, label=y), num_boost_round=10)


@pytest.fixture(scope="module")
def linear_model(data: tuple[np.ndarray, np.ndarray]) -> LinearModel:
    X, _ = data
    return LinearModel(
        mean=X.mean(axis=0), scale=X.std(axis=0), coef=np.array([0.8, 1.1, -0.2, -0.6]), intercept=-1.3
    )


def xgb_bundle(booster: xgb.Booster, **overrides: object) -> ModelBundle:
    fields: dict[str, object] = {
        "model_type": "xgboost",
        "feature_names": FEATURES,
        "threshold": 0.42,
        "feature_service": "fraud_v1",
        "training_window": WINDOW,
        "metadata": {"params": PARAMS, "metrics": {"average_precision": 0.61}, "seed": 7},
        "booster": booster,
    }
    fields.update(overrides)
    return ModelBundle(**fields)  # type: ignore[arg-type]


def linear_bundle(linear: LinearModel) -> ModelBundle:
    return ModelBundle(
        model_type="logistic_regression",
        feature_names=FEATURES,
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=WINDOW,
        metadata={"metrics": {"average_precision": 0.4}},
        linear=linear,
    )


@pytest.fixture(params=["xgboost", "logistic_regression"])
def any_bundle(
    request: pytest.FixtureRequest, early_stopped_booster: xgb.Booster, linear_model: LinearModel
) -> ModelBundle:
    if request.param == "xgboost":
        return xgb_bundle(early_stopped_booster)
    return linear_bundle(linear_model)


def write_keys(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 key pair as PEM files: (private, public)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_path, public_path = directory / f"{name}.pem", directory / f"{name}.pub"
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def rewrite_manifest(bundle_dir: Path) -> None:
    """What an attacker who swaps a file would do: make the manifest agree with the folder again."""
    manifest_path = bundle_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for name in manifest["files"]:
        data = (bundle_dir / name).read_bytes()
        manifest["files"][name] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def xgb_margin(booster: xgb.Booster, X: np.ndarray, n_rounds: int) -> np.ndarray:
    return booster.predict(
        xgb.DMatrix(X.astype(np.float32)), output_margin=True, iteration_range=(0, n_rounds)
    ).astype(np.float64)


# --------------------------------------------------------------------------- round trips


@pytest.mark.integration
def test_round_trip_gives_identical_predictions(
    any_bundle: ModelBundle, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    digest = save_bundle(any_bundle, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle", expected_digest=digest)

    assert digest == bundle_digest(tmp_path / "bundle")
    np.testing.assert_array_equal(loaded.predict_proba(X), any_bundle.predict_proba(X))
    np.testing.assert_array_equal(loaded.contributions(X), any_bundle.contributions(X))
    proba = loaded.predict_proba(X)
    assert proba.dtype == np.float64 and proba.shape == (len(X),)
    assert ((proba > 0) & (proba < 1)).all()
    assert loaded.model_type == any_bundle.model_type
    assert loaded.feature_names == FEATURES
    assert loaded.threshold == any_bundle.threshold
    assert loaded.feature_service == "fraud_v1"
    assert loaded.training_window == WINDOW
    assert loaded.metadata == json.loads(json.dumps(any_bundle.metadata))
    layout = {"bundle.json", "manifest.json", "model.ubj" if any_bundle.booster else "linear.json"}
    assert {p.name for p in (tmp_path / "bundle").iterdir()} == layout
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary sibling left behind


@pytest.mark.integration
def test_early_stopped_booster_is_trimmed_to_best_iteration(
    early_stopped_booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    X32 = X.astype(np.float32)
    kept = early_stopped_booster.best_iteration + 1
    save_bundle(xgb_bundle(early_stopped_booster), tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")

    assert loaded.booster is not None
    assert loaded.booster.num_boosted_rounds() == kept
    best_trees = early_stopped_booster.inplace_predict(X32, iteration_range=(0, kept))
    all_trees = early_stopped_booster.inplace_predict(X32)
    np.testing.assert_array_equal(loaded.predict_proba(X), best_trees.astype(np.float64))
    assert np.abs(loaded.predict_proba(X) - all_trees).max() > 1e-4
    # The in-memory bundle scores the same kept trees before it is ever saved.
    np.testing.assert_array_equal(xgb_bundle(early_stopped_booster).predict_proba(X), loaded.predict_proba(X))


@pytest.mark.integration
def test_contributions_sum_to_the_margin(
    any_bundle: ModelBundle, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    save_bundle(any_bundle, tmp_path / "bundle")
    loaded = load_bundle(tmp_path / "bundle")
    contributions = loaded.contributions(X)

    assert contributions.shape == (len(X), len(FEATURES) + 1)
    if loaded.booster is not None:
        margin = xgb_margin(loaded.booster, X, loaded.booster.num_boosted_rounds())
    else:
        assert loaded.linear is not None
        margin = loaded.linear.margin(X)
        np.testing.assert_allclose(contributions[:, -1], loaded.linear.intercept)
    np.testing.assert_allclose(contributions.sum(axis=1), margin, rtol=0, atol=1e-5)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), loaded.predict_proba(X), rtol=0, atol=1e-6)


@pytest.mark.integration
def test_dataframe_columns_are_reordered_and_missing_ones_named(
    any_bundle: ModelBundle, data: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = data
    frame = pd.DataFrame(X, columns=list(FEATURES))
    shuffled = frame[["terminal_fraud_rate_30d", "amount", "card_amount_mean_7d", "card_txn_count_7d"]]
    shuffled = shuffled.assign(transaction_id=np.arange(len(X)))  # extra columns are ignored

    np.testing.assert_array_equal(any_bundle.predict_proba(shuffled), any_bundle.predict_proba(X))
    np.testing.assert_array_equal(any_bundle.contributions(shuffled), any_bundle.contributions(X))
    with pytest.raises(ArtifactError, match=r"\['card_txn_count_7d'\]"):
        any_bundle.predict_proba(frame.drop(columns=["card_txn_count_7d"]))
    with pytest.raises(ArtifactError, match=r"expects \(n, 4\)"):
        any_bundle.predict_proba(X[:, :3])


@pytest.mark.integration
def test_scores_do_not_depend_on_the_array_layout(
    any_bundle: ModelBundle, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """Batch scoring hands the model its column-major matrix and row slices of it, uncopied."""
    X, _ = data
    expected = any_bundle.predict_proba(np.ascontiguousarray(X, dtype=np.float32))
    column_major = np.asfortranarray(X, dtype=np.float32)
    np.testing.assert_array_equal(any_bundle.predict_proba(column_major), expected)
    part = column_major[7:123]
    assert not part.flags.c_contiguous and not part.flags.f_contiguous
    np.testing.assert_array_equal(any_bundle.predict_proba(part), expected[7:123])


def unaligned(matrix: np.ndarray) -> np.ndarray:
    """A float32 copy of ``matrix`` that starts one byte past an aligned address."""
    raw = np.zeros(matrix.nbytes + 1, dtype=np.uint8)
    out = np.ndarray(matrix.shape, dtype=np.float32, buffer=raw.data, offset=1)
    out[...] = matrix
    assert not out.flags.aligned
    return out


def packed_field(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as a float32 field of packed records: rows 1 byte longer than the floats."""
    n, k = matrix.shape
    records = np.zeros(n, dtype=np.dtype([("flag", "i1"), ("x", "<f4", (k,))]))
    records["x"] = matrix
    out = records["x"]
    assert out.strides[0] % 4 and not out.flags.aligned
    return out


@pytest.mark.integration
def test_scores_are_the_bits_of_xgboosts_own_inplace_predict(
    early_stopped_booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """The bundle calls XGBoost's C predict directly; every layout, size and NaN gives the wrapper's bits."""
    X, _ = data
    bundle = xgb_bundle(early_stopped_booster)
    kept = early_stopped_booster.best_iteration + 1
    with_nan = X.astype(np.float32)
    with_nan[::3, 1] = np.nan  # missing values take each split's default branch
    matrices = {
        "one row": with_nan[:1],
        "c order": with_nan,
        "fortran order": np.asfortranarray(with_nan),
        "strided rows": with_nan[::2],
        "fortran slice": np.asfortranarray(with_nan)[5:77],
        "unaligned start": unaligned(with_nan),
        "packed record field": packed_field(with_nan),
    }
    for name, matrix in matrices.items():
        expected = early_stopped_booster.inplace_predict(matrix, iteration_range=(0, kept))
        got = bundle.predict_proba(matrix)
        assert got.dtype == np.float64 and got.shape == (len(matrix),), name
        np.testing.assert_array_equal(got, expected.astype(np.float64), err_msg=name)
    assert bundle.predict_proba(with_nan[:0]).shape == (0,)


@pytest.mark.integration
def test_concurrent_scoring_keeps_each_threads_answer(
    plain_booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """XGBoost hands each thread its own result buffer; scores from many threads must not mix."""
    from concurrent.futures import ThreadPoolExecutor

    X, _ = data
    bundle = xgb_bundle(plain_booster)
    sizes = [1, 2, 3, 50, 1, 400, 7, 1] * 25
    expected = {size: bundle.predict_proba(X[:size]) for size in set(sizes)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda size: (size, bundle.predict_proba(X[:size])), sizes))
    for size, got in answers:
        np.testing.assert_array_equal(got, expected[size])


# --------------------------------------------------------------------------- integrity checks


@pytest.mark.integration
def test_tampered_model_file_is_named(plain_booster: xgb.Booster, tmp_path: Path) -> None:
    save_bundle(xgb_bundle(plain_booster), tmp_path / "bundle")
    model_path = tmp_path / "bundle" / "model.ubj"
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, so only the sha256 can tell
    model_path.write_bytes(bytes(data))

    with pytest.raises(ArtifactError, match=r"model\.ubj sha256 [0-9a-f]{64} does not match the manifest's"):
        load_bundle(tmp_path / "bundle")


@pytest.mark.integration
def test_rewritten_manifest_is_caught_only_by_the_expected_digest(
    plain_booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = data
    digest = save_bundle(xgb_bundle(plain_booster), tmp_path / "bundle")
    # A different model with the same shape: trained on inverted labels.
    swapped = xgb.train(
        PARAMS, xgb.DMatrix(X, label=1 - y), num_boost_round=plain_booster.num_boosted_rounds()
    )
    (tmp_path / "bundle" / "model.ubj").write_bytes(bytes(swapped.save_raw(raw_format="ubj")))
    rewrite_manifest(tmp_path / "bundle")

    loaded = load_bundle(tmp_path / "bundle")  # self-consistent, so the folder alone cannot tell
    assert not np.allclose(loaded.predict_proba(X), xgb_bundle(plain_booster).predict_proba(X))
    with pytest.raises(ArtifactError, match=f"expected {digest}"):
        load_bundle(tmp_path / "bundle", expected_digest=digest)


@pytest.mark.integration
def test_unexpected_extra_file_is_refused(any_bundle: ModelBundle, tmp_path: Path) -> None:
    save_bundle(any_bundle, tmp_path / "bundle")
    (tmp_path / "bundle" / "model.pkl").write_bytes(b"not welcome")

    with pytest.raises(ArtifactError, match=r"unexpected files \['model\.pkl'\]"):
        load_bundle(tmp_path / "bundle")


@pytest.mark.integration
def test_missing_manifest_is_refused(any_bundle: ModelBundle, tmp_path: Path) -> None:
    save_bundle(any_bundle, tmp_path / "bundle")
    (tmp_path / "bundle" / "manifest.json").unlink()

    with pytest.raises(ArtifactError, match=r"has no manifest\.json"):
        load_bundle(tmp_path / "bundle")
    with pytest.raises(ArtifactError, match=r"has no manifest\.json"):
        bundle_digest(tmp_path / "bundle")


@pytest.mark.integration
def test_missing_listed_file_and_bad_manifest_are_refused(linear_model: LinearModel, tmp_path: Path) -> None:
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    (tmp_path / "bundle" / "linear.json").unlink()
    with pytest.raises(ArtifactError, match=r"lacks files \['linear\.json'\]"):
        load_bundle(tmp_path / "bundle")

    (tmp_path / "bundle" / "manifest.json").write_text('{"format_version": 1, "files": {"../x": {}}}')
    with pytest.raises(ArtifactError, match=r"'\.\./x', which is not a plain file name"):
        load_bundle(tmp_path / "bundle")


@pytest.mark.integration
def test_non_empty_out_dir_is_refused_and_left_untouched(linear_model: LinearModel, tmp_path: Path) -> None:
    out_dir = tmp_path / "bundle"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("precious")

    with pytest.raises(StorageError, match="not empty"):
        save_bundle(linear_bundle(linear_model), out_dir)
    assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
    assert (out_dir / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


@pytest.mark.integration
def test_failed_publish_leaves_no_bundle(
    linear_model: LinearModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(StorageError, match="No space left on device"):
        save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    assert list(tmp_path.iterdir()) == []  # neither a partial bundle nor the temporary folder


@pytest.mark.integration
def test_loading_never_unpickles(
    early_stopped_booster: xgb.Booster,
    data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, _ = data
    bundle = xgb_bundle(early_stopped_booster)
    save_bundle(bundle, tmp_path / "bundle")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle must never be used to load a bundle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_bundle(tmp_path / "bundle")
    np.testing.assert_array_equal(loaded.predict_proba(X), bundle.predict_proba(X))


# --------------------------------------------------------------------------- signatures


@pytest.mark.integration
def test_signed_bundle_verifies_with_the_right_key(
    any_bundle: ModelBundle, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, _ = data
    private_key, public_key = write_keys(tmp_path, "release")
    digest = save_bundle(any_bundle, tmp_path / "bundle")

    signature = sign_bundle(tmp_path / "bundle", private_key)
    assert signature == tmp_path / "bundle" / "model.sig"
    verify_bundle_signature(tmp_path / "bundle", public_key)
    loaded = load_bundle(tmp_path / "bundle", expected_digest=digest, public_key=public_key)
    np.testing.assert_array_equal(loaded.predict_proba(X), any_bundle.predict_proba(X))
    assert bundle_digest(tmp_path / "bundle") == digest  # the signature is not part of the digest


@pytest.mark.integration
def test_signature_does_not_verify_with_another_key(linear_model: LinearModel, tmp_path: Path) -> None:
    private_key, _ = write_keys(tmp_path, "release")
    _, other_public_key = write_keys(tmp_path, "other")
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    sign_bundle(tmp_path / "bundle", private_key)

    with pytest.raises(ArtifactError, match="does not verify with public key"):
        verify_bundle_signature(tmp_path / "bundle", other_public_key)
    with pytest.raises(ArtifactError, match="does not verify with public key"):
        load_bundle(tmp_path / "bundle", public_key=other_public_key)


@pytest.mark.integration
def test_tampering_after_signing_fails_verification(
    plain_booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    X, y = data
    private_key, public_key = write_keys(tmp_path, "release")
    save_bundle(xgb_bundle(plain_booster), tmp_path / "bundle")
    sign_bundle(tmp_path / "bundle", private_key)
    swapped = xgb.train(
        PARAMS, xgb.DMatrix(X, label=1 - y), num_boost_round=plain_booster.num_boosted_rounds()
    )
    (tmp_path / "bundle" / "model.ubj").write_bytes(bytes(swapped.save_raw(raw_format="ubj")))
    rewrite_manifest(tmp_path / "bundle")

    load_bundle(tmp_path / "bundle")  # consistent on its own...
    with pytest.raises(ArtifactError, match=r"model\.ubj"):  # ...but not what was signed
        verify_bundle_signature(tmp_path / "bundle", public_key)
    with pytest.raises(ArtifactError, match="does not verify"):
        load_bundle(tmp_path / "bundle", public_key=public_key)


@pytest.mark.integration
def test_file_added_after_signing_fails_verification(linear_model: LinearModel, tmp_path: Path) -> None:
    # model-signing's default hashing ignores .git* paths; ours must not.
    private_key, public_key = write_keys(tmp_path, "release")
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    sign_bundle(tmp_path / "bundle", private_key)
    (tmp_path / "bundle" / ".gitattributes").write_text("* filter=evil\n")

    with pytest.raises(ArtifactError, match=r"\.gitattributes"):
        verify_bundle_signature(tmp_path / "bundle", public_key)


@pytest.mark.integration
def test_unsigned_bundle_fails_when_a_public_key_is_given(linear_model: LinearModel, tmp_path: Path) -> None:
    _, public_key = write_keys(tmp_path, "release")
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")

    with pytest.raises(ArtifactError, match=r"no signature file model\.sig"):
        load_bundle(tmp_path / "bundle", public_key=public_key)
    load_bundle(tmp_path / "bundle")  # without a key it loads: signing is the production profile's choice


@pytest.mark.integration
def test_corrupt_signature_is_an_artifact_error(linear_model: LinearModel, tmp_path: Path) -> None:
    private_key, public_key = write_keys(tmp_path, "release")
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    sign_bundle(tmp_path / "bundle", private_key)
    for garbage in (b"not json", b"{}"):
        (tmp_path / "bundle" / "model.sig").write_bytes(garbage)
        with pytest.raises(ArtifactError, match="does not verify"):
            verify_bundle_signature(tmp_path / "bundle", public_key)


@pytest.mark.integration
def test_copied_bundle_keeps_its_digest_and_signature(linear_model: LinearModel, tmp_path: Path) -> None:
    # Deployments download a bundle into a folder of another name; nothing may depend on the name.
    private_key, public_key = write_keys(tmp_path, "release")
    digest = save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    sign_bundle(tmp_path / "bundle", private_key)
    shutil.copytree(tmp_path / "bundle", tmp_path / "models" / "fraud-xgb")

    load_bundle(tmp_path / "models" / "fraud-xgb", expected_digest=digest, public_key=public_key)


@pytest.mark.integration
def test_signature_that_exempts_bundle_files_is_refused(linear_model: LinearModel, tmp_path: Path) -> None:
    # model-signing lets the signed payload widen the verifier's ignore list; a signature that leaves
    # a bundle file unchecked is refused even though it is validly signed.
    import model_signing

    private_key, public_key = write_keys(tmp_path, "release")
    save_bundle(linear_bundle(linear_model), tmp_path / "bundle")
    wide = model_signing.hashing.Config().set_ignored_paths(
        paths=["model.sig", "linear.json"], ignore_git_paths=False
    )
    signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=private_key)
    signer.set_hashing_config(wide).sign(tmp_path / "bundle", tmp_path / "bundle" / "model.sig")

    with pytest.raises(ArtifactError, match=r"exempts \['linear\.json', 'model\.sig'\]"):
        verify_bundle_signature(tmp_path / "bundle", public_key)


@pytest.mark.integration
def test_signing_while_saving_publishes_signed_or_nothing(linear_model: LinearModel, tmp_path: Path) -> None:
    private, public = write_keys(tmp_path, "good")
    signed_dir = tmp_path / "signed"
    digest = save_bundle(linear_bundle(linear_model), signed_dir, signing_key=private)
    load_bundle(signed_dir, expected_digest=digest, public_key=public)  # signed before it was published
    unusable_key = tmp_path / "not-a-key.pem"
    unusable_key.write_text("not a key")
    with pytest.raises(ArtifactError, match="cannot sign"):
        save_bundle(linear_bundle(linear_model), tmp_path / "unsigned", signing_key=unusable_key)
    assert not (tmp_path / "unsigned").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left
