"""Our summary-based drift decisions agree with real Evidently 0.7 (``DataDriftPreset``) on the injected
shifts and on clean data; Dask partition summaries merge to the same decision; the HTML report renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from fraud_detection.evaluation import detect_drift
from fraud_detection.evaluation.drift import (
    build_layout,
    compare_summaries,
    render_drift_report,
    summarise,
    summarise_dask,
)
from tests.unit.test_drift import SHIFTED, inject, make_frame

pytestmark = pytest.mark.integration

N = 10_000
NUMERICAL = ["amount", "feature_a", "feature_b", "is_night", "score"]
CATEGORICAL = ["channel"]
# Evidently's display names for the stattests our ``method`` field names.
EVIDENTLY_METHOD = {
    "wasserstein": "Wasserstein distance (normed)",
    "jensenshannon": "Jensen-Shannon distance",
    "ks": "K-S p_value",
    "chisquare": "chi-square p_value",
    "z": "Z-test p_value",
}


@pytest.fixture(scope="module")
def evidently() -> Any:
    return pytest.importorskip("evidently")


def evidently_drift(evidently: Any, reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, Any]:
    """Run the default ``DataDriftPreset`` and read back its per-column decisions (its own tests)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=NUMERICAL, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    count = result["metrics"][0]["value"]
    values = {
        m["config"]["column"]: (m["config"]["method"], float(m["value"]))
        for m in result["metrics"][1:]
        if m["config"]["type"].endswith("ValueDrift")
    }
    drifted = sorted(
        t["metric_config"]["params"]["column"]
        for t in result["tests"]
        if t["name"].startswith("Value Drift for column") and t["status"].value == "FAIL"
    )
    return {"share": float(count["share"]), "drifted": drifted, "values": values}


def assert_agrees(reference: pd.DataFrame, current: pd.DataFrame, theirs: dict[str, Any]) -> None:
    ours = detect_drift(reference, current, categorical=CATEGORICAL)
    assert sorted(ours.drifted_columns) == theirs["drifted"]
    assert ours.drift_share == pytest.approx(theirs["share"])
    assert ours.drift_detected is (theirs["share"] >= 0.5)
    for name, column in ours.columns.items():
        method, value = theirs["values"][name]
        assert EVIDENTLY_METHOD[column.method] == method, name
        if column.method == "wasserstein":  # binned summaries: exact up to CDF crossings inside a bin
            assert column.score == pytest.approx(value, rel=0.02, abs=0.002), name
        else:
            assert column.score == pytest.approx(value, rel=1e-9, abs=1e-12), name


@pytest.mark.parametrize("case", sorted(SHIFTED))
def test_injected_shifts_agree_with_evidently(evidently: Any, case: str) -> None:
    reference = make_frame(n=N, seed=10)
    current = inject(make_frame(n=N, seed=11), case)
    theirs = evidently_drift(evidently, reference, current)
    assert theirs["drifted"] == [SHIFTED[case]]
    assert_agrees(reference, current, theirs)


@pytest.mark.parametrize("seed", [21, 22])
def test_clean_data_agrees_with_evidently(evidently: Any, seed: int) -> None:
    reference = make_frame(n=N, seed=10)
    current = make_frame(n=N // 2, seed=seed)
    theirs = evidently_drift(evidently, reference, current)
    assert theirs["drifted"] == []
    assert_agrees(reference, current, theirs)


def test_many_shifts_trip_the_dataset_decision_like_evidently(evidently: Any) -> None:
    reference = make_frame(n=N, seed=10)
    current = make_frame(n=N, seed=12)
    for case in ("mean_shift", "variance_shift", "new_category"):
        current = inject(current, case)
    theirs = evidently_drift(evidently, reference, current)
    assert theirs["share"] == pytest.approx(0.5)
    assert_agrees(reference, current, theirs)


def test_small_reference_agrees_with_evidently_tests(evidently: Any) -> None:
    reference = make_frame(n=800, seed=10)  # <= 1000 rows: KS, chi-square and z-test
    current = inject(make_frame(n=3_000, seed=13), "mean_shift")
    theirs = evidently_drift(evidently, reference, current)
    assert "feature_a" in theirs["drifted"]
    assert_agrees(reference, current, theirs)


def test_dask_partition_summaries_give_the_whole_frame_decision() -> None:
    dd = pytest.importorskip("dask.dataframe")
    reference = make_frame(n=N, seed=10)
    current = inject(make_frame(n=N, seed=11), "score_shift")
    layout = build_layout(reference, categorical=CATEGORICAL)
    ref_summary = summarise(reference, layout)
    partitioned = summarise_dask(dd.from_pandas(current, npartitions=4), layout)
    result = compare_summaries(ref_summary, partitioned)
    whole = compare_summaries(ref_summary, summarise(current, layout))
    assert result.drifted_columns == whole.drifted_columns == ["score"]
    assert partitioned.columns["score"].bin_counts == summarise(current, layout).columns["score"].bin_counts  # type: ignore[union-attr]


def test_dask_summaries_survive_a_distributed_setting_left_without_a_client() -> None:
    """Nested Dask clients closed out of order leave ``scheduler=dask.distributed`` in the config
    with no client alive: the summaries are still computed (on threads), not refused."""
    dask = pytest.importorskip("dask")
    dd = pytest.importorskip("dask.dataframe")
    frame = make_frame(n=2_000, seed=12)
    layout = build_layout(frame, categorical=CATEGORICAL)
    with dask.config.set(scheduler="dask.distributed"):
        partitioned = summarise_dask(dd.from_pandas(frame, npartitions=3), layout)
    assert partitioned.columns["score"].bin_counts == summarise(frame, layout).columns["score"].bin_counts  # type: ignore[union-attr]


def test_html_report_renders_with_evidently(evidently: Any, tmp_path: Path) -> None:
    reference = make_frame(n=3_000, seed=10)
    current = inject(make_frame(n=3_000, seed=11), "mean_shift")
    path = render_drift_report(
        reference, current, tmp_path / "drift.html", categorical=CATEGORICAL, sample_rows=1_000
    )
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<html") or "<!doctype html" in html[:200].lower()
    assert "feature_a" in html
    assert [p.name for p in tmp_path.iterdir()] == ["drift.html"]
