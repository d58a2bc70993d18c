"""The operation table: every code of both documents is known, names and kinds as designed."""

from __future__ import annotations

import dataclasses

import pytest

from consumer.model import PHASES
from consumer.normalization.operations import (
    ALIYUN_STATUSES,
    KINDS,
    OPERATIONS,
    OperationSpec,
    lookup,
    mechanical_operation,
    phase_of,
    status_documented,
)
from tests.unit.test_operations_new_vendors import NEW_TABLES

# (code, operation, kind) written from the JD event table and the Alibaba document + appendix.
JD_TABLE = [
    ("SystemFailure.Delete", "failure.delete", "paired"),
    ("SystemFailure.Reboot", "failure.reboot", "paired"),
    ("SystemFailure.Fault", "failure.fault", "single"),
    ("SystemException.LocalDiskFailure.Fault", "failure.local_disk_fault", "single"),
    ("SystemFailure.GPUFailure.Fault", "failure.gpu_fault", "single"),
    ("SystemFailure.RemovedFromAg", "failure.removed_from_ag", "single"),
    ("SystemFailure.ReDeploy", "failure.redeploy", "single"),
    ("SystemMaintenance.IsolateLocalDisk", "maintenance.isolate_local_disk", "single"),
    ("InstanceExpiration.Stop", "expiration.stop", "paired"),
    ("InstanceExpiration.Delete", "expiration.delete", "paired"),
    ("AccountArrearage.Stop", "arrearage.stop", "paired"),
    ("AccountArrearage.Delete", "arrearage.delete", "paired"),
    ("StateChange", "lifecycle.state_change", "lifecycle"),
    ("CreateImage", "image.create", "paired"),
]
ALIYUN_TABLE = [
    ("SystemMaintenance.Reboot", "maintenance.reboot", "paired"),
    ("SystemFailure.Reboot", "failure.reboot", "paired"),
    ("InstanceFailure.Reboot", "instance_failure.reboot", "paired"),
    ("SystemMaintenance.Redeploy", "maintenance.redeploy", "paired"),
    ("SystemFailure.Redeploy", "failure.redeploy", "paired"),
    ("SystemMaintenance.RebootAndIsolateErrorDisk", "maintenance.reboot_isolate_error_disk",
     "paired"),
    ("SystemMaintenance.RebootAndReInitErrorDisk", "maintenance.reboot_reinit_error_disk",
     "paired"),
    ("SystemFailure.Delete", "failure.delete", "paired"),
    ("StateChange", "lifecycle.state_change", "lifecycle"),
    ("PreemptibleInstanceInterruption", "preemptible.interruption", "single"),
    ("LiveMigrationAcrossDDH", "migration.live_across_ddh", "paired"),
    ("PerformanceModeChange", "burstable.performance_mode_change", "single"),
    ("BurstablePerformanceRestricted", "burstable.performance_restricted", "interval"),
    ("Disk:Stalled", "disk.stalled", "paired"),
    ("Disk:ErrorDetected", "disk.error_detected", "single"),
]
# AWS: Health EC2 scheduled-change type codes and the EC2 EventBridge detail-types.
AWS_TABLE = [
    ("AWS_EC2_INSTANCE_REBOOT_MAINTENANCE_SCHEDULED", "maintenance.reboot", "paired"),
    ("AWS_EC2_SYSTEM_REBOOT_MAINTENANCE_SCHEDULED", "maintenance.reboot", "paired"),
    ("AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED", "maintenance.retirement", "paired"),
    ("AWS_EC2_PERSISTENT_INSTANCE_RETIREMENT_SCHEDULED", "maintenance.retirement", "paired"),
    ("AWS_EC2_DEDICATED_HOST_RETIREMENT_SCHEDULED", "maintenance.retirement", "paired"),
    ("AWS_EC2_INSTANCE_STOP_SCHEDULED", "maintenance.stop", "paired"),
    ("AWS_EC2_INSTANCE_NETWORK_MAINTENANCE_SCHEDULED", "maintenance.network", "paired"),
    ("AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED", "maintenance.network", "paired"),
    ("AWS_EC2_INSTANCE_POWER_MAINTENANCE_SCHEDULED", "maintenance.power", "paired"),
    ("AWS_EC2_DEDICATED_HOST_POWER_MAINTENANCE_SCHEDULED", "maintenance.power", "paired"),
    ("EC2 Spot Instance Interruption Warning", "preemptible.interruption", "single"),
    ("EC2 Instance Rebalance Recommendation", "preemptible.rebalance_recommendation", "single"),
    ("EC2 Instance State-change Notification", "lifecycle.state_change", "lifecycle"),
]
GCP_TABLE = [
    ("compute.instances.hostError", "failure.reboot", "paired"),
    ("compute.instances.automaticRestart", "failure.reboot", "paired"),
    ("compute.instances.migrateOnHostMaintenance", "maintenance.live_migration", "paired"),
    ("compute.instances.terminateOnHostMaintenance", "maintenance.terminate", "single"),
    ("compute.instances.preempted", "preemptible.interruption", "single"),
    ("compute.instances.upcomingMaintenance", "maintenance.host", "paired"),
]


