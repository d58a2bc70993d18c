"""Azure VM events -> InstanceEvents: Scheduled Events (agent envelope, Event Grid) and Resource
Health (Activity Log records through Event Hubs, HealthResources Event Grid events).

Instance ids. IMDS names VMs by name, Event Grid and the Activity Log by ARM id (the Activity
Log in upper case); a scale set VM is ``virtualMachineScaleSets/<set>/virtualMachines/<n>`` in
ARM and ``<set>_<n>`` in IMDS. Every path gives the one key ``<subscription>/<resource
group>/<vm name>`` in lower case (``<set>_<n>`` for scale set VMs), so the paths join. A key
longer than an identifier may be is cut and suffixed with a digest of the whole, the same way
on every path.

Scheduled Events. IMDS documents carry no time and no VM identity, so the agent (``vmevents
agent azure``) wraps each one in the envelope below, version 1::

    {"vmeventsEnvelope": "azure.scheduledevents", "version": 1,
     "observedAt": "2026-04-11T22:10:00.123Z",
     "vm": {"vmId": "...", "name": "web_3", "resourceId": "/subscriptions/...", "location": "...",
            "subscriptionId": "...", "resourceGroupName": "...", "vmScaleSetName": "web"},
     "document": {"DocumentIncarnation": 2, "Events": [...]}}

``observedAt`` (when the document was read, UTC) is the event time; ``vm`` is IMDS
``metadata/instance/compute``. Events are broadcast to an availability set or placement group,
so only those whose ``Resources`` name this VM become events (a document lists the others for
their own agents). Code ``ScheduledEvents.<EventType>`` (``ScheduledEvents.User.<EventType>``
when ``EventSource`` is User and the table knows it); a Freeze whose description names Live
Migration takes the operation of ``ScheduledEvents.Freeze.LiveMigration`` but keeps its code,
so its notifications still pair. ``EventId`` is the vendor event id, ``NotBefore`` (RFC 1123,
``""`` once Started) ``not_before``. Scheduled -> scheduled, Started -> executing.

IMDS never says an event ended: it leaves the document. Each event therefore carries the
document's summary in ``attributes["azure.se.document"]`` (incarnation, observation time, and
per EventId its status, code, operation and NotBefore), and a document naming no event of this
VM becomes one ``ScheduledEvents.Document`` event holding only that summary:
:mod:`consumer.correlation.absence` turns a disappearance into the end the Event Grid path
states explicitly.

Event Grid ``Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted``
(Event Grid or CloudEvents schema): ``data.resourceInfo`` is ``{id, name: <EventId>,
properties: <the IMDS event fields>}``; Completed -> executed, Canceled -> canceled; one event per
VM in ``Resources`` (the set's id names the resource group), else the VM ``resourceInfo.id``
names.

Resource Health. Activity Log records (``{"records": [...]}``, category ``ResourceHealth``):
``ResourceHealth.<type>`` (Downtime -> health.unavailable): Activated, InProgress, Updated ->
executing, Resolved -> executed, Pending -> scheduled; both property spellings (``type``,
``currentHealthStatus`` and the newer ``healthEventType``, ``healthStatus``). HealthResources
``AvailabilityStatusChanged``: to Unavailable or Degraded -> executing, to Available ->
executed (previous/current state kept), to Unknown -> no phase. ``ResourceAnnotated``: code =
the annotation (with its ``VirtualMachine`` prefix); PlannedFreeze* and LiveMigration* are one
operation each, their suffix the status. Records of other categories or of resources that are not
VMs are skipped; a batch with nothing left is out of scope.
"""

from __future__ import annotations

import hashlib
from typing import Final

import orjson

from consumer.errors import InvalidEvent, OutOfScope
from consumer.model import InstanceEvent, Phase
from consumer.normalization.fields import (
    MAX_ID_LENGTH,
    JsonObject,
    TimeParse,
    attr_value,
    build,
    required_object,
    required_text,
    text,
    time_or_none,
)
from consumer.normalization.operations import OPERATIONS

SOURCE_AGENT: Final = "azure.imds_agent"
SOURCE_EVENT_GRID: Final = "azure.event_grid"
SOURCE_ACTIVITY_LOG: Final = "azure.activity_log"

ENVELOPE_KEY: Final = "vmeventsEnvelope"
ENVELOPE_KIND: Final = "azure.scheduledevents"
ENVELOPE_VERSION: Final = 1

