"""Our fairness metrics against AIF360 itself (a test dependency): same values, same signs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraud_detection.evaluation import assess_fairness

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assess_fairness_agrees_with_aif360(seed: int) -> None:
    import aif360.sklearn.metrics as metrics  # a dev dependency: its absence is a failure

    rng = np.random.default_rng(seed)
    n = 3_000
    groups = rng.choice(["18-25", "26-35", "65+"], size=n)
    y_true = (rng.random(n) < np.where(groups == "18-25", 0.15, 0.08)).astype(int)
    y_pred = np.where(y_true == 1, rng.random(n) < 0.6, rng.random(n) < 0.05).astype(int)
    ours = assess_fairness(y_true, y_pred, groups, ["26-35", "65+"])
    # AIF360's sklearn API: the protected attribute in the index, a binary privileged flag.
    privileged = pd.Index(np.isin(groups, ["26-35", "65+"]).astype(int), name="privileged")
    truth = pd.Series(y_true, index=privileged)
    kwargs = {"prot_attr": "privileged", "priv_group": 1, "pos_label": 1}
    theirs = {
        "statistical_parity_difference": metrics.statistical_parity_difference(truth, y_pred, **kwargs),
        "equal_opportunity_difference": metrics.equal_opportunity_difference(truth, y_pred, **kwargs),
        "average_odds_difference": metrics.average_odds_difference(truth, y_pred, **kwargs),
        "disparate_impact": metrics.disparate_impact_ratio(truth, y_pred, **kwargs),
        "theil_index": metrics.theil_index(y_pred - y_true + 1),
    }
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name
    assert ours["equal_opportunity_difference"] != 0  # a case where the sign is tested
