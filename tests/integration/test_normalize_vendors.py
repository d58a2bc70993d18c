"""The normalize stage on a real broker with the new vendors' shapes: one raw record giving two
events, out-of-scope records skipped (counted, not dead-lettered), an undecodable time rejected,
and a payload without event time stamped with its Kafka record timestamp."""

from __future__ import annotations

import base64
import copy
from typing import Any

import orjson
import pytest

from consumer.app import normalize_loop
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.serde import Decoder, load_schemas
from tests.integration.kafkatools import committed_total, headers_of, read_all
from tests.integration.test_normalize_stage import in_process_stage, run_in_thread
from tests.seeds import BY_NAME
from tests.vendor_samples import ALIYUN_DEBUG, AWS_HEALTH_SCHEDULED, GCP_HOST_ERROR

pytestmark = pytest.mark.kafka


@pytest.mark.apache_kafka
def test_new_vendor_shapes_through_the_stage(kafka_stack: Any) -> None:
    bootstrap = kafka_stack.bootstrap
    two = copy.deepcopy(AWS_HEALTH_SCHEDULED.obj)
    two["detail"]["affectedEntities"] = [{"entityValue": "i-0aaa0000000000001"},
                                         {"entityValue": "i-0bbb0000000000002"}]
    rds = copy.deepcopy(AWS_HEALTH_SCHEDULED.obj)
    rds["detail"]["service"] = "RDS"
    push = {"message": {"data": base64.b64encode(GCP_HOST_ERROR.raw).decode()},
            "subscription": "projects/p/subscriptions/s"}
    year_one = BY_NAME["jd_system_failure_fault"].obj | {"eventTime": "0001-01-01 00:00:00"}
    inputs = [orjson.dumps(two), orjson.dumps(rds), ALIYUN_DEBUG.raw, orjson.dumps(push),
              orjson.dumps(year_one)]
    settings, raw, out, dlq = in_process_stage(bootstrap, inputs)
    metrics = Metrics()
    run_in_thread(normalize_loop(settings, metrics, Health()),
                  lambda: committed_total(bootstrap, settings.normalize_group, raw) >= len(inputs))

    records = read_all(bootstrap, [out], expected=4)
    decoder = Decoder(load_schemas(settings.schema_dir))
    events = [decoder.decode(m.value()) for m in records]
    assert [(e["vendor"], e["instance_id"], e["source"]["offset"]) for e in events] == [
        ("aws", "i-0aaa0000000000001", 0), ("aws", "i-0bbb0000000000002", 0),
        ("aliyun", "i-bp1ecr********5go2go", 2), ("gcp", "2074079198322937303", 3)]
    assert [m.key() for m in records[:2]] == [b"aws:i-0aaa0000000000001",
                                              b"aws:i-0bbb0000000000002"]

    raw_records = read_all(bootstrap, [raw], expected=len(inputs))
    _, debug_timestamp = raw_records[2].timestamp()
    debug = events[2]
    assert debug["event_time"] == debug_timestamp  # the project decoder keeps epoch ms
    assert debug["attributes"]["vmevents.event_time_source"] == "record_timestamp"

    [dead] = read_all(bootstrap, [dlq], expected=1)
    assert headers_of(dead)["vmevents.dlq.reason"] == "invalid_time"
    assert headers_of(dead)["vmevents.dlq.source.offset"] == "4"
    assert metrics.registry.get_sample_value(
        "vmevents_skipped_total", {"vendor": "aws", "reason": "out_of_scope"}) == 1
    assert metrics.registry.get_sample_value("vmevents_dlq_total", {"reason": "invalid_time"}) == 1
