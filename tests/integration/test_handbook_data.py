"""The Fraud Detection Handbook's 1.75M raw transactions pass through their own contract."""

from __future__ import annotations

import datetime as dt

import pytest

from fraud_detection.data.ingest import validate_dataset
from fraud_detection.data.quality import gate
from tests.conftest import HANDBOOK_RAW

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HANDBOOK_RAW.is_file(), reason=f"handbook data not found at {HANDBOOK_RAW}"),
]


def test_handbook_raw_file_validates_cleanly(handbook_contract):
    result = validate_dataset(HANDBOOK_RAW, handbook_contract, as_of=dt.datetime(2018, 10, 1))
    report = result.report
    gate(report)
    assert report.violations == []
    assert report.n_valid_rows == report.n_input_rows == 1_754_155
    assert {check.name for check in report.checks if not check.passed} == set()
    frame = result.valid
    # Canonical names came from the contract's mapping; the README's published summary holds.
    assert int(frame["is_fraud"].sum()) == 14_681
    assert frame["fraud_scenario"].value_counts().to_dict() == {0: 1_739_474, 2: 9_077, 3: 4_631, 1: 973}
    assert report.content_digest is not None and report.content_digest.startswith("sha256:")
