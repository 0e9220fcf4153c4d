"""Retries with exponential backoff for I/O steps (reading inputs, feature tables, a store).

Only errors that another try can cure are retried (:data:`TRANSIENT_ERRORS`: an OS-level I/O
failure, a storage or feature-store failure). A contract violation or a digest mismatch fails the
same way every time and is raised at once. After the last attempt the error is raised again as
the policy's error type, naming the step and the number of attempts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from fraud_detection.errors import DataIntegrityError, FeatureStoreError, FraudDetectionError, StorageError

T = TypeVar("T")
logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, StorageError, FeatureStoreError)


class RetryPolicy(BaseModel):
    """``attempts`` tries in all; the wait before try k+1 is ``backoff_s * factor**(k-1)``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attempts: int = Field(default=4, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)
    factor: float = Field(default=2.0, ge=1)

    def delays(self) -> list[float]:
        return [self.backoff_s * self.factor**k for k in range(self.attempts - 1)]


def with_retries(
    step: str,
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    error: type[FraudDetectionError] = StorageError,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, tried up to ``policy.attempts`` times on a transient error, with backoff."""
    delays = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except DataIntegrityError:
            raise  # changed or tampered data: another read gives the same answer
        except TRANSIENT_ERRORS as err:
            if attempt == policy.attempts:
                raise error(f"{step} failed after {policy.attempts} attempt(s): {err}") from err
            logger.warning("%s failed (attempt %d of %d), retrying: %s", step, attempt, policy.attempts, err)
            sleep(delays[attempt - 1])
    raise AssertionError("unreachable")  # pragma: no cover
