"""Drift detection on summaries: injected shifts are flagged (and only they), clean data is not,
summaries merge like the whole, the stored reference round-trips, and bad input fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fraud_detection.errors import ArtifactError, DataContractError
from fraud_detection.evaluation import DriftConfig, DriftResult, detect_drift
from fraud_detection.evaluation.drift import (
    build_layout,
    compare_summaries,
    load_summary,
    merge_summaries,
    save_summary,
    summarise,
    summarise_chunks,
    summarise_reference,
)

pytestmark = pytest.mark.unit

N = 8_000
CHANNELS = ["pos", "online", "atm"]


def make_frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """A transaction-like frame: skewed amount, two normal features, a flag, a channel and a score."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 25.0, size=n),
            "feature_a": rng.normal(0.0, 1.0, size=n),
            "feature_b": rng.normal(5.0, 2.0, size=n),
            "is_night": rng.integers(0, 2, size=n),
            "channel": rng.choice(CHANNELS, size=n, p=[0.6, 0.3, 0.1]).astype(object),
            "score": rng.beta(1.0, 20.0, size=n),
        }
    )


def inject(frame: pd.DataFrame, case: str, seed: int = 99) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = frame.copy()
    if case == "mean_shift":
        out["feature_a"] = out["feature_a"] + 0.5
    elif case == "variance_shift":  # same mean, 1.6x the spread: PSI-on-deciles alone is weak here
        out["feature_b"] = 5.0 + (out["feature_b"] - 5.0) * 1.6
    elif case == "new_category":
        new = rng.random(len(out)) < 0.15
        out.loc[new, "channel"] = "crypto"
    elif case == "score_shift":  # a new fraud pattern pushes scores up
        out["score"] = rng.beta(1.6, 12.0, size=len(out))
    return out


SHIFTED = {
    "mean_shift": "feature_a",
    "variance_shift": "feature_b",
    "new_category": "channel",
    "score_shift": "score",
}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return make_frame(seed=0)


@pytest.mark.parametrize("case", sorted(SHIFTED))
def test_injected_shift_flags_only_the_shifted_column(reference: pd.DataFrame, case: str) -> None:
    current = inject(make_frame(seed=1), case)
    result = detect_drift(reference, current, categorical=["channel"])
    assert result.drifted_columns == [SHIFTED[case]]
    assert result.drift_share == pytest.approx(1 / 6)
    assert result.drift_detected is False  # Evidently's default drift_share 0.5
    column = result.columns[SHIFTED[case]]
    assert column.score is not None and column.score >= column.threshold
    assert column.psi is not None and column.psi > 0.01
    strict = detect_drift(reference, current, categorical=["channel"], config=DriftConfig(drift_share=0.1))
    assert strict.drift_detected is True


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_clean_resampled_day_raises_no_alert(reference: pd.DataFrame, seed: int) -> None:
    result = detect_drift(reference, make_frame(n=5_000, seed=seed))
    assert result.drifted_columns == []
    assert result.drift_detected is False
    assert max(c.score for c in result.columns.values() if c.method == "wasserstein") < 0.05


def test_methods_follow_evidently_defaults(reference: pd.DataFrame) -> None:
    result = detect_drift(reference, make_frame(seed=1))
    methods = {name: column.method for name, column in result.columns.items()}
    assert methods == {
        "amount": "wasserstein",
        "feature_a": "wasserstein",
        "feature_b": "wasserstein",
        "is_night": "jensenshannon",  # numeric with <= 5 distinct values
        "channel": "jensenshannon",  # object dtype -> categorical
        "score": "wasserstein",
    }


@pytest.mark.parametrize("case", ["mean_shift", "variance_shift", "score_shift", "clean"])
def test_normed_wasserstein_matches_scipy_on_raw_values(reference: pd.DataFrame, case: str) -> None:
    current = inject(make_frame(seed=1), case)
    result = detect_drift(reference, current, columns=["amount", "feature_a", "feature_b", "score"])
    for name, column in result.columns.items():
        exact = stats.wasserstein_distance(reference[name], current[name]) / np.std(reference[name])
        assert column.score == pytest.approx(exact, rel=0.01, abs=0.002), name


def test_jensenshannon_and_psi_match_hand_computation() -> None:
    reference = pd.DataFrame({"c": ["a"] * 600 + ["b"] * 400 + ["c"] * 1000})
    current = pd.DataFrame({"c": ["a"] * 200 + ["b"] * 200 + ["d"] * 100})
    column = detect_drift(reference, current).columns["c"]
    p = np.array([0.3, 0.2, 0.5, 0.0])
    q = np.array([0.4, 0.4, 0.0, 0.2])
    m = (p + q) / 2
    kl = lambda x, y: np.sum(np.where(x > 0, x * np.log(np.where(x > 0, x, 1) / m), 0.0))  # noqa: E731
    assert column.method == "jensenshannon"
    assert column.score == pytest.approx(np.sqrt((kl(p, m) + kl(q, m)) / 2))
    assert column.drifted


