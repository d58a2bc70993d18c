"""The AWS and GCP sample payloads of ``shared/notes/vendors-aws-gcp.md``, verbatim, and the
Alibaba shapes issue #9 names (block storage ``Disk:Stalled`` from Alibaba's block storage event
notification page; CloudMonitor's debug-subscription shape), each with a name.

``text`` is the JSON as printed there; ``obj`` is it parsed by the standard library, independent
of the code under test. Variations (SNS, Pub/Sub push, two instances, ...) are built in the tests
from these.
"""

# ruff: noqa: E501  (the notes' payloads are kept verbatim, long lines included)

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    name: str
    vendor: str
    text: str

    @property
    def raw(self) -> bytes:
        return self.text.encode()

    @property
    def obj(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.text)
        return value


AWS_HEALTH_SCHEDULED = Sample("aws_health_scheduled", "aws", r'''{
  "version": "0",
  "id": "7bf73129-1428-4cd3-a780-95db273d1602",
  "detail-type": "AWS Health Event",
  "source": "aws.health",
  "account": "123456789012",
  "time": "2026-01-27T01:43:21Z",
  "region": "us-east-1",
  "detail": {
    "eventArn": "arn:aws:health:us-east-1::event/AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED_90353408594353983",
    "service": "EC2",
    "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
    "eventTypeCategory": "scheduledChange",
    "eventScopeCode": "ACCOUNT_SPECIFIC",
    "communicationId": "1234abc01232a4012345678-1",
    "startTime": "Thu, 27 Aug 2026 13:19:03 GMT",
    "lastUpdatedTime": "Thu, 27 Jan 2026 13:44:13 GMT",
    "statusCode": "open",
    "eventRegion": "us-east-1",
    "eventDescription": [{"language": "en_US", "latestDescription": "A description of the event will be provided here"}],
    "eventMetadata": {"keystring1": "valuestring1", "truncated": "true"},
    "affectedEntities": [{
      "entityValue": "arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0",
      "lastUpdatedTime": "Thu, 26 Jan 2026 19:01:55 GMT",
      "status": "PENDING"
    }],
    "affectedAccount": "123456789012",
    "page": "1",
    "totalPages": "1",
    "backupEvent": "false",
    "personas": ["OPERATIONS"],
    "actionability": "ACTION_REQUIRED"
  }
}''')

AWS_HEALTH_OLDER = Sample("aws_health_older_shape", "aws", r'''{
  "version": "0", "id": "7fb65329-1628-4cf3-a740-95fg457h1402", "detail-type": "AWS Health Event",
  "source": "aws.health", "account": "account id", "time": "2016-06-05T06:27:57Z", "region": "us-east-1",
  "resources": ["i-12345678"],
  "detail": {
    "eventArn": "arn:aws:health:region::event/id", "service": "EC2",
    "eventTypeCode": "AWS_EC2_DEDICATED_HOST_NETWORK_MAINTENANCE_SCHEDULED",
    "eventTypeCategory": "scheduledChange", "startTime": "Sat, 05 Jun 2016 15:10:09 GMT",
    "eventDescription": [{"language": "en_US", "latestDescription": "A description of the event will be provided here"}],
    "affectedEntities": [{"entityValue": "i-12345678", "tags": {"stage": "prod", "app": "my-app"}}]
  }
}''')

AWS_SPOT_WARNING = Sample("aws_spot_interruption_warning", "aws", r'''{
  "version": "0", "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
  "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
  "account": "<account_number>", "time": "1970-01-01T00:00:00Z", "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1b:instance/i-0b662ef9931388ba0"],
  "detail": {"instance-id": "i-0b662ef9931388ba0", "instance-action": "terminate"}
}''')

AWS_STATE_CHANGE = Sample("aws_ec2_state_change_pending", "aws", r'''{
  "id": "7bf73129-1428-4cd3-a780-95db273d1602",
  "detail-type": "EC2 Instance State-change Notification",
  "source": "aws.ec2", "account": "123456789012", "time": "2021-11-11T21:29:54Z", "region": "us-east-1",
  "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
  "detail": {"instance-id": "i-abcd1111", "state": "pending"}
}''')

