"""Completion by absence (consumer.correlation.absence): Microsoft's documented flows through the
real adapter, the disturbances the module doc names, and properties: duplicated and reordered
documents give the ordered sequence's ends; both Azure paths give the correlator the same
outcomes."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.correlation.absence import (
    ATTR_START_UNSEEN,
    SOURCE_ABSENCE,
    AbsenceTracker,
    replay,
)
from consumer.correlator import Correlator, CorrelatorConfig, Outcome
from consumer.model import InstanceEvent
from consumer.normalization import Normalizer
from tests.vendor_samples import AZURE_SE_AGENT, AZURE_SE_EVENT_GRID_COMPLETED

N = Normalizer()
T0 = 1_775_945_400_000  # 2026-04-11T22:10:00Z
SEC = 1000
NOT_BEFORE = "Sat, 11 Apr 2026 22:25:00 GMT"  # T0 + 15 min
T_NB = T0 + 15 * 60 * SEC
VM = "8d10da13-8125-4ba9-a717-bf7490507b3d/fleet-rg/westno_0"


def iso(ms: int) -> str:
    from consumer.jsonout import iso_ms
    return iso_ms(ms)


def se(eid: str, status: str, kind: str = "Reboot", not_before: str = NOT_BEFORE) -> dict[str, Any]:
    return {"EventId": eid, "EventStatus": status, "EventType": kind,
            "ResourceType": "VirtualMachine", "Resources": ["WestNO_0"],
            "NotBefore": not_before if status == "Scheduled" else "", "Description": "",
            "EventSource": "Platform", "DurationInSeconds": -1}


def document(incarnation: int, observed: int, *events: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(AZURE_SE_AGENT.obj)
    obj["observedAt"] = iso(observed)
    obj["document"] = {"DocumentIncarnation": incarnation, "Events": list(events)}
    return obj


def normalized(*payloads: dict[str, Any]) -> list[InstanceEvent]:
    return [e for p in payloads for e in N.normalize_obj(p)]


def ends(*payloads: dict[str, Any], **options: Any) -> list[InstanceEvent]:
    return replay(normalized(*payloads), AbsenceTracker(**options))


def test_scheduled_started_gone_is_completed_with_the_started_to_gone_duration() -> None:
    [end] = ends(document(1, T0, se("E1", "Scheduled")),
                 document(2, T_NB + 3 * SEC, se("E1", "Started")),
                 document(3, T_NB + 10 * SEC, se("E1", "Started")),  # e.g. another event's change
                 document(4, T_NB + 70 * SEC))
    assert (end["phase"], end["vendor_status"]) == ("executed", "Completed")
    assert (end["start_time"], end["event_time"]) == (T_NB + 3 * SEC, T_NB + 70 * SEC)
    assert (end["vendor"], end["instance_id"], end["vendor_event_id"]) == ("azure", VM, "E1")
    assert (end["vendor_event_code"], end["operation"]) == ("ScheduledEvents.Reboot",
                                                            "maintenance.reboot")
    assert end["not_before"] == T_NB
    assert end["source_format"] == SOURCE_ABSENCE


def test_canceled_before_start() -> None:
    [end] = ends(document(1, T0, se("E1", "Scheduled")), document(2, T0 + 60 * SEC))
    assert (end["phase"], end["vendor_status"], end["start_time"]) == ("canceled", "Canceled",
                                                                       None)


def test_one_event_ends_while_another_stays() -> None:
    out = ends(document(1, T0, se("E1", "Scheduled"), se("E2", "Scheduled", "Freeze")),
               document(2, T0 + SEC, se("E2", "Scheduled", "Freeze")))
    assert [(e["vendor_event_id"], e["phase"]) for e in out] == [("E1", "canceled")]


def test_forwarder_restart_resending_a_document_changes_nothing() -> None:
    first = [document(1, T0, se("E1", "Scheduled")), document(2, T_NB, se("E1", "Started"))]
    resent = document(2, T_NB + 30 * SEC, se("E1", "Started"))  # agent restarted, same doc
    gone = document(3, T_NB + 60 * SEC)
    assert ends(*first, resent, gone) == ends(*first, gone)
    assert ends(*first, gone, resent, gone) == ends(*first, gone)


def test_an_older_document_never_ends_anything() -> None:
    tracker = AbsenceTracker()
    for event in normalized(document(5, T0, se("E1", "Scheduled"))):
        assert tracker.observe(event) == []
    assert [tracker.observe(e) for e in normalized(document(4, T0 - SEC))] == [[]]
    [end] = [x for e in normalized(document(6, T0 + SEC)) for x in tracker.observe(e)]
    assert end["phase"] == "canceled"


def test_a_missed_poll_past_not_before_is_a_completion_with_unseen_start() -> None:
    [end] = ends(document(1, T0, se("E1", "Scheduled")), document(3, T_NB + 60 * SEC))
    assert (end["phase"], end["start_time"]) == ("executed", None)
    assert end["attributes"][ATTR_START_UNSEEN] == "true"
    [early] = ends(document(1, T0, se("E1", "Scheduled")), document(3, T0 + 60 * SEC))
    assert early["phase"] == "canceled"  # gone before NotBefore: it cannot have run


def test_imds_restarting_its_incarnations_still_ends_events() -> None:
    [end] = ends(document(7, T0, se("E1", "Started")), document(1, T0 + 60 * SEC))
    assert end["phase"] == "executed"


def test_first_seen_started_is_marked() -> None:
    [end] = ends(document(1, T0, se("E1", "Started")), document(2, T0 + 9 * SEC))
    assert end["attributes"]["vmevents.absence.first_seen_started"] == "true"


def test_other_events_are_ignored() -> None:
    tracker = AbsenceTracker()
    assert tracker.observe(N.normalize_obj(AZURE_SE_EVENT_GRID_COMPLETED.obj)[0]) == []
    assert len(tracker) == 0


def test_lateness_holds_documents_until_the_vm_moves_past_them() -> None:
    tracker = AbsenceTracker(lateness_ms=30 * SEC)
    flow = normalized(document(1, T0, se("E1", "Scheduled")), document(3, T0 + 10 * SEC),
                      document(2, T0 + 5 * SEC, se("E1", "Started")))
    assert [x for e in flow for x in tracker.observe(e)] == []  # all within the lateness
    [end] = tracker.advance(T0 + 40 * SEC)
    assert (end["phase"], end["start_time"]) == ("executed", T0 + 5 * SEC)


def test_snapshot_restore_round_trips_through_json() -> None:
    flow = normalized(document(1, T0, se("E1", "Scheduled"), se("E2", "Scheduled")),
                      document(2, T_NB, se("E1", "Started"), se("E2", "Scheduled")),
                      document(3, T_NB + 60 * SEC))
    whole = replay(flow)
    tracker = AbsenceTracker()
    for event in flow[:3]:
        tracker.observe(event)
    saved = orjson.loads(orjson.dumps(tracker.snapshot()))
    assert [vm for vm, _ in tracker.drain_changes()] == [VM]
    again = AbsenceTracker()
    again.restore(saved)
    assert replay(flow[3:], again) == whole
    with pytest.raises(ValueError, match="version"):
        AbsenceTracker().restore({VM: {**saved[VM], "version": 99}})


def test_bounds_on_vms_and_events() -> None:
    tracker = AbsenceTracker(max_vms=2, max_events=1)
    for name in ("a", "b", "c"):
        obj = document(1, T0, se("E1", "Scheduled"), se("E2", "Scheduled"))
        obj["vm"]["name"] = name
        obj["document"]["Events"][0]["Resources"] = obj["document"]["Events"][1]["Resources"] = [
            name]
        for event in normalized(obj):
            tracker.observe(event)
    assert len(tracker) == 2
    assert tracker.dropped["vms"] == 1
    assert tracker.dropped["events"] == 3
    with pytest.raises(ValueError, match="bound"):
        AbsenceTracker(max_vms=0)


# -- properties ----------------------------------------------------------------------------------

@st.composite
def flows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A VM's documents in order: events each present over a run of documents, Scheduled then
    (maybe) Started; incarnations growing by 1 or more (missed polls), times growing."""
    count = draw(st.integers(2, 9))
    incarnation, observed = draw(st.integers(0, 5)), T0
    spans = []
    for index in range(draw(st.integers(1, 4))):
        first = draw(st.integers(0, count - 2))
        last = draw(st.integers(first, count - 1))
        start = draw(st.one_of(st.none(), st.integers(first, last)))
        spans.append((f"E{index}", first, last, start))
    docs = []
    for position in range(count):
        listed = [se(eid, "Started" if start is not None and position >= start else "Scheduled")
                  for eid, first, last, start in spans if first <= position <= last]
        docs.append(document(incarnation, observed, *listed))
        incarnation += draw(st.integers(1, 3))
        observed += draw(st.integers(1, 20 * 60)) * SEC
    return docs


