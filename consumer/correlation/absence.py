"""Completion by absence: Azure IMDS Scheduled Events end by leaving the document.

IMDS lists an event as ``Scheduled``, then ``Started``, and then it is simply gone (also when
Azure cancels it before it starts). Event Grid says the same with explicit ``Completed`` and
``Canceled``. :class:`AbsenceTracker` diffs the documents of each VM and emits, for every event
that left, the InstanceEvent the Event Grid adapter would have produced for its end: same vendor,
instance, code, event id; phase ``executed`` (vendor status ``Completed``) if it had been seen
``Started``, else ``canceled`` (``Canceled``); event time the observation time of the first
document without it; ``start_time`` the first ``Started`` observation. Fed to the correlator
beside the adapters' events, both paths pair identically.

Input: the events :mod:`consumer.normalization.azure` makes of the agent's documents. Every one
carries its document's summary (``azure.se.document``: incarnation, observation time, each
EventId's status, code, operation, NotBefore), and a document naming no event of its VM is one
``ScheduledEvents.Document`` event, so the tracker needs any one event of a document to know the
whole document; the others are duplicates. Anything else is ignored (``observe`` returns ``[]``).

Why each disturbance is harmless:

- A forwarder restart resends the same document (same incarnation, later observation): a
  duplicate; the earliest observation stands.
- An out-of-order document (an incarnation lower than one applied) never ends anything: it can
  only move a ``Started`` observation earlier for an event still open.
- With ``lateness_ms``, documents are applied in incarnation order once the VM's newest
  observation is that much past them (or on :meth:`advance` / :meth:`flush`), so any reordering
  within the lateness gives exactly the ends of the ordered sequence. With 0 (the default) a
  newer document applies at once.
- A missed poll leaves a gap in the incarnations. An event last seen ``Scheduled`` that is gone
  after a gap, once its NotBefore has passed, probably ran unseen: it ends ``executed`` with no
  start (``vmevents.absence.start_unseen``), never as a made-up duration. Without a gap, the
  documents are trusted: it was canceled.
- IMDS may restart its incarnations (a redeploy to another host): a lower incarnation observed
  after the newest applied document is a restart, applied as the next document.

State is plain JSON per VM (:meth:`snapshot`, :meth:`restore`, :meth:`drain_changes` for the
state layer) and bounded: at most ``max_vms`` VMs (the least recently observed one is dropped),
``max_events`` open events and ``max_pending`` held documents per VM, and the last ``max_ended``
ended EventIds per VM, remembered so that a late duplicate cannot reopen them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from consumer.model import InstanceEvent, Phase
from consumer.normalization.azure import DOCUMENT_ATTRIBUTE, SOURCE_AGENT
from consumer.normalization.operations import lookup

SOURCE_ABSENCE: Final = "azure.imds_absence"
ATTR_SYNTHETIC: Final = "vmevents.synthetic"
ATTR_INCARNATION: Final = "vmevents.absence.incarnation"
ATTR_LAST_STATUS: Final = "vmevents.absence.last_status"
ATTR_FIRST_SEEN_STARTED: Final = "vmevents.absence.first_seen_started"
ATTR_START_UNSEEN: Final = "vmevents.absence.start_unseen"
STATE_VERSION: Final = 1
STARTED: Final = "Started"
_ENDS: Final[dict[bool, tuple[Phase, str]]] = {True: ("executed", "Completed"),
                                               False: ("canceled", "Canceled")}


@dataclass(frozen=True, slots=True)
class Listed:
    """One event as a document lists it."""

    status: str
    code: str
    operation: str
    not_before: int | None


@dataclass(frozen=True, slots=True)
class Document:
    """One IMDS document of one VM, as the tracker needs it."""

    vm: str
    incarnation: int
    observed: int
    events: Mapping[str, Listed]
    region: str | None
    account_id: str | None


def document_of(event: InstanceEvent) -> Document | None:
    """The document an agent event came from; None for any other event (or a summary that is
    not what the adapter writes)."""
    if event["vendor"] != "azure" or event["source_format"] != SOURCE_AGENT:
        return None
    raw = event["attributes"].get(DOCUMENT_ATTRIBUTE)
    if raw is None:
        return None
    try:
        summary = orjson.loads(raw)
        listed = {str(eid): Listed(str(s), str(c), str(o), nb if type(nb) is int else None)
                  for eid, (s, c, o, nb) in summary["events"].items()}
        incarnation, observed = summary["incarnation"], summary["observed"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if type(incarnation) is not int or type(observed) is not int:
        return None
    return Document(event["instance_id"], incarnation, observed, listed, event["region"],
                    event["account_id"])


class AbsenceTracker:
    """Per-VM diff of Scheduled Events documents -> synthetic end events (module doc).

    ``tracker.observe(event_of_document_with_E_started)`` gives ``[]``;
    ``tracker.observe(event_of_next_document_without_E)`` gives E's ``executed`` end.
    """

    def __init__(self, *, lateness_ms: int = 0, max_vms: int = 100_000, max_events: int = 64,
                 max_pending: int = 16, max_ended: int = 64) -> None:
        if lateness_ms < 0 or min(max_vms, max_events, max_pending, max_ended) < 1:
            raise ValueError("lateness must be >= 0 and every bound >= 1")
        self.lateness_ms = lateness_ms
        self.max_vms = max_vms
        self.max_events = max_events
        self.max_pending = max_pending
        self.max_ended = max_ended
        self._vms: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._changed: set[str] = set()
        self.dropped: dict[str, int] = {"vms": 0, "events": 0, "early_documents": 0}
        """What the bounds cost so far, for metrics: VMs evicted, events that did not fit, held
        documents applied before their lateness passed to make room."""

    def __len__(self) -> int:
        return len(self._vms)

    # -- input ------------------------------------------------------------------------------

    def observe(self, event: InstanceEvent) -> list[InstanceEvent]:
        """Take one normalized event; return the ends it reveals (usually none)."""
        doc = document_of(event)
        if doc is None:
            return []
        vm = self._vm(doc)
        out: list[InstanceEvent] = []
        applied = vm["applied"]
        if applied is not None and doc.incarnation <= applied:
            if doc.observed > vm["applied_observed"] and doc.incarnation < applied:
                self._apply(doc.vm, vm, doc, out, restart=True)  # IMDS restarted its count
            else:
                self._merge_older(doc.vm, vm, doc)
        else:
            self._hold(doc.vm, vm, doc, out)
            self._release(doc.vm, vm, vm["newest"] - self.lateness_ms, out)
        return out

    def advance(self, now_ms: int) -> list[InstanceEvent]:
        """Apply every held document at least ``lateness_ms`` older than ``now_ms`` (the
        caller's watermark or clock)."""
        out: list[InstanceEvent] = []
        for name, vm in list(self._vms.items()):
            if vm["pending"]:
                self._release(name, vm, now_ms - self.lateness_ms, out)
        return out

    def flush(self) -> list[InstanceEvent]:
        """Apply every held document (end of input, offline)."""
        out: list[InstanceEvent] = []
        for name, vm in list(self._vms.items()):
            if vm["pending"]:
                self._release(name, vm, None, out)
        return out

    # -- state --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every VM's state as plain JSON-able values (a deep copy)."""
        return {name: orjson.loads(orjson.dumps(vm)) for name, vm in self._vms.items()}

    def restore(self, states: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Take VMs' states from :meth:`snapshot` (or the state layer); None drops a VM. A state
        of another version is refused, not guessed at."""
        for name, state in states.items():
            if state is None:
                self._vms.pop(name, None)
                continue
            if state.get("version") != STATE_VERSION:
                raise ValueError(f"absence state of {name!r} has version "
                                 f"{state.get('version')!r}, expected {STATE_VERSION}")
            vm = orjson.loads(orjson.dumps(state))
            vm["pending"] = {str(k): v for k, v in vm["pending"].items()}
            self._vms[name] = vm
            self._vms.move_to_end(name)
        self._evict()

    def drain_changes(self) -> list[tuple[str, dict[str, Any] | None]]:
        """(vm, state or None when dropped) of every VM changed since the last call: what the
        state layer writes to its changelog."""
        out = [(name, orjson.loads(orjson.dumps(self._vms[name])) if name in self._vms else None)
               for name in sorted(self._changed)]
        self._changed.clear()
        return out

    # -- internals ------------------------------------------------------------------------------

    def _vm(self, doc: Document) -> dict[str, Any]:
        vm = self._vms.get(doc.vm)
        if vm is None:
            vm = {"version": STATE_VERSION, "applied": None, "applied_observed": None,
                  "newest": doc.observed, "open": {}, "ended": [], "pending": {},
                  "region": doc.region, "account_id": doc.account_id}
            self._vms[doc.vm] = vm
            self._evict()
        else:
            self._vms.move_to_end(doc.vm)
        vm["newest"] = max(vm["newest"], doc.observed)
        vm["region"] = doc.region or vm["region"]
        vm["account_id"] = doc.account_id or vm["account_id"]
        self._changed.add(doc.vm)
        return vm

    def _evict(self) -> None:
        while len(self._vms) > self.max_vms:
            name, _ = self._vms.popitem(last=False)
            self._changed.add(name)
            self.dropped["vms"] += 1

    def _hold(self, name: str, vm: dict[str, Any], doc: Document,
              out: list[InstanceEvent]) -> None:
        key = str(doc.incarnation)
        held = vm["pending"].get(key)
        if held is not None:
            held["observed"] = min(held["observed"], doc.observed)
            return
        if len(vm["pending"]) >= self.max_pending:  # make room: apply the oldest now
            self.dropped["early_documents"] += 1
            self._apply_held(name, vm, min(vm["pending"], key=int), out)
        vm["pending"][key] = {"observed": doc.observed, "events": {
            eid: [e.status, e.code, e.operation, e.not_before] for eid, e in doc.events.items()}}

    def _release(self, name: str, vm: dict[str, Any], upto: int | None,
                 out: list[InstanceEvent]) -> None:
        for key in sorted(vm["pending"], key=int):
            if upto is not None and vm["pending"][key]["observed"] > upto:
                break
            self._apply_held(name, vm, key, out)

    def _apply_held(self, name: str, vm: dict[str, Any], key: str,
                    out: list[InstanceEvent]) -> None:
        held = vm["pending"].pop(key)
        doc = Document(name, int(key), held["observed"],
                       {eid: Listed(*e) for eid, e in held["events"].items()},
                       vm["region"], vm["account_id"])
        if vm["applied"] is not None and doc.incarnation <= vm["applied"]:
            self._merge_older(name, vm, doc)
        else:
            self._apply(name, vm, doc, out)
        self._changed.add(name)

    def _merge_older(self, name: str, vm: dict[str, Any], doc: Document) -> None:
        """A document no newer than the last applied: it may only date a start earlier."""
        for eid, listed in doc.events.items():
            tracked = vm["open"].get(eid)
            if tracked is not None and listed.status == STARTED and \
                    (tracked["started"] is None or doc.observed < tracked["started"]):
                tracked["started"] = doc.observed
                self._changed.add(name)

    def _apply(self, name: str, vm: dict[str, Any], doc: Document, out: list[InstanceEvent],
               *, restart: bool = False) -> None:
        gap = not restart and vm["applied"] is not None and doc.incarnation > vm["applied"] + 1
        opened = vm["open"]
        ended = vm["ended"]
        for eid, tracked in list(opened.items()):
            if eid not in doc.events:
                del opened[eid]
                ended.append(eid)
                out.append(self._end(name, vm, eid, tracked, doc, gap))
        del ended[:-self.max_ended]
        for eid in sorted(doc.events):
            listed = doc.events[eid]
            started = doc.observed if listed.status == STARTED else None
            tracked = opened.get(eid)
            if tracked is None:
                if eid in ended:
                    continue  # a late copy of an event that already ended
                if len(opened) >= self.max_events:
                    self.dropped["events"] += 1
                    continue
                opened[eid] = {"code": listed.code, "operation": listed.operation,
                               "not_before": listed.not_before, "started": started,
                               "first_started": started is not None, "status": listed.status,
                               "incarnation": doc.incarnation}
            else:
                if tracked["started"] is None:
                    tracked["started"] = started
                tracked.update(status=listed.status, incarnation=doc.incarnation,
                               not_before=listed.not_before or tracked["not_before"])
        vm["applied"] = doc.incarnation
        vm["applied_observed"] = doc.observed

    def _end(self, name: str, vm: dict[str, Any], eid: str, tracked: dict[str, Any],
             doc: Document, gap: bool) -> InstanceEvent:
        started = tracked["started"]
        attributes = {ATTR_SYNTHETIC: "absence", ATTR_INCARNATION: str(doc.incarnation),
                      ATTR_LAST_STATUS: tracked["status"]}
        ran = started is not None
        if not ran and gap and tracked["not_before"] is not None and \
                doc.observed >= tracked["not_before"]:
            ran = True
            attributes[ATTR_START_UNSEEN] = "true"
        if tracked["first_started"]:
            attributes[ATTR_FIRST_SEEN_STARTED] = "true"
        phase, status = _ENDS[ran]
        code = tracked["code"]
        return {
            "vendor": "azure", "instance_id": name, "vendor_event_code": code,
            "operation": tracked["operation"], "known": lookup(code) is not None,
            "phase": phase, "vendor_status": status, "event_time": doc.observed,
            "region": vm["region"], "account_id": vm["account_id"],
            "notification_id": f"{name}@{doc.incarnation}"[-128:], "vendor_event_id": eid,
            "level": None, "previous_state": None, "current_state": None, "publish_time": None,
            "not_before": tracked["not_before"], "start_time": started, "end_time": doc.observed,
            "source_format": SOURCE_ABSENCE, "attributes": attributes,
        }


def replay(events: Iterable[InstanceEvent], tracker: AbsenceTracker | None = None
           ) -> list[InstanceEvent]:
    """Every end the events reveal, held documents included (offline use and tests)."""
    if tracker is None:  # not ``or``: an empty tracker is falsy (it has a length)
        tracker = AbsenceTracker()
    out = [end for event in events for end in tracker.observe(event)]
    return out + tracker.flush()
