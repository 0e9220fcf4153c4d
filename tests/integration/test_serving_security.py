"""Serving and registry security (RELIABILITY.md section 6.2): S1 tampered artifacts, S2 no
unpickling, S6 path inputs, S7 symlinks in a bundle.

Runtime is kept down by sharing one world and one small MLflow registry, and by running the seven
tampering variants in-process through ``make_service(...).load_scorer()``, the very function the
server's start-up and hot reload call. Three real ``fraud serve`` processes start concurrently:
two refused start-ups, and one server over the registry under a launcher that refuses (and records)
every unpickling entry point and every file access to the S6 probe paths.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from fraud_detection.errors import ArtifactError, ConfigError
from fraud_detection.models.bundle import (
    LinearModel,
    ModelBundle,
    bundle_digest,
    load_bundle,
    save_bundle,
    sign_bundle,
)
from tests.integration.test_bundle import write_keys
from tests.serving_support import (
    FEATURE_CONFIG_PATH,
    REPO_ROOT,
    ServerProcess,
    ServingWorld,
    free_port,
    v1_body,
    v2_body,
    wait_until,
)

# One xdist group: under `--dist loadgroup` the registry and the servers are built by one worker.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("serving_security")]

MODEL_NAME = "fraud-detector"  # the name the server serves under
REGISTERED = "fraud-security"  # the registered model in this module's registry
REFUSED = "model refused at start-up; stopping"
RELOAD_FAILED = "model reload failed, still serving the previous model"
PROBE = "s6probe"  # every S6 probe path holds it; the launcher records any file access to it
START_TIMEOUT_S = 300.0  # generous: three servers start at once on a 2-core runner
BUNDLE_FILES = {"model.ubj", "linear.json", "bundle.json", "manifest.json", "model.sig"}
ALLOWED_SUFFIXES = {".ubj", ".json", ".sig"}


# ------------------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Keys:
    release_private: Path
    release_public: Path
    other_private: Path
    other_public: Path


@dataclass(frozen=True)
class Release:
    """The world's bundle, signed with the release key: what production would serve."""

    path: Path
    digest: str


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    version: str
    digest: str
    model_dir: Path
    """The logged model's folder inside the artifact store (MLmodel, artifacts/bundle, ...)."""

    @property
    def bundle_dir(self) -> Path:
        return self.model_dir / "artifacts" / "bundle"

    def uri(self, alias: str | None = None) -> str:
        return f"models:/{REGISTERED}@{alias}" if alias else f"models:/{REGISTERED}/{self.version}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security")


@pytest.fixture(scope="module")
def keys(root: Path) -> Keys:
    return Keys(*write_keys(root, "release"), *write_keys(root, "other"))


@pytest.fixture(scope="module")
def release(serving_world: ServingWorld, keys: Keys, root: Path) -> Release:
    path = root / "release"
    shutil.copytree(serving_world.bundle_dir, path)
    sign_bundle(path, keys.release_private)
    return Release(path, bundle_digest(path))


@pytest.fixture(scope="module")
def impostor(serving_world: ServingWorld, root: Path) -> Path:
    """A different, valid model over the same features (its own, consistent manifest)."""
    import xgboost as xgb

    original = load_bundle(serving_world.bundle_dir)
    rng = np.random.default_rng(7)
    matrix = xgb.DMatrix(
        rng.random((300, original.n_features), dtype=np.float32),
        label=rng.integers(0, 2, 300),
        feature_names=list(original.feature_names),
    )
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic", "nthread": 1}, matrix, 5)
    bundle = ModelBundle(
        model_type="xgboost",
        feature_names=original.feature_names,
        threshold=0.01,
        feature_service=original.feature_service,
        training_window=original.training_window,
        metadata=original.metadata,
        booster=booster,
    )
    save_bundle(bundle, root / "impostor")
    return root / "impostor"


