"""Explanations: native TreeSHAP equals shap's TreeExplainer, sums to the margin, and reason codes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from fraud_detection.evaluation.explain import reason_codes, shap_summary_plots
from fraud_detection.models.bundle import ModelBundle, TrainingWindow

pytestmark = pytest.mark.integration

NAMES = ("amount", "customer_amount_ratio_30d", "terminal_risk_7d", "customer_nb_tx_1d")


@pytest.fixture(scope="module")
def bundle_and_rows() -> tuple[ModelBundle, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 3_000
    rows = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0, n),
            "customer_amount_ratio_30d": rng.lognormal(0.0, 0.5, n),
            "terminal_risk_7d": rng.beta(0.3, 5.0, n),
            "customer_nb_tx_1d": rng.poisson(2.0, n).astype(float),
        }
    )
    logit = (
        -5
        + 0.02 * rows["amount"]
        + 1.5 * np.log(rows["customer_amount_ratio_30d"])
        + 6 * rows["terminal_risk_7d"]
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    matrix = xgb.DMatrix(rows.to_numpy(np.float32), label=label, feature_names=list(NAMES))
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "seed": 0, "nthread": 1}, matrix, 40
    )
    bundle = ModelBundle(
        model_type="xgboost",
        feature_names=NAMES,
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=TrainingWindow(dt.datetime(2018, 4, 1), dt.datetime(2018, 4, 8)),
        metadata={},
        booster=booster,
    )
    return bundle, rows


def test_native_contributions_equal_shap_tree_explainer_and_sum_to_the_margin(bundle_and_rows) -> None:  # type: ignore[no-untyped-def]
    import shap

    bundle, rows = bundle_and_rows
    sample = rows.head(1_000)
    ours = bundle.contributions(sample)
    explainer = shap.TreeExplainer(bundle.booster)
    theirs = explainer.shap_values(sample.to_numpy(np.float32))
    np.testing.assert_allclose(ours[:, :-1], theirs, atol=1e-5)
    np.testing.assert_allclose(ours[:, -1], explainer.expected_value, atol=1e-5)
    margin = bundle.booster.predict(
        xgb.DMatrix(sample.to_numpy(np.float32), feature_names=list(NAMES)), output_margin=True
    )
    np.testing.assert_allclose(ours.sum(axis=1), margin, atol=1e-5)


def test_reason_codes_are_the_strongest_positive_contributions_with_their_values(bundle_and_rows) -> None:  # type: ignore[no-untyped-def]
    bundle, rows = bundle_and_rows
    sample = rows.head(200)
    reasons = reason_codes(bundle, sample, top_k=2)
    contributions = bundle.contributions(sample)[:, :-1]
    for i, row_reasons in enumerate(reasons):
        positive = sorted(((c, j) for j, c in enumerate(contributions[i]) if c > 0), reverse=True)[:2]
        assert [r.feature for r in row_reasons] == [NAMES[j] for _, j in positive]
        for reason in row_reasons:
            assert reason.value == pytest.approx(sample.iloc[i][reason.feature])
            assert reason.contribution > 0
    risky = rows["terminal_risk_7d"].idxmax()
    assert "terminal_risk_7d" in [r.feature for r in reason_codes(bundle, rows.loc[[risky]], top_k=3)[0]]
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        reason_codes(bundle, sample, top_k=0)


def test_shap_summary_plots_are_written(bundle_and_rows, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bundle, rows = bundle_and_rows
    paths = shap_summary_plots(bundle, rows.head(300), tmp_path)
    assert set(paths) == {"beeswarm", "bar"}
    for path in paths.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
