"""Logging set-up: registry HTTP lines only at debug; a vanished stderr never breaks the caller."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from consumer.logs import HTTP_LOGGERS, _Stderr, configure


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    http_levels = {name: logging.getLogger(name).level for name in HTTP_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, http_level in http_levels.items():
        logging.getLogger(name).setLevel(http_level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_registry_http_requests_are_debug_detail() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient  # imports its HTTP library

    assert SchemaRegistryClient is not None
    used = [name for name in HTTP_LOGGERS if name in logging.Logger.manager.loggerDict]
    assert used, "the registry client logs through none of HTTP_LOGGERS"
    configure("json", "info")
    for name in used:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
    configure("json", "debug")
    for name in used:
        assert logging.getLogger(name).isEnabledFor(logging.INFO)


def test_a_closed_pipe_turns_stderr_into_dev_null() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write is EPIPE
    saved = os.dup(2)
    try:
        os.dup2(write_end, 2)
        with open(2, "wb", closefd=False) as raw:
            stream = _Stderr(raw, binary=True)
            stream.write(b"x" * 70_000)  # more than a pipe buffer
            stream.flush()
            stream.write(b"still fine\n")
            stream.flush()
            assert os.readlink("/proc/self/fd/2") == os.devnull
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
