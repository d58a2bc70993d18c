"""Timestamps of every format in the documents -> exact UTC epoch milliseconds."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import ConfigError
from consumer.normalization.timeparse import (
    TimeFormatError,
    TimeParser,
    TimeRangeError,
    to_epoch_ms,
    zone,
)

SHANGHAI = zone("Asia/Shanghai")


def stdlib_ms(iso_utc: str) -> int:
    """Independent oracle: calendar.timegm of a 'YYYY-MM-DDTHH:MM:SS[.fff]Z' string."""
    base, _, frac = iso_utc.rstrip("Z").partition(".")
    seconds = calendar.timegm(datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").timetuple())
    return seconds * 1000 + int((frac or "0").ljust(3, "0")[:3])


# (text, local zone for zone-less text, epoch ms computed by hand, the same instant in UTC)
DOCUMENT_TIMES = [
    ("2021-03-18T11:49:46+0800", SHANGHAI, 1616039386000, "2021-03-18T03:49:46Z"),
    ("20190409T121826.922+0800", SHANGHAI, 1554783506922, "2019-04-09T04:18:26.922Z"),
    ("20180608T092545.922+0800", SHANGHAI, 1528421145922, "2018-06-08T01:25:45.922Z"),
    ("2019-04-09T04:18:26Z", SHANGHAI, 1554783506000, "2019-04-09T04:18:26Z"),
    ("2019-04-12T01:01:01Z", SHANGHAI, 1555030861000, "2019-04-12T01:01:01Z"),
    ("2019-11-11T11:00Z", SHANGHAI, 1573470000000, "2019-11-11T11:00:00Z"),
    ("2019-11-11T12:00Z", SHANGHAI, 1573473600000, "2019-11-11T12:00:00Z"),
    ("2021-02-25 20:13:35", SHANGHAI, 1614255215000, "2021-02-25T12:13:35Z"),
    ("2021-02-25 06:44:06", SHANGHAI, 1614206646000, "2021-02-24T22:44:06Z"),
    ("2023-03-01 09:51:27", SHANGHAI, 1677635487000, "2023-03-01T01:51:27Z"),
    ("2021-02-25 20:13:35", UTC, 1614284015000, "2021-02-25T20:13:35Z"),
]

ISO_VARIANTS = [
    "2021-02-25T20:13:35+08:00",
    "2021-02-25 20:13:35+08:00",
    "2021-02-25T20:13:35.000+08:00",
    "2021-02-25T12:13:35.000000Z",
    "2021-02-25T12:13:35.0004999Z",  # sub-millisecond digits are truncated
    "2021-02-25T12:13:35,000Z",
    "2021-02-25T04:13:35-08:00",
    "2021-02-25T12:13:35+00:00",
    "20210225T201335+0800",
    "2021-02-25T20:13:35",  # zone-less -> Asia/Shanghai
    "2021-02-25t12:13:35z",  # RFC 3339 allows lower case
]


@pytest.mark.parametrize(("text", "tz", "ms", "utc"), DOCUMENT_TIMES)
def test_document_formats(text: str, tz: timezone, ms: int, utc: str) -> None:
    assert to_epoch_ms(text, tz) == ms
    assert stdlib_ms(utc) == ms  # my hand arithmetic, checked against the standard library


@pytest.mark.parametrize("text", ISO_VARIANTS)
def test_iso_variants(text: str) -> None:
    assert to_epoch_ms(text, SHANGHAI) == 1614255215000


def test_fraction_is_floored_not_rounded() -> None:
    assert to_epoch_ms("1970-01-01T00:00:00.9999Z") == 999
    assert to_epoch_ms("1969-12-31T23:59:59.5Z") == -500


def test_configured_zone_with_daylight_saving() -> None:
    parse = TimeParser("America/New_York")
    assert parse("2021-07-01 12:00:00") == stdlib_ms("2021-07-01T16:00:00Z")
    assert parse("2021-01-01 12:00:00") == stdlib_ms("2021-01-01T17:00:00Z")
    assert parse("2021-07-01T12:00:00Z") == stdlib_ms("2021-07-01T12:00:00Z")


@pytest.mark.parametrize(
    "text",
    [
        "", "garbage", "2021-02-25", "20210225", "2021-02-25X20:13:35", "2021-02-30 10:00:00",
        "2021-02-25 24:00:00", "2021-02-25 20:13:35+25:00", "2021-02-25 20:13:35 UTC",
        "now", "1614255215000", "2021-02-25T20:13:35+08:00Z", "x" * 10_000, "2021-02-25 \x00:13",
    ],
)
def test_garbage_raises_time_format_error(text: str) -> None:
    with pytest.raises(TimeFormatError, match="not a timestamp"):
        to_epoch_ms(text, SHANGHAI)
    assert issubclass(TimeFormatError, ValueError)


def test_non_string_raises_time_format_error() -> None:
    with pytest.raises(TimeFormatError, match="must be a string"):
        to_epoch_ms(1614255215000)  # type: ignore[arg-type]


def test_error_message_clips_long_input() -> None:
    with pytest.raises(TimeFormatError) as info:
        to_epoch_ms("9" * 500)
    assert len(str(info.value)) < 100


def test_unknown_zone_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown time zone"):
        TimeParser("Mars/Olympus_Mons")
    with pytest.raises(ConfigError):
        zone("../../etc/passwd")


def test_zone_objects_are_cached() -> None:
    assert zone("Asia/Shanghai") is zone("Asia/Shanghai")
    assert zone("UTC") is UTC


def test_memo_is_bounded_and_transparent() -> None:
    parse = TimeParser(SHANGHAI, memo_size=3)
    texts = [f"2021-02-25 20:13:3{i}" for i in range(10)]
    for i, text in enumerate(texts * 2):
        assert parse(text) == 1614255210000 + (i % 10) * 1000
        assert parse.parse(text) == parse(text)
    memo = next(c.cell_contents for c in parse.parse.__closure__ or ()
                if isinstance(c.cell_contents, dict))
    assert len(memo) <= 3
    with pytest.raises(TimeFormatError):
        parse("garbage")
    with pytest.raises(TimeFormatError, match="must be a string"):
        parse(None)  # type: ignore[arg-type]


# --- properties: every supported format round-trips to the same millisecond ---

INSTANTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC))
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timedelta(minutes=m))


def oracle(instant: datetime) -> int:
    return calendar.timegm(instant.utctimetuple()) * 1000 + instant.microsecond // 1000


def fields(local: datetime) -> tuple[str, str]:
    date = f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
    time = f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    return date, time


def offset_text(offset: timedelta, colon: bool) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return f"{sign}{hh:02d}:{mm:02d}" if colon else f"{sign}{hh:02d}{mm:02d}"


@given(INSTANTS, OFFSETS)
def test_roundtrip_extended_with_compact_offset(instant: datetime, offset: timedelta) -> None:
    local = instant.astimezone(timezone(offset)).replace(microsecond=0)
    date, time = fields(local)
    text = f"{date}T{time}{offset_text(offset, colon=False)}"
    assert to_epoch_ms(text) == oracle(instant.replace(microsecond=0))


@given(INSTANTS, OFFSETS)
def test_roundtrip_basic_with_millis(instant: datetime, offset: timedelta) -> None:
    local = instant.astimezone(timezone(offset))
    date, time = fields(local)
    text = (f"{date.replace('-', '')}T{time.replace(':', '')}.{local.microsecond // 1000:03d}"
            f"{offset_text(offset, colon=False)}")
    assert to_epoch_ms(text) == oracle(instant)


@given(INSTANTS)
def test_roundtrip_utc_z_seconds_and_minutes(instant: datetime) -> None:
    date, time = fields(instant)
    assert to_epoch_ms(f"{date}T{time}Z") == oracle(instant.replace(microsecond=0))
    assert to_epoch_ms(f"{date}T{time[:5]}Z") == oracle(instant.replace(second=0, microsecond=0))


@given(INSTANTS, OFFSETS, st.sampled_from(["T", " "]))
def test_roundtrip_colon_offset_with_fraction(instant: datetime, offset: timedelta,
                                             sep: str) -> None:
    local = instant.astimezone(timezone(offset))
    date, time = fields(local)
    text = f"{date}{sep}{time}.{local.microsecond // 1000:03d}{offset_text(offset, colon=True)}"
    assert to_epoch_ms(text) == oracle(instant)


@given(INSTANTS.filter(lambda d: d.year >= 1992))  # Shanghai has had no DST since 1991
def test_roundtrip_zone_less_local_time(instant: datetime) -> None:
    date, time = fields(instant.astimezone(SHANGHAI))
    assert TimeParser(SHANGHAI)(f"{date} {time}") == oracle(instant.replace(microsecond=0))


@given(st.text(max_size=40))
def test_any_text_is_a_time_or_a_time_format_error(text: str) -> None:
    try:
        result = to_epoch_ms(text, SHANGHAI)
    except TimeFormatError:
        return
    assert isinstance(result, int)


# --- AWS Health's RFC 1123 times; the accepted range ---

@pytest.mark.parametrize(("text", "ms"), [
    ("Thu, 27 Aug 2026 13:19:03 GMT", 1_787_836_743_000),
    ("Thu, 27 Jan 2026 13:44:13 GMT", 1_769_521_453_000),  # 27 Jan 2026 is a Tuesday: ignored
    ("Sat, 05 Jun 2016 15:10:09 GMT", 1_465_139_409_000),
    ("5 Jun 2016 15:10:09 UTC", 1_465_139_409_000),
])
def test_rfc1123_with_the_weekday_ignored(text: str, ms: int) -> None:
    assert to_epoch_ms(text) == ms
    assert TimeParser("Asia/Shanghai").parse(text) == ms  # GMT, not the local zone


@pytest.mark.parametrize("text", ["Thu, 27 Foo 2026 13:19:03 GMT", "Thu, 31 Feb 2026 13:19:03 GMT",
                                  "Thu, 27 Aug 2026 13:19:03 +0100", "Thu, 27 Aug 2026"])
def test_rfc1123_garbage_is_refused(text: str) -> None:
    with pytest.raises(TimeFormatError):
        to_epoch_ms(text)


def test_parser_bounds_refuse_times_outside_the_range_and_remember_only_good_ones() -> None:
    now = [1_700_000_000_000]
    parse = TimeParser("UTC", earliest_ms=946_684_800_000, max_future_ms=86_400_000,
                       clock=lambda: now[0]).parse
    with pytest.raises(TimeRangeError, match="not before 2000-01-01T00:00:00Z"):
        parse("1999-12-31T23:59:59Z")
    with pytest.raises(TimeRangeError, match="at most 1 days ahead"):
        parse("2023-11-16T00:00:00Z")  # two days after the clock
    now[0] += 2 * 86_400_000
    assert parse("2023-11-16T00:00:00Z") == 1_700_092_800_000
    assert parse("2000-01-01T00:00:00Z") == 946_684_800_000
