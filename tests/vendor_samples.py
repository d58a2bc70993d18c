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
