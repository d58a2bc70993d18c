"""Issue #17's rows of the operation table, written by hand from the notes' tables
(shared/notes/vendors-azure-tencent.md): Azure, Tencent Cloud CVM, Huawei Cloud ECS."""

from __future__ import annotations

import pytest

from consumer.normalization.operations import lookup, phase_of

AZURE_TABLE = [
    ("ScheduledEvents.Freeze", "maintenance.freeze", "paired"),
    ("ScheduledEvents.Freeze.LiveMigration", "maintenance.live_migration", "paired"),
    ("ScheduledEvents.Reboot", "maintenance.reboot", "paired"),
    ("ScheduledEvents.Redeploy", "maintenance.redeploy", "paired"),
    ("ScheduledEvents.User.Reboot", "user.reboot", "paired"),
    ("ScheduledEvents.User.Redeploy", "user.redeploy", "paired"),
    ("ScheduledEvents.Preempt", "preemptible.interruption", "paired"),
    ("ScheduledEvents.Terminate", "scaleset.terminate", "paired"),
    ("ScheduledEvents.Document", "scheduled_events.document", "single"),
    ("ResourceHealth.Downtime", "health.unavailable", "paired"),
    ("HealthResources.AvailabilityStatusChanged", "health.unavailable", "paired"),
    ("VirtualMachineHostRebootedForRepair", "failure.reboot", "single"),
    ("VirtualMachineHostCrashed", "failure.reboot", "single"),
    ("VirtualMachineMigrationInitiatedForRepair", "failure.redeploy", "single"),
    ("VirtualMachineRebootInitiatedForPlannedMaintenance", "maintenance.reboot", "single"),
    ("VirtualMachineMigrationInitiatedForPlannedMaintenance", "maintenance.redeploy", "single"),
    ("VirtualMachinePlannedFreeze", "maintenance.freeze", "paired"),
    ("VirtualMachineLiveMigration", "maintenance.live_migration", "paired"),
    ("VirtualMachinePreempted", "preemptible.interruption", "single"),
    ("VirtualMachineCrashed", "guest.crash", "single"),
    ("VirtualMachineStorageOffline", "failure.storage_offline", "single"),
    ("VirtualMachinePossiblyDegradedDueToHardwareFailure", "maintenance.degraded_hardware",
     "single"),
    ("VirtualMachineScheduledForServiceHealing", "maintenance.service_healing", "single"),
    ("VirtualMachineStartInitiated", "lifecycle.start_initiated", "single"),
    ("VirtualMachineStopInitiated", "lifecycle.stop_initiated", "single"),
    ("VirtualMachineDeallocationInitiated", "lifecycle.deallocation_initiated", "single"),
]
TENCENT_TABLE = [
    ("InstanceRestarting", "maintenance.reboot", "single"),
    ("InstanceRestarted", "failure.reboot", "single"),
    ("PingUnreachable", "failure.unreachable", "paired"),
    ("GuestReboot", "guest.reboot", "single"),
    ("GuestCoreError", "guest.kernel_fault", "single"),
    ("GuestOom", "guest.oom", "single"),
    ("DiskReadonly", "disk.readonly", "single"),
    ("NvmeError", "disk.nvme_error", "single"),
    ("InstanceRunningRisks", "maintenance.repair", "paired"),
    ("InstanceRunningAbnormally", "failure.repair", "paired"),
    ("InstanceDiskError", "failure.local_disk_fault", "paired"),
    ("InstanceNetworkError", "failure.network", "paired"),
    ("InstancePowerOff", "lifecycle.power_off", "single"),
    ("InstancePowerOn", "lifecycle.power_on", "single"),
]
HUAWEI_TABLE = [
    ("autoRecovery", "failure.reboot", "paired"),
    ("liveMigration", "maintenance.live_migration", "paired"),
    ("instance_redeploy", "maintenance.redeploy", "paired"),
    ("instance_migrate", "maintenance.migrate", "paired"),
    ("instance_resize", "maintenance.resize", "paired"),
    ("instance_reboot", "maintenance.reboot", "paired"),
    ("instance_stop", "maintenance.stop", "paired"),
    ("localdisk_recovery", "maintenance.local_disk_replace", "paired"),
    ("VMFaultsByHostProcessExceptions", "failure.fault", "single"),
    ("GPULinkFault", "failure.gpu_fault", "single"),
    ("faultPowerOn", "failure.start", "single"),
    ("hostMayCrash", "failure.host_may_crash", "single"),
    ("RestartGuestOS", "guest.reboot", "single"),
    ("rebootServer", "user.reboot", "single"),
    ("stopServer", "user.stop", "single"),
    ("deleteServer", "user.delete", "single"),
]
NEW_TABLES = (AZURE_TABLE, TENCENT_TABLE, HUAWEI_TABLE)


@pytest.mark.parametrize(("vendor", "code", "operation", "kind"),
                         [("azure", *r) for r in AZURE_TABLE]
                         + [("tencent", *r) for r in TENCENT_TABLE]
                         + [("huawei", *r) for r in HUAWEI_TABLE])
def test_every_new_vendor_code_is_known(vendor: str, code: str, operation: str,
                                        kind: str) -> None:
    spec = lookup(code)
    assert spec is not None
    assert (spec.code, spec.operation, spec.kind, spec.vendors) == (code, operation, kind,
                                                                    {vendor})


def test_completed_is_executed_in_any_case() -> None:
    assert phase_of("Completed") == phase_of("completed") == "executed"


def test_existing_operations_are_reused_where_they_mean_the_same() -> None:
    reused = {"maintenance.reboot", "maintenance.redeploy", "maintenance.live_migration",
              "preemptible.interruption", "failure.reboot", "failure.redeploy", "failure.fault",
              "failure.gpu_fault", "failure.local_disk_fault", "maintenance.stop"}
    new_ops = {op for table in NEW_TABLES for _, op, _ in table}
    assert reused <= new_ops
