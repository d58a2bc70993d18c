"""structlog set-up: JSON lines in production, a readable console on a terminal.

Configured once, in main. librdkafka's own log lines are routed through the same pipeline via a
stdlib logger handed to the clients (``logger=``), so every line of the process is structured, and
every line passes the redactor (:mod:`consumer.redact`): no secret reaches the log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import IO, Any, BinaryIO, TextIO, cast

import orjson
import structlog

from consumer.redact import REDACTOR

HTTP_LOGGERS = ("httpx", "httpx2")
"""The schema registry client's HTTP library, by the name each confluent-kafka release uses."""


class _Stderr:
    """stderr that turns into /dev/null once nobody reads it (EPIPE), instead of raising.

    ``make run 2>&1 | tee run.log`` then Ctrl-C kills tee with the stages: a log line must not
    then break the shutdown that finishes the transaction and leaves the group.
    """

    def __init__(self, stream: IO[Any], *, binary: bool = False) -> None:
        self._stream = stream
        self._binary = binary

    def write(self, data: Any) -> None:
        try:
            self._stream.write(data)
        except (OSError, ValueError):
            self._drop()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._drop()

    def _drop(self) -> None:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(fd, sys.__stderr__.fileno() if sys.__stderr__ else 2)
        except (OSError, ValueError):
            pass
        finally:
            os.close(fd)
        self._stream = open(os.devnull, "wb" if self._binary else "w")  # noqa: SIM115



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
        factory: structlog.types.WrappedLogger = structlog.BytesLoggerFactory(
            cast(BinaryIO, _Stderr(sys.stderr.buffer, binary=True)))
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(cast(TextIO, _Stderr(sys.stderr)))
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # The stdlib handler needs text, not the bytes the structlog BytesLogger takes.
    stdlib_renderer = (structlog.processors.JSONRenderer() if as_json else renderer)
    handler = logging.StreamHandler(cast(TextIO, _Stderr(sys.stderr)))
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processor=stdlib_renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # One line per registry HTTP call (the registry client's HTTP library logs each at info) is
    # debug detail, not news; its failures still surface as our errors.
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)


def kafka_logger(name: str) -> logging.Logger:
    """A stdlib logger for librdkafka (``logger=`` client option)."""
    return logging.getLogger(f"librdkafka.{name}")
