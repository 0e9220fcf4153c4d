"""Prefect for tests: one temporary API server per test session, isolated from ``~/.prefect``.

Import the fixture into a test module (``from tests.prefect_support import prefect_server``) and
request it in the tests that run real flows. Task functions are better tested without it, through
``task.fn(...)``.

- ``PREFECT_HOME`` is a tmp folder, so task caches and results never leak between runs or into the
  developer's home (Prefect keeps them across processes in ``$PREFECT_HOME/storage``).
- Flow heartbeats are off: each sync flow otherwise waits ~1 s for the heartbeat thread on exit.
- Telemetry is off (Prefect server analytics, ``DO_NOT_TRACK``, MLflow).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary Prefect API (SQLite in a tmp folder) for the session; yields the isolated PREFECT_HOME."""
    pytest.importorskip("prefect")
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect_home")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TELEMETRY_OFF.items():
            patch.setenv(name, value)
        patch.setenv("PREFECT_HOME", str(home))  # for anything that reads the environment (the server)
        updates = {
            PREFECT_HOME: home,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
        }
        with temporary_settings(updates=updates), prefect_test_harness(server_startup_timeout=120):
            yield home
