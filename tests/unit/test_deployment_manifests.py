"""The online scorer's deployment files, checked offline (no container engine, no cluster).

* **Schema.** Every YAML document of ``deployments/kserve/inference-service.yaml`` is checked
  against the OpenAPI model classes that the installed ``kserve`` (0.21) and ``kubernetes`` (37)
  clients generate from KServe's and Kubernetes' API definitions: each key must be a field of its
  model under its wire (camelCase) name, each value of the field's type, nested models are checked
  the same way, and required fields must be present. Types are strict, as in the Kubernetes
  client's own pydantic models: a quoted number is not an integer and a bare number is not a string
  (so quantities are written as strings). The classes are read from the packages' source with
  ``ast``, because importing them costs several seconds.
* **Serving requirements** (RELIABILITY.md R9, R10, S4) and KServe's admission rule for autoscaling
  in Standard mode.
* **The Dockerfile's text**: multi-stage, a locked install of the serving extra without dev
  dependencies, a non-root user, an exec-form entry point; and that image and manifest agree.

Every check returns all the problems it finds; the negative cases show that each check can fail.
"""

from __future__ import annotations

import ast
import copy
import functools
import importlib.util
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

MANIFEST_PATH = REPO_ROOT / "deployments" / "kserve" / "inference-service.yaml"
DOCKERFILE_PATH = REPO_ROOT / "deployments" / "docker" / "Dockerfile"
DOCKERIGNORE_PATH = REPO_ROOT / "deployments" / "docker" / "Dockerfile.dockerignore"

MODEL_NAME = "fraud-detector"
PORT = 8080
SERVER_DRAIN_BUDGET_S = 30  # R9: the server exits within 30 s of SIGTERM
READINESS_REACTION_S = 10  # R10: a model that stops being ready leaves the Service within 10 s

# (apiVersion, kind) of each document the manifest may hold -> its generated model class.
ROOT_MODELS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}


# --------------------------------------------------------------------------- generated schemas


@dataclass(frozen=True)
class _Field:
    type: str  # the OpenAPI type string: "int", "List[V1Container]", "dict(str, str)", ...
    annotation: str  # the pydantic annotation (kubernetes models), "" for the older kserve models


@dataclass(frozen=True)
class _Model:
    name: str
    fields: dict[str, _Field]  # by wire name
    required: frozenset[str]  # wire names


_EXPORT = re.compile(r"from [\w.]+\.models\.(\w+) import (\w+)|\"(\w+)\": \"\.(\w+)\"")
_REQUIRED_MESSAGE = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bytes": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
}
_QUANTITY_TYPES = {"ResourceQuantity", "V1beta1MetricQuantity"}  # int-or-string quantities