def test_small_reference_uses_evidently_statistical_tests() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {"x": rng.normal(size=500), "flag": rng.integers(0, 2, 500), "c": rng.choice(list("pqr"), 500)}
    )
    current = pd.DataFrame(
        {"x": rng.normal(0.4, 1, 3000), "flag": rng.integers(0, 2, 3000), "c": rng.choice(list("pqr"), 3000)}
    )
    result = detect_drift(reference, current)
    x = result.columns["x"]
    assert (x.method, x.p_value) == ("ks", pytest.approx(stats.ks_2samp(reference["x"], current["x"]).pvalue))
    assert x.drifted
    assert result.columns["flag"].method == "z"
    c = result.columns["c"]
    ref_counts = reference["c"].value_counts().sort_index().to_numpy()
    cur_counts = current["c"].value_counts().sort_index().to_numpy()
    expected = stats.chisquare(cur_counts, ref_counts * len(current) / len(reference)).pvalue
    assert (c.method, c.p_value) == ("chisquare", pytest.approx(expected))
    # Evidently's chi-square treats the reference shares as exact, so a same-distribution sample can
    # get p < 0.05 (here 0.005): the effect size says it is noise.
    assert c.psi is not None and c.psi < 0.01


def test_merged_partition_summaries_equal_the_whole(reference: pd.DataFrame) -> None:
    frame = inject(make_frame(n=6_000, seed=7), "new_category")
    frame.loc[frame.index[::17], "feature_a"] = np.nan
    frame.loc[frame.index[::23], "channel"] = None
    layout = build_layout(reference, categorical=["channel"])
    whole = summarise(frame, layout)
    parts = [frame.iloc[:0], frame.iloc[:2500], frame.iloc[2500:2501], frame.iloc[2501:]]
    merged = merge_summaries(summarise(part, layout) for part in parts)
    assert merged.n_rows == whole.n_rows
    for name, expected in whole.columns.items():
        got = merged.columns[name].model_dump()
        for key, value in expected.model_dump().items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9), (name, key)
            elif key == "bin_offsets":
                assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-6), (name, key)
            else:
                assert got[key] == value, (name, key)
    chunked = summarise_chunks((frame.iloc[i : i + 1000] for i in range(0, len(frame), 1000)), layout)
    ref_summary = summarise(reference, layout)
    assert compare_summaries(ref_summary, chunked).drifted_columns == ["channel"]
    from_parts, from_whole = compare_summaries(ref_summary, merged), compare_summaries(ref_summary, whole)
    assert from_parts.drifted_columns == from_whole.drifted_columns == ["channel"]
    for name, column in from_whole.columns.items():
        assert from_parts.columns[name].score == pytest.approx(column.score, rel=1e-9), name


def test_small_partitions_merge_values_and_distinct_like_the_whole() -> None:
    frame = pd.DataFrame({"x": np.arange(900, dtype=float), "few": np.tile([1.0, 2.0, 3.0], 300)})
    layout = build_layout(frame)
    merged = merge_summaries([summarise(frame.iloc[:400], layout), summarise(frame.iloc[400:], layout)])
    whole = summarise(frame, layout)
    assert merged.columns["x"].values == whole.columns["x"].values  # type: ignore[union-attr]
    assert merged.columns["few"].distinct == whole.columns["few"].distinct  # type: ignore[union-attr]
    big = pd.concat([frame, frame + 0.5])  # 1800 values and 6 distinct: both dropped, as in the whole
    merged = merge_summaries([summarise(frame, layout), summarise(frame + 0.5, layout)])
    assert merged.columns["x"].values is None and summarise(big, layout).columns["x"].values is None  # type: ignore[union-attr]
    assert merged.columns["few"].distinct is None and summarise(big, layout).columns["few"].distinct is None  # type: ignore[union-attr]


def test_reference_summary_round_trips_as_json(reference: pd.DataFrame, tmp_path: Path) -> None:
    summary = summarise_reference(reference, categorical=["channel"])
    path = tmp_path / "model" / "drift_reference.json"
    save_summary(path, summary)
    assert json.loads(path.read_text())["format"] == "fraud-detection/drift-summary/v1"
    assert [p.name for p in path.parent.iterdir()] == ["drift_reference.json"]  # no temp file left
    loaded = load_summary(path)
    assert loaded == summary
    current = inject(make_frame(seed=1), "score_shift")
    assert detect_drift(loaded, current) == detect_drift(reference, current, categorical=["channel"])


def test_corrupt_summary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "drift_reference.json"
    path.write_text('{"format": "something-else", "columns": {}}')
    with pytest.raises(ArtifactError, match=r"drift_reference\.json"):
        load_summary(path)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_summary(tmp_path / "missing.json")


