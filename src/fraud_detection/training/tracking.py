"""MLflow 3 tracking: where runs go, and what one training run logs.

Embedded default: a SQLite store and local artifacts under the data folder
(``<data_dir>/mlflow/mlflow.db``, ``<data_dir>/mlflow/artifacts``), both absolute, so a run never
lands in the working directory by accident (MLflow's own default is ``./mlflow.db``).
``FRAUD_MLFLOW_TRACKING_URI`` (or ``MLFLOW_TRACKING_URI``) points it at a server or a database.

A model is logged as an MLflow pyfunc "model from code" (:mod:`fraud_detection.models.mlflow_model`)
whose only artifact is the bundle: no pickle, probabilities out (a pyfunc XGBoost flavour would
answer class labels), and the bundle's digest in the model config for the load-time check.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import structlog

from fraud_detection.config import Settings
from fraud_detection.errors import StorageError
from fraud_detection.models.registry import BUNDLE_ARTIFACT

_log = structlog.get_logger(__name__)

MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    artifact_root: str | None  # a URI; None: the tracking server decides


_SERVER_SCHEMES = ("http", "https", "databricks")


def tracking_from_settings(settings: Settings) -> Tracking:
    """Embedded SQLite by default. With a database URI and no artifact root, artifacts still go
    under the data folder: MLflow's own default there is ``./mlruns`` in the working directory."""
    local_root = (settings.data_dir / "mlflow").resolve()
    uri = settings.mlflow_tracking_uri or f"sqlite:///{local_root / 'mlflow.db'}"
    root = settings.mlflow_artifact_root
    if root is None and urlparse(uri).scheme not in _SERVER_SCHEMES:
        root = (local_root / "artifacts").as_uri()
    return Tracking(uri, root)


def redacted(uri: str) -> str:
    """``uri`` without its password, fit for an error message."""
    parsed = urlparse(uri)
    if parsed.password is None:
        return uri
    return uri.replace(f":{parsed.password}@", ":***@", 1)


@contextmanager
def mlflow_errors(tracking: Tracking) -> Iterator[None]:
    """MLflow, database and network failures as one :class:`StorageError` naming the store."""
    import requests
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, sqlalchemy.exc.SQLAlchemyError, requests.RequestException, OSError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise StorageError(
            f"MLflow tracking store {redacted(tracking.tracking_uri)!r} failed: {reason}"
        ) from err


def open_tracking(tracking: Tracking) -> None:
    """Point MLflow (tracking and registry) at ``tracking``; creates the local folders it needs."""
    import mlflow

    if tracking.tracking_uri.startswith("sqlite:///"):
        Path(tracking.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif urlparse(tracking.tracking_uri).scheme.startswith(("postgresql", "mysql", "mssql")):
        _probe_database(tracking)
    mlflow.set_tracking_uri(tracking.tracking_uri)
    mlflow.set_registry_uri(tracking.tracking_uri)


def _probe_database(tracking: Tracking) -> None:
    """One quick connection first: MLflow itself retries an unreachable database for ~100 s."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(tracking.tracking_uri, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = (str(err.orig or err).strip().splitlines() or ["unreachable"])[0][:300]
        raise StorageError(
            f"MLflow tracking store {redacted(tracking.tracking_uri)!r} is unreachable: {reason}"
        ) from err
    finally:
        engine.dispose()


def experiment_id(name: str, tracking: Tracking) -> str:
    """The experiment's id, creating it with an explicit artifact location when it is new."""
    from mlflow import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{tracking.artifact_root.rstrip('/')}/{name}" if tracking.artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def git_commit(cwd: Path | None = None) -> str:
    """The checked-out commit ("unknown" outside a git checkout); "+dirty" when files are modified."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (MLflow params are flat)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), item))
        return out
    return {prefix: value}


def dataset_input(source: str, digest: str, rows: int) -> Any:
    """The training data as an MLflow dataset input: its source and content digest (lineage)."""
    from mlflow.data.dataset_source_registry import get_registered_sources, resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        uri = Path(parsed.path if parsed.scheme else source).resolve().as_uri()
        # Several registered source types claim file URIs; name the local one to avoid a guess.
        local = [s for s in get_registered_sources() if s.__name__ == "LocalArtifactDatasetSource"]
        with warnings.catch_warnings():
            # MLflow registers that class twice and then warns that the URI is ambiguous.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            dataset_source = resolve_dataset_source(uri, candidate_sources=local)
    else:
        dataset_source = resolve_dataset_source(source)
    # MLflow stores at most 36 characters of digest; the full one goes into the run's tags.
    return MetaDataset(dataset_source, name=f"transactions-{rows}-rows", digest=digest.split(":")[-1][:32])


def figure_pr_curve(y_true: np.ndarray, y_score: np.ndarray, title: str) -> Any:
    # A bare Figure, not pyplot: no global backend switch, nothing left in pyplot's registry.
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, y_score)
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    axes.plot(recall, precision)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def figure_feature_importance(names: list[str], values: np.ndarray, title: str) -> Any:
    from matplotlib.figure import Figure

    order = np.argsort(values)
    figure = Figure(figsize=(6, 0.3 * len(names) + 1))
    axes = figure.add_subplot()
    axes.barh([names[i] for i in order], values[order])
    axes.set_title(title)
    figure.tight_layout()
    return figure


def log_lock_file(lock_file: Path) -> None:
    import mlflow

    if lock_file.is_file():
        mlflow.log_artifact(str(lock_file), artifact_path="environment")


def pip_requirements() -> list[str]:
    """Explicit requirements: without them ``log_model`` infers them in a subprocess (seconds)."""
    from importlib.metadata import version

    return [
        f"{name}=={version(name)}"
        for name in ("fraud-detection", "xgboost", "numpy", "pandas", "scikit-learn", "mlflow")
    ]


def log_bundle_model(
    bundle_dir: Path,
    bundle_digest: str,
    input_example: Any,
    output_example: np.ndarray,
    registered_model: str | None,
) -> Any:
    """Log the bundle as a pyfunc model (optionally registering a new version); returns the ModelInfo."""
    from mlflow.models import infer_signature

    signature = infer_signature(input_example, output_example)
    # MLflow stores an artifact folder under its own base name: stage it as "bundle", so every
    # logged model keeps its bundle at artifacts/bundle whatever the folder was called.
    with tempfile.TemporaryDirectory(prefix="fraud-bundle-") as staging:
        staged = Path(staging) / BUNDLE_ARTIFACT
        shutil.copytree(bundle_dir, staged)
        return _log_pyfunc(staged, bundle_digest, signature, input_example, registered_model)


def _log_pyfunc(
    staged: Path, bundle_digest: str, signature: Any, input_example: Any, registered_model: str | None
) -> Any:
    import mlflow

    try:
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            # The file itself, not the module: importing it would run its set_model() call.
            python_model=importlib.util.find_spec("fraud_detection.models.mlflow_model").origin,
            artifacts={BUNDLE_ARTIFACT: str(staged)},
            model_config={"bundle_sha256": bundle_digest},
            signature=signature,
            input_example=input_example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model,
        )
    except mlflow.exceptions.MlflowException as err:
        raise StorageError(f"MLflow could not log the model: {err}") from err