class GeneratedModels:
    """The model classes of generated API clients, read from source without importing them."""

    def __init__(self, *model_packages: tuple[str, str]) -> None:
        self._files: dict[str, Path] = {}
        for package, subdir in model_packages:
            spec = importlib.util.find_spec(package)  # a top-level package is located, not run
            assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
            models_dir = Path(spec.submodule_search_locations[0]) / subdir
            for match in _EXPORT.finditer((models_dir / "__init__.py").read_text(encoding="utf-8")):
                module, name = (match[1], match[2]) if match[1] else (match[4], match[3])
                self._files.setdefault(name, models_dir / f"{module}.py")

    def resolve(self, type_name: str) -> str | None:
        """The class behind a type name, including the kserve client's names for Kubernetes types."""
        if type_name in self._files:
            return type_name
        aliased = re.fullmatch(r"K8sIoApi[A-Z][a-z]+(V\d\w+)", type_name)  # K8sIoApiAppsV1DeploymentStrategy
        if aliased and aliased[1] in self._files:
            return aliased[1]
        return None

    @functools.cache  # noqa: B019 - one instance per test module
    def model(self, name: str) -> _Model:
        tree = ast.parse(self._files[name].read_text(encoding="utf-8"))
        cls = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)
        literals: dict[str, dict[str, str]] = {}
        annotations: dict[str, str] = {}  # wire name -> annotation
        required: set[str] = set()
        for node in cls.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                if not isinstance(target, ast.Name):
                    continue
                if target.id in ("openapi_types", "attribute_map"):
                    assert node.value is not None
                    literals[target.id] = ast.literal_eval(node.value)
                elif isinstance(node, ast.AnnAssign) and "ClassVar" not in ast.unparse(node.annotation):
                    alias, is_required = _pydantic_field(node)
                    wire = alias or target.id
                    annotations[wire] = ast.unparse(node.annotation)
                    if is_required:
                        required.add(wire)
        assert literals.keys() == {"openapi_types", "attribute_map"}, f"{name}: unexpected generated code"
        attribute_map = literals["attribute_map"]
        for node in ast.walk(cls):  # the older generator checks required fields in its setters
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ""
            if match := _REQUIRED_MESSAGE.fullmatch(text):
                required.add(attribute_map.get(match[1], match[1]))
        fields = {
            attribute_map[attr]: _Field(type_name, annotations.get(attribute_map[attr], ""))
            for attr, type_name in literals["openapi_types"].items()
        }
        return _Model(name, fields, frozenset(required))

    def problems(self, value: Any, type_name: str, path: str, annotation: str = "") -> Iterator[str]:
        """Every way ``value`` (parsed YAML) fails to be a ``type_name``; ``path`` names it."""
        if container := re.fullmatch(r"(?:List|list)\[(.+)\]", type_name):
            if not isinstance(value, list):
                yield f"{path}: expected a list, got {value!r}"
                return
            for index, item in enumerate(value):
                yield from self.problems(item, container[1], f"{path}[{index}]")
        elif container := re.fullmatch(r"(?:Dict\[str, (.+)\]|dict\(str, (.+)\))", type_name):
            if not isinstance(value, dict):
                yield f"{path}: expected a mapping, got {value!r}"
                return
            for key, item in value.items():
                yield from self.problems(item, container[1] or container[2], f"{path}.{key}")
        elif type_name in _SCALARS:
            expected = _SCALARS[type_name]
            if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
                yield f"{path}: expected {type_name}, got {value!r}"
        elif type_name in _QUANTITY_TYPES or (type_name == "object" and "StrictInt" in annotation):
            if isinstance(value, bool) or not isinstance(value, int | str):  # int-or-string
                yield f"{path}: expected an integer or a string, got {value!r}"
        elif type_name == "object":
            return  # free-form JSON
        elif (model_name := self.resolve(type_name)) is None:
            yield f"{path}: the schema has no type {type_name!r}"
        elif not isinstance(value, dict):
            yield f"{path}: expected a {model_name} mapping, got {value!r}"
        else:
            model = self.model(model_name)
            for key, item in value.items():
                if key not in model.fields:
                    yield f"{path}.{key}: not a field of {model_name}"
                elif item is not None:
                    field = model.fields[key]
                    yield from self.problems(item, field.type, f"{path}.{key}", field.annotation)
            for key in sorted(model.required - value.keys()):
                yield f"{path}.{key}: required by {model_name}, missing"


def _pydantic_field(node: ast.AnnAssign) -> tuple[str | None, bool]:
    """(wire name if aliased, whether required) of a ``name: T = Field(...)`` declaration."""
    if node.value is None:
        return None, True
    if not (isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "Field"):
        return None, False  # a plain default
    keywords = {keyword.arg: keyword.value for keyword in node.value.keywords}
    alias = keywords.get("serialization_alias")
    wire = alias.value if isinstance(alias, ast.Constant) else None
    return wire, not ({"default", "default_factory"} & keywords.keys())


@pytest.fixture(scope="module")
def models() -> GeneratedModels:
    return GeneratedModels(("kserve", "models"), ("kubernetes", "client/models"))


def schema_problems(models: GeneratedModels, documents: list[dict[str, Any]]) -> list[str]:
    problems = []
    for index, document in enumerate(documents):
        key = (document.get("apiVersion"), document.get("kind"))
        if key not in ROOT_MODELS:
            problems.append(f"document {index}: no schema for apiVersion/kind {key}")
            continue
        problems += models.problems(document, ROOT_MODELS[key], f"{key[1]}")
    return problems


# --------------------------------------------------------------------------- the manifest