def key(events: list[InstanceEvent]) -> list[tuple[Any, ...]]:
    return sorted((e["vendor_event_id"], e["phase"], e["event_time"], e["start_time"],
                   tuple(sorted(e["attributes"].items()))) for e in events)


@settings(max_examples=300, deadline=None)
@given(flows(), st.data())
def test_any_duplication_and_reordering_within_the_lateness_gives_the_ordered_ends(
        docs: list[dict[str, Any]], data: st.DataObject) -> None:
    ordered = ends(*docs)
    resent = [document(d["document"]["DocumentIncarnation"],
                       N.normalize_obj(d)[0]["event_time"] + data.draw(st.integers(0, 5)) * SEC,
                       *d["document"]["Events"])
              for d in data.draw(st.lists(st.sampled_from(docs), max_size=6))]
    shuffled = data.draw(st.permutations(docs + resent))
    assert key(ends(*shuffled, lateness_ms=10**12)) == key(ordered)
    assert len({e["vendor_event_id"] for e in ordered}) == len(ordered)  # one end per EventId


@settings(max_examples=300, deadline=None)
@given(flows(), st.data())
def test_at_once_duplicates_and_late_older_documents_change_nothing(
        docs: list[dict[str, Any]], data: st.DataObject) -> None:
    stream: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        stream.append(doc)
        stream += data.draw(st.lists(st.sampled_from(docs[: index + 1]), max_size=2))
    assert key(ends(*stream)) == key(ends(*docs))