GCP_HOST_ERROR = Sample("gcp_host_error", "gcp", r'''{
  "protoPayload": {
    "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
    "status": {"message": "Instance terminated by Compute Engine."},
    "authenticationInfo": {"principalEmail": "system@google.com"},
    "serviceName": "compute.googleapis.com",
    "methodName": "compute.instances.hostError",
    "resourceName": "projects/skilled-adapter-452/zones/us-east1-d/instances/longevity-10gb-3h-master-db-node-fac7b27a-0-6",
    "request": {"@type": "type.googleapis.com/compute.instances.hostError"}
  },
  "insertId": "fjpkr2e6yi26",
  "resource": {"type": "gce_instance",
               "labels": {"zone": "us-east1-d", "project_id": "skilled-adapter-452", "instance_id": "2074079198322937303"}},
  "timestamp": "2022-06-30T14:07:23.102868Z",
  "severity": "INFO",
  "logName": "projects/skilled-adapter-452/logs/cloudaudit.googleapis.com%2Fsystem_event",
  "operation": {"id": "systemevent-1656598023967-5e2aac8c11261-3553f149-42656705",
                "producer": "compute.instances.hostError", "first": true, "last": true},
  "receiveTimestamp": "2022-06-30T14:07:23.983450844Z"
}''')

ALIYUN_DISK_STALLED_START = Sample("ali_disk_stalled_executing", "aliyun", r'''{
  "id": "2256A988-0B26-4E2B-820A-8A********E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:disk/d-t4ndyqve********n4ds",
  "level": "CRITICAL",
  "name": "Disk:Stalled:Executing",
  "userId": "169070********30",
  "eventTime": "20190410T080101.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
    "eventId": "e-t4navn7********6x5no",
    "diskId": "d-t4ndyqve********n4ds",
    "device": "/dev/xvdb",
    "eventType": "Stalled",
    "executeStartTime": "2019-04-10T01:01:01Z",
    "ecsInstanceId": "i-bp1ecr********5go2go",
    "ecsInstanceName": "ecs-instance-name"
  }
}''')

ALIYUN_DEBUG = Sample("ali_cloudmonitor_debug_subscription", "aliyun", r'''{
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:173651113438****:instance/i-bp1ecr********5go2go",
  "level": "CRITICAL",
  "instanceName": "instanceName",
  "regionId": "cn-hangzhou",
  "name": "Instance:SystemFailure.Reboot:Executing",
  "content": {"eventType": "SystemFailure.Reboot", "eventStatus": "Executing",
              "instanceId": "i-bp1ecr********5go2go"},
  "status": "Executing"
}''')

NOTES_SAMPLES: tuple[Sample, ...] = (AWS_HEALTH_SCHEDULED, AWS_HEALTH_OLDER, AWS_SPOT_WARNING,
                                     AWS_STATE_CHANGE, GCP_HOST_ERROR)
ALIYUN_SAMPLES: tuple[Sample, ...] = (ALIYUN_DISK_STALLED_START, ALIYUN_DEBUG)


# -- Azure, Tencent Cloud, Huawei Cloud (shared/notes/vendors-azure-tencent.md, issue #17) -------
# The notes abbreviate; the payloads below complete those shapes with the fields the vendors'
# pages document, and keep their quirks (wrong weekday in NotBefore, upper-case Activity Log
# ids, Tencent's string ms epoch and snake-case name, Huawei's JSON-string content).

AZURE_SE_IMDS_DOCUMENT = r'''{"DocumentIncarnation": 2, "Events": [{"EventId": "C7061BAC-AFDC-4513-B24B-AA5F13A16123", "EventStatus": "Scheduled", "EventType": "Freeze",
  "ResourceType": "VirtualMachine", "Resources": ["WestNO_0", "WestNO_1"], "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT",
  "Description": "Virtual machine is going to be paused for a few seconds with memory-preserving Live Migration operation.", "EventSource": "Platform", "DurationInSeconds": 5}]}'''

AZURE_SE_AGENT = Sample("azure_se_agent_freeze_scheduled", "azure", r'''{
  "vmeventsEnvelope": "azure.scheduledevents", "version": 1,
  "observedAt": "2026-04-11T22:10:00.123Z",
  "vm": {"vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "WestNO_0",
         "resourceId": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachineScaleSets/WestNO/virtualMachines/0",
         "subscriptionId": "8d10da13-8125-4ba9-a717-bf7490507b3d", "resourceGroupName": "Fleet-RG",
         "location": "norwayeast", "vmScaleSetName": "WestNO"},
  "document": ''' + AZURE_SE_IMDS_DOCUMENT + '''
}''')

