"""``vmevents replay FILE --via URL``: send a file of raw events through ``vmevents ingest`` over
HTTP, one request per line, instead of producing them to Kafka directly (``make run`` does, so
the whole path is exercised: HTTP, authentication, the broker's ack, the stages).

Lines go one at a time, in file order, at least 1 ms apart: ingest stamps each record with its
receive time, and the stages read partitions aligned by record timestamp, so the file's order is
the order they process it in. A 503 (the broker is away) is retried after its Retry-After, as a
vendor would; any other refusal stops the command with what the server said.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

from consumer.errors import InputError
from consumer.progress import Progress

RETRIES = 30


def push_lines(lines: Sequence[bytes], url: str, token: str, label: str) -> int:
    """POST each line to ``url`` with ``Authorization: Bearer <token>``; returns lines not sent."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--via {url!r} is not an http(s) URL")
    path = (parts.path or "/generic") + (f"?{parts.query}" if parts.query else "")
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(parts.hostname, parts.port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    progress = Progress(label, total=len(lines))
    last_ms = 0
    try:
        for line in lines:
            for attempt in range(RETRIES):
                while time.time_ns() // 1_000_000 <= last_ms:
                    time.sleep(0.0002)
                status, retry_after, body = _post(conn, path, line, headers)
                last_ms = time.time_ns() // 1_000_000
                if 200 <= status < 300:
                    break
                if status not in (429, 503) or attempt == RETRIES - 1:
                    raise InputError(f"{url} answered {status}: {body[:200]!r}")
                time.sleep(retry_after)
            progress.advance()
    finally:
        progress.close()
        conn.close()
    return 0


def _post(conn: http.client.HTTPConnection, path: str, body: bytes,
          headers: dict[str, str]) -> tuple[int, float, bytes]:
    for attempt in (1, 2):
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, min(10.0, float(resp.getheader("Retry-After") or 1)), data
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            if attempt == 2:
                raise InputError(f"cannot reach ingest: {exc}") from None
    raise AssertionError("unreachable")
