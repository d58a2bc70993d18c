"""Two ends of one operation at the same time: the same answer whichever arrives first.

The seed sample's Alibaba ``LiveMigrationAcrossDDH`` has a ``started`` notice and two ends with
the same times, ``accomplished`` and ``failed``, each carrying its own startTime and endTime.
``make run`` wrote both outcomes while ``vmevents correlate`` wrote one (issue #15): online the
notices came years behind their partition's watermark, so the pair was decided on arrival and
its finished-operation marker, dated from the notice's own time, expired at once behind the
watermark; the other end then found nothing and was reported too. Offline the first end in
digest order stood and the other was dropped as a straggler.

The rules now: a marker lives from the watermark when a late notification finished its
operation; and an end that carries its own start, at the time of an end already reported, is a
duplicate when it says the same, and is reported as well when it says something else (the
vendor's other account of that operation): both outcomes, in every order, online and offline.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.config import load_settings
from consumer.correlator import Correlator, correlator_config, release_key
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer

SEED = Path(__file__).resolve().parents[2] / "deploy" / "local" / "samples" / "seed-events.jsonl"
NOW = 1_700_000_000_000  # processing time: years after the sample's event times
SETTINGS = load_settings({})
NOT_COMPARED = ("decided_at", "notification_ids", "sources", "attributes")


def seed_events() -> list[InstanceEvent]:
    normalizer = Normalizer()
    return [e for line in SEED.read_bytes().splitlines() if line.strip()
            for e in normalizer.normalize_all(line)]


EVENTS = seed_events()
MIGRATION = [e for e in EVENTS if e["vendor_event_code"] == "LiveMigrationAcrossDDH"]
NEWER = max(EVENTS, key=lambda e: e["event_time"])  # of 2023, from another instance


def canonical(outcomes: list[Any]) -> Counter[bytes]:
    return Counter(orjson.dumps({k: v for k, v in o.items() if k not in NOT_COMPARED},
                                option=orjson.OPT_SORT_KEYS) for o in outcomes)


def offline(events: list[InstanceEvent]) -> Counter[bytes]:
    """What ``vmevents correlate`` does: event-time order, the input's own clock, flush."""
    clock = [0]
    corr = Correlator(correlator_config(SETTINGS), clock=lambda: clock[0])
    out = []
    for e in sorted(events, key=release_key):
        clock[0] = release_key(e)[0]
        out += corr.process(e)
    return canonical(out + corr.flush())


def online(events: list[InstanceEvent], gaps: list[int]) -> Counter[bytes]:
    """One partition of the stage: arrival order, processing clock, expiry between events,
    then quiet until the watermark has passed everything."""
    clock = [NOW]
    corr = Correlator(correlator_config(SETTINGS), clock=lambda: clock[0])
    out = []
    for e, gap in zip(events, gaps, strict=True):
        clock[0] += gap
        out += corr.process(e)
        out += corr.expire()
    clock[0] += SETTINGS.correlate_allowed_lateness_ms + 1
    return canonical(out + corr.expire())


def test_the_sample_gives_both_ends_offline() -> None:
    assert [e["phase"] for e in MIGRATION] == ["executing", "executed", "failed"]
    outcomes = [orjson.loads(o) for o in offline(MIGRATION)]
    assert sorted((o["outcome"], o["started_at"], o["finished_at"], o["duration_ms"])
                  for o in outcomes) == [
        ("completed", 1528421137000, 1528421145000, 8000),
        ("failed", 1528421137000, 1528421145000, 8000)]
    # The same two in the whole file, once each.
    whole = [orjson.loads(o) for o, n in offline(EVENTS).items() for _ in range(n)]
    assert sorted(o["outcome"] for o in whole
                  if o["operation"] == "migration.live_across_ddh") == ["completed", "failed"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_order_of_the_migrations_notices_gives_the_offline_answer(
        data: st.DataObject) -> None:
    """Any order, any redelivery, in time (buffered) or years late (decided on arrival)."""
    dups = data.draw(st.lists(st.sampled_from(MIGRATION), max_size=3), label="redelivered")
    late = data.draw(st.booleans(), label="behind a newer event")
    order = data.draw(st.permutations(MIGRATION + dups), label="order")
    arrivals = ([NEWER] if late else []) + list(order)
    gaps = data.draw(st.lists(st.integers(0, 40_000), min_size=len(arrivals),
                              max_size=len(arrivals)), label="gaps ms")
    expected = offline(MIGRATION + ([NEWER] if late else []))
    assert online(arrivals, gaps) == expected


def test_a_late_operations_redelivered_end_is_a_straggler() -> None:
    """The marker of an operation finished by late notifications outlives the watermark."""
    start, accomplished = MIGRATION[0], MIGRATION[1]
    out = online([NEWER, start, accomplished, accomplished, start], [1, 1, 1, 1, 1])
    migration = [orjson.loads(o) for o, n in out.items() for _ in range(n)
                 if orjson.loads(o)["operation"] == "migration.live_across_ddh"]
    assert [(o["outcome"], o["duration_ms"]) for o in migration] == [("completed", 8000)]


def test_the_same_ends_twice_are_one_outcome_each() -> None:
    assert sum(online(MIGRATION * 2, [1] * 6).values()) == 2
