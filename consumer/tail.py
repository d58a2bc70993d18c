"""``vmevents tail TOPIC...``: any of our topics as JSON lines, the way a downstream team sees them.

Each record becomes one line: its coordinates, key, headers and the decoded value.

- Avro values in either wire format are decoded: single-object encoding against the shipped
  ``avro/`` schemas, Confluent framing through ``SCHEMA_REGISTRY_URL``. Timestamp fields of the
  schema are printed as ISO-8601 UTC (:mod:`consumer.jsonout`).
- Anything else (the DLQ's raw vendor bytes, the changelog's JSON, a raw topic) is printed as
  parsed JSON when it is JSON, else as text, else as base64. A tombstone's value is ``null``.

It reads like a downstream consumer: ``read_committed``, no consumer group, nothing committed.
"""

from __future__ import annotations

import argparse
import base64
import functools
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from consumer.config import Settings
from consumer.errors import ConfigError, KafkaRuntimeError
from consumer.jsonout import iso_ms, timestamp_fields
from consumer.logs import kafka_logger
from consumer.runtime.clients import admin_client, registry_fetcher, wrap
from consumer.serde import (
    CONFLUENT_MAGIC,
    SINGLE_OBJECT_MAGIC,
    Decoder,
    SerdeError,
    load_schemas,
)

FILTER_FIELDS = {"vendor": "vendor", "operation": "operation", "outcome": "outcome",
                 "instance": "instance_id"}
"""Command-line filter -> the record field it matches."""


