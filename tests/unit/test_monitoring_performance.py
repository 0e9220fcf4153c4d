"""The performance monitor on delayed labels: join, daily metrics, baseline, degradation decision."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fraud_detection.errors import DataContractError
from fraud_detection.evaluation.metrics import average_precision, card_precision_at_k_per_day
from fraud_detection.monitoring.performance import (
    Baseline,
    PerformanceThresholds,
    baseline_from_metadata,
    baseline_from_tags,
    daily_performance,
    join_labels,
    monitor_performance,
    served_metrics,
)
from tests.monitoring_support import make_scored_events

pytestmark = pytest.mark.unit

K = 100


@pytest.fixture(scope="module")
def scored() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_scored_events(n_days=5, per_day=1_500, seed=1)


def _healthy_baseline(events: pd.DataFrame, labels: pd.DataFrame) -> Baseline:
    report = monitor_performance(events, labels, Baseline(None, None, K, "none"))
    return Baseline(report.average_precision, report.card_precision_at_k, K, "measured")


def test_daily_metrics_match_the_evaluation_functions(scored):
    events, labels = scored
    joined = join_labels(events, labels)
    daily = daily_performance(joined, k=K)
    assert len(daily) == 5 and daily["n"].sum() == len(events)
    first = joined[joined["event_timestamp"].dt.floor("D") == pd.Timestamp("2026-11-01")]
    assert daily.loc[0, "average_precision"] == pytest.approx(
        average_precision(first["is_fraud"].astype(int), first["score"])
    )
    cpk = card_precision_at_k_per_day(
        joined["is_fraud"].astype(int), joined["score"], cards=joined["customer_id"],
        days=joined["event_timestamp"].dt.floor("D"), k=K,
    )  # fmt: skip
    assert daily[f"card_precision_at_{K}"].tolist() == pytest.approx(cpk.tolist())
    assert daily.loc[0, "alert_rate"] == pytest.approx(first["decision"].mean())
    assert daily.loc[0, "fraud_rate"] == pytest.approx(first["is_fraud"].mean())


def test_no_alert_when_performance_holds(scored):
    events, labels = scored
    report = monitor_performance(events, labels, _healthy_baseline(events, labels))
    assert not report.degraded and report.reasons == []
    assert report.ap_drop == pytest.approx(0.0) and report.cpk_drop == pytest.approx(0.0)


def test_decay_is_flagged_with_both_metrics_named(scored):
    events, labels = scored
    baseline = _healthy_baseline(events, labels)
    weak, weak_labels = make_scored_events(n_days=5, per_day=1_500, seed=1, signal=0.0)
    report = monitor_performance(weak, weak_labels, baseline)
    assert report.degraded
    assert report.ap_drop > 0.2 and report.cpk_drop > 0.2
    assert any("average precision" in r for r in report.reasons)
    assert any(f"card precision@{K}" in r for r in report.reasons)


def test_threshold_is_configurable(scored):
    events, labels = scored
    baseline = _healthy_baseline(events, labels)
    worse = Baseline(baseline.average_precision * 1.1, baseline.card_precision_at_k * 1.1, K, "x")
    assert not monitor_performance(events, labels, worse).degraded  # ~9 % drop < 20 %
    strict = PerformanceThresholds(max_ap_drop=0.05, max_cpk_drop=0.05)
    assert monitor_performance(events, labels, worse, strict).degraded


def test_days_whose_labels_are_still_arriving_are_not_compared(scored):
    events, labels = scored
    baseline = _healthy_baseline(events, labels)
    # The last two days have only 30 % of their labels (delayed), and those are the easy negatives.
    late = events["event_timestamp"] >= pd.Timestamp("2026-11-04")
    keep = ~late | (np.random.default_rng(0).random(len(events)) < 0.3) & (labels["is_fraud"] == 0)
    report = monitor_performance(events, labels[keep.to_numpy()], baseline)
    assert report.complete_days == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert not report.degraded
    assert any("labels still arriving" in note for note in report.notes)
    daily = report.daily.set_index("day")
    assert daily.loc[pd.Timestamp("2026-11-04").date(), "label_coverage"] < 0.5


def test_day_without_fraud_has_undefined_ap_and_is_reported():
    events, labels = make_scored_events(n_days=3, per_day=800, seed=2)
    quiet = (events["event_timestamp"] >= pd.Timestamp("2026-11-02")) & (
        events["event_timestamp"] < pd.Timestamp("2026-11-03")
    )
    labels.loc[quiet.to_numpy(), "is_fraud"] = 0
    report = monitor_performance(events, labels, Baseline(0.5, 0.2, K, "x"))
    day = report.daily.set_index("day").loc[pd.Timestamp("2026-11-02").date()]
    assert not day["ap_defined"] and math.isnan(day["average_precision"])
    assert day[f"card_precision_at_{K}"] == 0.0
    assert any("AP undefined" in note for note in report.notes)
    assert report.average_precision is not None  # the pooled AP over the other days still exists
    as_json = json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: NaN written as null
    assert '"average_precision": null' in as_json


def test_too_few_frauds_skips_ap_but_keeps_cpk():
    events, labels = make_scored_events(n_days=2, per_day=300, seed=3)
    labels["is_fraud"] = 0
    labels.loc[labels.index[:2], "is_fraud"] = 1
    report = monitor_performance(events, labels, Baseline(0.9, 0.5, K, "x"))
    assert report.average_precision is None and report.ap_drop is None
    assert report.card_precision_at_k is not None and report.degraded  # CP@k fell far below 0.5
    assert any("min_frauds" in note for note in report.notes)


def test_join_keeps_the_latest_score_of_a_retried_transaction():
    events, labels = make_scored_events(n_days=1, per_day=50, seed=4)
    retry = events.iloc[[0]].assign(score=0.99, scored_at=events["scored_at"].iloc[0] + pd.Timedelta("1s"))
    joined = join_labels(pd.concat([events, retry]), labels)
    assert len(joined) == 50
    assert joined.loc[joined["transaction_id"] == 0, "score"].item() == 0.99


def test_conflicting_labels_name_the_transaction():
    events, labels = make_scored_events(n_days=1, per_day=20, seed=5)
    twice = pd.concat([labels, labels.iloc[[3]].assign(is_fraud=1 - labels["is_fraud"].iloc[3])])
    with pytest.raises(DataContractError, match=r"two different 'is_fraud' values.*first: 3"):
        join_labels(events, twice)


def test_missing_column_is_named():
    events, labels = make_scored_events(n_days=1, per_day=20, seed=5)
    with pytest.raises(DataContractError, match=r"\['customer_id'\]"):
        join_labels(events.drop(columns="customer_id"), labels)


def test_baseline_from_registry_tags_prefers_holdout():
    tags = {
        "holdout_average_precision": "0.61",
        "test_average_precision_mean": "0.55",
        "test_card_precision_at_100_mean": "0.3",
        "bundle_sha256": "ab" * 32,
    }
    baseline = baseline_from_tags(tags)
    assert baseline.average_precision == 0.61 and baseline.card_precision_at_k == 0.3
    assert "holdout_average_precision" in baseline.source


def test_the_served_baseline_comes_first_and_is_what_the_monitor_measures():
    tags = {
        "served_holdout_average_precision": "0.74",
        "served_holdout_card_precision_at_100": "0.41",
        "holdout_average_precision": "0.61",
        "holdout_card_precision_at_100": "0.3",
    }
    baseline = baseline_from_tags(tags)
    assert (baseline.average_precision, baseline.card_precision_at_k) == (0.74, 0.41)
    assert "served_holdout_average_precision" in baseline.source
    metadata = {
        "served_holdout_metrics": {"average_precision": 0.7, "card_precision_at_100": 0.4},
        "holdout_metrics": {"average_precision": 0.6, "card_precision_at_100": 0.3},
    }
    assert baseline_from_metadata(metadata).average_precision == 0.7
    # served_metrics on a labelled period = the pooled AP and the mean of the daily CP@k the monitor reports
    events, labels = make_scored_events(n_days=3, per_day=200, seed=7)
    joined = join_labels(events, labels)
    measured = served_metrics(joined, k=10)
    daily = daily_performance(joined, k=10)
    assert measured["card_precision_at_10"] == pytest.approx(daily["card_precision_at_10"].mean())
    assert 0.0 < measured["average_precision"] <= 1.0


def test_baseline_from_bundle_metadata_reads_k_and_null_metrics():
    metadata = {
        "config": {"top_k": 50},
        "holdout_metrics": {"average_precision": None, "card_precision_at_50": 0.25},
        "test_folds": {"average_precision_mean": 0.5, "card_precision_at_50_mean": 0.2},
    }
    baseline = baseline_from_metadata(metadata)
    assert (baseline.k, baseline.average_precision, baseline.card_precision_at_k) == (50, 0.5, 0.25)


def test_transaction_id_types_must_agree():
    events, labels = make_scored_events(n_days=1, per_day=20, seed=6)
    with pytest.raises(DataContractError, match="int64 in the predictions but object in the labels"):
        join_labels(events, labels.assign(transaction_id=labels["transaction_id"].astype(str)))


def test_labels_load_from_a_folder_of_partitions_and_from_csv(tmp_path):
    from fraud_detection.errors import DataSourceError
    from fraud_detection.monitoring.performance import load_labels

    _, labels = make_scored_events(n_days=1, per_day=40, seed=7)
    for day, part in enumerate([labels.iloc[:25].assign(amount=1.0), labels.iloc[25:].assign(amount=1.0)]):
        (tmp_path / "raw" / f"date=2026-11-0{day + 1}").mkdir(parents=True)
        part.to_parquet(tmp_path / "raw" / f"date=2026-11-0{day + 1}" / "part-0.parquet")
    loaded = load_labels(tmp_path / "raw")
    assert list(loaded.columns) == ["transaction_id", "is_fraud"] and len(loaded) == 40
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert load_labels(tmp_path / "labels.csv")["is_fraud"].sum() == labels["is_fraud"].sum()
    labels.drop(columns="is_fraud").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataContractError, match="lacks 'transaction_id' or 'is_fraud'"):
        load_labels(tmp_path / "bad.csv")
    with pytest.raises(DataSourceError, match="does not exist"):
        load_labels(tmp_path / "nowhere")
