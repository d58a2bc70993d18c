"""Synthetic raw vendor events in the seed documents' formats, with their ground truth.

Used by the benchmark and the integration tests: each generated operation is a pair of raw
notifications (start, end) whose duration is known here, independently of the correlator.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson

SHANGHAI = timezone(timedelta(hours=8))
JD_PAIRED = ("SystemFailure.Reboot", "SystemFailure.Delete", "InstanceExpiration.Stop",
             "AccountArrearage.Delete", "CreateImage")
ALIYUN_PAIRED = ("SystemFailure.Reboot", "InstanceFailure.Reboot", "SystemMaintenance.Reboot",
                 "SystemFailure.Redeploy")
JD_REGIONS = ("cn-north-1", "cn-east-1", "cn-south-1")
ALIYUN_REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai")


@dataclass(frozen=True)
class Operation:
    """Ground truth of one generated operation."""

    vendor: str
    instance_id: str
    code: str
    started_ms: int
    duration_ms: int
    raw: tuple[bytes, bytes]


def jd_notification(code: str, state: str, instance: str, when: datetime, region: str,
                    seq: int) -> bytes:
    """One JD Cloud notification as its push channel delivers it (``eventTime`` to the second,
    Beijing time without a zone)."""
    local = when.astimezone(SHANGHAI)
    return orjson.dumps({
        "detail": {"eventAction": code, "eventState": state,
                   "eventTime": local.strftime("%Y-%m-%d %H:%M:%S"), "instanceId": instance},
        "detailType": "StatusNotification", "id": f"jd-{seq:012d}", "pin": "devops",
        "region": region, "resources": [instance], "source": "jcloud.vm",
        "time": local.strftime("%Y-%m-%dT%H:%M:%S+0800"), "version": "",
    })


def aliyun_notification(code: str, status: str, instance: str, when: datetime, start: datetime,
                        region: str, seq: int, event_id: str,
                        not_before: datetime | None = None) -> bytes:
    """One Alibaba Cloud ECS notification with its ``eventId``; an ``Executed`` carries its
    ``executeStartTime`` (``start``) and ``executeFinishTime`` (``when``)."""
    local = when.astimezone(SHANGHAI)
    content = {"eventId": event_id, "publishTime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "instanceId": instance, "eventType": code, "eventStatus": status}
    if not_before is not None:
        content["notBefore"] = not_before.strftime("%Y-%m-%dT%H:%M:%SZ")
    if status == "Executed":
        content["executeStartTime"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        content["executeFinishTime"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return orjson.dumps({
        "ver": "1.0", "id": f"ali-{seq:012d}", "product": "ECS",
        "resourceId": f"acs:ecs:{region}:1690700000000030:instance/{instance}",
        "level": "CRITICAL", "name": f"Instance:{code}:{status}", "userId": "1690700000000030",
        "eventTime": local.strftime("%Y%m%dT%H%M%S.000+0800"), "regionId": region,
        "content": content,
    })


def operations(n: int, *, instances: int = 500, seed: int = 7,
               base: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> list[Operation]:
    """``n`` operations over ``instances`` instances; one instance's operations never overlap."""
    rng = random.Random(seed)
    next_free: dict[str, datetime] = {}
    ops = []
    for i in range(n):
        vendor = "jdcloud" if i % 2 == 0 else "aliyun"
        instance = f"i-{vendor[:2]}{rng.randrange(instances):06d}"
        start = max(next_free.get(instance, base), base) + timedelta(seconds=rng.randint(1, 600))
        duration = rng.randint(1, 900)
        end = start + timedelta(seconds=duration)
        next_free[instance] = end
        if vendor == "jdcloud":
            code = rng.choice(JD_PAIRED)
            region = JD_REGIONS[i % 3]
            raw = (jd_notification(code, "Executing", instance, start, region, 2 * i),
                   jd_notification(code, "Executed", instance, end, region, 2 * i + 1))
        else:
            code = rng.choice(ALIYUN_PAIRED)
            region = ALIYUN_REGIONS[i % 3]
            event_id = f"e-{i:010d}"
            raw = (aliyun_notification(code, "Executing", instance, start, start, region, 2 * i,
                                       event_id),
                   aliyun_notification(code, "Executed", instance, end, start, region, 2 * i + 1,
                                       event_id))
        ops.append(Operation(vendor, instance, code, int(start.timestamp() * 1000),
                             duration * 1000, raw))
    return ops