# -- both Azure paths, one outcome ---------------------------------------------------------------

def grid(eid: str, status: str, when: int) -> dict[str, Any]:
    obj = copy.deepcopy(AZURE_SE_EVENT_GRID_COMPLETED.obj)
    obj["eventTime"] = iso(when)
    info = obj["data"]["resourceInfo"]
    info["name"] = eid
    info["id"] = ("/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/"
                  "providers/Microsoft.Compute/virtualMachineScaleSets/WestNO")
    info["properties"] = {**se(eid, status if status in ("Scheduled", "Started") else "Started"),
                          "EventStatus": status}
    return obj


def correlate(events: list[InstanceEvent]) -> list[Outcome]:
    """The correlator alone: it tracks the documents itself (the agent's placeholder documents
    included) and pairs the ends they reveal like any notification."""
    clock = [0]
    correlator = Correlator(CorrelatorConfig(), clock=lambda: clock[0])
    out: list[Outcome] = []
    for event in sorted(events, key=lambda e: e["event_time"]):
        clock[0] = max(clock[0], event["event_time"])
        out += correlator.process(event)
    return out + correlator.flush()


def imds_path(*docs: dict[str, Any]) -> list[Outcome]:
    return correlate(normalized(*docs))


def facts(outcomes: list[Outcome]) -> list[tuple[Any, ...]]:
    return [(o["outcome"], o["operation"], o["vendor_event_id"], o["instance_id"],
             o["started_at"], o["finished_at"], o["duration_ms"]) for o in outcomes]


@pytest.mark.parametrize("canceled", [False, True], ids=["completed", "canceled"])
def test_the_imds_and_event_grid_paths_give_the_same_outcome(canceled: bool) -> None:
    t1, t2, t3 = T0, T_NB + 2 * SEC, T_NB + 95 * SEC
    if canceled:
        via_imds = imds_path(document(1, t1, se("E1", "Scheduled")), document(2, t3))
        via_grid = correlate(normalized(grid("E1", "Scheduled", t1), grid("E1", "Canceled", t3)))
    else:
        via_imds = imds_path(document(1, t1, se("E1", "Scheduled")),
                             document(2, t2, se("E1", "Started")), document(3, t3))
        via_grid = correlate(normalized(grid("E1", "Scheduled", t1), grid("E1", "Started", t2),
                                        grid("E1", "Completed", t3)))
    assert facts(via_imds) == facts(via_grid)
    [(outcome, *_rest, duration)] = facts(via_imds)
    assert (outcome, duration) == (("canceled", None) if canceled else ("completed", t3 - t2))


# -- in the correlator: state written, restored and rolled back with the rest -------------------

def flow() -> list[InstanceEvent]:
    return normalized(document(1, T0, se("E1", "Scheduled")),
                      document(2, T_NB + 2 * SEC, se("E1", "Started")),
                      document(3, T_NB + 95 * SEC),  # E1 gone: completed
                      document(4, T_NB + 99 * SEC))  # nothing of this VM: no outcome


def test_a_document_naming_no_event_of_its_vm_decides_nothing_itself() -> None:
    outcomes = correlate(flow())
    assert [(o["outcome"], o["vendor_event_id"]) for o in outcomes] == [("completed", "E1")]


def test_the_tracker_state_restores_from_the_changelog_midway() -> None:
    events = flow()
    whole = facts(correlate(events))
    clock = [T0]
    first = Correlator(CorrelatorConfig(), clock=lambda: clock[0])
    out: list[Outcome] = []
    log: dict[str, bytes | None] = {}
    for event in events[:2]:
        out += first.process(event)
        log.update(first.drain_changes())
    assert any(k.startswith("a|") for k in log)
    second = Correlator(CorrelatorConfig(), clock=lambda: clock[0])  # a restart: only the log
    for key, value in log.items():
        second.restore(key, value)
    assert second.counters["restore_skipped"] == 0
    for event in events[2:]:
        clock[0] = max(clock[0], event["event_time"])
        out += second.process(event)
    assert facts(out + second.flush()) == whole


def test_an_aborted_batch_is_replayed_and_decides_again() -> None:
    """The document that ends E1 is in a batch whose transaction aborts: the rollback puts the
    tracker back, so the replayed batch reveals the end again (without it, the tracker would
    take the replay for a resent document and the end would be lost)."""
    events = flow()
    clock = [T0]
    corr = Correlator(CorrelatorConfig(), clock=lambda: clock[0])
    for event in events[:2]:
        corr.process(event)
    corr.drain_changes()
    corr.commit_point()
    lost = corr.process(events[2])
    corr.drain_changes()
    assert [o["outcome"] for o in lost] == ["completed"]
    corr.rollback()  # the transaction that carried it aborted
    again = corr.process(events[2])
    assert facts(again) == facts(lost)