@pytest.mark.parametrize(("code", "operation", "kind"), JD_TABLE)
def test_every_jd_code_is_known(code: str, operation: str, kind: str) -> None:
    spec = lookup(code)
    assert spec is not None
    assert (spec.code, spec.operation, spec.kind) == (code, operation, kind)
    assert "jdcloud" in spec.vendors


@pytest.mark.parametrize(("code", "operation", "kind"), ALIYUN_TABLE)
def test_every_aliyun_code_is_known(code: str, operation: str, kind: str) -> None:
    spec = lookup(code)
    assert spec is not None
    assert (spec.code, spec.operation, spec.kind) == (code, operation, kind)
    assert "aliyun" in spec.vendors


@pytest.mark.parametrize(("vendor", "code", "operation", "kind"),
                         [("aws", *row) for row in AWS_TABLE] + [("gcp", *row) for row in GCP_TABLE])
def test_every_aws_and_gcp_code_is_known(vendor: str, code: str, operation: str,
                                         kind: str) -> None:
    spec = lookup(code)
    assert spec is not None
    assert (spec.code, spec.operation, spec.kind, spec.vendors) == (code, operation, kind,
                                                                    {vendor})


def test_table_holds_exactly_the_documented_codes() -> None:
    assert set(OPERATIONS) == {c for table in (JD_TABLE, ALIYUN_TABLE, AWS_TABLE, GCP_TABLE,
                                               *NEW_TABLES)
                               for c, _, _ in table}
    assert all(spec.kind in KINDS for spec in OPERATIONS.values())


def test_both_redeploy_spellings_are_one_operation_with_their_own_kinds() -> None:
    jd, ali = lookup("SystemFailure.ReDeploy"), lookup("SystemFailure.Redeploy")
    assert jd is not None
    assert ali is not None
    assert jd.operation == ali.operation == "failure.redeploy"
    assert (jd.kind, ali.kind) == ("single", "paired")


def test_lookup_is_exact() -> None:
    assert lookup("systemfailure.reboot") is None
    assert lookup("Instance:SystemFailure.Reboot") is None
    assert lookup("") is None


def test_spec_is_frozen() -> None:
    spec = lookup("CreateImage")
    assert isinstance(spec, OperationSpec)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.operation = "x"  # type: ignore[misc]


def test_aliyun_statuses_follow_the_appendix() -> None:
    assert dict(ALIYUN_STATUSES) == {
        "SystemMaintenance.Reboot": {"Scheduled", "Executing", "Executed", "Avoided", "Canceled",
                                     "Failed"},
        "SystemFailure.Reboot": {"Executing", "Executed"},
        "InstanceFailure.Reboot": {"Executing", "Executed"},
        "SystemMaintenance.Redeploy": {"Scheduled", "Executing", "Executed", "Avoided",
                                       "Canceled"},
        "SystemFailure.Redeploy": {"Scheduled", "Executing", "Executed", "Avoided", "Canceled"},
        "SystemMaintenance.RebootAndIsolateErrorDisk": {"Inquiring", "Executing", "Executed",
                                                        "Avoided", "Canceled"},
        "SystemMaintenance.RebootAndReInitErrorDisk": {"Inquiring", "Executing", "Executed",
                                                       "Avoided", "Canceled"},
        "SystemFailure.Delete": {"Executing", "Executed", "Avoided"},
        "LiveMigrationAcrossDDH": {"started", "accomplished", "failed"},
    }


def test_status_documented() -> None:
    assert status_documented("SystemMaintenance.Reboot", "Failed")
    assert not status_documented("SystemFailure.Reboot", "Scheduled")
    assert status_documented("StateChange", "anything")  # no documented set
    assert status_documented("Unknown.Code", "Whatever")


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ("Scheduled", "scheduled"), ("Inquiring", "inquiring"), ("Executing", "executing"),
        ("Executed", "executed"), ("Avoided", "avoided"), ("Canceled", "canceled"),
        ("Failed", "failed"), ("started", "executing"), ("accomplished", "executed"),
        ("failed", "failed"), ("EXECUTED", "executed"), ("Cancelled", "canceled"),
        ("Paused", None), ("", None),
    ],
)
def test_phase_of(status: str, phase: str | None) -> None:
    assert phase_of(status) == phase
    assert phase is None or phase in PHASES


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SystemMaintenance.FooBar", "system_maintenance.foo_bar"),
        ("SystemFailure.GPUFailure.Fault", "system_failure.gpu_failure.fault"),
        ("SystemMaintenance.ReInitErrorDisk", "system_maintenance.re_init_error_disk"),
        ("SystemFailure.Stop", "system_failure.stop"),
        ("Security.TpmAlert", "security.tpm_alert"),
        ("AutoReactivateCompleted", "auto_reactivate_completed"),
        ("Disk.IOHang2", "disk.io_hang_2"),
        ("already_snake.case", "already_snake.case"),
        ("Weird Code!.X", "weird_code.x"),
        ("..", "unknown"),
        ("", "unknown"),
        ("事件", "unknown"),  # nothing of [a-z0-9_] left: a name, never an empty string
    ],
)
def test_mechanical_operation(code: str, expected: str) -> None:
    assert mechanical_operation(code) == expected
