"""`vmevents replay --via`: lines sent one by one over loopback HTTP, 503 retried after its
Retry-After, any other refusal stops with what the server said."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from consumer.errors import InputError
from consumer.ingest.push import push_lines


class Script:
    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.received: list[tuple[str, bytes, str]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = script.statuses.pop(0) if script.statuses else 200
            if status == 200:
                script.received.append((self.path, body, self.headers["Authorization"]))
            answer = b"ok\n" if status == 200 else b"nope\n"
            self.send_response(status)
            if status == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/generic", script
    httpd.shutdown()
    httpd.server_close()


def test_lines_go_in_order_and_503_is_retried(server: tuple[str, Script]) -> None:
    url, script = server
    script.statuses = [200, 503, 503, 200, 200]
    assert push_lines([b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'], url, "tok-123", "test") == 0
    assert [body for _, body, _ in script.received] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert {(path, auth) for path, _, auth in script.received} == {("/generic", "Bearer tok-123")}


def test_a_refusal_stops_with_the_servers_answer(server: tuple[str, Script]) -> None:
    url, script = server
    script.statuses = [401]
    with pytest.raises(InputError, match="answered 401"):
        push_lines([b"{}"], url, "wrong", "test")


def test_not_a_url() -> None:
    with pytest.raises(InputError, match="not an http"):
        push_lines([b"{}"], "ftp://x", "t", "test")