def test_result_dict_has_the_guide_keys_and_is_json(reference: pd.DataFrame) -> None:
    result = detect_drift(reference, inject(make_frame(seed=1), "mean_shift"))
    assert isinstance(result, DriftResult)
    payload = result.to_dict()
    assert {"drift_detected", "drift_share", "drifted_columns", "columns"} <= payload.keys()
    assert payload["drifted_columns"] == ["feature_a"]
    column = payload["columns"]["feature_a"]
    assert {"method", "statistic", "p_value", "psi", "mean_shift", "drifted"} <= column.keys()
    assert column["mean_shift"] == pytest.approx(0.5, abs=0.05)
    json.dumps(payload)


def test_nulls_are_dropped_and_reported(reference: pd.DataFrame) -> None:
    current = make_frame(seed=2)
    current.loc[current.index[::4], "feature_a"] = np.nan
    current.loc[current.index[::5], "amount"] = np.inf
    current.loc[current.index[::3], "channel"] = None
    result = detect_drift(reference, current)
    assert result.drifted_columns == []  # missing values are not a distribution shift (as in Evidently)
    assert result.columns["feature_a"].missing_share_current == pytest.approx(0.25)
    assert result.columns["amount"].missing_share_current == pytest.approx(0.2)
    assert result.columns["channel"].missing_share_current == pytest.approx(1 / 3, abs=1e-3)


def test_all_missing_current_column_is_drifted_not_an_error(reference: pd.DataFrame) -> None:
    current = make_frame(n=2_000, seed=2)
    current["feature_b"] = np.nan
    column = detect_drift(reference, current).columns["feature_b"]
    assert (column.method, column.drifted, column.score) == ("all_missing", True, None)


def test_constant_columns() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"k": np.full(3000, 7.0), "x": rng.normal(size=3000)})
    same = pd.DataFrame({"k": np.full(2000, 7.0), "x": rng.normal(size=2000)})
    result = detect_drift(reference, same)
    assert result.columns["k"].method == "jensenshannon"
    assert result.drifted_columns == []
    assert result.columns["k"].std_ratio is None  # std of a constant reference is 0
    moved = same.assign(k=np.linspace(6.0, 9.0, 2000))  # constant reference, now varying
    column = detect_drift(reference, moved).columns["k"]
    assert (column.method, column.drifted) == ("wasserstein", True)


@pytest.mark.parametrize("role", ["reference", "current"])
def test_empty_frame_is_a_clear_error(reference: pd.DataFrame, role: str) -> None:
    frames = {"reference": reference, "current": make_frame(n=100, seed=1)}
    frames[role] = frames[role].iloc[:0]
    with pytest.raises(DataContractError, match=f"{role} has 0 rows"):
        detect_drift(frames["reference"], frames["current"])


def test_mismatched_columns_are_named(reference: pd.DataFrame) -> None:
    current = make_frame(n=500, seed=1).drop(columns=["score"]).assign(extra=1.0)
    with pytest.raises(
        DataContractError, match=r"only in reference \['score'\], only in current \['extra'\]"
    ):
        detect_drift(reference, current)
    with pytest.raises(DataContractError, match="column 'score' is missing from current"):
        detect_drift(reference, current, columns=["amount", "score"])
    assert detect_drift(reference, current, columns=["amount"]).n_columns == 1


def test_bad_dtypes_and_empty_reference_column_are_named(reference: pd.DataFrame) -> None:
    current = make_frame(n=500, seed=1).assign(amount="12.5")
    with pytest.raises(
        DataContractError, match="column 'amount' in current has dtype object; expected numeric"
    ):
        detect_drift(reference, current)
    with pytest.raises(DataContractError, match="column 'feature_a' in reference has no finite values"):
        detect_drift(reference.assign(feature_a=np.nan), make_frame(n=500, seed=1))
    stamps = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=10, freq="h")})
    with pytest.raises(DataContractError, match=r"column 't' has dtype datetime64\[ns\]; expected a numeric"):
        detect_drift(stamps, stamps, columns=["t"])
    with pytest.raises(DataContractError, match="must be a pandas DataFrame, got dict"):
        detect_drift(reference, {"amount": [1.0]})  # type: ignore[arg-type]


def test_summary_on_another_layout_is_refused(reference: pd.DataFrame) -> None:
    ref_summary = summarise_reference(reference)
    other = summarise(reference, build_layout(reference, columns=["amount"]))
    with pytest.raises(DataContractError, match="differs from the reference layout"):
        compare_summaries(ref_summary, other)
    with pytest.raises(DataContractError, match="different layout"):
        merge_summaries([ref_summary, other])


def test_thresholds_are_configurable(reference: pd.DataFrame) -> None:
    current = inject(make_frame(seed=1), "mean_shift")
    loose = DriftConfig(num_threshold=0.9)
    assert detect_drift(reference, current, config=loose).drifted_columns == []
    per_column = DriftConfig(per_column_threshold={"feature_a": 0.9})
    assert detect_drift(reference, current, config=per_column).drifted_columns == []
    with pytest.raises(ValueError, match="drift_share"):
        DriftConfig(drift_share=0)
