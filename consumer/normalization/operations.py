"""The one table from vendor event codes to canonical operations, and vendor statuses to phases.

Every adapter, the correlator and the metrics read this module, so a code is mapped in exactly
one place. The table holds every code of the JD Cloud VM event list and of the Alibaba ECS
instance event document (with its appendix of system event notification names), the Alibaba
block storage events that name an instance, the EC2 scheduled changes of AWS Health and the
EC2 EventBridge instance notices (AWS codes are ``eventTypeCode`` or ``detail-type``), and the
Compute Engine system events of Cloud Audit Logs (GCP codes are ``methodName``). Adding a vendor
is adding its rows here. A code not in
the table is not an error: :func:`mechanical_operation` derives a stable name from it and the
event is flagged ``known=False``.

``kind`` tells the correlator how notifications of one operation relate:

- ``paired``: a start and an end notification (Executing/Executed, Scheduled..Executed,
  live migration started/accomplished);
- ``single``: one notification that never pairs (faults, JD ReDeploy and IsolateLocalDisk, which
  JD sends once, preemptible interruption, performance mode change);
- ``interval``: start and end in one record (burstable ``intervalStart``/``intervalEnd``);
- ``lifecycle``: instance state transitions (``StateChange``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Literal

from consumer.model import Phase

Kind = Literal["paired", "single", "interval", "lifecycle"]
KINDS: Final = ("paired", "single", "interval", "lifecycle")

JD: Final = frozenset({"jdcloud"})
ALI: Final = frozenset({"aliyun"})
BOTH: Final = frozenset({"jdcloud", "aliyun"})
AWS: Final = frozenset({"aws"})
GCP: Final = frozenset({"gcp"})
AZURE: Final = frozenset({"azure"})
TENCENT: Final = frozenset({"tencent"})
HUAWEI: Final = frozenset({"huawei"})


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """What a vendor event code means: canonical operation, pairing kind, where it is documented.

    ``statuses`` is the set of statuses the Alibaba appendix (or event section) lists for the
    code; empty where the vendor documents none (JD sends only Executing/Executed or nothing).
    """

    code: str
    operation: str
    kind: Kind
    vendors: frozenset[str]
    statuses: frozenset[str] = frozenset()


_MAINT_FULL = frozenset({"Scheduled", "Executing", "Executed", "Avoided", "Canceled", "Failed"})
_REDEPLOY = frozenset({"Scheduled", "Executing", "Executed", "Avoided", "Canceled"})
_DISK = frozenset({"Inquiring", "Executing", "Executed", "Avoided", "Canceled"})
_RUN = frozenset({"Executing", "Executed"})

_SPECS: Final = (
    # JD Cloud VM: 异常事件 (failures)
    OperationSpec("SystemFailure.Delete", "failure.delete", "paired", BOTH,
                  frozenset({"Executing", "Executed", "Avoided"})),
    OperationSpec("SystemFailure.Reboot", "failure.reboot", "paired", BOTH, _RUN),
    OperationSpec("SystemFailure.Fault", "failure.fault", "single", JD),
    OperationSpec("SystemException.LocalDiskFailure.Fault", "failure.local_disk_fault",
                  "single", JD),
    OperationSpec("SystemFailure.GPUFailure.Fault", "failure.gpu_fault", "single", JD),
    OperationSpec("SystemFailure.RemovedFromAg", "failure.removed_from_ag", "single", JD),
    # JD spells it ReDeploy and sends it once when the user triggers the redeploy.
    OperationSpec("SystemFailure.ReDeploy", "failure.redeploy", "single", JD),
    # JD Cloud VM: 维护事件, 欠费/到期, 状态变更
    OperationSpec("SystemMaintenance.IsolateLocalDisk", "maintenance.isolate_local_disk",
                  "single", JD),
    OperationSpec("InstanceExpiration.Stop", "expiration.stop", "paired", JD),
    OperationSpec("InstanceExpiration.Delete", "expiration.delete", "paired", JD),
    OperationSpec("AccountArrearage.Stop", "arrearage.stop", "paired", JD),
    OperationSpec("AccountArrearage.Delete", "arrearage.delete", "paired", JD),
    OperationSpec("StateChange", "lifecycle.state_change", "lifecycle", BOTH),
    OperationSpec("CreateImage", "image.create", "paired", JD),
    # Alibaba ECS: appendix of system events
    OperationSpec("SystemMaintenance.Reboot", "maintenance.reboot", "paired", ALI, _MAINT_FULL),
    OperationSpec("InstanceFailure.Reboot", "instance_failure.reboot", "paired", ALI, _RUN),
    OperationSpec("SystemMaintenance.Redeploy", "maintenance.redeploy", "paired", ALI, _REDEPLOY),
    OperationSpec("SystemFailure.Redeploy", "failure.redeploy", "paired", ALI, _REDEPLOY),
    OperationSpec("SystemMaintenance.RebootAndIsolateErrorDisk",
                  "maintenance.reboot_isolate_error_disk", "paired", ALI, _DISK),
    OperationSpec("SystemMaintenance.RebootAndReInitErrorDisk",
                  "maintenance.reboot_reinit_error_disk", "paired", ALI, _DISK),
    # Alibaba ECS: other instance events
    OperationSpec("PreemptibleInstanceInterruption", "preemptible.interruption", "single", ALI),
    OperationSpec("LiveMigrationAcrossDDH", "migration.live_across_ddh", "paired", ALI,
                  frozenset({"started", "accomplished", "failed"})),
    OperationSpec("PerformanceModeChange", "burstable.performance_mode_change", "single", ALI),
    OperationSpec("BurstablePerformanceRestricted", "burstable.performance_restricted",
                  "interval", ALI),
    # Alibaba block storage system events (name Disk:<Code>:<Status>; the instance in content)
    OperationSpec("Disk:Stalled", "disk.stalled", "paired", ALI),
    OperationSpec("Disk:ErrorDetected", "disk.error_detected", "single", ALI),
    # AWS Health, EC2 scheduled changes (upcoming/open -> scheduled, open past start -> executing,
    # closed -> executed); AWS Health event types for EC2, scheduledChange category
    OperationSpec("AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED", "maintenance.reboot", "paired",
                  AWS),
    OperationSpec("AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED", "maintenance.reboot", "paired",
                  AWS),
    OperationSpec("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "maintenance.retirement", "paired",
                  AWS),
    OperationSpec("AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED", "maintenance.retirement",
                  "paired", AWS),
    OperationSpec("AWS_EC2_DEDICATED_HOST_RETIREMENT_SCHEDULED", "maintenance.retirement",
                  "paired", AWS),
    OperationSpec("AWS_EC2_INSTANCE_STOP_SCHEDULED", "maintenance.stop", "paired", AWS),
    OperationSpec("AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED", "maintenance.network",
                  "paired", AWS),
    OperationSpec("AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED", "maintenance.network",
                  "paired", AWS),
    OperationSpec("AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED", "maintenance.power", "paired",
                  AWS),
    OperationSpec("AWS_EC2_DEDICATED_HOST_POWER_MAINTENANCE_SCHEDULED", "maintenance.power",
                  "paired", AWS),
    # AWS EC2 EventBridge notices (code = detail-type)
    OperationSpec("EC2 Spot Instance Interruption Warning", "preemptible.interruption", "single",
                  AWS),
    OperationSpec("EC2 Instance Rebalance Recommendation", "preemptible.rebalance_recommendation",
                  "single", AWS),
    OperationSpec("EC2 Instance State-change Notification", "lifecycle.state_change", "lifecycle",
                  AWS),
    # GCP Compute Engine system events (code = methodName). hostError and the automaticRestart
    # that follows it are the two ends of one failure reboot (see correlation.transitions).
    OperationSpec("compute.instances.hostError", "failure.reboot", "paired", GCP),
    OperationSpec("compute.instances.automaticRestart", "failure.reboot", "paired", GCP),
    OperationSpec("compute.instances.migrateOnHostMaintenance", "maintenance.live_migration",
                  "paired", GCP),
    OperationSpec("compute.instances.terminateOnHostMaintenance", "maintenance.terminate",
                  "single", GCP),
    OperationSpec("compute.instances.preempted", "preemptible.interruption", "single", GCP),
    OperationSpec("compute.instances.upcomingMaintenance", "maintenance.host", "paired", GCP),
    # Azure Scheduled Events (IMDS through the agent, or Event Grid): ScheduledEvents.<EventType>,
    # ScheduledEvents.User.<EventType> for user-initiated ones. A Freeze that is a live migration
    # keeps its code (so its notifications pair) and takes the operation of the refined row.
    OperationSpec("ScheduledEvents.Freeze", "maintenance.freeze", "paired", AZURE),
    OperationSpec("ScheduledEvents.Freeze.LiveMigration", "maintenance.live_migration", "paired",
                  AZURE),
    OperationSpec("ScheduledEvents.Reboot", "maintenance.reboot", "paired", AZURE),
    OperationSpec("ScheduledEvents.Redeploy", "maintenance.redeploy", "paired", AZURE),
    OperationSpec("ScheduledEvents.User.Reboot", "user.reboot", "paired", AZURE),
    OperationSpec("ScheduledEvents.User.Redeploy", "user.redeploy", "paired", AZURE),
    OperationSpec("ScheduledEvents.Preempt", "preemptible.interruption", "paired", AZURE),
    OperationSpec("ScheduledEvents.Terminate", "scaleset.terminate", "paired", AZURE),
    OperationSpec("ScheduledEvents.Document", "scheduled_events.document", "single", AZURE),
    # Azure Resource Health: availability (Activity Log records, HealthResources events) and the
    # VM health annotations (names as Resource Health spells them, VirtualMachine prefix)
    OperationSpec("ResourceHealth.Downtime", "health.unavailable", "paired", AZURE),
    OperationSpec("HealthResources.AvailabilityStatusChanged", "health.unavailable", "paired",
                  AZURE),
    OperationSpec("VirtualMachineHostRebootedForRepair", "failure.reboot", "single", AZURE),
    OperationSpec("VirtualMachineHostCrashed", "failure.reboot", "single", AZURE),
    OperationSpec("VirtualMachineMigrationInitiatedForRepair", "failure.redeploy", "single",
                  AZURE),
    OperationSpec("VirtualMachineRebootInitiatedForPlannedMaintenance", "maintenance.reboot",
                  "single", AZURE),
    OperationSpec("VirtualMachineMigrationInitiatedForPlannedMaintenance",
                  "maintenance.redeploy", "single", AZURE),
    OperationSpec("VirtualMachinePlannedFreeze", "maintenance.freeze", "paired", AZURE),
    OperationSpec("VirtualMachineLiveMigration", "maintenance.live_migration", "paired", AZURE),
    OperationSpec("VirtualMachinePreempted", "preemptible.interruption", "single", AZURE),
    OperationSpec("VirtualMachineCrashed", "guest.crash", "single", AZURE),
    OperationSpec("VirtualMachineStorageOffline", "failure.storage_offline", "single", AZURE),
    OperationSpec("VirtualMachinePossiblyDegradedDueToHardwareFailure",
                  "maintenance.degraded_hardware", "single", AZURE),
    OperationSpec("VirtualMachineScheduledForServiceHealing", "maintenance.service_healing",
                  "single", AZURE),
    OperationSpec("VirtualMachineStartInitiated", "lifecycle.start_initiated", "single", AZURE),
    OperationSpec("VirtualMachineStopInitiated", "lifecycle.stop_initiated", "single", AZURE),
    OperationSpec("VirtualMachineDeallocationInitiated", "lifecycle.deallocation_initiated",
                  "single", AZURE),
    # Tencent Cloud CVM (EventBridge cvm:ErrorEvent:<Name>, cvm:OperationEvent:<Name>; code =
    # the name; repair families carry their phase as a suffix, stripped into the status)
    OperationSpec("InstanceRestarting", "maintenance.reboot", "single", TENCENT),
    OperationSpec("InstanceRestarted", "failure.reboot", "single", TENCENT),
    OperationSpec("PingUnreachable", "failure.unreachable", "paired", TENCENT),
    OperationSpec("GuestReboot", "guest.reboot", "single", TENCENT),
    OperationSpec("GuestCoreError", "guest.kernel_fault", "single", TENCENT),
    OperationSpec("GuestOom", "guest.oom", "single", TENCENT),
    OperationSpec("DiskReadonly", "disk.readonly", "single", TENCENT),
    OperationSpec("NvmeError", "disk.nvme_error", "single", TENCENT),
    OperationSpec("InstanceRunningRisks", "maintenance.repair", "paired", TENCENT, _DISK),
    OperationSpec("InstanceRunningAbnormally", "failure.repair", "paired", TENCENT, _DISK),
    OperationSpec("InstanceDiskError", "failure.local_disk_fault", "paired", TENCENT, _DISK),
    OperationSpec("InstanceNetworkError", "failure.network", "paired", TENCENT, _DISK),
    OperationSpec("InstancePowerOff", "lifecycle.power_off", "single", TENCENT),
    OperationSpec("InstancePowerOn", "lifecycle.power_on", "single", TENCENT),
    # Huawei Cloud ECS (Cloud Eye SYS.ECS event_name; planned events instance_<type>_<state>
    # with the state stripped into the status)
    # start/end/faultAutoRecovery and liveMigrationStarted/Completed/Failed: one code per
    # operation (so its notifications pair), the prefix or suffix the status
    OperationSpec("autoRecovery", "failure.reboot", "paired", HUAWEI),
    OperationSpec("liveMigration", "maintenance.live_migration", "paired", HUAWEI),
    OperationSpec("instance_redeploy", "maintenance.redeploy", "paired", HUAWEI),
    OperationSpec("instance_migrate", "maintenance.migrate", "paired", HUAWEI),
    OperationSpec("instance_resize", "maintenance.resize", "paired", HUAWEI),
    OperationSpec("instance_reboot", "maintenance.reboot", "paired", HUAWEI),
    OperationSpec("instance_stop", "maintenance.stop", "paired", HUAWEI),
    OperationSpec("localdisk_recovery", "maintenance.local_disk_replace", "paired", HUAWEI),
    OperationSpec("VMFaultsByHostProcessExceptions", "failure.fault", "single", HUAWEI),
    OperationSpec("GPULinkFault", "failure.gpu_fault", "single", HUAWEI),
    OperationSpec("faultPowerOn", "failure.start", "single", HUAWEI),
    OperationSpec("hostMayCrash", "failure.host_may_crash", "single", HUAWEI),
    OperationSpec("RestartGuestOS", "guest.reboot", "single", HUAWEI),
    OperationSpec("rebootServer", "user.reboot", "single", HUAWEI),
    OperationSpec("stopServer", "user.stop", "single", HUAWEI),
    OperationSpec("deleteServer", "user.delete", "single", HUAWEI),
)

# Plain dicts typed read-only: MappingProxyType would add a method dispatch to every lookup.
OPERATIONS: Final[Mapping[str, OperationSpec]] = {s.code: s for s in _SPECS}
"""Vendor event code -> spec. Codes are matched exactly, as vendors spell them."""

ALIYUN_STATUSES: Final[Mapping[str, frozenset[str]]] = {
    s.code: s.statuses for s in _SPECS if "aliyun" in s.vendors and s.statuses
}
"""Alibaba system event type -> the statuses its notification names carry (the appendix)."""

_PHASES: dict[str, Phase] = {
    "scheduled": "scheduled",
    "inquiring": "inquiring",
    "executing": "executing",
    "executed": "executed",
    "avoided": "avoided",
    "canceled": "canceled",
    "cancelled": "canceled",
    "failed": "failed",
    # LiveMigrationAcrossDDH speaks its own lower-case vocabulary.
    "started": "executing",
    "accomplished": "executed",
    # Azure Event Grid Scheduled Events and Huawei planned events end "Completed".
    "completed": "executed",
}
# The vendors' own spelling first, so the hot path needs no str.lower().
STATUS_PHASES: Final[Mapping[str, Phase]] = {
    **{k.capitalize(): v for k, v in _PHASES.items()}, **_PHASES
}


def lookup(code: str) -> OperationSpec | None:
    """The spec of a vendor event code, or None when the table does not know it."""
    return OPERATIONS.get(code)


def phase_of(status: str) -> Phase | None:
    """Canonical phase of a vendor status (any case); None when the status is not one we know."""
    phase = STATUS_PHASES.get(status)
    if phase is None:
        phase = _PHASES.get(status.lower())
    return phase


def status_documented(code: str, status: str) -> bool:
    """Whether the vendor documents ``status`` for ``code``; True where it documents no set."""
    spec = OPERATIONS.get(code)
    return spec is None or not spec.statuses or status in spec.statuses


_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_NON_WORD = re.compile(r"[^a-z0-9_]+")


@lru_cache(maxsize=1024)
def mechanical_operation(code: str) -> str:
    """Canonical name for a code the table does not know: CamelCase.Dotted -> snake.dotted.

    ``SystemMaintenance.FooBar`` -> ``system_maintenance.foo_bar``; acronyms stay one word
    (``GPUFailure`` -> ``gpu_failure``). Deterministic, so unknown operations still correlate and
    count under one name. Cached (bounded): unknown codes recur.
    """
    parts = []
    for segment in code.split("."):
        words = _CAMEL.findall(segment)
        name = "_".join(w.lower() for w in words) if words else segment.lower()
        name = _NON_WORD.sub("_", name).strip("_")
        if name:
            parts.append(name)
    return ".".join(parts) or "unknown"
