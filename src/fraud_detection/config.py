"""Typed configuration: schemas in code, values in YAML, infrastructure in ``FRAUD_*`` variables.

Config is loaded once, at an entry point, and passed down as frozen pydantic objects. Library
functions never read files or environment variables themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from fraud_detection.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)


class Settings(BaseSettings):
    """Where things live and how to log; every field can be set as ``FRAUD_<NAME>``.

    The defaults are the embedded local profile (contracts under ``configs/contract``, relative
    to the working directory the commands run in).
    """

    model_config = SettingsConfigDict(env_prefix="FRAUD_", extra="ignore", frozen=True)

    contracts_dir: Path = Path("configs/contract")
    data_dir: Path = Path("data")
    # FRAUD_MLFLOW_TRACKING_URI, else MLflow's own MLFLOW_TRACKING_URI, else SQLite under data_dir.
    mlflow_tracking_uri: str | None = Field(
        None, validation_alias=AliasChoices("FRAUD_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI")
    )
    mlflow_artifact_root: str | None = None  # default: under data_dir, unless a tracking server decides
    model_public_key: Path | None = None  # set: every bundle must carry a valid signature (production)
    # the feature tables (`fraud features build --out`) the online store was materialised from:
    # `fraud serve --features-dir` when the flag is not given (a container sets it here)
    features_dir: Path | None = None
    # set: `fraud serve` refuses any bundle whose digest (sha256 of its manifest.json) differs
    model_digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool | None = None  # None: JSON when stderr is not a terminal


def format_validation_error(err: ValidationError, env_prefix: str = "") -> str:
    """One line per problem: the dotted field, the bad value and what was expected.

    ``env_prefix`` (a settings class's): the field is named as its environment variable, which is
    where the user set it (``FRAUD_ALERT_WEBHOOK_URL``, not ``webhook_url``).
    """
    lines = []
    for problem in err.errors():
        location = ".".join(str(part) for part in problem["loc"])
        if env_prefix and location:
            location = f"{env_prefix}{location}".upper()
        if not location:  # a whole-object rule: its message already names what is wrong
            lines.append(problem["msg"])
            continue
        value = repr(problem.get("input"))
        lines.append(f"{location}={value if len(value) <= 80 else value[:77] + '...'}: {problem['msg']}")
    return "; ".join(lines)


def load_yaml_config(path: Path, model: type[ModelT]) -> ModelT:
    """Read ``path`` as YAML and validate it into ``model``; any problem is a ``ConfigError``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(f"config file {str(path)!r} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err}") from err
    except yaml.YAMLError as err:
        reason = " ".join(str(err).split())  # one line
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {reason}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"config file {str(path)!r} is invalid: {format_validation_error(err)}") from err