AZURE_SE_EVENT_GRID = Sample("azure_eventgrid_scheduled_event_started", "azure", r'''{
  "id": "6f2c7b8e-3a9d-4f7e-9a51-3f0e8d1c2b4a",
  "topic": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d",
  "subject": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachineScaleSets/WestNO",
  "eventType": "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted",
  "eventTime": "2026-04-11T22:27:01.1234567Z",
  "data": {"resourceInfo": {
      "id": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachineScaleSets/WestNO",
      "name": "C7061BAC-AFDC-4513-B24B-AA5F13A16123",
      "type": "Microsoft.Maintenance/scheduledevents",
      "location": "norwayeast",
      "properties": {"EventStatus": "Started", "EventType": "Freeze", "ResourceType": "VirtualMachine",
        "Resources": ["WestNO_0", "WestNO_1"], "NotBefore": "Mon, 11 Apr 2026 22:26:58 GMT",
        "Description": "Virtual machine is going to be paused for a few seconds with memory-preserving Live Migration operation.",
        "EventSource": "Platform", "DurationInSeconds": 5}},
    "apiVersion": "2020-07-01",
    "operationalInfo": {"resourceEventTime": "2026-04-11T22:27:01.1234567Z"}},
  "dataVersion": "1", "metadataVersion": "1"
}''')

AZURE_SE_EVENT_GRID_COMPLETED = Sample("azure_eventgrid_scheduled_event_completed", "azure", r'''{
  "id": "0c4e9f0a-9a7d-4f3c-8b1e-2d5f6a7b8c9d",
  "topic": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d",
  "subject": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourcegroups/fleet-rg/providers/microsoft.compute/virtualmachines/db-01",
  "eventType": "Microsoft.ResourceNotifications.MaintenanceResources.ScheduledEventEmitted",
  "eventTime": "2026-04-12T03:40:12.5550000Z",
  "data": {"resourceInfo": {
      "id": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01",
      "name": "A123BC45-1234-4B3C-9D8E-0123456789AB", "type": "Microsoft.Maintenance/scheduledevents",
      "location": "westeurope",
      "properties": {"EventStatus": "Completed", "EventType": "Reboot", "ResourceType": "VirtualMachine",
        "Resources": ["db-01"], "NotBefore": "", "Description": "", "EventSource": "Platform",
        "DurationInSeconds": -1}}},
  "dataVersion": "1", "metadataVersion": "1"
}''')

AZURE_ACTIVITY_LOG = Sample("azure_activity_log_resource_health", "azure", r'''{"records": [
  {"time": "2026-04-12T03:30:05.1810000Z",
   "resourceId": "/SUBSCRIPTIONS/8D10DA13-8125-4BA9-A717-BF7490507B3D/RESOURCEGROUPS/FLEET-RG/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/DB-01",
   "operationName": "Microsoft.Resourcehealth/healthevent/Activated/action",
   "category": "ResourceHealth", "resultType": "Active", "level": "Critical",
   "correlationId": "7d2c3ad5-8c1b-4e2a-9f4e-5a6b7c8d9e0f",
   "properties": {"eventCategory": "ResourceHealth", "eventProperties": {
     "title": "Rebooted by platform", "details": "VirtualMachineHostRebootedForRepair",
     "currentHealthStatus": "Unavailable", "previousHealthStatus": "Available",
     "type": "Downtime", "cause": "PlatformInitiated"}}},
  {"time": "2026-04-12T03:41:15.0000000Z",
   "resourceId": "/SUBSCRIPTIONS/8D10DA13-8125-4BA9-A717-BF7490507B3D/RESOURCEGROUPS/FLEET-RG/PROVIDERS/MICROSOFT.COMPUTE/VIRTUALMACHINES/DB-01",
   "operationName": "Microsoft.Resourcehealth/healthevent/Resolved/action",
   "category": "ResourceHealth", "resultType": "Resolved", "level": "Informational",
   "properties": {"eventCategory": "ResourceHealth", "eventProperties": {
     "title": "Available", "healthStatus": "Available", "healthEventType": "Downtime",
     "healthEventCause": "PlatformInitiated", "healthEventCategory": "Unplanned"}}},
  {"time": "2026-04-12T03:00:00.0000000Z", "resourceId": "/SUBSCRIPTIONS/8D10DA13-8125-4BA9-A717-BF7490507B3D",
   "operationName": "Microsoft.ServiceHealth/incident/action", "category": "ServiceHealth",
   "properties": {"eventCategory": "ServiceHealth", "eventProperties": {"title": "Network issue"}}}
]}''')