@pytest.fixture(scope="module")
def registry(release: Release, root: Path) -> Iterator[Registry]:
    """An MLflow registry (SQLite, local artifacts) holding the signed release as version 1,
    tagged with its digest and aliased ``champion``, logged exactly as ``fraud train`` logs it."""
    import mlflow

    from fraud_detection.config import Settings
    from fraud_detection.models import registry as model_registry
    from fraud_detection.training import tracking

    handle = tracking.tracking_from_settings(Settings(data_dir=root / "data"))
    with pytest.MonkeyPatch.context() as patch:
        # MLflow keeps its URIs in module globals: put back whatever the worker had before.
        patch.setattr("mlflow.tracking._tracking_service.utils._tracking_uri", None)
        patch.setattr("mlflow.tracking._model_registry.utils._registry_uri", None)
        patch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        tracking.open_tracking(handle)
        bundle = load_bundle(release.path)
        example = pd.DataFrame(
            np.zeros((2, bundle.n_features), dtype=np.float32), columns=list(bundle.feature_names)
        )
        with mlflow.start_run(experiment_id=tracking.experiment_id("security", handle)):
            info = tracking.log_bundle_model(
                release.path, release.digest, example, bundle.predict_proba(example), REGISTERED
            )
        version = str(info.registered_model_version)
        model_registry.tag_version(REGISTERED, version, {model_registry.DIGEST_TAG: release.digest})
        model_registry.set_alias(REGISTERED, "champion", version)
        model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{REGISTERED}/{version}"))
        # Local artifacts are read in place: tampering with this folder tampers with the store.
        assert model_dir.is_relative_to(root), model_dir
        yield Registry(handle.tracking_uri, version, release.digest, model_dir)


def load_scorer(
    uri: str, contract: Any, *, public_key: Path | None = None, expected_digest: str | None = None
) -> Any:
    """What the server runs at start-up and at every reload (no feature store: the refusals come first)."""
    from fraud_detection.inference.server import ServingSettings, make_service

    service = make_service(
        uri,
        ServingSettings(),
        contract=contract,
        public_key=public_key,
        expected_digest=expected_digest,
    )
    try:
        return service.load_scorer()
    finally:
        service.close()


@contextlib.contextmanager
def restored(folder: Path) -> Iterator[Path]:
    """Tamper with ``folder`` inside the block; its original content is put back afterwards."""
    backup = folder.with_name(folder.name + ".orig")
    shutil.copytree(folder, backup, symlinks=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)
        backup.rename(folder)


# --------------------------------------------------------------------------------- tamperings