EG_PREFIX: Final = "Microsoft.ResourceNotifications."
SCHEDULED_EVENT_EMITTED: Final = EG_PREFIX + "MaintenanceResources.ScheduledEventEmitted"
AVAILABILITY_CHANGED: Final = EG_PREFIX + "HealthResources.AvailabilityStatusChanged"
RESOURCE_ANNOTATED: Final = EG_PREFIX + "HealthResources.ResourceAnnotated"

SE_PREFIX: Final = "ScheduledEvents."
DOCUMENT_CODE: Final = "ScheduledEvents.Document"
DOCUMENT_ATTRIBUTE: Final = "azure.se.document"
"""Attribute holding the summary of the IMDS document an event came from (JSON)."""
LIVE_MIGRATION_CODE: Final = "ScheduledEvents.Freeze.LiveMigration"

_SE_PHASES: Final[dict[str, Phase]] = {"Scheduled": "scheduled", "Started": "executing",
                                       "Completed": "executed", "Canceled": "canceled"}
_HEALTH_PHASES: Final[dict[str, Phase]] = {
    "Activated": "executing", "InProgress": "executing", "Updated": "executing",
    "Resolved": "executed", "Pending": "scheduled"}
_AVAILABILITY_PHASES: Final[dict[str, Phase]] = {
    "Unavailable": "executing", "Degraded": "executing", "Available": "executed"}
_ANNOTATION_FAMILIES: Final[dict[str, dict[str, Phase]]] = {
    "VirtualMachinePlannedFreeze": {"Started": "executing", "Succeeded": "executed",
                                    "Failed": "failed"},
    "VirtualMachineLiveMigration": {"Succeeded": "executed", "Failure": "failed",
                                    "Failed": "failed"},
}
_VM_PREFIX: Final = "VirtualMachine"
_SE_KEPT: Final = ("EventType", "ResourceType", "Description", "EventSource",
                   "DurationInSeconds")


# -- identity ----------------------------------------------------------------------------------

def vm_key(subscription: str, resource_group: str, name: str) -> str:
    """The instance id of a VM on every Azure path: ``<subscription>/<group>/<name>``, lower case,
    cut to an identifier's length with a digest of the whole when longer."""
    key = f"{subscription}/{resource_group}/{name}".lower()
    if len(key) <= MAX_ID_LENGTH:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[:MAX_ID_LENGTH - 17]}~{digest}"


def parse_arm_id(arm_id: str) -> tuple[str, str, str | None]:
    """(subscription, resource group, VM name or None) of an ARM id, any case. A scale set VM
    (``virtualMachineScaleSets/<set>/virtualMachines/<n>``) is named ``<set>_<n>`` as IMDS names
    it; a nested provider's suffix (``.../providers/Microsoft.ResourceHealth/availabilityStatuses/
    current``) is the VM's; an id of something that is not a VM gives None as the name."""
    parts = arm_id.strip("/").split("/")
    lower = [p.lower() for p in parts]
    try:
        subscription = parts[lower.index("subscriptions") + 1]
        group = parts[lower.index("resourcegroups") + 1]
    except (ValueError, IndexError):
        raise InvalidEvent(f"azure: {arm_id[:80]!r} is not an ARM resource id") from None
    name: str | None = None
    if "microsoft.compute" in lower:
        start = lower.index("microsoft.compute") + 1
        end = lower.index("providers", start) if "providers" in lower[start:] else len(lower)
        tail, raw = lower[start:end], parts[start:end]  # without a nested provider's suffix
        if len(tail) == 2 and tail[0] == "virtualmachines":
            name = raw[1]
        elif len(tail) == 4 and tail[0] == "virtualmachinescalesets" and \
                tail[2] == "virtualmachines":
            name = f"{raw[1]}_{raw[3]}"
    return subscription, group, name


# -- Scheduled Events ----------------------------------------------------------------------------

def scheduled_code(event: JsonObject) -> str:
    """``ScheduledEvents.<EventType>``, or ``.User.<EventType>`` for a user-initiated event the
    table knows."""
    kind = required_text(event.get("EventType"), "EventType", "azure: event.")
    user = f"{SE_PREFIX}User.{kind}"
    return user if event.get("EventSource") == "User" and user in OPERATIONS else SE_PREFIX + kind