AZURE_AVAILABILITY_CHANGED = Sample("azure_health_availability_status_changed", "azure", r'''{
  "id": "1fb6fa94-d965-4306-abeq-4810f0774e97",
  "source": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d",
  "subject": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current",
  "data": {"resourceInfo": {
      "id": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01/providers/Microsoft.ResourceHealth/availabilityStatuses/current",
      "name": "current", "type": "Microsoft.ResourceHealth/availabilityStatuses", "location": "westeurope",
      "properties": {"targetResourceId": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01",
        "targetResourceType": "Microsoft.Compute/virtualMachines", "occurredTime": "2026-04-12T03:30:02.0000000Z",
        "previousAvailabilityState": "Available", "availabilityState": "Unavailable"}},
    "operationalInfo": {"resourceEventTime": "2026-04-12T03:30:02.0000000Z"}, "apiVersion": "2023-12-01"},
  "type": "Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged",
  "specversion": "1.0", "time": "2026-04-12T03:30:09.0000000Z"
}''')

AZURE_RESOURCE_ANNOTATED = Sample("azure_health_resource_annotated", "azure", r'''{
  "id": "8945cf9b-e220-496e-ab4f-f3a239318995",
  "source": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d",
  "subject": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01/providers/Microsoft.ResourceHealth/resourceAnnotations/current",
  "data": {"resourceInfo": {
      "id": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01/providers/Microsoft.ResourceHealth/resourceAnnotations/current",
      "name": "current", "type": "Microsoft.ResourceHealth/resourceAnnotations", "location": "westeurope",
      "properties": {"targetResourceId": "/subscriptions/8d10da13-8125-4ba9-a717-bf7490507b3d/resourceGroups/Fleet-RG/providers/Microsoft.Compute/virtualMachines/db-01",
        "targetResourceType": "Microsoft.Compute/virtualMachines", "occurredTime": "2026-04-12T03:30:01.0000000Z",
        "annotationName": "VirtualMachineHostRebootedForRepair",
        "reason": "Rebooted for repair", "summary": "The VM was rebooted as part of a repair action.",
        "context": "Platform Initiated", "category": "Unplanned"}},
    "operationalInfo": {"resourceEventTime": "2026-04-12T03:30:01.0000000Z"}, "apiVersion": "2023-12-01"},
  "type": "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated",
  "specversion": "1.0", "time": "2026-04-12T03:30:08.0000000Z"
}''')

TENCENT_GUEST_REBOOT = Sample("tencent_eventbridge_guest_reboot", "tencent", r'''{
  "specversion": "1.0", "id": "13a3f42d-7258-4ada-da6d-023a333b4662",
  "source": "cvm.cloud.tencent", "type": "cvm:ErrorEvent:GuestReboot",
  "subject": "ins-qwertyui", "time": 1615430559146, "region": "ap-guangzhou", "status": "1",
  "datacontenttype": "application/json;charset=utf-8",
  "data": {"appId": "1250000000", "instanceId": "ins-qwertyui", "projectId": "11",
           "dimensions": {"unInstanceId": "ins-qwertyui"}, "additionalMsg": {"IP": "10.0.0.3"}}
}''')

TENCENT_PING_SNAKE = Sample("tencent_eventbridge_ping_unreachable_snake", "tencent", r'''{
  "specversion": "1.0", "id": "a1b2c3d4-0000-4ada-8000-023a333b4662",
  "source": "cvm.cloud.tencent", "type": "cvm:ErrorEvent:ping_unreachable",
  "subjuect": "ins-qwertyui", "time": "1615430600000", "region": "ap-guangzhou", "status": "0",
  "data": {"appId": "1250000000", "instanceId": "ins-qwertyui", "projectId": "11",
           "dimensions": {"unInstanceId": "ins-qwertyui"}, "additionalMsg": {}}
}''')

