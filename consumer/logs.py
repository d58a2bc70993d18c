"""structlog set-up: JSON lines in production, a readable console on a terminal.

Configured once, in main. librdkafka's own log lines are routed through the same pipeline via a
stdlib logger handed to the clients (``logger=``), so every line of the process is structured, and
every line passes the redactor (:mod:`consumer.redact`): no secret reaches the log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

import orjson
import structlog

from consumer.redact import REDACTOR


def configure(fmt: str = "auto", level: str = "info", secrets: Iterable[str] = ()) -> None:
    """``secrets``: setting values no line may show (``Settings.secret_values()``)."""
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    REDACTOR.add(secrets)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks become text here, so the redactor sees them too (a rich console traceback
        # would print local variables, settings included).
        structlog.processors.format_exc_info,
        REDACTOR,
    ]
    renderer: structlog.types.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory: structlog.types.WrappedLogger = structlog.BytesLoggerFactory(sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(sys.stderr)
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # The stdlib handler needs text, not the bytes the structlog BytesLogger takes.
    stdlib_renderer = (structlog.processors.JSONRenderer() if as_json else renderer)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=stdlib_renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # One line per registry HTTP call is noise; its failures still surface as our errors.
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def kafka_logger(name: str) -> logging.Logger:
    """A stdlib logger for librdkafka (``logger=`` client option)."""
    return logging.getLogger(f"librdkafka.{name}")
