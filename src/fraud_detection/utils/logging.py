"""Logging set-up, called only by entry points (CLI, server, flows), never on import.

Logs are structured (structlog): JSON lines when stderr is not a terminal, readable lines when it is.
"""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "INFO", json_logs: bool | None = None) -> None:
    """Configure structlog and the standard library root logger to write to stderr."""
    if json_logs is None:
        json_logs = not sys.stderr.isatty()
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"log level {level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json_logs else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Resolve sys.stderr at each use, not now: a test runner may swap (and close) the stream.
        logger_factory=lambda *_: structlog.PrintLogger(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric_level, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # Feast logs a line per registry refresh at INFO (hundreds in one materialisation): keep its
    # warnings and errors only, unless we are debugging.
    logging.getLogger("feast").setLevel(max(numeric_level, logging.WARNING))
    # MLflow and alembic narrate every model log and schema migration at INFO; httpx every request
    # (Prefect's API calls: several per task).
    for name in ("mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))
