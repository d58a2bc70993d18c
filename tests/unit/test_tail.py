"""What ``vmevents tail`` prints for each kind of value, without a broker."""

from __future__ import annotations

import pytest

from consumer.config import load_settings
from consumer.errors import ConfigError
from consumer.normalization import Normalizer
from consumer.serde import load_schemas, single_object_encoder
from consumer.tail import ValueReader, matches, parse_time
from tests.seeds import SEEDS


def test_values_of_every_kind_become_json() -> None:
    settings = load_settings({})
    reader = ValueReader(settings)
    event = Normalizer().normalize(SEEDS[3].raw)
    encoded = single_object_encoder(load_schemas(settings.schema_dir)["InstanceEvent"])(event)
    decoded = reader.read(encoded)
    assert decoded["event_time"] == "2021-02-24T22:44:06Z"
    assert decoded["instance_id"] == event["instance_id"]
    assert reader.read(b'{"a": 1}') == {"a": 1}
    assert reader.read(b"{not json") == "{not json"
    assert reader.read(b"\xc3\x01" + b"\x00" * 8) == {"base64": "wwEAAAAAAAAAAA=="}  # unknown schema
    assert reader.read(None) is None


def test_filters_need_every_field_to_match() -> None:
    value = {"vendor": "aliyun", "operation": "maintenance.reboot", "instance_id": "i-1"}
    assert matches(value, {})
    assert matches(value, {"vendor": frozenset({"aliyun", "jdcloud"}), "instance": frozenset({"i-1"})})
    assert not matches(value, {"vendor": frozenset({"jdcloud"})})
    assert not matches(value, {"outcome": frozenset({"completed"})})
    assert not matches("raw text", {"vendor": frozenset({"aliyun"})})


def test_times_are_iso_8601_and_utc_without_a_zone() -> None:
    assert parse_time("2021-02-24T22:44:06Z") == 1614206646000
    assert parse_time("2021-02-25T06:44:06+08:00") == 1614206646000
    assert parse_time("2021-02-24T22:44:06") == 1614206646000
    with pytest.raises(ConfigError, match="not an ISO-8601 time"):
        parse_time("yesterday")
