"""One error root for the whole package.

Library code raises these (always ``raise ... from err``); only the edges translate them: the CLI
into an exit code and one readable line, the server into an HTTP status, a flow into a failed state.
Every message names the bad value and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FraudDetectionError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code: int = 1


class ConfigError(FraudDetectionError):
    """A config or contract file is missing, unreadable or does not match its schema."""

    exit_code = 2


class DataSourceError(FraudDetectionError):
    """An input path or URL cannot be used: missing, empty folder, unsupported format or protocol."""

    exit_code = 2


class StorageError(FraudDetectionError):
    """An output cannot be written (permissions, not a folder, disk full); nothing is published."""

    exit_code = 2


class DataContractError(FraudDetectionError):
    """Data violates its contract. ``report`` lists every violation, not just the first."""

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


class DataQualityError(FraudDetectionError):
    """The data quality gate found critical issues. ``issues`` lists every one of them."""

    def __init__(self, issues: Sequence[str], report: Any = None) -> None:
        self.issues = list(issues)
        self.report = report
        listed = "; ".join(self.issues)
        super().__init__(f"data quality gate failed with {len(self.issues)} critical issue(s): {listed}")


class DataIntegrityError(FraudDetectionError):
    """Stored data does not match its manifest, or an immutable partition would be overwritten."""


class FeatureStoreError(FraudDetectionError):
    """The feature store failed or refused: not applied, never materialised, entity rows dropped, unreachable.

    Online scoring never sees it for an unknown entity or an unreachable store (it gets default
    features flagged as degraded instead); training, ``apply`` and ``materialize`` do.
    """


class ArtifactError(FraudDetectionError):
    """A saved model or transformer is missing, unreadable, fails its checksum, or asks to load an
    untrusted type (nothing is ever unpickled).

    ``bundle`` and ``digest`` name the refused bundle folder and its digest (sha256 of its
    ``manifest.json``) where they are known: the model server's refusal audit line carries them.
    """

    def __init__(self, message: str, *, bundle: str | None = None, digest: str | None = None) -> None:
        super().__init__(message)
        self.bundle = bundle
        self.digest = digest


class SplitError(FraudDetectionError):
    """A time split cannot be built: a bad window argument, missing columns, or a fold window without rows."""

    exit_code = 2


class ModelGateFailed(FraudDetectionError):
    """A model failed one or more promotion gates; ``failures`` lists every one. Nothing moved."""

    def __init__(self, model: str, failures: Sequence[str]) -> None:
        self.failures = list(failures)
        listed = "; ".join(self.failures)
        super().__init__(f"{model} failed {len(self.failures)} promotion gate(s): {listed}")