@functools.cache
def _parsed_manifest() -> tuple[dict[str, Any], ...]:
    text = MANIFEST_PATH.read_text(encoding="utf-8")
    return tuple(
        doc for doc in yaml.load_all(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if doc
    )


def load_manifest() -> list[dict[str, Any]]:
    """The manifest's documents (a fresh copy each call: cases edit them)."""
    return copy.deepcopy(list(_parsed_manifest()))


def by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in documents if doc.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in {MANIFEST_PATH.name}, found {len(found)}"
    return found[0]


def _container(isvc: dict[str, Any]) -> dict[str, Any]:
    return isvc["spec"]["predictor"]["containers"][0]


def prestop_seconds(container: dict[str, Any]) -> int | None:
    """The seconds a ``sleep`` preStop hook (exec ``sleep N`` or the sleep action) waits."""
    handler = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in handler:
        return handler["sleep"].get("seconds")
    command = handler.get("exec", {}).get("command", [])
    if len(command) == 2 and Path(command[0]).name == "sleep" and str(command[1]).isdigit():
        return int(command[1])
    return None


def _probe_problems(container: dict[str, Any], probe: str, path: str) -> list[str]:
    spec = container.get(probe)
    if spec is None:
        return [f"{probe} is missing"]
    handlers = {"httpGet", "tcpSocket", "exec", "grpc"} & spec.keys()
    if handlers != {"httpGet"}:
        return [f"{probe} must be httpGet only, got {sorted(handlers)}"]
    problems = []
    if spec["httpGet"].get("path") != path:
        problems.append(f"{probe} path is {spec['httpGet'].get('path')!r}, expected {path!r}")
    if spec["httpGet"].get("port") != PORT:
        problems.append(f"{probe} port is {spec['httpGet'].get('port')!r}, expected {PORT}")
    return problems


def probe_and_shutdown_problems(isvc: dict[str, Any]) -> list[str]:
    """R10 (probes follow the server's readiness semantics) and R9 (graceful shutdown budget)."""
    predictor = isvc["spec"]["predictor"]
    container = _container(isvc)
    ready_path = f"/v2/models/{isvc['metadata']['name']}/ready"
    problems = _probe_problems(container, "readinessProbe", ready_path)
    problems += _probe_problems(container, "livenessProbe", "/v2/health/live")
    if "startupProbe" in container:
        problems += _probe_problems(container, "startupProbe", "/v2/health/live")
    readiness = container.get("readinessProbe", {})
    reaction = readiness.get("periodSeconds", 10) * readiness.get("failureThreshold", 3)
    if reaction > READINESS_REACTION_S:
        problems.append(
            f"readinessProbe reacts after {reaction} s (periodSeconds x failureThreshold), "
            f"expected at most {READINESS_REACTION_S} s"
        )
    prestop = prestop_seconds(container)
    if not prestop:
        problems.append("lifecycle.preStop must sleep (exec sleep N, or the sleep action)")
    grace = predictor.get("terminationGracePeriodSeconds", 30)
    if grace < (prestop or 0) + SERVER_DRAIN_BUDGET_S:
        problems.append(
            f"terminationGracePeriodSeconds={grace} leaves under {SERVER_DRAIN_BUDGET_S} s "
            f"after the {prestop} s preStop sleep"
        )
    return problems


def _setting(context: list[dict[str, Any]], key: str) -> Any:
    """The innermost value of ``key`` among nested securityContexts (container overrides pod)."""
    for security_context in context:
        if key in security_context:
            return security_context[key]
    return None


def pod_security_problems(isvc: dict[str, Any]) -> list[str]:
    """Non-root, read-only, no privileges, no service-account token (S4's exposure defaults)."""
    predictor = isvc["spec"]["predictor"]
    container = _container(isvc)
    contexts = [container.get("securityContext", {}), predictor.get("securityContext", {})]
    problems = []
    if _setting(contexts, "runAsNonRoot") is not True:
        problems.append("runAsNonRoot must be true")
    if _setting(contexts, "runAsUser") == 0:
        problems.append("runAsUser must not be 0")
    expected = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True}
    for key, value in expected.items():
        if contexts[0].get(key) is not value:
            problems.append(f"container securityContext.{key} must be {value}")
    if contexts[0].get("privileged"):
        problems.append("the container must not be privileged")
    if "ALL" not in contexts[0].get("capabilities", {}).get("drop", []):
        problems.append("container capabilities must drop ALL")
    if (_setting(contexts, "seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile must be RuntimeDefault")
    if predictor.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false")
    volumes = {volume["name"]: volume for volume in predictor.get("volumes", [])}
    mounts = {mount["mountPath"]: mount for mount in container.get("volumeMounts", [])}
    for mount in mounts.values():
        if mount["name"] not in volumes:
            problems.append(f"volumeMount {mount['name']!r} has no volume")
    if "emptyDir" not in volumes.get(mounts.get("/tmp", {}).get("name"), {}):
        problems.append("/tmp must be an emptyDir mount (the root filesystem is read-only)")
    return problems


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_QUANTITY_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_QUANTITY_FACTORS |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str) -> float:
    match = _QUANTITY.fullmatch(str(text))
    assert match, f"{text!r} is not a resource quantity"
    return float(match[1]) * _QUANTITY_FACTORS[match[2]]