def flip_byte(bundle: Path) -> None:
    data = bytearray((bundle / "model.ubj").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.ubj").write_bytes(bytes(data))


def edit_leaf(bundle: Path) -> None:
    """UBJ → JSON, add 2.0 to every leaf of the first tree, JSON → UBJ; the manifest is kept."""
    import xgboost as xgb

    original = (bundle / "model.ubj").read_bytes()
    booster = xgb.Booster()
    booster.load_model(bytearray(original))
    document = json.loads(booster.save_raw(raw_format="json"))
    tree = document["learner"]["gradient_booster"]["model"]["trees"][0]
    for node, left in enumerate(tree["left_children"]):
        if left == -1:
            tree["split_conditions"][node] += 2.0
    edited = xgb.Booster()
    edited.load_model(bytearray(json.dumps(document).encode()))  # still a well-formed model
    x = np.random.default_rng(0).random((50, booster.num_features()), dtype=np.float32)
    assert not np.allclose(edited.inplace_predict(x), booster.inplace_predict(x))
    data = bytes(edited.save_raw(raw_format="ubj"))
    assert len(data) == len(original) and data != original  # same size: only the sha256 tells
    (bundle / "model.ubj").write_bytes(data)


def swap_in(bundle: Path, other: Path) -> None:
    """Replace every file with another valid bundle's (its manifest agrees with its files)."""
    for entry in bundle.iterdir():
        entry.unlink()
    for entry in other.iterdir():
        shutil.copy2(entry, bundle / entry.name)


def add_pickle(bundle: Path) -> None:
    (bundle / "evil.pkl").write_bytes(pickle.dumps({"payload": 1}))


def truncate(name: str) -> Callable[[Path], None]:
    def tamper(bundle: Path) -> None:
        data = (bundle / name).read_bytes()
        (bundle / name).write_bytes(data[: len(data) // 2])

    return tamper


def remove_signature(bundle: Path) -> None:
    (bundle / "model.sig").unlink()


# --------------------------------------------------------------------------- real processes


def launch(
    world: ServingWorld,
    root: Path,
    model: str,
    *,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
    features: bool = False,
) -> ServerProcess:
    """``fraud serve`` on a free port, without waiting for anything."""
    port = free_port()
    log_path = root / f"server-{port}.log"
    argv = [
        *(launcher or [sys.executable, "-c", "from fraud_detection.cli import app; app()"]),
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--events-dir",
        str(root / f"events-{port}"),
        *(
            ["--features-dir", str(world.feature_dir), "--feature-config", str(FEATURE_CONFIG_PATH)]
            if features
            else []
        ),
        *(args or []),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, env=world.env(**(env or {})), cwd=REPO_ROOT
        )
    return ServerProcess(process, port, log_path)


def probe(server: ServerProcess, path: str) -> int | None:
    try:
        return server.request("GET", path, timeout=1.0)[0]
    except OSError:
        return None


def watch_readiness_until_exit(servers: list[ServerProcess], timeout: float) -> dict[int, list[int | None]]:
    """Poll every server's readiness until each has exited; the statuses seen, per port."""
    seen: dict[int, list[int | None]] = {server.port: [] for server in servers}

    def all_exited() -> bool:
        for server in servers:
            if server.process.poll() is None:
                seen[server.port].append(probe(server, "/v2/health/ready"))
        return all(server.process.poll() is not None for server in servers)

    if not wait_until(all_exited, timeout, interval=0.1):
        for server in servers:
            server.stop()
        raise AssertionError("a server with a tampered model did not exit")
    return seen


def log_events(server: ServerProcess, event: str) -> list[dict[str, Any]]:
    found = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == event:
                    found.append(record)
    return found


LAUNCHER = '''"""Refuse and record every unpickling entry point and every file access to the S6 probe, then
run the fraud CLI (test launcher of tests/integration/test_serving_security.py)."""
import importlib, io, json, os, pickle, sys, traceback
import _pickle

RECORD = os.environ["FRAUD_TEST_RECORD"]
PROBE = os.environ["FRAUD_TEST_PROBE"]
busy = False
selftest = True


def record(kind, detail):
    global busy
    if busy:
        return
    busy = True
    try:
        with open(RECORD, "a", encoding="utf-8") as out:
            stack = traceback.format_stack(limit=12)
            out.write(json.dumps({"kind": kind, "detail": detail, "stack": stack}) + "\\n")
    finally:
        busy = False


def refusing(name):
    def refuse(*args, **kwargs):
        record("selftest" if selftest else "unpickle", name)
        raise RuntimeError(name + " is refused in the serving process")
    return refuse


class RefusingUnpickler(pickle.Unpickler):
    def __init__(self, *args, **kwargs):
        record("selftest" if selftest else "unpickle", "pickle.Unpickler")
        raise RuntimeError("pickle.Unpickler is refused in the serving process")


for module in (pickle, _pickle):
    module.load, module.loads, module.Unpickler = refusing("pickle.load"), refusing("pickle.loads"), RefusingUnpickler
for name, functions in (("cloudpickle", ("load", "loads")), ("joblib", ("load",)), ("dill", ("load", "loads"))):
    try:
        module = importlib.import_module(name)
    except ImportError:
        continue
    for function in functions:
        setattr(module, function, refusing(name + "." + function))

# Self-test: every patched entry point refuses (recorded as "selftest", not as a call).
payload = b"\\x80\\x04K\\x00."  # pickle.dumps(0), never unpickled
for module_name, function in (("pickle", "loads"), ("pickle", "load"), ("pickle", "Unpickler"),
                              ("cloudpickle", "loads"), ("cloudpickle", "load"), ("joblib", "load"),
                              ("dill", "loads"), ("dill", "load")):
    module = sys.modules.get(module_name)
    if module is None:
        continue
    argument = payload if function == "loads" else io.BytesIO(payload)
    try:
        getattr(module, function)(argument)
    except RuntimeError:
        pass
    else:
        raise SystemExit(module_name + "." + function + " was not replaced")
selftest = False


def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir", "os.chdir") and args and PROBE in str(args[0]):
        record("file", event + " " + str(args[0]))


sys.addaudithook(audit)

import fraud_detection.inference.server as server

run_server = server.run_server


def recording_run_server(service):
    record("env", os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION"))
    return run_server(service)


server.run_server = recording_run_server

# The bundle path, loaded (and verified) under the same patches.
from pathlib import Path
from fraud_detection.models.registry import resolve_model

resolved = resolve_model(os.environ["FRAUD_TEST_BUNDLE"], public_key=Path(os.environ["FRAUD_MODEL_PUBLIC_KEY"]))
record("bundle-path", resolved.digest)

from fraud_detection.cli import app

app()
'''


@dataclass
class SecureServer:
    server: ServerProcess
    record_path: Path

    def records(self, kind: str) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        lines = self.record_path.read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["kind"] == kind]

    def ready(self) -> ServerProcess:
        server = self.server
        if not wait_until(
            lambda: server.process.poll() is not None or probe(server, "/v2/health/ready") == 200,
            START_TIMEOUT_S,
        ):
            raise AssertionError(f"the server did not become ready:\n{server.log()[-3000:]}")
        assert server.process.poll() is None, f"the server exited:\n{server.log()[-3000:]}"
        return server


@pytest.fixture(scope="module")
def secure_server(
    serving_world: ServingWorld, registry: Registry, release: Release, keys: Keys, root: Path
) -> Iterator[SecureServer]:
    """The production profile over the registry: release key, pinned digest, champion alias, the
    feature store; launched under the refusing launcher. Started here, waited for by each test."""
    launcher = root / "launcher.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    record_path = root / "launcher-records.jsonl"
    server = launch(
        serving_world,
        root,
        registry.uri("champion"),
        args=["--expected-digest", registry.digest],
        env={
            "FRAUD_MLFLOW_TRACKING_URI": registry.tracking_uri,
            "FRAUD_MODEL_PUBLIC_KEY": str(keys.release_public),
            "FRAUD_SERVE_RELOAD_INTERVAL_S": "0",  # reloads only on request
            "FRAUD_SERVE_REQUEST_TIMEOUT_S": "30",  # a busy 2-core runner is not what is tested
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "true",  # the server must override it
            "FRAUD_TEST_RECORD": str(record_path),
            "FRAUD_TEST_PROBE": PROBE,
            "FRAUD_TEST_BUNDLE": str(release.path),
        },
        launcher=[sys.executable, str(launcher)],
        features=True,
    )
    try:
        yield SecureServer(server, record_path)
    finally:
        server.stop()


@dataclass(frozen=True)
class RefusedStartUps:
    flipped: Path
    swapped: Path
    untouched_data_dir: Path
    servers: tuple[ServerProcess, ServerProcess]
    """(a) the flipped byte, (c) the swapped model pinned by FRAUD_MODEL_DIGEST."""
    bad_uri: ServerProcess


@pytest.fixture(scope="module")
def refused_start_ups(
    serving_world: ServingWorld, release: Release, impostor: Path, root: Path
) -> Iterator[RefusedStartUps]:
    """Three ``fraud serve`` start-ups that must fail, launched before the registry is built so
    that they start while it is."""
    flipped = root / "flipped"
    shutil.copytree(release.path, flipped)
    flip_byte(flipped)
    swapped = root / "swapped"
    shutil.copytree(release.path, swapped)
    swap_in(swapped, impostor)
    untouched = root / "untouched-data"
    started = RefusedStartUps(
        flipped,
        swapped,
        untouched,
        (
            launch(serving_world, root, str(flipped)),
            launch(serving_world, root, str(swapped), env={"FRAUD_MODEL_DIGEST": release.digest}),
        ),
        launch(serving_world, root, "models:/..@champion", env={"FRAUD_DATA_DIR": str(untouched)}),
    )
    try:
        yield started
    finally:
        for server in (*started.servers, started.bad_uri):
            server.stop()


def test_refused_start_ups_exit_non_zero_and_never_become_ready(
    refused_start_ups: RefusedStartUps,
    secure_server: SecureServer,
    release: Release,
    impostor: Path,
) -> None:
    """Through ``fraud serve`` itself (the secure server starts meanwhile): (a) a flipped byte and
    (c) a swapped model pinned by ``FRAUD_MODEL_DIGEST`` exit 1, are never ready and log one audit
    line naming the bundle, the file and the digest; (S6) a bad model URI exits 2 with one line,
    before the embedded MLflow store is even created."""
    started = refused_start_ups
    readiness = watch_readiness_until_exit([*started.servers, started.bad_uri], START_TIMEOUT_S)
    for server in started.servers:
        assert server.process.returncode == 1, server.log()[-3000:]
        assert 200 not in readiness[server.port]
        assert not log_events(server, "model ready")
    flipped_audit, swapped_audit = (log_events(server, REFUSED) for server in started.servers)
    assert len(flipped_audit) == 1 and len(swapped_audit) == 1
    assert flipped_audit[0]["bundle"] == flipped_audit[0]["model_uri"] == str(started.flipped)
    assert flipped_audit[0]["digest"] == release.digest
    assert "model.ubj sha256" in flipped_audit[0]["reason"]
    assert swapped_audit[0]["digest"] == bundle_digest(impostor)
    assert "manifest.json" in swapped_audit[0]["reason"] and release.digest in swapped_audit[0]["reason"]
    bad_uri = started.bad_uri
    assert bad_uri.process.returncode == 2, bad_uri.log()[-3000:]
    assert "is not understood" in bad_uri.log() and "Traceback" not in bad_uri.log()
    assert not started.untouched_data_dir.exists()  # the embedded MLflow store was never opened


# ----------------------------------------------------------------------------- S1 in-process


# (id, tampering, what the refusal names); (c), (e) and (f) need a pin, the registry or a key and
# have their own tests below.
MANIFEST_CAUGHT = [
    ("a-byte-flip", flip_byte, r"model\.ubj sha256 [0-9a-f]{64} does not match"),
    ("b-json-leaf-edit", edit_leaf, r"model\.ubj sha256 [0-9a-f]{64} does not match"),
    ("d-extra-pickle", add_pickle, r"unexpected files \['evil\.pkl'\]"),
    ("g-truncated-model", truncate("model.ubj"), r"model\.ubj in bundle .* has \d+ bytes, but the manifest"),
    ("g-truncated-manifest", truncate("manifest.json"), r"manifest\.json"),
]


@pytest.mark.parametrize("profile", ["plain", "production"])
@pytest.mark.parametrize(
    ("tamper", "names"), [v[1:] for v in MANIFEST_CAUGHT], ids=[v[0] for v in MANIFEST_CAUGHT]
)
def test_tampered_bundle_is_refused_at_load(
    tamper: Callable[[Path], None],
    names: str,
    profile: str,
    release: Release,
    keys: Keys,
    simulator_contract: Any,
    tmp_path: Path,
) -> None:
    """The manifest alone refuses (a), (b), (d), (g); the production profile (release key and
    pinned digest) refuses them as well. The error names the bundle, the file and the digest."""
    bundle = tmp_path / "bundle"
    shutil.copytree(release.path, bundle)
    load_scorer(str(bundle), simulator_contract)  # the untouched copy loads
    tamper(bundle)
    options = {"public_key": keys.release_public, "expected_digest": release.digest}
    with pytest.raises(ArtifactError, match=names) as refused:
        load_scorer(str(bundle), simulator_contract, **(options if profile == "production" else {}))
    assert refused.value.bundle == str(bundle)
    if "manifest" not in names:
        assert refused.value.digest == release.digest  # the manifest is untouched: its digest holds


def test_swapped_model_with_rewritten_manifest_is_caught_by_the_pinned_digest(
    release: Release, impostor: Path, simulator_contract: Any, tmp_path: Path
) -> None:
    """(c) by path: the impostor's manifest agrees with its files, so only the digest kept outside
    the bundle (``--expected-digest`` / ``FRAUD_MODEL_DIGEST``) tells."""
    bundle = tmp_path / "bundle"
    shutil.copytree(release.path, bundle)
    swap_in(bundle, impostor)
    load_scorer(str(bundle), simulator_contract)  # unpinned, it is a perfectly valid bundle
    with pytest.raises(ArtifactError, match=rf"has digest [0-9a-f]{{64}} .*expected {release.digest}"):
        load_scorer(str(bundle), simulator_contract, expected_digest=release.digest)


def test_swapped_model_in_the_registry_is_caught_by_the_version_tag(
    registry: Registry, impostor: Path, simulator_contract: Any
) -> None:
    """(c) by registry URI: the version's ``bundle_sha256`` tag is the external digest."""
    with restored(registry.bundle_dir) as bundle:
        swap_in(bundle, impostor)
        with pytest.raises(ArtifactError, match=rf"expected {registry.digest}") as refused:
            load_scorer(registry.uri(), simulator_contract)
    assert refused.value.digest == bundle_digest(impostor)
    load_scorer(registry.uri(), simulator_contract)  # restored: loads again


class _Detonator:
    """Unpickling it would create ``sentinel``: proof that something unpickled it."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.sentinel),)


def test_changed_mlmodel_loader_is_refused(
    registry: Registry, simulator_contract: Any, tmp_path: Path
) -> None:
    """(e): MLmodel switched to a pickle flavor with a pickled model beside it. The bundle digest
    does not cover MLmodel, so the registry checks that MLmodel is the one ``fraud train`` logged."""
    sentinel = tmp_path / "detonated"
    with restored(registry.model_dir) as model_dir:
        mlmodel = model_dir / "MLmodel"
        document = yaml.safe_load(mlmodel.read_text())
        document["flavors"]["python_function"]["loader_module"] = "mlflow.sklearn"
        document["flavors"]["sklearn"] = {"pickled_model": "model.pkl", "serialization_format": "pickle"}
        mlmodel.write_text(yaml.safe_dump(document))
        (model_dir / "model.pkl").write_bytes(pickle.dumps(_Detonator(sentinel)))
        with pytest.raises(
            ArtifactError, match=r"MLmodel of model .*loader_module.*mlflow\.sklearn"
        ) as refused:
            load_scorer(registry.uri(), simulator_contract)
        assert refused.value.digest == registry.digest
    assert not sentinel.exists()


def test_logged_model_code_is_never_executed_by_scoring(
    registry: Registry, simulator_contract: Any, tmp_path: Path
) -> None:
    """The model-from-code file beside MLmodel is what ``mlflow.pyfunc.load_model`` would run;
    scoring reads only the digest-checked bundle, so an edited code file never runs."""
    sentinel = tmp_path / "executed"
    with restored(registry.model_dir) as model_dir:
        (model_dir / "mlflow_model.py").write_text(f"import os\nos.mkdir({str(sentinel)!r})\n")
        scorer = load_scorer(registry.uri(), simulator_contract)
    assert scorer.version == registry.version
    assert not sentinel.exists()


@pytest.mark.parametrize("signature", ["missing", "another-key"])
def test_signature_missing_or_from_another_key_is_refused(
    signature: str, release: Release, keys: Keys, simulator_contract: Any, tmp_path: Path
) -> None:
    """(f) with ``FRAUD_MODEL_PUBLIC_KEY`` set (the server passes it as ``public_key``)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(release.path, bundle)
    load_scorer(str(bundle), simulator_contract, public_key=keys.release_public)
    if signature == "missing":
        remove_signature(bundle)
        expected = r"has no signature file model\.sig"
    else:
        sign_bundle(bundle, keys.other_private)
        expected = r"signature model\.sig of bundle .* does not verify with public key"
    with pytest.raises(ArtifactError, match=expected) as refused:
        load_scorer(str(bundle), simulator_contract, public_key=keys.release_public)
    assert refused.value.digest == release.digest  # the files are intact; only the signature is wrong


# ----------------------------------------------------------------------- S2 over the real server


def test_serving_never_unpickles(
    secure_server: SecureServer, serving_world: ServingWorld, registry: Registry
) -> None:
    """100 requests (V1 and V2) on the registry model; the bundle path loaded in the same process
    before. No unpickling entry point is ever called, and MLflow's pickle switch is forced off."""
    server = secure_server.ready()
    rows = serving_world.rows(100)
    for index, row in enumerate(rows):
        body = v1_body([row]) if index % 2 else v2_body([row])
        path = f"/v1/models/{MODEL_NAME}:predict" if index % 2 else f"/v2/models/{MODEL_NAME}/infer"
        status, _, payload = server.request("POST", path, body)
        assert status == 200, payload
        assert json.loads(payload)["model_version"] == registry.version
    assert secure_server.records("unpickle") == []
    assert [r["detail"] for r in secure_server.records("env")] == ["false"]
    assert [r["detail"] for r in secure_server.records("bundle-path")] == [registry.digest]
    # The launcher's self-test: each entry point (of the installed libraries) really refuses.
    expected = {"pickle.load", "pickle.loads", "pickle.Unpickler"}
    for library, functions in (
        ("cloudpickle", ("load", "loads")),
        ("joblib", ("load",)),
        ("dill", ("load", "loads")),
    ):
        if importlib.util.find_spec(library) is not None:
            expected |= {f"{library}.{function}" for function in functions}
    assert expected <= {r["detail"] for r in secure_server.records("selftest")}


def test_saved_bundles_hold_only_allow_listed_formats(
    release: Release, registry: Registry, keys: Keys, tmp_path: Path
) -> None:
    """Format allow-list: .ubj, .json, .sig in every bundle (both model types, signed); and no file
    of the logged model, in or beside the bundle, is a pickle by name or by content."""
    original = load_bundle(release.path)
    n = original.n_features
    linear = ModelBundle(
        model_type="logistic_regression",
        feature_names=original.feature_names,
        threshold=0.5,
        feature_service=original.feature_service,
        training_window=original.training_window,
        metadata={},
        linear=LinearModel(mean=np.zeros(n), scale=np.ones(n), coef=np.full(n, 0.1), intercept=-1.0),
    )
    save_bundle(linear, tmp_path / "linear", signing_key=keys.release_private)
    for bundle in (release.path, tmp_path / "linear", registry.bundle_dir):
        names = {entry.name for entry in bundle.iterdir()}
        assert names <= BUNDLE_FILES, names
        assert {Path(name).suffix for name in names} <= ALLOWED_SUFFIXES
    pickle_suffixes = {
        ".pkl",
        ".pickle",
        ".joblib",
        ".dill",
        ".pt",
        ".pth",
        ".ckpt",
        ".npy",
        ".npz",
        ".skops",
    }
    for entry in registry.model_dir.rglob("*"):
        if entry.is_file():
            head = entry.read_bytes()[:2]
            assert entry.suffix not in pickle_suffixes, entry
            assert not (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")), entry


# --------------------------------------------------------------------------------- hot reload


def test_tampered_bundle_at_hot_reload_keeps_the_old_model(
    secure_server: SecureServer,
    serving_world: ServingWorld,
    registry: Registry,
    impostor: Path,
) -> None:
    """A reload (KServe repository ``load``) of a tampered bundle answers 409; the old model keeps
    scoring and stays ready; each refusal is one audit line. Restored, the reload succeeds."""
    server = secure_server.ready()
    load_path = f"/v2/repository/models/{MODEL_NAME}/load"
    row = v1_body(serving_world.rows(1))
    before = json.loads(server.request("POST", f"/v1/models/{MODEL_NAME}:predict", row)[2])
    for tamper in (flip_byte, lambda bundle: swap_in(bundle, impostor)):
        with restored(registry.bundle_dir) as bundle:
            tamper(bundle)
            status, _, payload = server.request("POST", load_path, b"", timeout=60)
            assert status == 409, payload
            assert probe(server, "/v2/health/ready") == 200
            status, _, payload = server.request("POST", f"/v1/models/{MODEL_NAME}:predict", row)
            assert status == 200
            assert json.loads(payload)["predictions"] == before["predictions"]
            assert json.loads(payload)["model_version"] == registry.version
    audit = log_events(server, RELOAD_FAILED)
    assert len(audit) == 2
    assert audit[0]["digest"] == registry.digest and "model.ubj sha256" in audit[0]["reason"]
    assert audit[1]["digest"] == bundle_digest(impostor) and registry.digest in audit[1]["reason"]
    assert all(a["model_uri"] == registry.uri("champion") for a in audit)
    status, _, payload = server.request("POST", load_path, b"", timeout=60)
    assert status == 200 and json.loads(payload)["model_version"] == registry.version
    assert secure_server.records("unpickle") == []


# ------------------------------------------------------------------------------- S6 path inputs

REJECTED_URIS = [
    "models:/../x@champion",
    "models:/..@champion",
    "models:/.@champion",
    "models:/x/../y@champion",
    "models:/%2e%2e@champion",
    "models:/%2e%2e%2fetc@champion",
    "models:/x%2Fy/1",
    "models:/x\\..\\y@champion",
    "models:/..\\x/1",
    "models://etc/passwd@champion",
    "models:/x@champion#fragment",
    "models:/x#fragment/1",
    "models:/x?y=1@champion",
    "models:/x@champion?y=1",
    "models:/x/1?y=1",
    "models:/x/1#fragment",
    "models:/x/../1",
    "models:/x/-1",
    "models:/x/0",
    "models:/x/\u00b2",  # superscript two: str.isdigit() says yes
    "models:/x/\uff11",  # fullwidth one
    "models:/x y@champion",
    "models:/x\n@champion",
    "models:/x@",
    "models:/@champion",
    "models:/x",
    "models:/x@a@b",
    "models:/x@../champion",
]


@pytest.mark.parametrize("uri", REJECTED_URIS)
def test_bad_model_uri_is_refused_before_any_registry_or_file_access(
    uri: str, simulator_contract: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_detection.models import registry

    def untouchable(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{uri!r} reached the registry or the file system")

    monkeypatch.setattr(registry, "_client", untouchable)
    monkeypatch.setattr(registry, "load_bundle", untouchable)
    monkeypatch.setattr("mlflow.artifacts.download_artifacts", untouchable)
    with pytest.raises(ConfigError, match="is not understood"):
        registry.ModelRef.parse(uri)
    with pytest.raises(ConfigError, match="is not understood"):
        registry.resolve_model(uri)
    with pytest.raises(ConfigError, match="is not understood"):
        load_scorer(uri, simulator_contract)  # make_service parses first, as the server does


@pytest.mark.parametrize(
    ("uri", "name", "alias", "version"),
    [
        ("models:/fraud-detector@champion", "fraud-detector", "champion", None),
        ("models:/fraud_v1.2@challenger", "fraud_v1.2", "challenger", None),
        ("models:/fraud-xgb/3", "fraud-xgb", None, "3"),
    ],
)
def test_registered_model_uris_still_parse(
    uri: str, name: str, alias: str | None, version: str | None
) -> None:
    from fraud_detection.models.registry import ModelRef

    ref = ModelRef.parse(uri)
    assert (ref.name, ref.alias, ref.version, ref.path) == (name, alias, version, None)


def test_a_bundle_folder_is_the_operators_own_path() -> None:
    """A bundle folder given on the command line is trusted operator input: relative, absolute and
    '..' paths are paths (nothing is read until the bundle's own checks run)."""
    from fraud_detection.models.registry import ModelRef

    for uri in ("/srv/models/bundle", "../bundle", "bundle"):
        assert ModelRef.parse(uri).path == Path(uri)


PROBES = [
    ("GET", f"/v2/models/..%2F..%2F{PROBE}/ready"),
    ("GET", f"/v2/models/..%2F..%2F{PROBE}"),
    ("GET", f"/v2/models/../../{PROBE}/ready"),
    ("GET", f"/v2/models/%2Fetc%2F{PROBE}/ready"),
    ("GET", f"/v2/models/{PROBE}%23fragment/ready"),
    ("GET", f"/v2/models/{PROBE}%3Fq=1/ready"),
    ("GET", f"/v2/models/..%5C..%5C{PROBE}/ready"),
    ("POST", "/v1/models/%2e%2e:predict"),
    ("POST", f"/v1/models/%2e%2e%2F{PROBE}:predict"),
    ("POST", f"/v1/models/..%2F{PROBE}:explain"),
    ("POST", f"/v1/models//etc/{PROBE}:predict"),
    ("POST", f"/v2/models/..%2F{PROBE}/infer"),
    ("POST", f"/v2/models/..%5C{PROBE}/infer"),
    ("POST", f"/v2/models/{MODEL_NAME}/versions/..%2F{PROBE}/infer"),
    ("POST", f"/v2/models/{MODEL_NAME}/versions/%2e%2e/infer"),
    ("POST", f"/v2/repository/models/..%2F{PROBE}/load"),
    ("POST", f"/v2/repository/models/%2e%2e%2F{PROBE}/unload"),
]


def test_model_name_path_parameters_are_refused_without_file_access(
    secure_server: SecureServer, serving_world: ServingWorld
) -> None:
    """Model names (and versions) in the URL with '..', '%2e%2e', encoded '/' or backslash, an
    absolute path, an encoded '#' or '?': a 4xx answer, no file content, and no file access to
    the probe path (the launcher's audit hook records any open/listdir/scandir of it)."""
    server = secure_server.ready()
    body = v1_body(serving_world.rows(1))
    for method, path in PROBES:
        status, _, payload = server.request(method, path, body if method == "POST" else None)
        assert 400 <= status < 500, (path, status, payload)  # refused as the client's mistake
        assert b"root:" not in payload
    assert secure_server.records("file") == []
    assert probe(server, "/v2/health/ready") == 200


# ------------------------------------------------------------------------ S7 symlinks in a bundle


@pytest.mark.parametrize(
    ("member", "refusal"),
    [
        ("model.ubj", r"model\.ubj in bundle .* is not a regular file"),
        ("bundle.json", r"bundle\.json in bundle .* is not a regular file"),
        ("manifest.json", r"has no manifest\.json \(or it is not a regular file\)"),
        ("model.sig", r"has no signature file model\.sig"),
    ],
)
def test_symlinked_bundle_member_is_refused(
    member: str, refusal: str, release: Release, keys: Keys, tmp_path: Path
) -> None:
    """Models ship as folders, never archives (no extraction, so no zip-slip). A member that is a
    symlink, even to a byte-identical file outside, is refused: only regular files are content."""
    bundle = tmp_path / "bundle"
    shutil.copytree(release.path, bundle)
    outside = tmp_path / f"outside-{member}"
    shutil.copy2(bundle / member, outside)
    (bundle / member).unlink()
    (bundle / member).symlink_to(outside)
    with pytest.raises(ArtifactError, match=refusal):
        load_bundle(bundle, public_key=keys.release_public)


def test_extra_symlink_in_a_bundle_is_refused(release: Release, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(release.path, bundle)
    (bundle / "etc").symlink_to("/etc")
    with pytest.raises(ArtifactError, match=r"unexpected files \['etc'\]"):
        load_bundle(bundle)
