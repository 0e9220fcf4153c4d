"""What the serving tests share: a small served world (bundle + materialised online store), a real
server process on a free 127.0.0.1 port, an in-process app, and request bodies.

The world is built once per test worker (``serving_world`` fixture in ``tests/conftest.py``):
200 customers, 400 terminals, 40 simulated days, a 30-tree booster, the SQLite online store
materialised with every row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_CONFIG_PATH = REPO_ROOT / "configs" / "features" / "default.yaml"
MODEL_NAME = "fraud-detector"
PREDICT = f"/v1/models/{MODEL_NAME}:predict"
JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True)
class ServingWorld:
    root: Path
    bundle_dir: Path
    feature_dir: Path
    store_dir: Path
    transactions: pd.DataFrame
    """The simulated transactions (``event_timestamp`` naive UTC), newest last."""

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a server process over this world (telemetry off, no registry needed)."""
        env = {
            **os.environ,
            "FRAUD_FEATURE_STORE_DIR": str(self.store_dir),
            "FRAUD_DATA_DIR": str(self.root / "data"),
            "FRAUD_LOG_JSON": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        env.update(extra)
        return env

    def rows(self, n: int = 1, *, start: int = 0) -> list[dict[str, Any]]:
        """``n`` request rows of real transactions (the newest ones, so their entities are known)."""
        tail = self.transactions.iloc[-(start + n) : len(self.transactions) - start]
        return [
            {
                "transaction_id": int(r.transaction_id),
                "customer_id": int(r.customer_id),
                "terminal_id": int(r.terminal_id),
                "amount": float(r.amount),
                "event_timestamp": pd.Timestamp(r.event_timestamp).isoformat() + "Z",
            }
            for r in tail.itertuples()
        ]


def build_world(root: Path) -> ServingWorld:
    """Simulate, build features, materialise the online store, train and save a small bundle."""
    from fraud_detection.data.raw_store import parquet_bytes
    from fraud_detection.data.simulator import SimulatorConfig, simulate
    from fraud_detection.features import store
    from fraud_detection.features.build import table_file
    from fraud_detection.features.engineering import build_features, load_feature_config, split_feature_tables
    from fraud_detection.models.bundle import ModelBundle, TrainingWindow, save_bundle

    config = load_feature_config(FEATURE_CONFIG_PATH)
    transactions = simulate(SimulatorConfig(n_customers=200, n_terminals=400, n_days=40, seed=3)).transactions
    features = build_features(transactions, config)
    feature_dir = root / "features"
    feature_dir.mkdir(parents=True, exist_ok=True)
    tables = split_feature_tables(features, config)
    for name in ("customer", "terminal", "customer_terminal"):  # as `fraud features build` writes them
        table = tables[name].assign(event_timestamp=tables[name]["event_timestamp"].dt.tz_localize("UTC"))
        (feature_dir / table_file(name)).write_bytes(parquet_bytes(table))
    store_dir = root / "feature_store"
    handle = store.open_store(store.FeatureStoreSettings(feature_store_dir=store_dir), feature_dir, config)
    store.apply(handle)
    ts = transactions["event_timestamp"]
    store.materialize(handle, ts.min() - pd.Timedelta(days=1), ts.max() + pd.Timedelta(seconds=1))
    handle.close()

    import xgboost as xgb

    names = tuple(config.feature_names)
    labelled = features.merge(transactions[["transaction_id", "is_fraud"]], on="transaction_id")
    matrix = xgb.DMatrix(
        labelled[list(names)].to_numpy(np.float32), label=labelled["is_fraud"], feature_names=list(names)
    )
    booster = xgb.train(
        {"max_depth": 3, "eta": 0.3, "objective": "binary:logistic", "seed": 0, "nthread": 1}, matrix, 30
    )
    bundle = ModelBundle(
        model_type="xgboost",
        feature_names=names,
        threshold=0.5,
        feature_service="fraud_v1",
        training_window=TrainingWindow(
            ts.min().to_pydatetime().replace(tzinfo=None), ts.max().to_pydatetime().replace(tzinfo=None)
        ),
        metadata={"feature_config": config.model_dump(mode="json")},
        booster=booster,
    )
    bundle_dir = root / "bundle"
    save_bundle(bundle, bundle_dir)
    return ServingWorld(root, bundle_dir, feature_dir, store_dir, transactions)


# ------------------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection: (status, headers, body)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        headers = {"content-type": "application/json", **(headers or {})}
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def start_server(
    world: ServingWorld,
    *,
    model: str | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 90.0,
    command: list[str] | None = None,
) -> ServerProcess:
    """``fraud serve`` over ``world`` on a free port (``command`` replaces the launcher, e.g. a test
    script that slows the scorer down)."""
    port = free_port()
    log_path = world.root / f"server-{port}.log"
    launcher = command or [sys.executable, "-c", "from fraud_detection.cli import app; app()"]
    argv = [
        *launcher,
        "serve",
        "--model",
        model or str(world.bundle_dir),
        "--features-dir",
        str(world.feature_dir),
        "--feature-config",
        str(FEATURE_CONFIG_PATH),
        "--port",
        str(port),
        *(args or []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=world.env(**(env or {})), cwd=REPO_ROOT
        )
    server = ServerProcess(process, port, log_path)

    def probe(path: str) -> int | None:
        try:
            return server.request("GET", path, timeout=1.0)[0]
        except OSError:
            return None

    target = "/v2/health/ready" if wait_ready else "/v2/health/live"
    if not wait_until(lambda: process.poll() is not None or probe(target) == 200, timeout):
        server.stop()
        raise AssertionError(f"server did not answer {target} within {timeout}s:\n{server.log()[-3000:]}")
    if process.poll() is not None and wait_ready:
        raise AssertionError(f"server exited with {process.returncode}:\n{server.log()[-3000:]}")
    return server


@contextlib.contextmanager
def running_server(world: ServingWorld, **kwargs: Any) -> Iterator[ServerProcess]:
    server = start_server(world, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------ a client stream and a registry


class Stream:
    """One client sending a request after another on a keep-alive connection (in a thread),
    recording (time, status or connection error name, model_version) for each."""

    def __init__(self, port: int, row: dict[str, Any], pause_s: float = 0.01) -> None:
        self.port = port
        self.body = json.dumps(v1_body([row])).encode()
        self.pause_s = pause_s
        self.answers: list[tuple[float, int | str, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("POST", PREDICT, self.body, JSON_HEADERS)
                response = connection.getresponse()
                payload = response.read()
                version = json.loads(payload).get("model_version") if response.status == 200 else None
                self.answers.append((time.monotonic(), response.status, version))
            except (OSError, http.client.HTTPException) as err:
                self.answers.append((time.monotonic(), type(err).__name__, None))
                if connection is not None:
                    connection.close()
                connection = None
            time.sleep(self.pause_s)
        if connection is not None:
            connection.close()

    def wait_for_version(self, version: str, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` to the first answer from ``version`` after it (None: not within timeout)."""

        def first() -> float | None:
            return next((t for t, _, v in list(self.answers) if t >= since and v == version), None)

        wait_until(lambda: first() is not None, timeout)
        found = first()
        return None if found is None else found - since

    def versions_after(self, since: float) -> list[str | None]:
        return [v for t, _, v in list(self.answers) if t >= since]

    def failures(self) -> list[tuple[float, int | str]]:
        return [(t, status) for t, status, _ in list(self.answers) if status != 200]


@contextlib.contextmanager
def mlflow_registry(root: Path) -> Iterator[Any]:
    """MLflow (SQLite registry, local artifacts) under ``root`` for this process; restored after."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    from fraud_detection.training import tracking

    handle = tracking.Tracking(f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri())
    saved_uri = tracking_utils._tracking_uri
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    tracking.open_tracking(handle)
    try:
        yield handle
    finally:
        mlflow.set_tracking_uri(saved_uri)
        mlflow.set_registry_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def register(handle: Any, name: str, bundle_dir: Path, reference: Any, *, digest: str | None = None) -> str:
    """Register ``bundle_dir`` as a new version of ``name`` the way training does (pyfunc + the
    bundle, ``bundle_sha256`` tag), with its gates recorded as passed; returns the version.
    ``reference``: a loaded bundle with the same features, for the signature's example."""
    import mlflow

    from fraud_detection.models import registry
    from fraud_detection.models.bundle import bundle_digest
    from fraud_detection.training import tracking

    digest = digest or bundle_digest(bundle_dir)
    names = list(reference.feature_names)
    example = pd.DataFrame(np.zeros((2, len(names)), np.float32), columns=names)
    with mlflow.start_run(experiment_id=tracking.experiment_id("serving-lifecycle", handle)):
        info = tracking.log_bundle_model(bundle_dir, digest, example, reference.predict_proba(example), name)
    version = str(info.registered_model_version)
    registry.tag_version(name, version, {registry.DIGEST_TAG: digest})
    registry.record_gates(name, version, True, [], None)
    return version


# ------------------------------------------------------------------------------- in process


def inprocess_service(world: ServingWorld, **settings: Any) -> Any:
    """A loaded :class:`ScoringService` over ``world`` (no socket)."""
    from fraud_detection.data.contract import load_contract
    from fraud_detection.features import store
    from fraud_detection.features.engineering import load_feature_config
    from fraud_detection.inference.server import ServingSettings, make_service

    handle = store.open_store(
        store.FeatureStoreSettings(feature_store_dir=world.store_dir),
        world.feature_dir,
        load_feature_config(FEATURE_CONFIG_PATH),
    )
    service = make_service(
        str(world.bundle_dir),
        ServingSettings(**settings),
        contract=load_contract("simulator", REPO_ROOT / "configs" / "contract"),
        store=handle,
    )
    service._install(service.load_scorer())
    return service


def v1_body(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"instances": rows, **extra}


def v2_body(rows: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    types = {"transaction_id": "INT64", "customer_id": "INT64", "terminal_id": "INT64", "amount": "FP64"}
    names = list(rows[0]) if rows else [*types, "event_timestamp"]
    return {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": types.get(name, "BYTES"),
                "data": [r[name] for r in rows],
            }
            for name in names
        ],
        **extra,
    }


def utc_now_iso(offset: dt.timedelta = dt.timedelta(0)) -> str:
    return (dt.datetime.now(dt.UTC) + offset).isoformat()


_INPROCESS_APPS: dict[Path, tuple[Any, Any]] = {}


def inprocess_app(world: ServingWorld) -> tuple[Any, Any]:
    """``(service, ASGI app)`` over ``world`` without a socket, built once per process and shared:
    :func:`~fraud_detection.inference.server.build_app` mutates KServe's module-level FastAPI app,
    so a second call in one process would stack a second set of routes on it."""
    if world.root not in _INPROCESS_APPS:
        if _INPROCESS_APPS:
            raise RuntimeError("inprocess_app serves one world per process (KServe has one app)")
        from fraud_detection.inference.server import build_app

        service = inprocess_service(world)
        _INPROCESS_APPS[world.root] = (service, build_app(service))
    return _INPROCESS_APPS[world.root]


# S5: what no response body may contain: stack traces, filesystem paths, exception class names,
# and the names and versions of the libraries serving it
_STACK = ("kserve", "fastapi", "starlette", "uvicorn", "pydantic", "orjson", "xgboost", "feast", "numpy")
_VERSIONS = sorted({importlib.metadata.version(name) for name in _STACK} | {platform.python_version()})
LEAKS = re.compile(
    r"Traceback|/__w/|site-packages|File \"|Error:|Exception|NoneType|/work/|/tmp/|/home/|/usr/"
    r"|\b[A-Z]\w*(?:Error|Exception)\b|(?i:python|" + "|".join(_STACK) + ")"
    r"|(?<![\d.])(?:" + "|".join(re.escape(v) for v in _VERSIONS) + r")(?![\d.])"
)
