"""Process setup for every flow: telemetry off, MLflow's client quiet and quick to fail, time for
the ephemeral Prefect server to start.

Call :func:`prepare_flow_process` where a flow starts: before the first flow run (the ephemeral
Prefect server inherits the environment when it is spawned) and before MLflow is imported.
"""

from __future__ import annotations

import os
from typing import Any

from fraud_detection.errors import FeatureStoreError, StorageError

# Errors worth another try in an I/O task: a store or a disk that failed. Bad data, a failed gate
# or a refused model fail the same way again, and are never retried.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (StorageError, FeatureStoreError, OSError)


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn`` of every I/O task: retry I/O failures only (a failed state
    holds the exception as its data, in the sync and the async engine alike)."""
    return isinstance(state.data, TRANSIENT_ERRORS)


# Forced: no phone-home from Prefect (client and server analytics) or MLflow. MLflow honours
# DO_NOT_TRACK only when it equals "true"; Prefect accepts "true" too.
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
# Defaults a deployment may override: no per-file progress bars, MLflow's INFO narration off, a
# tracking server that does not answer fails in seconds (the task's retries take over), as in the CLI;
# and the ephemeral Prefect server gets 2 minutes to start. Prefect waits 20 s by default, while its
# first start on a fresh database (migrations) took 13.5 s on a 2-core machine at a good hour and
# over 20 s at a slow one, where `make demo` failed with "Timed out while attempting to connect to
# ephemeral Prefect API server". Read when Prefect is imported: set before that.
CLIENT_DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def prepare_flow_process() -> None:
    """Telemetry off (forced) and client defaults (where unset) in this process and its children."""
    os.environ.update(TELEMETRY_OFF)
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
