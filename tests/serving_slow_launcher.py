"""``fraud`` with parts of the serving path slowed down inside the real server process (tests only).

The serving lifecycle tests (``tests/integration/test_serving_lifecycle.py``) start it in place of the
``fraud`` entry point: ``start_server(world, command=[sys.executable, "tests/serving_slow_launcher.py"])``.
It wraps three library functions with a sleep, then runs the CLI app unchanged, so product code
carries no test hooks.

Delays in seconds, 0 (the default) leaves the step as it is:

* ``FRAUD_TEST_SLOW_WARM_UP_S``: before the warm-up inference (the model's way to ready);
* ``FRAUD_TEST_SLOW_SCORE_S``: in every ``FraudScorer.score`` call (the scoring thread);
* ``FRAUD_TEST_SLOW_ONLINE_S``: in every online-store read (``features.store._read_views``, run in the
  store's deadline worker thread, so the caller's online timeout applies).

``FRAUD_TEST_SLOW_CONTROL`` names a JSON file (``{"score_s": 2.0, "online_s": 0.3, ...}``) read on each
call: while it exists, its keys replace the variables, so a test can slow one server down and speed
it up again.
"""

from __future__ import annotations

import faulthandler
import functools
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_KEYS = {
    "warm_up_s": "FRAUD_TEST_SLOW_WARM_UP_S",
    "score_s": "FRAUD_TEST_SLOW_SCORE_S",
    "online_s": "FRAUD_TEST_SLOW_ONLINE_S",
}


def delay(key: str) -> float:
    control = os.environ.get("FRAUD_TEST_SLOW_CONTROL")
    if control:
        try:
            overrides = json.loads(Path(control).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            overrides = {}
        if key in overrides:
            return float(overrides[key])
    return float(os.environ.get(_KEYS[key], "0"))


def slowed(key: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        seconds = delay(key)
        if seconds > 0:
            time.sleep(seconds)
        return function(*args, **kwargs)

    return wrapper


def main() -> None:
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>`: every thread's stack into the log
    # None of these imports kserve (it parses sys.argv when imported; `fraud serve` resets argv first).
    from fraud_detection.features import store
    from fraud_detection.inference import server
    from fraud_detection.inference.scorer import FraudScorer

    server.warm_up = slowed("warm_up_s", server.warm_up)  # type: ignore[assignment]
    FraudScorer.score = slowed("score_s", FraudScorer.score)  # type: ignore[method-assign]
    store._read_views = slowed("online_s", store._read_views)  # type: ignore[attr-defined]

    from fraud_detection.cli import app

    app()


if __name__ == "__main__":
    main()
