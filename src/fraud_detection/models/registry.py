"""The model registry (MLflow): versions, the ``challenger``/``champion`` aliases, promotion and rollback.

No deprecated stages: aliases move. Every registered version carries tags with its lineage and
quality: ``bundle_sha256`` (checked on every load, so a bundle swapped together with its manifest
is still refused), ``data_digest``, ``feature_service``, ``model_type`` and its test metrics.

Rollback needs a memory of past champions: each promotion appends the version to the registered
model's ``champion_history`` tag (a JSON list), and :func:`rollback` moves ``champion`` back to the
version before the current one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraud_detection.errors import ArtifactError, ConfigError, DataSourceError, ModelGateFailed
from fraud_detection.models.bundle import ModelBundle, load_bundle

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "champion_history"
DIGEST_TAG = "bundle_sha256"
GATES_TAG = "gates_passed"
GATE_FAILURES_TAG = "gate_failures"
BUNDLE_ARTIFACT = "bundle"  # the bundle's key (and folder name) among a logged model's artifacts
# Registered model names, aliases and versions in a models:/ URI: nothing else reaches the registry
# or an artifact path: no '/', backslash, leading '.', '%', '?', '#' or whitespace (S6, RELIABILITY.md).
_REGISTERED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
_VERSION = re.compile(r"[1-9][0-9]{0,9}")


@dataclass(frozen=True)
class ModelRef:
    """A parsed model URI: a bundle folder, or a registered model by version or alias."""

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        if not uri.startswith("models:/"):
            return cls(uri, path=Path(uri))
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, _, alias = rest.partition("@")
            if _REGISTERED_NAME.fullmatch(name) and _ALIAS.fullmatch(alias):
                return cls(uri, name=name, alias=alias)
        else:
            name, _, version = rest.partition("/")
            if _REGISTERED_NAME.fullmatch(name) and _VERSION.fullmatch(version):
                return cls(uri, name=name, version=version)
        raise ConfigError(
            f"model URI {uri!r} is not understood; expected models:/NAME@ALIAS, models:/NAME/VERSION "
            "or a bundle folder (NAME and ALIAS: letters, digits, '.', '_', '-', starting with a letter "
            "or digit)"
        )


@dataclass(frozen=True)
class ResolvedModel:
    bundle: ModelBundle
    uri: str
    version: str  # registry version, or "bundle-<digest prefix>" for a bundle folder
    digest: str
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)  # the registry version's tags


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


def _mlflow_error() -> type[Exception]:
    from mlflow.exceptions import MlflowException

    return MlflowException


def _not_found(err: Exception) -> bool:
    """Only a missing model, version or alias is "not there"; anything else (a server error) is
    re-raised for the caller's edge to report as a store failure."""
    code = getattr(err, "error_code", None)
    # A missing alias comes back as INVALID_PARAMETER_VALUE ("... alias X not found").
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(err)
    )


def _version(ref: ModelRef) -> Any:
    client = _client()
    try:
        if ref.alias is not None:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except _mlflow_error() as err:
        if not _not_found(err):
            raise
        raise ConfigError(f"model {ref.uri!r} is not in the registry: {err.message}") from err


def require_bundle_folder(ref: ModelRef) -> None:
    """A bundle path the user gave that is not there is bad usage (exit 2), not a broken artifact;
    callers with slow work before the model is loaded check it first."""
    if ref.path is not None and not ref.path.exists():
        raise DataSourceError(f"model bundle {str(ref.path)!r} does not exist")


def resolve_model(
    uri: str, *, public_key: Path | None = None, expected_digest: str | None = None
) -> ResolvedModel:
    """Load the bundle behind ``uri``, checked against its manifest, its external digest and, when a
    public key is given (production), its signature."""
    from fraud_detection.models.bundle import bundle_digest

    ref = ModelRef.parse(uri)
    if ref.path is not None:
        require_bundle_folder(ref)
        bundle = load_bundle(ref.path, expected_digest=expected_digest, public_key=public_key)
        digest = bundle_digest(ref.path)
        return ResolvedModel(bundle, uri, f"bundle-{digest[:12]}", digest)
    version = _version(ref)
    recorded = version.tags.get(DIGEST_TAG)
    if not recorded:
        raise ArtifactError(
            f"model {uri!r} (version {version.version}) has no {DIGEST_TAG} tag to check it against"
        )
    if expected_digest is not None and expected_digest != recorded:
        raise ArtifactError(
            f"model {uri!r} (version {version.version}) has digest {recorded}, the deployment expects {expected_digest}",
            digest=recorded,
        )
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{ref.name}/{version.version}"))
    _check_logged_model(local, f"model {uri!r} (version {version.version})", recorded)
    bundle = load_bundle(
        local / "artifacts" / BUNDLE_ARTIFACT, expected_digest=recorded, public_key=public_key
    )
    return ResolvedModel(bundle, uri, str(version.version), recorded, name=ref.name, tags=dict(version.tags))