def _scheduled_operation(code: str, event: JsonObject) -> str | None:
    """The refined operation of a Freeze that is a live migration, else None (the code's)."""
    description = event.get("Description")
    if code == SE_PREFIX + "Freeze" and type(description) is str and \
            "live migration" in description.lower():
        return OPERATIONS[LIVE_MIGRATION_CODE].operation
    return None


def _scheduled_event(event: JsonObject, instance: str, event_time: int, source_format: str,
                     parse_time: TimeParse, attributes: dict[str, str]) -> InstanceEvent:
    where = "azure: event."
    code = scheduled_code(event)
    status = required_text(event.get("EventStatus"), "EventStatus", where)
    for key in _SE_KEPT:
        if (kept := attr_value(event.get(key))) is not None:
            attributes[key] = kept
    resources = event.get("Resources")
    if type(resources) is list:
        attributes["Resources"] = ",".join(str(r) for r in resources)
    out = build("azure", source_format, code, "EventType", where, instance, event_time, status,
                attributes)
    out["phase"] = _SE_PHASES.get(status)
    out["operation"] = _scheduled_operation(code, event) or out["operation"]
    out["vendor_event_id"] = required_text(event.get("EventId"), "EventId", where)
    out["not_before"] = time_or_none(event.get("NotBefore"), "NotBefore", where, parse_time)
    return out


def _names(event: JsonObject) -> list[str]:
    resources = event.get("Resources")
    return [r for r in resources if type(r) is str and r] if type(resources) is list else []


def adapt_agent(obj: JsonObject, parse_time: TimeParse,
                received_ms: int | None = None) -> list[InstanceEvent]:
    """An IMDS Scheduled Events document in the agent's envelope (module doc)."""
    where = "azure: "
    if obj.get(ENVELOPE_KEY) != ENVELOPE_KIND:
        raise InvalidEvent(f"{where}{ENVELOPE_KEY} must be {ENVELOPE_KIND!r}")
    version = obj.get("version")
    if version != ENVELOPE_VERSION:
        raise InvalidEvent(f"{where}envelope version {version!r} is not supported (this "
                           f"release reads version {ENVELOPE_VERSION})")
    observed = time_or_none(obj.get("observedAt"), "observedAt", where, parse_time)
    if observed is None:
        raise InvalidEvent(f"{where}observedAt is required")
    vm = required_object(obj, "vm", where)
    name = required_text(vm.get("name"), "name", "azure: vm.")
    subscription = required_text(vm.get("subscriptionId"), "subscriptionId", "azure: vm.")
    group = required_text(vm.get("resourceGroupName"), "resourceGroupName", "azure: vm.")
    document = required_object(obj, "document", where)
    incarnation = document.get("DocumentIncarnation")
    if type(incarnation) is not int:
        raise InvalidEvent(f"{where}document.DocumentIncarnation must be an integer")
    listed = document.get("Events")
    if listed is None:
        listed = []
    if type(listed) is not list or not all(type(e) is dict for e in listed):
        raise InvalidEvent(f"{where}document.Events must be an array of objects")
    instance = vm_key(subscription, group, name)
    mine = [e for e in listed if not _names(e) or name.lower() in
            (r.lower() for r in _names(e))]
    base: dict[str, str] = {"azure.incarnation": str(incarnation)}
    for key in ("vmId", "resourceId", "vmScaleSetName"):
        if (kept := text(vm.get(key), key, "azure: vm.")) is not None:
            base[f"vm.{key}"] = kept
    region = text(vm.get("location"), "location", "azure: vm.")
    events = [_scheduled_event(e, instance, observed, SOURCE_AGENT, parse_time, dict(base))
              for e in mine]
    summary = orjson.dumps({
        "incarnation": incarnation, "observed": observed,
        "events": {e["vendor_event_id"]: [e["vendor_status"], e["vendor_event_code"],
                                          e["operation"], e["not_before"]] for e in events},
    }).decode()
    if not events:
        events = [build("azure", SOURCE_AGENT, DOCUMENT_CODE, "EventType", where, instance,
                        observed, None, base)]
    for event in events:
        event["attributes"][DOCUMENT_ATTRIBUTE] = summary
        event["region"] = region
        event["account_id"] = subscription.lower()
        event["notification_id"] = f"{instance}@{incarnation}"[-MAX_ID_LENGTH:]
    return events


