"""Vendor timestamps -> UTC epoch milliseconds, on the hot path.

The vendors send, in one stream: ``2021-03-18T11:49:46+0800`` (JD envelope),
``2021-02-25 20:13:35`` (JD detail: local time without a zone), ``20190409T121826.922+0800``
(Alibaba ``eventTime``, ISO basic format), ``2019-04-09T04:18:26Z`` and ``2019-11-11T11:00Z``
(Alibaba content), ``2022-06-30T14:07:23.102868Z`` (GCP), and AWS Health's RFC 1123
``Thu, 27 Aug 2026 13:19:03 GMT`` (read with the weekday ignored: AWS's own samples carry
weekdays that do not match their dates). Python 3.11's ``datetime.fromisoformat`` (C) reads
all of the ISO ones, basic and extended, ``Z``, ``+0800``, ``+08:00``, fractions and a space
or ``T``; what is left to do here is cheap: refuse what is not a date *and* a time, give
zone-less times the configured zone (JD's local time; Asia/Shanghai by default), and turn the
result into integer milliseconds without float rounding. Zone objects are cached;
:class:`TimeParser` also remembers recent strings, because the notifications of one operation
repeat them (publishTime, notBefore).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from consumer.errors import ConfigError

DEFAULT_ZONE: Final = "Asia/Shanghai"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE: Final = datetime(1970, 1, 1)
_SEPARATORS: Final = "Tt "
_fromisoformat = datetime.fromisoformat


class TimeFormatError(ValueError):
    """A timestamp that is not one of the formats the vendors send; ``text`` is the input."""

    def __init__(self, message: str, text: object = None) -> None:
        super().__init__(message)
        self.text = text


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The tzinfo for an IANA zone name (cached); ConfigError for a name that does not exist."""
    if name.upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {name!r}: use an IANA name such as "
                          f"{DEFAULT_ZONE!r}") from exc


class TimeRangeError(TimeFormatError):
    """A well-formed timestamp outside the accepted range (see :class:`TimeParser`)."""


def _invalid(text: str) -> TimeFormatError:
    shown = text if len(text) <= 64 else text[:61] + "..."
    return TimeFormatError(f"not a timestamp: {shown!r}", text)


def to_epoch_ms(text: str, local_zone: tzinfo = UTC) -> int:
    """Milliseconds since the epoch (UTC) of ``text``; zone-less times are in ``local_zone``.

    Sub-millisecond digits are truncated (floored), as Avro ``timestamp-millis`` expects.
    Ambiguous local times (a DST fall-back hour) take the earlier instant (``fold=0``).
    Raises :class:`TimeFormatError` (a ValueError) for anything that is not a date and a time.
    """
    if type(text) is not str:
        raise TimeFormatError(f"timestamp must be a string, got {type(text).__name__}", text)
    # fromisoformat also takes a bare date (always < 13 characters) and any separator
    # character; vendors always send a time, so demand 'T' or a space where ISO puts it
    # (index 10 in the extended format, 8 in the basic one).
    if len(text) < 13 or (text[10] not in _SEPARATORS and text[8] not in _SEPARATORS):
        return _rfc1123(text)
    try:
        d = _fromisoformat(text)
    except ValueError:
        try:  # RFC 3339 allows lower-case 't' and 'z'; rare, so only on the slow path
            d = _fromisoformat(text.upper())
        except ValueError:
            return _rfc1123(text)
    if d.tzinfo is None:
        offset = local_zone.utcoffset(d)
        delta = d - _EPOCH_NAIVE if offset is None else d - _EPOCH_NAIVE - offset
    else:
        delta = d - _EPOCH  # timedelta arithmetic: exact, no float rounding
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


_RFC1123 = re.compile(
    r"(?:[A-Za-z]{3}, ?)?(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) ?(GMT|UTC|Z)\Z")
_MONTHS: Final = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


def _rfc1123(text: str) -> int:
    """``[Wkd, ]DD Mon YYYY HH:MM:SS GMT`` -> epoch ms; the weekday is not checked."""
    m = _RFC1123.match(text)
    month = _MONTHS.get(m.group(2).lower()) if m is not None else None
    if m is None or month is None:
        raise _invalid(text)
    try:
        d = datetime(int(m.group(3)), month, int(m.group(1)), int(m.group(4)), int(m.group(5)),
                     int(m.group(6)), tzinfo=UTC)
    except ValueError:
        raise _invalid(text) from None
    delta = d - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000


def _out_of_range(text: str, earliest_ms: int | None,
                  max_future_ms: int | None) -> TimeRangeError:
    shown = text if len(text) <= 64 else text[:61] + "..."
    floor = "" if earliest_ms is None else (
        f"not before {datetime.fromtimestamp(earliest_ms / 1000, UTC):%Y-%m-%dT%H:%M:%SZ}")
    ahead = "" if max_future_ms is None else f"at most {max_future_ms // 86_400_000} days ahead"
    return TimeRangeError(f"{shown!r} is outside the accepted range "
                          f"({', '.join(p for p in (floor, ahead) if p)})", text)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class TimeParser:
    """``to_epoch_ms`` bound to one local zone, with a small memo of recent strings.

    Call the instance, or hand :attr:`parse` (a plain closure, cheaper to call) to the hot path.
    The memo is a dict cleared when full: bounded memory and no per-hit bookkeeping; two
    threads filling it at once is harmless.

    With ``earliest_ms`` and ``max_future_ms``, a time before ``earliest_ms`` or more than
    ``max_future_ms`` after ``clock()`` raises :class:`TimeRangeError`: checked once per distinct
    string, before it is remembered (the upper bound only grows, so a remembered time stays
    acceptable).
    """

    __slots__ = ("local_zone", "parse")

    def __init__(self, local_zone: str | tzinfo = DEFAULT_ZONE, *, memo_size: int = 4096,
                 earliest_ms: int | None = None, max_future_ms: int | None = None,
                 clock: Callable[[], int] = _wall_ms) -> None:
        zone_info = zone(local_zone) if isinstance(local_zone, str) else local_zone
        self.local_zone: tzinfo = zone_info
        memo: dict[str, int] = {}
        recall = memo.get

        def parse(text: str) -> int:
            """Epoch milliseconds of ``text``; TimeFormatError (ValueError) on garbage."""
            ms = recall(text)
            if ms is None:
                ms = to_epoch_ms(text, zone_info)
                if (earliest_ms is not None and ms < earliest_ms) or \
                        (max_future_ms is not None and ms > clock() + max_future_ms):
                    raise _out_of_range(text, earliest_ms, max_future_ms)
                if len(memo) >= memo_size:
                    memo.clear()
                memo[text] = ms
            return ms

        self.parse: Callable[[str], int] = parse

    def __call__(self, text: str) -> int:
        """Epoch milliseconds of ``text``; TimeFormatError (ValueError) on garbage."""
        if type(text) is not str:
            return to_epoch_ms(text, self.local_zone)  # raises the TimeFormatError
        return self.parse(text)