def scaling_problems(isvc: dict[str, Any]) -> list[str]:
    """Resources, replicas, the rollout strategy and KServe's admission rule for HPA metrics."""
    predictor = isvc["spec"]["predictor"]
    annotations = isvc["metadata"].get("annotations", {})
    container = _container(isvc)
    problems = []
    mode = annotations.get("serving.kserve.io/deploymentMode")
    if mode not in ("Standard", "RawDeployment"):
        problems.append(
            f"deploymentMode is {mode!r}: only Standard (RawDeployment) keeps the preStop hook "
            "and terminationGracePeriodSeconds, which Knative rejects"
        )
    elif annotations.get("serving.kserve.io/autoscalerClass", "hpa") == "hpa":
        metric = predictor.get("scaleMetric", "cpu")
        if metric not in ("cpu", "memory"):  # KServe's webhook: the HPA scales on cpu or memory
            problems.append(f"scaleMetric {metric!r} is not an HPA metric (cpu, memory)")
        if metric == "cpu" and not 1 <= predictor.get("scaleTarget", 80) <= 100:
            problems.append(f"scaleTarget {predictor.get('scaleTarget')} is not a CPU percentage")
    if predictor.get("minReplicas", 1) < 2:
        problems.append(f"minReplicas={predictor.get('minReplicas', 1)}: a rollout or a drain needs 2")
    if predictor.get("maxReplicas", 0) < predictor.get("minReplicas", 1):
        problems.append("maxReplicas is below minReplicas")
    rolling = predictor.get("deploymentStrategy", {}).get("rollingUpdate", {})
    if rolling.get("maxUnavailable") != 0:
        problems.append("deploymentStrategy.rollingUpdate.maxUnavailable must be 0")
    resources = container.get("resources", {})
    for resource in ("cpu", "memory"):
        request = resources.get("requests", {}).get(resource)
        limit = resources.get("limits", {}).get(resource)
        if request is None or limit is None:
            problems.append(f"{resource} needs both a request and a limit")
        elif quantity(request) > quantity(limit):
            problems.append(f"{resource} request {request} exceeds its limit {limit}")
    containers = predictor.get("containers", [])
    if [c.get("name") for c in containers] != ["kserve-container"]:
        problems.append("the predictor needs exactly one container, named kserve-container")
    image = container.get("image", "")
    if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
        problems.append(f"image {image!r} needs a version tag or a digest")
    args = container.get("args", [])
    if "--model" not in args[:-1]:
        problems.append(f"args {args} do not name the model (--model URI)")
    if PORT not in [port.get("containerPort") for port in container.get("ports", [])]:
        problems.append(f"containerPort {PORT} is not declared")
    return problems


_SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY", re.IGNORECASE)


def settings_problems(documents: list[dict[str, Any]]) -> list[str]:
    """The ConfigMap holds FRAUD_* settings and no secret; paths point at mounts; the PDB and the
    NetworkPolicy select the predictor pods."""
    isvc = by_kind(documents, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    container = _container(isvc)
    config_names = [
        source["configMapRef"]["name"] for source in container.get("envFrom", []) if "configMapRef" in source
    ]
    config_maps = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "ConfigMap"}
    problems = [
        f"envFrom ConfigMap {name!r} is not in the manifest"
        for name in config_names
        if name not in config_maps
    ]
    settings = {
        key: value
        for name in config_names
        for key, value in config_maps.get(name, {}).get("data", {}).items()
    }
    for key, value in settings.items():
        if not key.startswith("FRAUD_"):
            problems.append(f"ConfigMap key {key} lacks the FRAUD_ prefix")
        if _SECRET_WORDS.search(key) or re.search(r"://[^/@\s]+:[^/@\s]+@", str(value)):
            problems.append(f"ConfigMap key {key} looks like a secret: it belongs in the Secret")
    mounts = container.get("volumeMounts", [])

    def mount_of(path: str) -> dict[str, Any] | None:  # the deepest mount holding ``path``
        holding = [m for m in mounts if Path(m["mountPath"]) in (Path(path), *Path(path).parents)]
        return max(holding, key=lambda m: len(Path(m["mountPath"]).parts), default=None)

    public_key = settings.get("FRAUD_MODEL_PUBLIC_KEY")
    if public_key is None:
        problems.append("FRAUD_MODEL_PUBLIC_KEY is unset: production must verify bundle signatures")
    elif not (mount_of(public_key) or {}).get("readOnly"):
        problems.append(f"FRAUD_MODEL_PUBLIC_KEY {public_key} is not on a read-only mount")
    features_dir = settings.get("FRAUD_FEATURES_DIR")
    if features_dir is None:
        problems.append(
            "FRAUD_FEATURES_DIR is unset: the server would score every request with default features"
        )
    else:
        # the pipelines' tables, shared by every pod and never written by the server
        mount = mount_of(features_dir)
        volumes = {volume["name"]: volume for volume in predictor.get("volumes", [])}
        if mount is None:
            problems.append(f"FRAUD_FEATURES_DIR {features_dir} is on no volume mount")
        elif not mount.get("readOnly") or "persistentVolumeClaim" not in volumes.get(mount["name"], {}):
            problems.append(
                f"FRAUD_FEATURES_DIR {features_dir} must be on a read-only PersistentVolumeClaim mount"
            )
    for key in ("FRAUD_DATA_DIR", "FRAUD_FEATURE_STORE_DIR"):
        mount = mount_of(settings[key]) if key in settings else None
        if mount is None or mount.get("readOnly"):
            problems.append(f"{key} must be on a writable mount (the root filesystem is read-only)")
    pod_labels = predictor.get("labels", {})
    budget = by_kind(documents, "PodDisruptionBudget")["spec"]
    policy = by_kind(documents, "NetworkPolicy")["spec"]
    for kind, selector in (
        ("PodDisruptionBudget", budget["selector"]),
        ("NetworkPolicy", policy["podSelector"]),
    ):
        labels = selector.get("matchLabels", {})
        if not labels or labels.items() - pod_labels.items():
            problems.append(f"the {kind} selector {labels} does not select the predictor pods {pod_labels}")
    if budget.get("minAvailable", 0) >= predictor.get("minReplicas", 1):
        problems.append("the PodDisruptionBudget's minAvailable blocks every drain at minReplicas")
    for rule in policy.get("ingress", []):
        ports = [port.get("port") for port in rule.get("ports", [])]
        if ports != [PORT]:
            problems.append(f"NetworkPolicy ingress opens ports {ports}, expected only {PORT}")
    return problems