TENCENT_REPAIR_INQUIRING = Sample("tencent_eventbridge_running_risks_inquiring", "tencent", r'''{
  "specversion": "1.0", "id": "b1b2c3d4-1111-4ada-8000-023a333b4662",
  "source": "cvm.cloud.tencent", "type": "cvm:ErrorEvent:InstanceRunningRisksInquiring",
  "subject": "${instanceId}", "time": 1615430700000, "region": "ap-shanghai", "status": "1",
  "data": {"appId": "1250000000", "instanceId": "ins-asdfghjk", "projectId": "0",
           "dimensions": {"unInstanceId": "ins-asdfghjk"}, "additionalMsg": {"TaskId": "rep-12345678"}}
}''')

TENCENT_POWER_OFF = Sample("tencent_eventbridge_power_off", "tencent", r'''{
  "specversion": "1.0", "id": "c1b2c3d4-2222-4ada-8000-023a333b4662",
  "source": "cvm.cloud.tencent", "type": "cvm:OperationEvent:InstancePowerOff",
  "subject": "ins-qwertyui", "time": 1615430800000, "region": "ap-guangzhou", "status": "-",
  "data": {"appId": "1250000000", "instanceId": "ins-qwertyui", "projectId": "11"}
}''')

HUAWEI_REBOOT_SERVER = Sample("huawei_ces_reboot_server", "huawei", r'''{
  "event_id": "ev1606302402256R6doP5YeZ", "event_name": "rebootServer", "event_source": "SYS.ECS",
  "time": 1606302400000,
  "detail": {"content": "{\"op_svc_userid\":\"e4f0f4b3b5a24d7e8c2c4d1f0b9a8e7d\"}",
             "resource_id": "ef8dad27-7c8b-4b2a-9b1a-0e6c5d4f3a21", "resource_name": "ecs-web-01",
             "event_state": "normal", "event_level": "Minor", "user": "admin",
             "event_type": "EVENT.SYS",
             "dimensions": [{"name": "instance_id", "value": "fddad01f-6a3b-4d2c-8e1f-7a9b0c1d2e3f"}]}
}''')

HUAWEI_AUTO_RECOVERY_START = Sample("huawei_ces_start_auto_recovery", "huawei", r'''{
  "event_id": "ev1606302500000A1b2C3d4E5f", "event_name": "startAutoRecovery", "event_source": "SYS.ECS",
  "time": 1606302500000,
  "detail": {"content": "{}", "resource_id": "ef8dad27-7c8b-4b2a-9b1a-0e6c5d4f3a21",
             "resource_name": "ecs-web-01", "event_state": "incident", "event_level": "Major",
             "event_type": "EVENT.SYS", "sub_event_type": "OPS"}
}''')

HUAWEI_REDEPLOY_SCHEDULED = Sample("huawei_ces_instance_redeploy_scheduled", "huawei", r'''{
  "event_id": "ev1606303000000Z9y8X7w6V5u", "event_name": "instance_redeploy_scheduled",
  "event_source": "SYS.ECS", "time": 1606303000000,
  "detail": {"content": "{\"not_before\":\"2020-11-27T08:00:00Z\",\"id\":\"8b3c1f0e-scheduled\"}",
             "resource_id": "ef8dad27-7c8b-4b2a-9b1a-0e6c5d4f3a21", "resource_name": "ecs-web-01",
             "event_state": "warning", "event_level": "Major", "event_type": "EVENT.SYS",
             "sub_event_type": "PLAN"}
}''')

AZURE_SAMPLES: tuple[Sample, ...] = (AZURE_SE_AGENT, AZURE_SE_EVENT_GRID,
                                     AZURE_SE_EVENT_GRID_COMPLETED, AZURE_ACTIVITY_LOG,
                                     AZURE_AVAILABILITY_CHANGED, AZURE_RESOURCE_ANNOTATED)
TENCENT_SAMPLES: tuple[Sample, ...] = (TENCENT_GUEST_REBOOT, TENCENT_PING_SNAKE,
                                       TENCENT_REPAIR_INQUIRING, TENCENT_POWER_OFF)
HUAWEI_SAMPLES: tuple[Sample, ...] = (HUAWEI_REBOOT_SERVER, HUAWEI_AUTO_RECOVERY_START,
                                      HUAWEI_REDEPLOY_SCHEDULED)
