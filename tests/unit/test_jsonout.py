import orjson

from consumer.config import DEFAULT_SCHEMA_DIR
from consumer.jsonout import iso_ms, timestamp_fields, to_json_line
from consumer.serde import load_schemas


def test_timestamp_fields_come_from_the_schema() -> None:
    fields = timestamp_fields(load_schemas(DEFAULT_SCHEMA_DIR)["InstanceEvent"].raw)
    assert fields == {"event_time", "publish_time", "not_before", "start_time", "end_time"}


def test_iso_ms_is_utc_with_z() -> None:
    assert iso_ms(1614206646000) == "2021-02-24T22:44:06Z"
    assert iso_ms(1554783506922) == "2019-04-09T04:18:26.922Z"


def test_json_line_converts_only_timestamps() -> None:
    line = to_json_line({"event_time": 0, "not_before": None, "offset": 5}, {"event_time", "not_before"})
    assert orjson.loads(line) == {"event_time": "1970-01-01T00:00:00Z", "not_before": None, "offset": 5}