def reject_bare_document(obj: JsonObject, parse_time: TimeParse,
                         received_ms: int | None = None) -> list[InstanceEvent]:
    """A bare IMDS document names no VM and no time: say what is missing."""
    raise InvalidEvent("azure: an IMDS Scheduled Events document without the agent's envelope "
                       "(no VM identity, no observation time): forward it with `vmevents agent "
                       "azure` or wrap it as consumer/normalization/azure.py describes")


# -- Event Grid ------------------------------------------------------------------------------------

def adapt_event_grid(obj: JsonObject, parse_time: TimeParse,
                     received_ms: int | None = None) -> list[InstanceEvent]:
    """An Event Grid event of the ResourceNotifications topics, in the Event Grid schema
    (``eventType``, ``eventTime``) or the CloudEvents one (``type``, ``time``)."""
    where = "azure: "
    kind = obj.get("eventType") or obj.get("type")
    time_key = "eventTime" if "eventTime" in obj else "time"
    event_time = time_or_none(obj.get(time_key), time_key, where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}{time_key} is required")
    data = required_object(obj, "data", where)
    info = required_object(data, "resourceInfo", "azure: data.")
    attributes: dict[str, str] = {"eventType": str(kind)}
    for key in ("id", "subject", "topic", "source", "dataVersion"):
        if (kept := attr_value(obj.get(key))) is not None:
            attributes[f"eventgrid.{key}"] = kept
    note = text(obj.get("id"), "id", where)
    if kind == SCHEDULED_EVENT_EMITTED:
        events = _emitted(info, event_time, parse_time, attributes)
    elif kind in (AVAILABILITY_CHANGED, RESOURCE_ANNOTATED):
        events = [_health_resource(str(kind), data, info, event_time, parse_time, attributes)]
    else:
        raise OutOfScope(f"azure: Event Grid event {str(kind)[:80]!r} is not about VM "
                         "maintenance or health", vendor="azure")
    for event in events:
        event["notification_id"] = note
    return events


def _emitted(info: JsonObject, event_time: int, parse_time: TimeParse,
             attributes: dict[str, str]) -> list[InstanceEvent]:
    where = "azure: data.resourceInfo."
    arm_id = required_text(info.get("id"), "id", where)
    props = required_object(info, "properties", where)
    subscription, group, own = parse_arm_id(arm_id)
    names = _names(props) or ([own] if own is not None else [])
    if not names:
        raise OutOfScope(f"azure: scheduled event on {arm_id[:80]!r} names no VM",
                         vendor="azure")
    props = {"EventId": info.get("name"), **props}
    region = text(info.get("location"), "location", where)
    events = []
    for name in names:
        event = _scheduled_event(props, vm_key(subscription, group, name), event_time,
                                 SOURCE_EVENT_GRID, parse_time,
                                 {**attributes, "resourceId": arm_id})
        event["region"] = region
        event["account_id"] = subscription.lower()
        events.append(event)
    return events


def _vm_instance(arm_id: str) -> str:
    subscription, group, name = parse_arm_id(arm_id)
    if name is None:
        raise OutOfScope(f"azure: {arm_id[:100]!r} is not a virtual machine", vendor="azure")
    return vm_key(subscription, group, name)


def _health_resource(kind: str, data: JsonObject, info: JsonObject, event_time: int,
                     parse_time: TimeParse, attributes: dict[str, str]) -> InstanceEvent:
    where = "azure: data.resourceInfo.properties."
    props = required_object(info, "properties", "azure: data.resourceInfo.")
    target = text(props.get("targetResourceId"), "targetResourceId", where) or \
        required_text(info.get("id"), "id", "azure: data.resourceInfo.")
    instance = _vm_instance(target)
    for key, value in props.items():
        if (kept := attr_value(value)) is not None:
            attributes[key] = kept
    occurred = time_or_none(props.get("occurredTime"), "occurredTime", where, parse_time)
    op_info = data.get("operationalInfo")
    if occurred is None and type(op_info) is dict:
        occurred = time_or_none(op_info.get("resourceEventTime"), "resourceEventTime",
                                "azure: data.operationalInfo.", parse_time)
    when = occurred if occurred is not None else event_time
    if kind == AVAILABILITY_CHANGED:
        state = required_text(props.get("availabilityState"), "availabilityState", where)
        event = build("azure", SOURCE_EVENT_GRID, "HealthResources.AvailabilityStatusChanged",
                      "type", "azure: ", instance, when, state, attributes)
        event["phase"] = _AVAILABILITY_PHASES.get(state)
        event["previous_state"] = text(props.get("previousAvailabilityState"),
                                       "previousAvailabilityState", where)
        event["current_state"] = state
    else:
        event = _annotation(required_text(props.get("annotationName"), "annotationName", where),
                            instance, when, attributes)
    event["region"] = text(info.get("location"), "location", "azure: data.resourceInfo.")
    event["account_id"] = parse_arm_id(target)[0].lower()
    event["publish_time"] = event_time
    return event


