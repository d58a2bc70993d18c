"""Logging set-up: registry HTTP lines only at debug; a vanished stderr never breaks the caller."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest
import structlog

from consumer.logs import _Stderr, configure


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)
    structlog.reset_defaults()


@pytest.mark.usefixtures("restore_logging")
def test_registry_http_requests_are_debug_detail() -> None:
    httpx = logging.getLogger("httpx")
    configure("json", "info")
    assert not httpx.isEnabledFor(logging.INFO)
    assert httpx.isEnabledFor(logging.WARNING)
    configure("json", "debug")
    assert httpx.isEnabledFor(logging.INFO)


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
