import logging

from structlog.testing import capture_logs

from consumer.config import load_settings
from consumer.http import Health
from consumer.metrics import Metrics
from consumer.runtime.loop import StageLoop
from consumer.runtime.outage import Outage, quiet_connection_failures


def test_an_outage_is_logged_once_each_way_with_its_length() -> None:
    changes: list[bool] = []
    outage = Outage("normalize", on_change=lambda: changes.append(outage.active))
    with capture_logs() as logs:
        outage.up()  # nothing to end
        outage.down("send_offsets_to_transaction: Local: Timed out")
        outage.down("1/1 brokers are down")
        outage.down("committed offsets: Local: Timed out")
        outage.up()
        outage.contact()  # evidence the broker answers, without an outage to end
    loud = [e for e in logs if e["log_level"] != "debug"]
    assert [e["event"] for e in loud] == [
        "broker unreachable: processing paused, retrying until it is back",
        "broker reachable again: processing resumes",
    ]
    assert loud[0]["reason"] == "send_offsets_to_transaction: Local: Timed out"
    assert loud[1]["outage_seconds"] >= 0
    assert changes == [True, False]
    assert outage.count == 1
    assert not outage.active


def test_librdkafka_connection_failures_go_to_debug_and_other_lines_stay() -> None:
    logger = quiet_connection_failures(logging.getLogger("librdkafka.test-outage"))
    quiet_connection_failures(logger)  # idempotent: one filter
    assert len(logger.filters) == 1
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.error("FAIL [rdkafka#consumer-1]: Connect to ipv4#127.0.0.1:9092 failed: Connection refused")
    logger.error("FAIL [rdkafka#consumer-1]: SASL authentication error: Authentication failed")
    assert [r.getMessage() for r in records] == [
        "FAIL [rdkafka#consumer-1]: SASL authentication error: Authentication failed"]
    logger.setLevel(logging.DEBUG)
    logger.error("FAIL [rdkafka#consumer-1]: 1/1 brokers are down")
    assert records[-1].levelno == logging.DEBUG


def test_a_broker_answer_is_contact_and_ends_an_outage() -> None:
    outage = Outage("correlate")
    first = outage.last_contact
    outage.down("1/1 brokers are down")
    outage.contact()
    assert not outage.active
    assert outage.last_contact >= first


class Hearing:
    """A processor that only records when the loop says a stall ended."""

    stage = "correlate"

    def __init__(self) -> None:
        self.resumed = 0

    def on_resume(self) -> None:
        self.resumed += 1


def test_the_processor_hears_when_a_broker_outage_ends() -> None:
    """The correlate stage restarts its watermarks' quiet-time clock then: an outage longer
    than the allowed lateness must not make every waiting notification late."""
    processor = Hearing()
    loop = StageLoop(load_settings({}), processor, ["in"], "group",  # type: ignore[arg-type]
                     Metrics(), Health())
    loop.outage.down("1/1 brokers are down")
    loop.outage.down("still down")
    assert processor.resumed == 0
    loop.outage.up()
    assert processor.resumed == 1
    loop.outage.contact()  # no outage to end: nothing to hear
    assert processor.resumed == 1