def _annotation(name: str, instance: str, when: int, attributes: dict[str, str]) -> InstanceEvent:
    """A health annotation: families (PlannedFreeze*, LiveMigration*) share one code, the suffix
    is their status; others are their own code."""
    full = name if name.startswith(_VM_PREFIX) else _VM_PREFIX + name
    attributes["annotationName"] = name
    for family, phases in _ANNOTATION_FAMILIES.items():
        if full.startswith(family) and full[len(family):] in phases:
            status = full[len(family):]
            event = build("azure", SOURCE_EVENT_GRID, family, "annotationName", "azure: ",
                          instance, when, status, attributes)
            event["phase"] = phases[status]
            return event
    code = full if full in OPERATIONS else name
    return build("azure", SOURCE_EVENT_GRID, code, "annotationName", "azure: ", instance, when,
                 None, attributes)


# -- Activity Log through Event Hubs ------------------------------------------------------------

def adapt_activity_log(obj: JsonObject, parse_time: TimeParse,
                       received_ms: int | None = None) -> list[InstanceEvent]:
    """An Event Hubs message of a diagnostic setting: ``{"records": [...]}``; ResourceHealth
    records about VMs become events, the rest are skipped."""
    records = obj.get("records")
    if type(records) is not list:
        raise InvalidEvent("azure: records must be an array")
    events = []
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise InvalidEvent(f"azure: records[{index}] must be an object")
        event = _health_record(record, index, parse_time)
        if event is not None:
            events.append(event)
    if not events:
        raise OutOfScope(f"azure: none of {len(records)} Activity Log records is a Resource "
                         "Health event of a virtual machine", vendor="azure")
    return events


def _localized(value: object) -> object:
    """The REST shape's ``{value, localizedValue}`` objects as their value."""
    return value.get("value") if type(value) is dict else value


def _health_record(record: JsonObject, index: int, parse_time: TimeParse) -> InstanceEvent | None:
    where = f"azure: records[{index}]."
    category = _localized(record.get("category"))
    if type(category) is not str or category.lower() != "resourcehealth":
        return None
    resource = text(record.get("resourceId"), "resourceId", where)
    if resource is None or parse_arm_id(resource)[2] is None:
        return None
    instance = _vm_instance(resource)
    time_key = "time" if "time" in record else "eventTimestamp"
    event_time = time_or_none(record.get(time_key), time_key, where, parse_time)
    if event_time is None:
        raise InvalidEvent(f"{where}time is required")
    operation = _localized(record.get("operationName"))
    action = operation.split("/")[-2] if type(operation) is str and operation.count("/") >= 2 \
        else None
    props = record.get("properties")
    props = props if type(props) is dict else {}
    inner = props.get("eventProperties")
    if type(inner) is dict:
        props = {**props, **inner}
    kind = props.get("type") or props.get("healthEventType") or "Downtime"
    code = f"ResourceHealth.{kind}"
    attributes: dict[str, str] = {}
    for key, value in props.items():
        if key != "eventProperties" and (kept := attr_value(value)) is not None:
            attributes[key] = kept
    if type(operation) is str:
        attributes["operationName"] = operation
    event = build("azure", SOURCE_ACTIVITY_LOG, code, "type", where, instance, event_time,
                  action, attributes)
    event["phase"] = _HEALTH_PHASES.get(action) if action is not None else None
    event["previous_state"] = attr_value(props.get("previousHealthStatus"))
    event["current_state"] = attr_value(props.get("currentHealthStatus")
                                        or props.get("healthStatus"))
    event["account_id"] = parse_arm_id(resource)[0].lower()
    event["level"] = attr_value(_localized(record.get("level")))
    event["notification_id"] = attr_value(record.get("correlationId"))
    return event

