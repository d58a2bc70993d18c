"""Fetching the vendors' public keys and certificates: only from allowed URLs, cached, bounded.

A key host that cannot be reached is not the sender's fault: :class:`~consumer.ingest.request.
Unavailable` (503), so the vendor retries later. The fetch runs in a thread (urllib) off the
event loop; concurrent requests for one URL share one fetch.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from consumer.ingest.request import Unauthenticated, Unavailable

T = TypeVar("T")
Fetch = Callable[[str], Awaitable[bytes]]

MAX_KEY_BYTES = 256 * 1024
FETCH_TIMEOUT_S = 5.0


def _get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "vmevents-ingest"})
    with urllib.request.urlopen(req, timeout=FETCH_TIMEOUT_S) as resp:
        data: bytes = resp.read(MAX_KEY_BYTES + 1)
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"more than {MAX_KEY_BYTES} bytes")
    return data


async def http_get(url: str) -> bytes:
    """GET ``url`` (already checked against its allow-list); Unavailable when it fails."""
    try:
        return await asyncio.to_thread(_get, url)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise Unavailable("key_fetch_failed", f"GET {_host(url)} failed: {exc}") from None


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]


def check_url(url: str, pattern: re.Pattern[str], what: str) -> None:
    """Refuse (401) a key or confirmation URL outside the vendor's hosts before fetching it."""
    _scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0]
    if not sep or not authority or "@" in authority or not pattern.match(url):
        raise Unauthenticated("untrusted_key_url", f"{what} URL is not on an allowed host")


class KeyCache(Generic[T]):
    """URL -> parsed key, kept ``ttl_s`` (forever with None), at most ``max_entries`` URLs.

    ``parse`` turns the fetched bytes into the key; bytes that do not parse are a 401 (the URL
    was allowed, so this is a vendor-side surprise or a forgery, never cached).
    """

    def __init__(self, parse: Callable[[bytes], T], fetch: Fetch = http_get, *,
                 ttl_s: float | None = None, max_entries: int = 64,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._parse = parse
        self._fetch = fetch
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._pending: dict[str, asyncio.Future[T]] = {}
        self.fetches = 0

    async def get(self, url: str, *, refresh: bool = False) -> T:
        now = self._clock()
        hit = self._items.get(url)
        if hit is not None and not refresh and (self._ttl is None or now - hit[0] < self._ttl):
            self._items.move_to_end(url)
            return hit[1]
        pending = self._pending.get(url)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending[url] = fut
        try:
            self.fetches += 1
            raw = await self._fetch(url)
            try:
                value = self._parse(raw)
            except (ValueError, TypeError, KeyError) as exc:
                raise Unauthenticated("bad_key_document", f"key document from {_host(url)}: {exc}") \
                    from None
            self._items[url] = (self._clock(), value)
            self._items.move_to_end(url)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
            fut.set_result(value)
            return value
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._pending[url]

    def age(self, url: str) -> float | None:
        hit = self._items.get(url)
        return None if hit is None else self._clock() - hit[0]
