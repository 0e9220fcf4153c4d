"""S3: offline version floors for dependencies with known advisories (pip-audit cannot reach its
database here). A floor fails the test when the installed version is below it; a package marked
optional is checked only when installed."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.version import Version

pytestmark = pytest.mark.unit

# (distribution, lowest safe version, required): see RELIABILITY.md section 6.2, row S3.
FLOORS = [
    ("mlflow", "3.11", True),  # CVE-2026-2614, CVE-2026-4137
    ("pyarrow", "14.0.1", True),  # CVE-2023-47248: arbitrary code in IPC/Parquet extension types
    ("orjson", "3.9.15", True),  # CVE-2024-27454: recursion in deeply nested input
    ("h11", "0.16", True),  # CVE-2025-43859: chunked-encoding request smuggling
    ("starlette", "1.0.1", True),
    ("prefect", "3.6.22", False),
    ("skops", "0.12", False),
    ("joblib", "1.2", False),  # CVE-2022-21797: eval in Parallel pre_dispatch
]


def installed(distribution: str) -> Version | None:
    try:
        return Version(version(distribution))
    except PackageNotFoundError:
        return None


@pytest.mark.parametrize(("distribution", "floor", "required"), FLOORS, ids=[f[0] for f in FLOORS])
def test_installed_version_is_at_or_above_its_floor(distribution: str, floor: str, required: bool) -> None:
    found = installed(distribution)
    if found is None:
        assert not required, f"{distribution} is not installed, but the serving stack needs it"
        pytest.skip(f"{distribution} is not installed")
    assert found >= Version(floor), f"{distribution} {found} is below the security floor {floor}"


def test_floors_compare_versions_not_strings() -> None:
    # "3.9" < "3.11" as versions but not as strings; a string comparison would pass mlflow 3.9.
    assert Version("3.9.0") < Version("3.11")
    assert Version("0.16.0") >= Version("0.16")
    assert Version("1.0.1rc1") < Version("1.0.1")
