"""The 36 example payloads of the two vendor documents, verbatim, each with a name.

Copied from ``shared/seeds/000_8fdccf977ae5e56b.txt`` (JD Cloud VM: the envelope example and the
26 ``detail`` snippets, in document order) and ``001_2662114b5a5ca298.txt`` (Alibaba ECS: the 9
CloudMonitor notifications, in document order). ``text`` is the JSON exactly as printed there
(list-item indentation removed; tabs, odd spacing and the vendors' masked ids kept), because
that is what a producer puts on the wire; ``raw`` is it as bytes and ``obj`` parsed by the
standard library, independent of the code under test. Integration tests import this too.
"""

# ruff: noqa: W291  (the documents' trailing spaces are part of the verbatim text)

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Seed:
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


SEEDS: tuple[Seed, ...] = (
    Seed(
        "jd_envelope_state_change_running",
        "jdcloud",
        r'''{
	"detail":{
		"eventAction":"StateChange",
		"eventTime":"2021-03-18 11:40:38",
		"instanceCurrentState":"running",
		"instanceId":"i-eiu****bqp",
		"instanceLastState":"pending"
		},
	"detailType":"StatusNotification",
	"id":"1xo6n4os********6g2d5721f2",
	"pin":"iaasdevops",
	"region":"cn-east-1",
	"resources":[
		"i-eiuciglbqp"
	],
	"source":"jcloud.vm",
	"time":"2021-03-18T11:49:46+0800",
	"version":""	
}
''',
    ),
    Seed(
        "jd_system_failure_delete_executing",
        "jdcloud",
        r'''{
	"eventAction":"SystemFailure.Delete",
	"eventState":"Executing",
	"eventTime":"2021-02-25 20:13:35",
	"instanceId":"i-ai0****net"
}
''',
    ),
    Seed(
        "jd_system_failure_delete_executed",
        "jdcloud",
        r'''{
	"eventAction":"SystemFailure.Delete",
	"eventState":"Executed",
	"eventTime":"2021-02-25 20:13:39",
	"instanceId":"i-ai0****net"
}
''',
    ),
    Seed(
        "jd_system_failure_reboot_executing",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.Reboot",
	"eventState":"Executing",
	"eventTime": "2021-02-25 06:44:06",
	"instanceId": "i-bc4****9oh"
}
''',
    ),
    Seed(
        "jd_system_failure_reboot_executed",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.Reboot",
	"eventState":"Executed",
	"eventTime": "2021-02-25 06:44:26",
	"instanceId": "i-bc4****9oh"
}
''',
    ),
    Seed(
        "jd_system_failure_fault",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.Fault",
	"eventTime": "2021-02-25 09:51:27",
	"instanceId": "i-qj7****e7m"
}
''',
    ),
    Seed(
        "jd_local_disk_failure_fault",
        "jdcloud",
        r'''{
	"eventAction": "SystemException.LocalDiskFailure.Fault",
	"eventTime": "2021-02-25 09:51:27",
	"instanceId": "i-qj7****e7m"
}
''',
    ),
    Seed(
        "jd_gpu_failure_fault",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.GPUFailure.Fault",
	"eventTime": "2021-02-25 09:51:27",
	"instanceId": "i-qj7****e7m",
	"gpuSerial": "gpu-serial:1:2:3"
}
''',
    ),
    Seed(
        "jd_removed_from_ag",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.RemovedFromAg",
	"eventTime": "2021-02-25 09:51:27",
	"instanceId": "i-qj7****e7m"
}
''',
    ),
    Seed(
        "jd_redeploy",
        "jdcloud",
        r'''{
	"eventAction": "SystemFailure.ReDeploy",
	"eventTime": "2023-03-01 09:51:27",
	"instanceId": "i-qj7****e7m"
}
''',
    ),
    Seed(
        "jd_isolate_local_disk",
        "jdcloud",
        r'''{
	"eventAction": "SystemMaintenance.IsolateLocalDisk",
	"eventTime": "2023-03-01 09:51:27",
	"instanceId": "i-qj7****e7m"
}
''',
    ),
    Seed(
        "jd_expiration_stop_executing",
        "jdcloud",
        r'''{
	"eventAction": "InstanceExpiration.Stop",
	"eventState": "Executing",
	"eventTime": "2021-02-25 11:00:14",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_expiration_stop_executed",
        "jdcloud",
        r'''{
	"eventAction": "InstanceExpiration.Stop",
	"eventState": "Executed",
	"eventTime": "2021-02-25 11:00:20",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_expiration_delete_executing",
        "jdcloud",
        r'''{
	"eventAction": "InstanceExpiration.Delete",
	"eventState": "Executing",
	"eventTime": "2021-02-25 11:00:14",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_expiration_delete_executed",
        "jdcloud",
        r'''{
	"eventAction": "InstanceExpiration.Delete",
	"eventState": "Executed",
	"eventTime": "2021-02-25 11:00:20",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_arrearage_stop_executing",
        "jdcloud",
        r'''{
	"eventAction": "AccountArrearage.Stop",
	"eventState": "Executing",
	"eventTime": "2021-02-25 11:00:14",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_arrearage_stop_executed",
        "jdcloud",
        r'''{
	"eventAction": "AccountArrearage.Stop",
	"eventState": "Executed",
	"eventTime": "2021-02-25 11:00:20",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_arrearage_delete_executing",
        "jdcloud",
        r'''{
	"eventAction": "AccountArrearage.Delete",
	"eventState": "Executing",
	"eventTime": "2021-02-25 11:00:14",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_arrearage_delete_executed",
        "jdcloud",
        r'''{
	"eventAction": "AccountArrearage.Delete",
	"eventState": "Executed",
	"eventTime": "2021-02-25 11:00:20",
	"instanceId": "i-l16****r0v"
}
''',
    ),
    Seed(
        "jd_state_change_create_pending",
        "jdcloud",
        r'''{
	"eventAction": "StateChange",
	"eventTime": "2021-02-25 11:00:30",
	"instanceCurrentState": "pending",
	"instanceId": "i-x0r****q2b",
	"instanceLastState": ""
}
''',
    ),
    Seed(
        "jd_state_change_create_running",
        "jdcloud",
        r'''{
	"eventAction": "StateChange",
	"eventTime": "2021-02-25 11:00:52",
	"instanceCurrentState": "running",
	"instanceId": "i-x0r****q2b",
	"instanceLastState": "pending"
}
''',
    ),
    Seed(
        "jd_state_change_create_failed_pending",
        "jdcloud",
        r'''{
	"eventAction":"StateChange",
	"eventTime":"2021-02-26 19:55:18",
	"instanceCurrentState":"pending",
	"instanceId":"i-mob****hpa",
	"instanceLastState":""
}
''',
    ),
    Seed(
        "jd_state_change_create_failed_error",
        "jdcloud",
        r'''{
	"eventAction": "StateChange",
	"eventTime": "2021-02-26 19:55:39",
	"instanceCurrentState": "error",
	"instanceId": "i-mob****hpa",
	"instanceLastState": "pending"
}
''',
    ),
    Seed(
        "jd_state_change_delete_deleting",
        "jdcloud",
        r'''{
	"eventAction": "StateChange",
	"eventTime": "2021-03-19 18:42:14",
	"instanceCurrentState": "deleting",
	"instanceId": "i-5kh****v3b",
	"instanceLastState": "stopped"
}
''',
    ),
    Seed(
        "jd_state_change_delete_terminated",
        "jdcloud",
        r'''{
	"eventAction": "StateChange",
	"eventTime": "2021-03-19 18:42:16",
	"instanceCurrentState": "terminated",
	"instanceId": "i-5kh****v3b",
	"instanceLastState": "deleting"
}
''',
    ),
    Seed(
        "jd_create_image_executing",
        "jdcloud",
        r'''{
	"eventAction":"CreateImage",
	"eventState":"Executing",
	"eventTime":"2021-02-25 20:13:35",
	"instanceId":"i-ai0****net"
}
''',
    ),
    Seed(
        "jd_create_image_executed",
        "jdcloud",
        r'''{
	"eventAction":"CreateImage",
	"eventState":"Executed",
	"eventTime":"2021-02-25 20:13:39",
	"instanceId":"i-ai0****net"
}
''',
    ),
    Seed(
        "ali_maintenance_reboot_scheduled",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A********E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "CRITICAL",
  "name": "Instance:SystemMaintenance.Reboot:Scheduled",
  "userId": "169070********30",
  "eventTime": "20190409T121826.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
    "eventId": "e-bp11trd********pqum2",
    "publishTime": "2019-04-09T04:18:26Z",
    "notBefore": "2019-04-12T01:01:01Z",      
    "instanceId": "i-bp1ecr********5go2go",   
    "eventType": "SystemMaintenance.Reboot",  
    "eventStatus": "Scheduled"
  }
}
''',
    ),
    Seed(
        "ali_maintenance_reboot_avoided",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A********E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "CRITICAL",
  "name": "Instance:SystemMaintenance.Reboot:Scheduled",
  "userId": "169070********30",
  "eventTime": "20190410T160101.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
    "eventId": "e-bp11trdr********qum2",
    "publishTime": "2019-04-09T04:18:26Z",
    "notBefore": "2019-04-12T01:01:01Z",
    "instanceId": "i-bp1ecr********5go2go",
    "eventType": "SystemMaintenance.Reboot",
    "eventStatus": "Avoided",
    "executeStartTime": "2019-04-10T08:01:01Z",  
    "executeFinishTime": "2019-04-10T08:01:01Z"  
  }
}
''',
    ),
    Seed(
        "ali_state_change_running",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A********E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "INFO",
  "name": "Instance:StateChange",
  "userId": "169070********30",
  "eventTime": "20190409T121826.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
    "resourceId": "i-bp1ecr********5go2go",  
    "resourceType": "ALIYUN::ECS::Instance", 
    "state": "Running"                       
  }
}
''',
    ),
    Seed(
        "ali_preemptible_interruption",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A********E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "INFO",
  "name": "Instance:PreemptibleInstanceInterruption",
  "userId": "169070********30",
  "eventTime": "20190409T121826.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
    "instanceId": "i-bp1ecr********5go2go",  
    "action": "delete"                       
  }
}
''',
    ),
    Seed(
        "ali_live_migration_started",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "INFO",
  "instanceName": "instance-event-subscription",
  "name": "Instance:LiveMigrationAcrossDDH",
  "userId": "169070********30",
  "eventTime": "20180608T092537.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
      "instanceId" : "i-bp1ecr********5go2go",
      "sourceDedicatedHostId" : "dh-2ze3lm********t8nr82",
      "destinationDedicatedHostId" : "dh-2ze3lm********t8nr83",
      "startTime" : "2018-06-08T01:25:37Z",
      "status" : "started"
  }
}
''',
    ),
    Seed(
        "ali_live_migration_accomplished",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "INFO",
  "instanceName": "instance-event-subscription",
  "name": "Instance:LiveMigrationAcrossDDH",
  "userId": "169070********30",
  "eventTime": "20180608T092545.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
      "instanceId" : "i-bp1ecr********5go2go",
      "sourceDedicatedHostId" : "dh-2ze3lm********t8nr82",
      "destinationDedicatedHostId" : "dh-2ze3lm********t8nr83",
      "startTime" : "2018-06-08T01:25:37Z",
      "endTime" : "2018-06-08T01:25:45Z",
      "status" : "accomplished"
  }
}
''',
    ),
    Seed(
        "ali_live_migration_failed",
        "aliyun",
        r'''{
  "ver": "1.0",
  "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5",
  "product": "ECS",
  "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
  "level": "INFO",
  "instanceName": "instance-event-subscription",
  "name": "Instance:LiveMigrationAcrossDDH",
  "userId": "169070********30",
  "eventTime": "20180608T092545.922+0800",
  "regionId": "cn-hangzhou",
  "content": {
      "instanceId" : "i-bp1ecr********5go2go",
      "sourceDedicatedHostId" : "dh-2ze3lm********t8nr82",
      "destinationDedicatedHostId" : "dh-2ze3lm********t8nr83",
      "startTime" : "2018-06-08T01:25:37Z",
      "endTime" : "2018-06-08T01:25:45Z",
      "status" : "failed"
  }
}
''',
    ),
    Seed(
        "ali_performance_mode_change",
        "aliyun",
        r'''{
    "ver": "1.0",
    "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5",
    "product": "ECS",
    "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
    "level": "INFO",
    "name": "Instance:PerformanceModeChange",
    "userId": "169070********30",
    "eventTime": "20190409T121826.922+0800",
    "regionId": "cn-hangzhou",
    "content": {
        "instanceId" : "i-bp1ecr********5go2go",
        "creditSpecification" : "Unlimited",
        "operator" : "System"
    }
}
''',
    ),
    Seed(
        "ali_burstable_restricted",
        "aliyun",
        r'''{
    "ver": "1.0",
    "id": "2256A988-0B26-4E2B-820A-8A0580D0B8E5",
    "product": "ECS",
    "resourceId": "acs:ecs:cn-hangzhou:169070********30:instance/i-bp1ecr********5go2go",
    "level": "INFO",
    "name": "Instance:BurstablePerformanceRestricted",
    "userId": "169070********30",
    "eventTime": "20190409T121826.922+0800",
    "regionId": "cn-hangzhou",
    "content": {
        "instanceId" : "i-bp1ecr********5go2go",
        "intervalStart" : "2019-11-11T11:00Z",
        "intervalEnd" : "2019-11-11T12:00Z"
    }
}
''',
    ),
)

JD_SEEDS: tuple[Seed, ...] = tuple(s for s in SEEDS if s.vendor == "jdcloud")
ALIYUN_SEEDS: tuple[Seed, ...] = tuple(s for s in SEEDS if s.vendor == "aliyun")
BY_NAME: dict[str, Seed] = {s.name: s for s in SEEDS}

assert len(SEEDS) == 36, len(SEEDS)
assert len(JD_SEEDS) == 27, len(JD_SEEDS)
assert len(BY_NAME) == 36, "seed names must be unique"