def parse_time(text: str) -> int:
    """``2026-12-01T10:00:00Z`` (or any ISO-8601; no zone means UTC) -> epoch milliseconds."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not an ISO-8601 time (e.g. 2026-12-01T10:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


class ValueReader:
    """Bytes of any of our topics -> a JSON-able value (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        schemas = load_schemas(settings.schema_dir)
        fetch = registry_fetcher(settings)
        self._fetch: Callable[[int], dict[str, Any]] | None = (
            functools.cache(fetch) if fetch is not None else None)
        self.decoder = Decoder(schemas, self._fetch)
        self._ts_by_fingerprint = {s.fingerprint: timestamp_fields(s.raw) for s in schemas.values()}
        self._ts_by_id: dict[int, frozenset[str]] = {}

    def _ts_fields(self, data: bytes) -> frozenset[str]:
        if data[:2] == SINGLE_OBJECT_MAGIC:
            return self._ts_by_fingerprint.get(data[2:10], frozenset())
        schema_id = int.from_bytes(data[1:5], "big")
        fields = self._ts_by_id.get(schema_id)
        if fields is None:
            schema = self._fetch(schema_id) if self._fetch is not None else {}
            fields = self._ts_by_id[schema_id] = (
                timestamp_fields(schema) if schema.get("type") == "record" else frozenset())
        return fields

    def read(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if data[:2] == SINGLE_OBJECT_MAGIC or (data[:1] == CONFLUENT_MAGIC and len(data) >= 5):
            try:
                record = self.decoder.decode(data)
            except SerdeError:
                pass  # not ours after all (or an unknown schema): shown as bytes below
            else:
                for name in self._ts_fields(data):
                    if isinstance(record.get(name), int):
                        record[name] = iso_ms(record[name])
                return record
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(data).decode()}


def _text(data: str | bytes | None) -> str | None:
    if data is None or isinstance(data, str):
        return data
    return data.decode("utf-8", "replace")


def header_dict(msg: Message) -> dict[str, str | None]:
    """A consumed record's headers as text (the last value wins for a repeated name)."""
    headers = msg.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {name: _text(value) for name, value in pairs}


def record_view(msg: Message, reader: ValueReader) -> dict[str, Any]:
    """One record as the line ``tail`` prints."""
    _, ts = msg.timestamp()
    view: dict[str, Any] = {
        "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
        "timestamp": iso_ms(ts) if ts and ts > 0 else None,
        "key": _text(msg.key()),
    }
    headers = header_dict(msg)
    if headers:
        view["headers"] = headers
    view["value"] = reader.read(msg.value())
    return view


@dataclass(frozen=True)
class TailOptions:
    topics: Sequence[str]
    start: str | int = "beginning"
    """``"beginning"``, ``"end"``, or epoch milliseconds."""
    follow: bool = False
    limit: int | None = None
    filters: Mapping[str, frozenset[str]] = field(default_factory=dict)


def matches(value: Any, filters: Mapping[str, frozenset[str]]) -> bool:
    """Every filter must hold; a record without the field (a DLQ or changelog value) does not."""
    if not filters:
        return True
    if not isinstance(value, dict):
        return False
    return all(str(value.get(FILTER_FIELDS[name])) in allowed for name, allowed in filters.items())


def reader_consumer(settings: Settings, **extra: Any) -> Consumer:
    """A read_committed consumer outside any group: it assigns, never subscribes or commits."""
    return Consumer({
        **settings.kafka_common(),
        "group.id": f"vmevents-reader-{time.time_ns()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        # A reader that stops at the end learns it sooner from short fetch waits.
        "fetch.wait.max.ms": 50,
        "logger": kafka_logger("reader"),
        **extra,
    })


def start_positions(settings: Settings, consumer: Consumer, topics: Sequence[str],
                    start: str | int) -> list[TopicPartition]:
    """Every partition of ``topics`` at the requested start; fails on a missing topic."""
    try:
        meta = admin_client(settings).list_topics(timeout=15).topics
    except KafkaException as exc:
        raise wrap(exc, f"cannot reach Kafka at {settings.bootstrap_servers}") from None
    missing = [t for t in topics if t not in meta or not meta[t].partitions]
    if missing:
        raise KafkaRuntimeError(f"no such topic: {', '.join(missing)}")
    tps = [TopicPartition(t, p) for t in topics for p in sorted(meta[t].partitions)]
    if isinstance(start, int):
        for tp in tps:
            tp.offset = start
        try:
            return list(consumer.offsets_for_times(tps, timeout=15))
        except KafkaException as exc:
            raise wrap(exc, "offsets_for_times") from None
    for tp in tps:
        tp.offset = OFFSET_BEGINNING if start == "beginning" else OFFSET_END
    return tps


def read(settings: Settings, options: TailOptions,
         consumer: Consumer | None = None) -> Iterator[Message]:
    """Records of ``options.topics`` from the start; up to each partition's end unless following."""
    consumer = consumer or reader_consumer(settings)
    try:
        tps = start_positions(settings, consumer, options.topics, options.start)
        consumer.assign(tps)
        open_partitions = {(tp.topic, tp.partition) for tp in tps}
        while options.follow or open_partitions:
            for msg in consumer.consume(500, 0.1):
                err = msg.error()
                if err is None:
                    yield msg
                elif err.code() == KafkaError._PARTITION_EOF:
                    open_partitions.discard((msg.topic() or "", msg.partition() or 0))
                elif err.fatal() or err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise KafkaRuntimeError(f"reading {msg.topic()}: {err.str()}")
    finally:
        consumer.close()


def tail(settings: Settings, options: TailOptions, out: BinaryIO) -> int:
    """Print matching records as JSON lines; returns how many were printed."""
    reader = ValueReader(settings)
    printed = 0
    if options.limit == 0:
        return 0
    for msg in read(settings, options):
        view = record_view(msg, reader)
        if not matches(view["value"], options.filters):
            continue
        out.write(orjson.dumps(view) + b"\n")
        printed += 1
        if options.follow:
            out.flush()
        if options.limit is not None and printed >= options.limit:
            break
    out.flush()
    return printed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("topics", nargs="+", metavar="TOPIC",
                   help="normalized, derived (failure.reboot.completed, ...), open operations, DLQ or "
                        "changelog topic")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", dest="start", action="store_const", const="beginning",
                       help="from the oldest record (the default)")
    start.add_argument("--from-end", dest="start", action="store_const", const="end",
                       help="only records written from now on (implies --follow)")
    start.add_argument("--since", metavar="TIME",
                       help="from the first record at or after an ISO-8601 time, e.g. 2026-12-01T10:00:00Z")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep waiting for new records (Ctrl-C stops)")
    p.add_argument("-n", "--max", type=int, metavar="N", help="stop after N printed records")
    for name, record_field in FILTER_FIELDS.items():
        p.add_argument(f"--{name}", action="append", metavar=name.upper(),
                       help=f"only records whose {record_field} is this (repeatable)")


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    """Print records of our topics as JSON lines."""
    if args.max is not None and args.max < 0:
        raise ConfigError(f"--max {args.max} must be 0 or more")
    start: str | int = parse_time(args.since) if args.since else (args.start or "beginning")
    options = TailOptions(
        topics=args.topics, start=start, follow=args.follow or start == "end", limit=args.max,
        filters={name: frozenset(getattr(args, name)) for name in FILTER_FIELDS
                 if getattr(args, name)})
    try:
        tail(settings, options, sys.stdout.buffer)
    except KeyboardInterrupt:
        sys.stdout.buffer.flush()
    return 0
