"""A registry that does not answer is a transient condition, never a poison record."""

from __future__ import annotations

import socket
import time

import pytest

from consumer.config import load_settings
from consumer.errors import TransientError
from consumer.runtime.clients import registry_fetcher


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_is_transient() -> None:
    url = f"http://user:pw-secret@127.0.0.1:{closed_port()}/apis/ccompat/v7"
    fetch = registry_fetcher(load_settings({"SCHEMA_REGISTRY_URL": url}))
    started = time.monotonic()
    with pytest.raises(TransientError, match="ConnectError") as info:
        fetch(7)
    assert "pw-secret" not in str(info.value)
    print(f"refused registry reported after {time.monotonic() - started:.1f}s (client retries)")