def _check_logged_model(local: Path, what: str, digest: str) -> None:
    """Refuse a registered version whose ``MLmodel`` is no longer the one ``log_bundle_model`` wrote.

    Scoring never runs ``MLmodel``'s loader (it reads the digest-checked bundle itself), and the
    bundle digest does not cover ``MLmodel``; but ``mlflow.pyfunc.load_model`` would run whatever
    flavor and loader it names. A changed flavor, loader, bundle artifact or digest is tampering.
    """
    import yaml

    path = local / "MLmodel"
    try:
        if path.is_symlink() or not path.is_file():
            raise OSError("missing or not a regular file")
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ArtifactError(
            f"MLmodel of {what} cannot be read: {err}", bundle=str(local), digest=digest
        ) from err

    def get(node: Any, *keys: str) -> Any:
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    flavors = get(document, "flavors")
    found = {
        "flavors": sorted(flavors) if isinstance(flavors, dict) else flavors,
        "loader_module": get(flavors, "python_function", "loader_module"),
        "bundle artifact": get(flavors, "python_function", "artifacts", BUNDLE_ARTIFACT, "path"),
        "bundle_sha256": get(flavors, "python_function", "config", DIGEST_TAG),
    }
    expected = {
        "flavors": ["python_function"],
        "loader_module": "mlflow.pyfunc.loaders.code_model",
        "bundle artifact": f"artifacts/{BUNDLE_ARTIFACT}",
        "bundle_sha256": digest,
    }
    wrong = sorted(key for key in expected if found[key] != expected[key])
    if wrong:
        has = {key: found[key] for key in wrong}
        wants = {key: expected[key] for key in wrong}
        raise ArtifactError(
            f"MLmodel of {what} has {has}, expected {wants}: the logged model was changed after it "
            "was registered",
            bundle=str(local),
            digest=digest,
        )


def alias_version(name: str, alias: str) -> str:
    """The version ``alias`` points at (ConfigError when the model or the alias does not exist)."""
    return str(_version(ModelRef(f"models:/{name}@{alias}", name=name, alias=alias)).version)


def record_gates(name: str, version: str, passed: bool, failures: list[str], run_id: str | None) -> None:
    """What ``promote`` checks: the outcome of the version's latest evaluation."""
    tags = {GATES_TAG: "true" if passed else "false", GATE_FAILURES_TAG: json.dumps(failures)[:4_900]}
    if run_id is not None:
        tags["evaluation_run_id"] = run_id
    tag_version(name, version, tags)


def resolve_alias(name: str, alias: str, *, public_key: Path | None = None) -> ResolvedModel | None:
    """The model behind ``models:/NAME@ALIAS``, or None when the model or the alias does not exist."""
    try:
        return resolve_model(f"models:/{name}@{alias}", public_key=public_key)
    except ConfigError:
        return None


def tag_version(name: str, version: str, tags: dict[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)


def _history(name: str) -> list[str]:
    try:
        model = _client().get_registered_model(name)
    except _mlflow_error() as err:
        if not _not_found(err):
            raise
        raise ConfigError(f"registered model {name!r} does not exist: {err.message}") from err
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def promote(name: str, version: str) -> str | None:
    """Make ``version`` the champion; returns the previous champion's version (None if there was none).

    Only a version whose latest ``fraud evaluate`` passed every gate moves (tag ``gates_passed``);
    otherwise :class:`ModelGateFailed` lists the failures and nothing changes.
    """
    client = _client()
    found = _version(ModelRef(f"models:/{name}/{version}", name=name, version=str(version)))
    if found.tags.get(GATES_TAG) != "true":
        failures = json.loads(found.tags.get(GATE_FAILURES_TAG, "[]")) or [
            "not evaluated: run `fraud evaluate` on this version first"
        ]
        raise ModelGateFailed(f"models:/{name}/{version}", failures)
    history = _history(name)
    previous = history[-1] if history else None
    if previous == str(version):
        return previous
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps([*history, str(version)]))
    return previous


def rollback(name: str) -> tuple[str, str]:
    """Move ``champion`` back to the previous champion; returns (from_version, to_version)."""
    history = _history(name)
    if len(history) < 2:
        raise ConfigError(
            f"registered model {name!r} has no previous champion to roll back to (history {history})"
        )
    current, previous = history[-1], history[-2]
    client = _client()
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[:-1]))
    # A bare `fraud promote` must not put the rolled-back version straight back.
    if str((client.get_registered_model(name).aliases or {}).get(CHALLENGER)) == current:
        client.delete_registered_model_alias(name, CHALLENGER)
    return current, previous


@dataclass(frozen=True)
class VersionInfo:
    version: str
    aliases: tuple[str, ...]
    run_id: str
    created: int
    tags: dict[str, str]


def list_versions(name: str) -> list[VersionInfo]:
    client = _client()
    try:
        model = client.get_registered_model(name)
    except _mlflow_error() as err:
        if not _not_found(err):
            raise
        raise ConfigError(f"registered model {name!r} does not exist: {err.message}") from err
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    return sorted(
        (
            VersionInfo(
                str(v.version),
                tuple(sorted(aliases.get(str(v.version), []))),
                v.run_id,
                v.creation_timestamp,
                dict(v.tags),
            )
            for v in versions
        ),
        key=lambda info: int(info.version),
    )