def test_manifest_matches_the_kserve_and_kubernetes_schemas(models: GeneratedModels) -> None:
    documents = load_manifest()
    assert {(doc["apiVersion"], doc["kind"]) for doc in documents} == set(ROOT_MODELS)
    assert schema_problems(models, documents) == []


def _edit(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with ``value`` at the dotted ``path`` (``_DELETE`` removes it)."""
    edited = copy.deepcopy(document)
    *parents, last = [int(part) if part.isdigit() else part for part in path.split(".")]
    node = edited
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return edited


_DELETE = object()
_ISVC = "InferenceService"
_CONTAINER = "spec.predictor.containers.0"


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        (
            _ISVC,
            "spec.predictor.minReplica",
            2,
            "spec.predictor.minReplica: not a field of V1beta1PredictorSpec",
        ),
        (_ISVC, "spec.predictor.minReplicas", "2", "spec.predictor.minReplicas: expected int, got '2'"),
        (_ISVC, "spec.predictor.automountServiceAccountToken", "false", "expected bool, got 'false'"),
        (
            _ISVC,
            f"{_CONTAINER}.readinessProbe.httpGet.paht",
            "/x",
            "httpGet.paht: not a field of V1HTTPGetAction",
        ),
        (_ISVC, f"{_CONTAINER}.args", "--model x", "containers[0].args: expected a list"),
        (_ISVC, f"{_CONTAINER}.name", _DELETE, "containers[0].name: required by V1Container, missing"),
        (_ISVC, f"{_CONTAINER}.resources.limits.cpu", 2, "resources.limits.cpu: expected str, got 2"),
        (_ISVC, f"{_CONTAINER}.livenessProbe.httpGet.port", 80.5, "an integer or a string, got 80.5"),
        (_ISVC, f"{_CONTAINER}.lifecycle.preStop.exec.commands", ["sleep"], "not a field of V1ExecAction"),
        (
            _ISVC,
            "spec.predictor.deploymentStrategy.rollingUpdate.maxSurg",
            1,
            "not a field of V1RollingUpdateDeployment",
        ),
        ("ConfigMap", "data.FRAUD_LOG_JSON", True, "ConfigMap.data.FRAUD_LOG_JSON: expected str, got True"),
        (
            "NetworkPolicy",
            "spec.podSelectr",
            {},
            "NetworkPolicy.spec.podSelectr: not a field of V1NetworkPolicySpec",
        ),
        (_ISVC, "kind", "InferenceServce", "no schema for apiVersion/kind"),
    ],
)
def test_schema_check_rejects_typos_wrong_types_and_missing_fields(
    models: GeneratedModels, kind: str, path: str, value: Any, expected: str
) -> None:
    documents = [_edit(doc, path, value) if doc["kind"] == kind else doc for doc in load_manifest()]
    problems = schema_problems(models, documents)
    assert len(problems) == 1 and expected in problems[0], problems


def test_probes_and_shutdown_follow_the_server_semantics() -> None:
    isvc = by_kind(load_manifest(), _ISVC)
    assert probe_and_shutdown_problems(isvc) == []
    readiness = _container(isvc)["readinessProbe"]
    assert readiness["httpGet"]["path"] == f"/v2/models/{MODEL_NAME}/ready"
    assert readiness["periodSeconds"] == 10
    assert _container(isvc)["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert prestop_seconds(_container(isvc)) == 10
    assert isvc["spec"]["predictor"]["terminationGracePeriodSeconds"] == 45


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            f"{_CONTAINER}.readinessProbe",
            {"tcpSocket": {"port": PORT}},
            "readinessProbe must be httpGet only",
        ),
        (
            f"{_CONTAINER}.readinessProbe.httpGet.path",
            "/v2/health/ready",
            "expected '/v2/models/fraud-detector/ready'",
        ),
        (f"{_CONTAINER}.readinessProbe.failureThreshold", 3, "readinessProbe reacts after 30 s"),
        (f"{_CONTAINER}.livenessProbe.httpGet.path", f"/v2/models/{MODEL_NAME}/ready", "livenessProbe path"),
        (f"{_CONTAINER}.livenessProbe", _DELETE, "livenessProbe is missing"),
        (f"{_CONTAINER}.lifecycle", _DELETE, "lifecycle.preStop must sleep"),
        ("spec.predictor.terminationGracePeriodSeconds", 30, "terminationGracePeriodSeconds=30"),
    ],
)
def test_probe_and_shutdown_check_can_fail(path: str, value: Any, expected: str) -> None:
    problems = probe_and_shutdown_problems(_edit(by_kind(load_manifest(), _ISVC), path, value))
    assert any(expected in problem for problem in problems), problems


def test_pod_runs_non_root_read_only_and_unprivileged() -> None:
    isvc = by_kind(load_manifest(), _ISVC)
    assert pod_security_problems(isvc) == []
    assert (
        _container(isvc)["securityContext"]["runAsUser"]
        == isvc["spec"]["predictor"]["securityContext"]["runAsUser"]
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (f"{_CONTAINER}.securityContext.runAsNonRoot", False, "runAsNonRoot must be true"),
        (f"{_CONTAINER}.securityContext.runAsUser", 0, "runAsUser must not be 0"),
        (
            f"{_CONTAINER}.securityContext.readOnlyRootFilesystem",
            False,
            "readOnlyRootFilesystem must be True",
        ),
        (
            f"{_CONTAINER}.securityContext.allowPrivilegeEscalation",
            True,
            "allowPrivilegeEscalation must be False",
        ),
        (f"{_CONTAINER}.securityContext.capabilities", {"drop": ["NET_RAW"]}, "must drop ALL"),
        (
            f"{_CONTAINER}.securityContext.seccompProfile.type",
            "Unconfined",
            "seccompProfile must be RuntimeDefault",
        ),
        ("spec.predictor.automountServiceAccountToken", True, "automountServiceAccountToken"),
        (f"{_CONTAINER}.volumeMounts.0.mountPath", "/scratch", "/tmp must be an emptyDir mount"),
    ],
)
def test_pod_security_check_can_fail(path: str, value: Any, expected: str) -> None:
    problems = pod_security_problems(_edit(by_kind(load_manifest(), _ISVC), path, value))
    assert any(expected in problem for problem in problems), problems


def test_resources_replicas_and_autoscaling_are_set() -> None:
    assert scaling_problems(by_kind(load_manifest(), _ISVC)) == []


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("spec.predictor.scaleMetric", "concurrency", "scaleMetric 'concurrency' is not an HPA metric"),
        (
            "metadata.annotations",
            {"serving.kserve.io/deploymentMode": "Knative"},
            "deploymentMode is 'Knative'",
        ),
        ("spec.predictor.minReplicas", 1, "minReplicas=1"),
        (f"{_CONTAINER}.resources.limits", _DELETE, "cpu needs both a request and a limit"),
        (f"{_CONTAINER}.resources.requests.memory", "4Gi", "memory request 4Gi exceeds its limit 2Gi"),
        (f"{_CONTAINER}.image", "registry.example.com/fraud-detector:latest", "needs a version tag"),
        (f"{_CONTAINER}.args", [], "do not name the model"),
        (f"{_CONTAINER}.name", "scorer", "named kserve-container"),
    ],
)
def test_scaling_check_can_fail(path: str, value: Any, expected: str) -> None:
    problems = scaling_problems(_edit(by_kind(load_manifest(), _ISVC), path, value))
    assert any(expected in problem for problem in problems), problems


def test_settings_hold_no_secret_and_point_at_mounts() -> None:
    documents = load_manifest()
    assert settings_problems(documents) == []
    settings = by_kind(documents, "ConfigMap")["data"]
    assert (
        settings["FRAUD_MLFLOW_TRACKING_URI"]
        and settings["FRAUD_FEAST_CONFIG"]
        and settings["FRAUD_FEATURES_DIR"]
    )


@pytest.mark.parametrize(
    ("kind", "path", "value", "expected"),
    [
        ("ConfigMap", "data.FRAUD_MLFLOW_TRACKING_PASSWORD", "hunter2", "looks like a secret"),
        ("ConfigMap", "data.FRAUD_MLFLOW_TRACKING_URI", "http://admin:pw@mlflow:5000", "looks like a secret"),
        ("ConfigMap", "data.MLFLOW_TRACKING_URI", "http://mlflow:5000", "lacks the FRAUD_ prefix"),
        ("ConfigMap", "data.FRAUD_MODEL_PUBLIC_KEY", _DELETE, "FRAUD_MODEL_PUBLIC_KEY is unset"),
        ("ConfigMap", "data.FRAUD_DATA_DIR", "/app/data", "FRAUD_DATA_DIR must be on a writable mount"),
        ("ConfigMap", "data.FRAUD_FEATURES_DIR", _DELETE, "FRAUD_FEATURES_DIR is unset"),
        ("ConfigMap", "data.FRAUD_FEATURES_DIR", "/srv/features", "/srv/features is on no volume mount"),
        (
            "ConfigMap",
            "data.FRAUD_FEATURES_DIR",
            "/var/lib/fraud/features",
            "read-only PersistentVolumeClaim",
        ),
        (_ISVC, f"{_CONTAINER}.volumeMounts.3.readOnly", False, "read-only PersistentVolumeClaim"),
        (_ISVC, f"{_CONTAINER}.envFrom.0.configMapRef.name", "other", "'other' is not in the manifest"),
        ("PodDisruptionBudget", "spec.minAvailable", 2, "blocks every drain"),
        ("NetworkPolicy", "spec.podSelector.matchLabels", {"app": "x"}, "does not select the predictor pods"),
        ("NetworkPolicy", "spec.ingress.0.ports.0.port", 9090, "opens ports [9090]"),
    ],
)
def test_settings_check_can_fail(kind: str, path: str, value: Any, expected: str) -> None:
    documents = [_edit(doc, path, value) if doc["kind"] == kind else doc for doc in load_manifest()]
    problems = settings_problems(documents)
    assert any(expected in problem for problem in problems), problems


# --------------------------------------------------------------------------- the Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]]  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [arguments for key, arguments in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages with their instructions; continuation lines joined, comments dropped, ARG defaults
    declared before the first FROM substituted into the FROM lines."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            base, _, name = re.sub(
                r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), arguments
            ).partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None, []))
        elif not stages:
            if keyword == "ARG" and "=" in arguments:
                key, _, value = arguments.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, arguments))
    return stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in stage.all("ENV"):
        tokens = shlex.split(arguments)
        if "=" not in tokens[0]:  # the legacy ENV KEY value form
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        env |= dict(token.split("=", 1) for token in tokens)
    return env


EXPECTED_ENTRYPOINT = ["fraud", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
EXPECTED_ENV = {
    "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def dockerfile_problems(text: str) -> list[str]:
    stages = parse_dockerfile(text)
    python_stages = [stage for stage in stages if stage.base.startswith("python:")]
    problems = []
    if len(python_stages) < 2:
        return [f"expected a builder and a runtime stage on python:3.11-slim, got {[s.base for s in stages]}"]
    final = stages[-1]
    if not final.base.startswith("python:3.11-slim"):
        problems.append(f"the runtime stage is based on {final.base!r}, expected python:3.11-slim")
    users = final.all("USER")
    user = users[-1].split(":")[0] if users else "root"
    if not user.isdigit() or user == "0":
        problems.append(f"the runtime stage runs as {user!r}: expected a numeric non-root USER")
    runs = [run for stage in stages for run in stage.all("RUN")]
    syncs = [run for run in runs if "uv sync" in run]
    if not syncs:
        problems.append("nothing is installed with `uv sync` from the lock file")
    for run in syncs:
        tokens = shlex.split(run[run.index("uv sync") :])
        extras = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token == "--extra"]
        without_dev = {"--no-dev", "--no-default-groups"} & set(tokens)
        if "--locked" not in tokens or not without_dev or "serving" not in extras:
            problems.append(f"`{' '.join(tokens)}` needs --locked --no-dev --extra serving")
        if extras != ["serving"] or {"--all-extras", "--all-groups", "--group", "--dev"} & set(tokens):
            problems.append(f"`{' '.join(tokens)}` installs more than the serving extra")
    if syncs and "--no-editable" not in syncs[-1]:
        problems.append("the project must be installed with --no-editable (the runtime has no source tree)")
    if any(re.search(r"\bpip3? install\b|uv pip install", run) for run in runs):
        problems.append("a pip install bypasses the lock file")
    copies = final.all("COPY")
    if not any(arguments.startswith("--from=") for arguments in copies):
        problems.append("the runtime stage copies nothing from the builder")
    local_sources = [
        shlex.split(arguments)[:-1] for arguments in copies if not arguments.startswith("--from=")
    ]
    if any(Path(source).parts[:1] == ("src",) for sources in local_sources for source in sources):
        problems.append("the runtime stage copies the source tree")
    entrypoints = final.all("ENTRYPOINT")
    try:
        entrypoint = json.loads(entrypoints[-1]) if entrypoints else None
    except json.JSONDecodeError:
        entrypoint = None
    if entrypoint != EXPECTED_ENTRYPOINT:
        problems.append(f"ENTRYPOINT must be the exec form {json.dumps(EXPECTED_ENTRYPOINT)}")
    env = env_of(final)
    for key, value in EXPECTED_ENV.items():
        if env.get(key) != value:
            problems.append(f"ENV {key} must be {value}, got {env.get(key)!r}")
    for stage in stages:
        for key in [*env_of(stage), *(arg.partition("=")[0] for arg in stage.all("ARG"))]:
            if _SECRET_WORDS.search(key):
                problems.append(f"{key} in the image looks like a secret")
    if str(PORT) not in " ".join(final.all("EXPOSE")).split():
        problems.append(f"EXPOSE {PORT} is missing")
    return problems


def test_dockerfile_is_multi_stage_locked_non_root_and_exec_form() -> None:
    assert dockerfile_problems(DOCKERFILE_PATH.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "FROM ${PYTHON_IMAGE} AS builder",
            "FROM ubuntu:24.04 AS builder",
            "expected a builder and a runtime stage",
        ),
        ("USER 10001:10001", "USER root", "runs as 'root'"),
        ("USER 10001:10001", "", "runs as 'root'"),
        (
            "uv sync --locked --no-dev --extra serving --no-editable",
            "uv sync --no-dev --extra serving --no-editable",
            "needs --locked",
        ),
        (
            "uv sync --locked --no-dev --extra serving --no-editable",
            "uv sync --locked --extra serving --no-editable",
            "needs --locked --no-dev",
        ),
        ("--extra serving --no-editable", "--all-extras --extra serving --no-editable", "installs more than"),
        ("--extra serving --no-editable", "--extra serving", "--no-editable"),
        ("COPY deployments/feast", "COPY src ./src\nCOPY deployments/feast", "copies the source tree"),
        (
            'ENTRYPOINT ["fraud", "serve", "--host", "0.0.0.0", "--port", "8080"]',
            "ENTRYPOINT fraud serve --host 0.0.0.0 --port 8080",
            "exec form",
        ),
        (
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false",
            "MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true",
            "PICKLE_DESERIALIZATION must be false",
        ),
        (
            "DO_NOT_TRACK=true \\",
            "DO_NOT_TRACK=true \\\n    MLFLOW_TRACKING_PASSWORD=x \\",
            "looks like a secret",
        ),
        ("EXPOSE 8080", "EXPOSE 9000", "EXPOSE 8080 is missing"),
    ],
)
def test_dockerfile_check_can_fail(old: str, new: str, expected: str) -> None:
    text = DOCKERFILE_PATH.read_text(encoding="utf-8")
    assert old in text, f"the Dockerfile no longer contains {old!r}; update this case"
    problems = dockerfile_problems(text.replace(old, new))
    assert any(expected in problem for problem in problems), problems


def test_build_context_holds_only_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE_PATH.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the ignore file must start by excluding everything"
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    sources = []
    for stage in parse_dockerfile(DOCKERFILE_PATH.read_text(encoding="utf-8")):
        for arguments in stage.all("COPY"):
            if not arguments.startswith("--from="):
                sources += shlex.split(arguments)[:-1]
        for arguments in stage.all("RUN"):
            sources += re.findall(r"--mount=type=bind,source=([^,\s]+)", arguments)
    for source in sources:
        path = source.removeprefix("./").rstrip("/")
        assert any(path == item or path.startswith(f"{item}/") for item in allowed), path
        assert (REPO_ROOT / path).exists(), path
    assert not {".venv", "data", ".git", "mlruns"} & set(allowed)


def test_image_and_manifest_agree() -> None:
    stages = parse_dockerfile(DOCKERFILE_PATH.read_text(encoding="utf-8"))
    final = stages[-1]
    documents = load_manifest()
    isvc = by_kind(documents, _ISVC)
    container = _container(isvc)
    # The port the server binds is the one the manifest routes and probes.
    assert container["ports"][0]["containerPort"] == PORT
    assert {container[probe]["httpGet"]["port"] for probe in ("readinessProbe", "livenessProbe")} == {PORT}
    # The image's user is the one the pod runs as.
    assert final.all("USER")[-1].split(":")[0] == str(container["securityContext"]["runAsUser"])
    # The Feast profile the ConfigMap names is the repository file the image copies under WORKDIR.
    workdir = Path(final.all("WORKDIR")[-1])
    profile = Path(by_kind(documents, "ConfigMap")["data"]["FRAUD_FEAST_CONFIG"])
    relative = profile.relative_to(workdir)
    copied = [
        Path(shlex.split(arguments)[0]) for arguments in final.all("COPY") if not arguments.startswith("--")
    ]
    assert any(source == relative or source in relative.parents for source in copied), copied
    assert (REPO_ROOT / relative).is_file()
    # HOME (library caches) is on the writable /tmp mount.
    assert env_of(final)["HOME"] == "/tmp"
