"""The changelog's keys and values: how the correlator's state is written and read back.

The changelog is private to this service (only the correlator that wrote a partition's state
ever reads it back), so it is not a contract that needs a registry; its values carry their own
format version and are read with a default for every field added later. Every value carries
what its restore needs: nothing is looked up in tables that may change between versions.

- ``p|<operation key>``: an open operation, binary (format 3, :func:`encode_pending`). Between
  batches the store keeps it in memory in exactly this form: a million operations announced by
  one maintenance notice cost a few hundred bytes each and restore without decoding. Formats 1
  (a JSON object) and 2 (format 3 without the operation when it was the code table's) still
  read, so a state written before an upgrade restores.
- ``d|<operation key>``: a finished-operation marker (JSON).
- ``b|<t>|<rank>|<digest>[|f]``: a notification in the reorder buffer (a JSON array).
- ``w|``: the partition's watermark and upstream progress (JSON).
- ``a|<vm>``: what the completion-by-absence tracker holds of one VM's Scheduled Events
  documents (JSON, see :mod:`consumer.correlation.absence`).

The JSON values are small and readable with any console consumer when debugging a stuck
operation.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from typing import Any, Final, cast

import orjson

from consumer.correlation.objects import (
    NO_ATTRIBUTES,
    STATE_VALUES,
    DoneMarker,
    OpState,
    PendingOp,
    Tally,
    tally,
)
from consumer.correlation.outcome import UNKNOWN_OPERATION, OutcomeKind
from consumer.model import InstanceEvent, SourceRef
from consumer.normalization.operations import OPERATIONS

PENDING_PREFIX: Final = "p|"
DONE_PREFIX: Final = "d|"
BUFFER_PREFIX: Final = "b|"
WATERMARK_KEY: Final = "w|"
ABSENCE_PREFIX: Final = "a|"

FORMAT_VERSION: Final = 1
"""Format of the JSON changelog values (markers; open operations before format 2)."""
PENDING_FORMAT: Final = 3
"""Format of an open operation's changelog value: the first byte of :func:`encode_pending`."""
CURRENT_PENDING: Final = bytes((PENDING_FORMAT,))
_FORMAT2: Final = 2
_V2: Final = bytes((_FORMAT2,))
_BINARY_FORMATS: Final = frozenset((_FORMAT2, PENDING_FORMAT))

OPERATION_NAMES: Final = (
    "arrearage.delete", "arrearage.stop", "burstable.performance_mode_change",
    "burstable.performance_restricted", "disk.error_detected", "disk.stalled",
    "expiration.delete", "expiration.stop", "failure.delete", "failure.fault",
    "failure.gpu_fault", "failure.local_disk_fault", "failure.reboot", "failure.redeploy",
    "failure.removed_from_ag", "image.create", "instance_failure.reboot",
    "lifecycle.state_change", "maintenance.host", "maintenance.isolate_local_disk",
    "maintenance.live_migration", "maintenance.network", "maintenance.power",
    "maintenance.reboot", "maintenance.reboot_isolate_error_disk",
    "maintenance.reboot_reinit_error_disk", "maintenance.redeploy", "maintenance.retirement",
    "maintenance.stop", "maintenance.terminate", "migration.live_across_ddh",
    "preemptible.interruption", "preemptible.rebalance_recommendation", "lifecycle.create",
    "lifecycle.delete", "lifecycle.restart", "lifecycle.start", "lifecycle.stop",
    UNKNOWN_OPERATION,
)
"""Operation names a format-3 value may hold as their index here (one or two bytes instead of
twenty, a million times). Append only: a written index must keep its name for ever
(``tests/unit/test_state_store.py`` holds the list as it was). A name not here is written out."""
_OPERATION_INDEX: Final = {name: i for i, name in enumerate(OPERATION_NAMES)}


# -- open operations ---------------------------------------------------------------------------


def encode_pending(op: PendingOp) -> bytes:
    """Format 3: a fixed head, then a JSON array of the rest.

    Vendor, instance id, code and vendor event id are usually the key's own parts
    (``vendor|instance|code[|event id]``); then the key is not repeated in the value, only the
    lengths needed to cut it (flag ``_IN_KEY``). The operation is an index into
    :data:`OPERATION_NAMES`, or its name.

    The head is ``<version:u8><deadline:i64><last_when:i64><timeout_ms:i64><state:u8>
    <flags:u8>`` (little-endian): the deadline sits at a fixed offset so the store can schedule a
    restored operation without decoding it. The array holds the strings, the optional times and
    the lists, in the order :func:`decode_pending` unpacks, trailing nulls left out (an
    announced operation stops after its notice times). Sources are flattened to ``topic,
    partition, offset`` triples.
    """
    sources = op.sources
    code, eid = op.code, op.vendor_event_id
    flags = (_BY_ID if op.by_id else 0) | (_KNOWN if op.known else 0)
    ident: list[str | int | None] = [op.vendor, op.instance_id, code]
    if op.key == (f"{op.vendor}|{op.instance_id}|{code}" if eid is None
                  else f"{op.vendor}|{op.instance_id}|{code}|{eid}"):
        # The key already holds them: their lengths are enough to cut them out of it.
        flags |= _IN_KEY
        ident = [None, len(op.instance_id), len(code)]
        eid = None
    operation = _OPERATION_INDEX.get(op.operation, op.operation)
    tail = [*ident, operation, op.region, op.account_id, op.nids or None,
            [v for src in sources for v in (src["topic"], src["partition"], src["offset"])]
            if sources else None,
            op.notice_at, op.not_before, eid, op.start_at,
            op.attributes or None, op.end_at, op.end_kind, op.from_state, op.to_state]
    while tail[-1] is None:
        tail.pop()
    return _HEAD.pack(PENDING_FORMAT, op.deadline, op.last_when, op.timeout_ms,
                      _STATE_INDEX[op.state], flags) + orjson.dumps(tail)


