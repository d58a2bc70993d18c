"""The correlate stage's processor without Kafka: progress marks among the records of a batch,
and the label caps on what it exports."""

from __future__ import annotations

from confluent_kafka import Message

from consumer.config import DEFAULT_SCHEMA_DIR, load_settings
from consumer.correlator import Correlator, CorrelatorConfig
from consumer.metrics import Metrics
from consumer.model import InstanceEvent
from consumer.runtime.correlate_stage import CorrelateProcessor
from consumer.runtime.marks import MARK_HEADER, MARK_KEY, encode_mark
from consumer.serde import Decoder, load_schemas, single_object_encoder

BASE = 1_767_225_600_000
DAY = 86_400_000


def jd(phase: str | None, when: int, operation: str = "failure.reboot",
       instance: str = "i-1") -> InstanceEvent:
    return {  # type: ignore[return-value]
        "vendor": "jdcloud", "instance_id": instance, "vendor_event_code": "SystemFailure.Reboot",
        "operation": operation, "known": True, "phase": phase, "vendor_status": None,
        "event_time": when, "region": "r1", "account_id": "a", "notification_id": None,
        "vendor_event_id": None, "level": None, "previous_state": None, "current_state": None,
        "publish_time": None, "not_before": None, "start_time": None, "end_time": None,
        "source_format": "", "attributes": {}, "source": None,
    }


class Stage:
    def __init__(self) -> None:
        schemas = load_schemas(DEFAULT_SCHEMA_DIR)
        self.encode = single_object_encoder(schemas["InstanceEvent"])
        self.metrics = Metrics()
        self.processor = CorrelateProcessor(
            load_settings({}), CorrelatorConfig(), Decoder(schemas),
            lambda topic: single_object_encoder(schemas["OperationOutcome"]), self.metrics,
            clock=lambda: BASE)
        self.processor.correlators[0] = Correlator(self.processor.config, self.processor.clock)
        self.offset = 0

    def batch(self, *items: InstanceEvent | list[tuple[str, int, bool]]) -> list[str]:
        """Process events and marks (lists of entries); returns the topics written."""
        messages = []
        for item in items:
            if isinstance(item, list):
                messages.append(Message(topic="in", partition=0, offset=self.offset,
                                        key=MARK_KEY, value=None,
                                        headers=[(MARK_HEADER, encode_mark(item))]))
            else:
                messages.append(Message(topic="in", partition=0, offset=self.offset,
                                        value=self.encode(item)))
            self.offset += 1
        topics: list[str] = []
        self.processor.process(messages, lambda topic, *rest: topics.append(topic))
        return topics


def test_progress_marks_in_a_batch_hold_and_release_notifications() -> None:
    stage = Stage()
    # raw:1 has not been normalized past the start yet: both wait, nothing is dead-lettered.
    topics = stage.batch([("raw:0", BASE + 60_000, True), ("raw:1", BASE, False)],
                         jd("executing", BASE + 10_000), jd("executed", BASE + 30_000))
    assert not any(t.endswith(".completed") for t in topics)
    assert "vm.events.dlq" not in topics
    assert stage.processor.correlators[0].buffered_count == 2
    topics = stage.batch([("raw:1", BASE + 60_000, True)])
    assert "failure.reboot.completed" in topics
    assert stage.processor.correlators[0].buffered_count == 0
    assert stage.metrics.registry.get_sample_value(
        "vmevents_correlate_frontier_lag_seconds", {"partition": "0"}) == 0


def test_late_notifications_with_made_up_operations_stay_under_the_label_cap() -> None:
    stage = Stage()
    stage.batch(jd(None, BASE + DAY))  # the partition's time: a day later
    stage.batch(*[jd(None, BASE, operation=f"made.up.{i}", instance=f"i-{i}")
                  for i in range(2_000)])  # each a day behind: late
    series = [s for metric in stage.metrics.registry.collect()
              if metric.name == "vmevents_late_notifications" for s in metric.samples
              if s.name.endswith("_total")]
    assert sum(s.value for s in series) == 2_000  # every one counted
    assert len(series) <= 501  # ... in at most the family's label sets, the rest under "other"