def fleet_burst(n: int, *, event_id: bool, base: datetime, window_ms: int = 60_000,
                lead: timedelta = timedelta(days=3)) -> Iterator[bytes]:
    """A region-wide announcement: ``n`` notifications, one per distinct instance, spread over
    ``window_ms`` from ``base``; each opens an operation that stays pending.

    With ``event_id``: Alibaba ``SystemMaintenance.Reboot`` Scheduled with an ``eventId`` and a
    ``notBefore`` ``lead`` ahead (the correlator decides it on arrival). Without: JD Cloud
    ``SystemFailure.Reboot`` Executing, which has no event id (it waits in the reorder buffer).
    """
    not_before = base + lead
    for i in range(n):
        when = base + timedelta(milliseconds=i * window_ms // n)
        if event_id:
            yield aliyun_notification("SystemMaintenance.Reboot", "Scheduled", f"i-al{i:08d}",
                                      when, when, ALIYUN_REGIONS[i % 3], i, f"e-{i:010d}",
                                      not_before)
        else:
            yield jd_notification("SystemFailure.Reboot", "Executing", f"i-jd{i:08d}", when,
                                  JD_REGIONS[i % 3], i)


def keyed_stream(ops: list[Operation], *, late_start: float = 0.0,
                 seed: int = 11) -> list[tuple[bytes, bytes]]:
    """``(instance id, raw event)`` in time order, as a bridge keyed by instance would deliver.

    ``late_start`` of the operations have their Executed delivered just before their Executing
    (vendors deliver at least once and out of order); other operations keep time order, so an
    instance's consecutive operations never interleave and the ground truth stays unambiguous.
    """
    rng = random.Random(seed)
    timed = []
    for op in ops:
        end = op.started_ms + op.duration_ms
        end_key = (op.started_ms, 0) if rng.random() < late_start else (end, 2)
        key = op.instance_id.encode()
        timed.append((op.started_ms, 1, key, op.raw[0]))
        timed.append((*end_key, key, op.raw[1]))
    timed.sort(key=lambda t: (t[0], t[1]))
    return [(key, raw) for _, _, key, raw in timed]


def stream(ops: list[Operation], *, late_start: float = 0.0, seed: int = 11) -> list[bytes]:
    """Raw events only, in the order of :func:`keyed_stream`."""
    return [raw for _, raw in keyed_stream(ops, late_start=late_start, seed=seed)]


def delivered(ops: list[Operation], *, max_jitter_ms: int = 60_000,
              seed: int = 13) -> list[tuple[int, bytes]]:
    """``(delivery time ms, raw event)`` in delivery order, as a bridge would stamp them.

    Each notification arrives up to ``max_jitter_ms`` after it happened, so different instances'
    notifications swap places; one instance's stay in order (each is at least 1 ms after that
    instance's previous one), so the ground truth needs no reordering within a key.
    """
    rng = random.Random(seed)
    timed = []
    for op in ops:
        timed.append((op.started_ms, op.instance_id, op.raw[0]))
        timed.append((op.started_ms + op.duration_ms, op.instance_id, op.raw[1]))
    timed.sort(key=lambda t: t[0])
    last: dict[str, int] = {}
    out = []
    for when, instance, raw in timed:
        at = max(when + rng.randint(0, max_jitter_ms), last.get(instance, 0) + 1)
        last[instance] = at
        out.append((at, raw))
    out.sort(key=lambda t: t[0])
    return out


def _aliyun_state(state: str, instance: str, when: datetime, region: str, seq: int) -> bytes:
    """An Alibaba ``Instance:StateChange``: only the new state, no event id."""
    return orjson.dumps({
        "ver": "1.0", "id": f"ali-s{seq:012d}", "product": "ECS",
        "resourceId": f"acs:ecs:{region}:1690700000000030:instance/{instance}",
        "level": "INFO", "name": "Instance:StateChange", "userId": "1690700000000030",
        "eventTime": when.astimezone(SHANGHAI).strftime("%Y%m%dT%H%M%S.000+0800"),
        "regionId": region,
        "content": {"resourceId": instance, "resourceType": "ALIYUN::ECS::Instance",
                    "state": state},
    })


@dataclass(frozen=True)
class Backlog:
    """A messy raw backlog: ``records`` are ``(partition, record timestamp ms, raw bytes)``,
    each partition's in the order to produce them; ``operations`` how many operations (each one
    outcome offline) the notifications describe; ``kinds`` that number by kind."""

    records: tuple[tuple[int, int, bytes], ...]
    operations: int
    kinds: tuple[tuple[str, int], ...]

    def write_jsonl(self, path: Path) -> None:
        """The raw records, one a line, in record-timestamp order (for ``vmevents correlate``)."""
        ordered = sorted(self.records, key=lambda r: (r[1], r[0]))
        path.write_bytes(b"".join(raw + b"\n" for _, _, raw in ordered))


def messy_backlog(*, instances: int = 10_000, seed: int = 15, partitions: int = 6,
                  base: datetime = datetime(2026, 1, 1, tzinfo=UTC), duplicate_ends: float = 0.05,
                  drift: timedelta = timedelta(minutes=1)) -> Backlog:
    """A backlog as vendors leave it on a raw topic, deterministic from ``seed``.

    ``instances`` instances (2/3 Alibaba, 1/3 JD Cloud), each with 1 to 3 activities one after
    the other over a few hours from ``base`` (so an instance's operations never overlap):
    Alibaba ``StateChange`` stop/start lifecycles (Stopping, Stopped, Starting, Running: two
    operations, no event id), Alibaba ``SystemMaintenance.Reboot`` announced with an ``eventId``
    (Scheduled, then Executing and Executed or Failed, or Canceled/Avoided), Alibaba
    ``SystemFailure.Reboot`` pairs (``eventId``) and JD ``SystemFailure.Reboot`` pairs (no event
    id). ``duplicate_ends`` of the ends are delivered twice, the copy up to two minutes later on
    any partition. Every record lands on a random partition; each partition is in delivery order,
    with record timestamps shifted by ``drift`` times the partition number relative to event
    time (partitions drifting apart, as vendors' channels do).
    """
    rng = random.Random(seed)
    kinds: Counter[str] = Counter()
    notes: list[tuple[datetime, bytes]] = []  # (delivery time, raw); event time for originals
    seq = 0

    def note(when: datetime, raw: bytes, *, end: bool = False) -> None:
        notes.append((when, raw))
        if end and rng.random() < duplicate_ends:
            notes.append((when + timedelta(seconds=rng.randint(1, 120)), raw))

    def secs(low: int, high: int) -> timedelta:
        return timedelta(seconds=rng.randint(low, high))

    for n in range(instances):
        jd = n % 3 == 2
        instance = f"i-{'jd' if jd else 'al'}{n:08d}"
        region = (JD_REGIONS if jd else ALIYUN_REGIONS)[n % 3]
        t = base + timedelta(seconds=rng.randrange(3600))
        for _ in range(rng.randint(1, 3)):
            t += secs(60, 1800)
            seq += 1
            if jd:
                end = t + secs(5, 900)
                note(t, jd_notification("SystemFailure.Reboot", "Executing", instance, t, region, 2 * seq))
                note(end, jd_notification("SystemFailure.Reboot", "Executed", instance, end, region,
                              2 * seq + 1), end=True)
                kinds["jd failure.reboot"] += 1
                t = end
                continue
            kind = rng.choices(("lifecycle", "maintenance", "failure"), (5, 3, 2))[0]
            if kind == "lifecycle":
                stopped = t + secs(5, 300)
                starting = stopped + secs(60, 3600)
                running = starting + secs(5, 120)
                note(t, _aliyun_state("Stopping", instance, t, region, 4 * seq))
                note(stopped, _aliyun_state("Stopped", instance, stopped, region, 4 * seq + 1), end=True)
                note(starting, _aliyun_state("Starting", instance, starting, region, 4 * seq + 2))
                note(running, _aliyun_state("Running", instance, running, region, 4 * seq + 3), end=True)
                kinds["aliyun lifecycle.stop"] += 1
                kinds["aliyun lifecycle.start"] += 1
                t = running
                continue
            event_id = f"e-{seq:010d}"
            code = "SystemMaintenance.Reboot" if kind == "maintenance" else "SystemFailure.Reboot"
            start = t
            if kind == "maintenance":
                start = t + secs(600, 3600)  # notBefore: the announced start
                note(t, aliyun_notification(code, "Scheduled", instance, t, t, region, 3 * seq, event_id,
                                start))
                ending = rng.choices(("Executed", "Failed", "Canceled", "Avoided"), (6, 1, 2, 1))[0]
                if ending in ("Canceled", "Avoided"):
                    final = t + secs(1, int((start - t).total_seconds()) - 1)
                    note(final, aliyun_notification(code, ending, instance, final, start, region,
                                        3 * seq + 1, event_id, start), end=True)
                    kinds[f"aliyun {code} {ending}"] += 1
                    t = start
                    continue
            else:
                ending = "Executed"
            end = start + secs(5, 900)
            note(start, aliyun_notification(code, "Executing", instance, start, start, region, 3 * seq + 1,
                                event_id))
            note(end, aliyun_notification(code, ending, instance, end, start, region, 3 * seq + 2,
                              event_id), end=True)
            kinds[f"aliyun {code} {ending}"] += 1
            t = end

    per_partition: list[list[tuple[int, bytes]]] = [[] for _ in range(partitions)]
    for when, raw in notes:
        k = rng.randrange(partitions)
        per_partition[k].append((int((when + drift * k).timestamp() * 1000), raw))
    records = tuple((k, ts, raw) for k, recs in enumerate(per_partition)
                    for ts, raw in sorted(recs, key=lambda r: r[0]))
    return Backlog(records, sum(kinds.values()), tuple(sorted(kinds.items())))