def decode_pending(key: str, value: bytes) -> PendingOp:
    """Read format 3, 2 or 1 (a JSON object)."""
    if value[:1] == b"{":
        return _decode_v1(key, value)
    version, deadline, last_when, timeout_ms, state, flags = _HEAD.unpack_from(value)
    if version not in _BINARY_FORMATS:
        raise ValueError(f"unknown open-operation format {version}")
    tail: list[Any] = orjson.loads(memoryview(value)[_HEAD.size:])
    if len(tail) < _TAIL_MIN:
        raise ValueError("open operation without its identity")
    tail.extend([None] * (_TAIL_LEN - len(tail)))
    (vendor, instance_id, code, operation, region, account_id, nids, flat, notice_at,
     not_before, vendor_event_id, start_at, attributes, end_at, end_kind, from_state,
     to_state) = tail
    if flags & _IN_KEY:
        v = key.index("|")
        i = v + 1 + instance_id
        c = i + 1 + code
        vendor, instance_id, code = key[:v], key[v + 1:i], key[i + 1:c]
        vendor_event_id = key[c + 1:] if len(key) > c else None
    op = PendingOp.__new__(PendingOp)
    op.key = key
    op.state = _STATES[state]
    op.by_id = bool(flags & _BY_ID)
    op.known = bool(flags & _KNOWN)
    op.vendor, op.instance_id, op.code = vendor, instance_id, code
    op.operation = _operation(operation, code)
    op.region, op.account_id, op.vendor_event_id = region, account_id, vendor_event_id
    op.notice_at, op.not_before, op.start_at, op.end_at = notice_at, not_before, start_at, end_at
    op.end_kind, op.from_state, op.to_state = end_kind, from_state, to_state
    op.last_when, op.deadline, op.timeout_ms = last_when, deadline, timeout_ms
    op.nids = nids or []
    op.sources = [SourceRef(topic=flat[i], partition=flat[i + 1], offset=flat[i + 2])
                  for i in range(0, len(flat), 3)] if flat else []
    op.attributes = attributes or NO_ATTRIBUTES
    return op


def _operation(stored: int | str | None, code: str) -> str:
    """The operation a value names: an index (format 3), a name, or nothing (format 2: the code
    table's at the time; a code no longer in the table is ``unknown`` rather than a failed
    restore)."""
    if type(stored) is int:
        return OPERATION_NAMES[stored]
    if stored is None:
        spec = OPERATIONS.get(code)
        return UNKNOWN_OPERATION if spec is None else spec.operation
    return cast("str", stored)


def _decode_v1(key: str, value: bytes) -> PendingOp:
    d: dict[str, Any] = orjson.loads(value)
    op = PendingOp.__new__(PendingOp)
    op.key = key
    op.state = OpState(d["state"])
    op.by_id = d["by_id"]
    op.vendor = d["vendor"]
    op.instance_id = d["instance_id"]
    op.code = d["code"]
    op.operation = d["operation"]
    op.known = d.get("known", True)
    op.region = d.get("region")
    op.account_id = d.get("account_id")
    op.vendor_event_id = d.get("vendor_event_id")
    op.notice_at = d.get("notice_at")
    op.not_before = d.get("not_before")
    op.start_at = d.get("start_at")
    op.end_at = d.get("end_at")
    op.end_kind = cast("OutcomeKind | None", d.get("end_kind"))
    op.from_state = d.get("from_state")
    op.to_state = d.get("to_state")
    op.last_when = d["last_when"]
    op.deadline = d["deadline"]
    op.timeout_ms = d.get("timeout_ms", 0)
    op.nids = d.get("nids", [])
    op.sources = d.get("sources", [])
    op.attributes = d.get("attributes") or NO_ATTRIBUTES
    return op


_HEAD: Final = struct.Struct("<BqqqBB")
PENDING_HEAD_BYTES: Final = _HEAD.size
"""A binary value is longer than its head: the head alone is not an operation."""
_STATE: Final = 25  # offsets in the head
_FLAGS: Final = 26
_DEADLINE: Final = struct.Struct("<q")
"""The deadline in a binary value, at offset 1."""
_TAIL_LEN: Final = 17
_TAIL_MIN: Final = 3  # vendor, instance id, code (or the lengths that cut them from the key)
_BY_ID: Final = 1
_KNOWN: Final = 2
_IN_KEY: Final = 4
"""Vendor, instance id, code and vendor event id are the operation key's parts: the tail holds
the lengths of the instance id and the code instead."""
_STATES: Final = tuple(OpState)
_STATE_INDEX: Final = {state: i for i, state in enumerate(_STATES)}


def pending_tally(key: str, value: bytes) -> Tally:
    """:func:`~consumer.correlation.objects.tally` of an encoded open operation, read without
    building the operation (a restored million is counted before the partition is ready)."""
    if value[:1] != CURRENT_PENDING and value[:1] != _V2:
        return tally(decode_pending(key, value))
    tail: list[Any] = orjson.loads(memoryview(value)[_HEAD.size:])
    vendor, stored = tail[0], tail[3] if len(tail) > 3 else None
    if value[_FLAGS] & _IN_KEY:
        v = key.index("|")
        vendor = key[:v]
        i = v + 2 + tail[1]
        code = key[i:i + tail[2]]
    else:
        code = tail[2]
    state = _STATES[value[_STATE]]
    announced = state is OpState.ANNOUNCED and len(tail) > 9
    return ((vendor, _operation(stored, code), STATE_VALUES[state]),
            tail[9] if announced else None)



def pending_deadline(value: bytes) -> int:
    """The deadline of an encoded open operation, read without decoding the rest."""
    if value[:1] == b"{":
        deadline: int = orjson.loads(value)["deadline"]
        return deadline
    return cast("int", _DEADLINE.unpack_from(value, 1)[0])


def check_pending(key: str, value: bytes) -> bytes:
    """``value`` in the current format, ready to hold as is (formats 1 and 2 are converted);
    raises ValueError, KeyError or TypeError for a value that is not an open operation."""
    if value[:1] == CURRENT_PENDING and len(value) > PENDING_HEAD_BYTES:
        return value
    return encode_pending(decode_pending(key, value))


# -- finished-operation markers ----------------------------------------------------------------


def encode_marker(marker: DoneMarker) -> bytes:
    """The marker's plain view (:meth:`DoneMarker.as_dict`: only an operation that ended without
    its end keeps what its late end completes) with the format version."""
    return orjson.dumps({"v": FORMAT_VERSION, **marker.as_dict()})


def decode_marker(value: bytes) -> DoneMarker:
    d: dict[str, Any] = orjson.loads(value)
    return DoneMarker(d.get("first", d["last"]), d["last"], d.get("open_end", False),
                      d.get("by_id", False), d["expires"], d.get("start"), d.get("notice"),
                      d.get("from_state"), tuple(d.get("older", ())), d.get("ends", 0))


# -- the reorder buffer's notifications ------------------------------------------------------

_FIELDS: Final = (
    "vendor", "instance_id", "vendor_event_code", "operation", "known", "phase", "event_time",
    "region", "account_id", "notification_id", "vendor_event_id", "previous_state",
    "current_state", "publish_time", "not_before", "start_time", "end_time", "attributes",
)
"""What the correlator reads of a notification, in the order of its compact encoding.
``vendor_status``, ``level`` and ``source_format`` are not read by the correlator: not stored."""


def notification_core(event: InstanceEvent) -> bytes:
    """The notification without its Kafka coordinates: what makes two deliveries one notification
    (its digest is the buffer's tiebreak, so a redelivery lands on the same entry)."""
    return orjson.dumps([event[name] for name in _FIELDS])


def notification_digest(core: bytes) -> str:
    """The release order's tiebreak among notifications of one time and rank."""
    return blake2b(core, digest_size=8).hexdigest()


def encode_notification(core: bytes, event: InstanceEvent) -> bytes:
    """A JSON array: the fields of ``_FIELDS`` then ``source`` (times as ints, ~200 bytes)."""
    src = event.get("source")
    if src is None:
        return core[:-1] + b",null]"
    return core[:-1] + b"," + orjson.dumps(src) + b"]"


def decode_notification(value: bytes) -> InstanceEvent:
    values: list[Any] = orjson.loads(value)
    event: dict[str, Any] = dict(zip(_FIELDS, values, strict=False))
    event["source"] = values[len(_FIELDS)]
    event["vendor_status"] = event["level"] = None
    event["source_format"] = ""
    return cast("InstanceEvent", event)


# -- the watermark -------------------------------------------------------------------------------

Sources = dict[str, tuple[int, bool]]
"""Upstream progress: raw partition -> (newest notification time normalized, caught up)."""


def encode_meta(max_time: int, watermark: int, sources: Sources) -> bytes:
    meta: dict[str, Any] = {"max": max_time, "w": watermark}
    if sources:
        meta["src"] = sources
    return orjson.dumps(meta)


def decode_meta(value: bytes) -> tuple[int, int, Sources]:
    d = orjson.loads(value)
    return (int(d["max"]), int(d["w"]),
            {src: (int(t), bool(c)) for src, (t, c) in d.get("src", {}).items()})


DECODE_ERRORS: Final = (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError,
                        struct.error)
"""What reading a value that is not what its key says raises."""
