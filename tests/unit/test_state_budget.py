"""The correlator state budget: its setting, the container memory limit it derives from, and how
the correlate stage shares it between partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Message, TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from consumer.config import MIN_STATE_BUDGET_BYTES, StateBudget, load_settings, parse_bytes
from consumer.correlator import Correlator, CorrelatorConfig
from consumer.errors import ConfigError
from consumer.memory import MemoryLimit, cgroup_memory_limit
from consumer.metrics import Metrics
from consumer.runtime.correlate_stage import CorrelateProcessor, partition_budget
from consumer.serde import Decoder, load_schemas, single_object_encoder

GI = 1 << 30
BUDGET = "VMEVENTS_CORRELATE_MAX_STATE_BYTES"
FRACTION = "VMEVENTS_CORRELATE_STATE_MEMORY_FRACTION"
LIMIT = "VMEVENTS_MEMORY_LIMIT_BYTES"


def cgroup(root: Path, *, v2: str | None = None, v1: str | None = None) -> Path:
    """A fake /sys/fs/cgroup holding the given memory limit files."""
    if v2 is not None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "memory.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "memory").mkdir(parents=True, exist_ok=True)
        (root / "memory" / "memory.limit_in_bytes").write_text(v1 + "\n")
    return root


# -- the container's memory limit ----------------------------------------------------------------

def test_cgroup_v2_limit(tmp_path: Path) -> None:
    root = cgroup(tmp_path, v2="1073741824")
    assert cgroup_memory_limit(root) == MemoryLimit(GI, f"cgroup v2 {root / 'memory.max'}")


def test_cgroup_v2_max_is_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(cgroup(tmp_path, v2="max")) is None


def test_cgroup_v1_limit(tmp_path: Path) -> None:
    root = cgroup(tmp_path, v1="536870912")
    limit = cgroup_memory_limit(root)
    assert limit is not None
    assert (limit.bytes, limit.source.split()[:2]) == (GI // 2, ["cgroup", "v1"])


def test_cgroup_v1_unlimited_is_a_huge_number(tmp_path: Path) -> None:
    assert cgroup_memory_limit(cgroup(tmp_path, v1="9223372036854771712")) is None


def test_cgroup_v2_wins_over_v1(tmp_path: Path) -> None:
    limit = cgroup_memory_limit(cgroup(tmp_path, v2="2147483648", v1="1073741824"))
    assert limit is not None
    assert limit.bytes == 2 * GI


def test_cgroup_missing_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory_limit(tmp_path / "absent") is None
    assert cgroup_memory_limit(cgroup(tmp_path / "garbled", v2="lots")) is None
    # a garbled v2 file does not hide a v1 limit
    limit = cgroup_memory_limit(cgroup(tmp_path / "both", v2="", v1="1073741824"))
    assert limit is not None
    assert limit.bytes == GI


# -- byte sizes ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("1073741824", GI), ("512Mi", 512 << 20), ("2G", 2_000_000_000), ("1.5Gi", 3 * GI // 2),
    ("100k", 100_000), ("100K", 100_000), ("64Ki", 65_536), (" 1Ti ", 1 << 40), ("0", 0),
])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "512m", "512MB", "1 Gi", "-1", "Gi", "1e9", "1,000", "2gi"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a byte size"):
        parse_bytes(text)


@given(st.integers(min_value=0, max_value=1 << 62),
       st.sampled_from(["", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"]))
def test_parse_bytes_of_integers_is_exact(number: int, unit: str) -> None:
    scale = {"": 1, "k": 1000, "M": 10**6, "G": 10**9, "Ki": 1 << 10, "Mi": 1 << 20,
             "Gi": 1 << 30, "Ti": 1 << 40}[unit]
    assert parse_bytes(f"{number}{unit}") == number * scale


# -- the setting -------------------------------------------------------------------------------------

def budget(env: dict[str, str], root: Path) -> StateBudget:
    return load_settings(env, cgroup_root=root).correlate_state_budget


def test_auto_is_the_default_and_takes_half_the_limit_from_the_downward_api(tmp_path: Path) -> None:
    root = cgroup(tmp_path, v2="max")
    b = budget({LIMIT: "1073741824"}, root)
    assert b.max_bytes == GI // 2
    assert "0.5 of the memory limit 1073741824 (VMEVENTS_MEMORY_LIMIT_BYTES)" in b.source
    assert budget({BUDGET: "auto", LIMIT: "1Gi"}, root).max_bytes == GI // 2


def test_auto_without_the_variable_reads_the_cgroup(tmp_path: Path) -> None:
    b = budget({}, cgroup(tmp_path, v1="2147483648"))
    assert b.max_bytes == GI
    assert "cgroup v1" in b.source


def test_the_variable_wins_over_the_cgroup(tmp_path: Path) -> None:
    assert budget({LIMIT: "1Gi"}, cgroup(tmp_path, v2="4294967296")).max_bytes == GI // 2


def test_auto_without_any_limit_means_no_byte_cap(tmp_path: Path) -> None:
    for root in (cgroup(tmp_path / "v2", v2="max"), tmp_path / "none"):
        b = budget({}, root)
        assert b.max_bytes is None
        assert "no memory limit" in b.source


def test_fraction(tmp_path: Path) -> None:
    s = load_settings({LIMIT: "1Gi", FRACTION: "0.25"}, cgroup_root=tmp_path)
    assert s.correlate_state_memory_fraction == 0.25
    assert s.correlate_state_budget.max_bytes == GI // 4
    assert load_settings({}, cgroup_root=tmp_path).correlate_state_memory_fraction == 0.5


@pytest.mark.parametrize("value", ["0", "off", "OFF"])
def test_off(value: str, tmp_path: Path) -> None:
    assert budget({BUDGET: value, LIMIT: "1Gi"}, tmp_path).max_bytes is None


@pytest.mark.parametrize(("value", "expected"), [
    ("512Mi", 512 << 20), ("2G", 2_000_000_000), ("1048576", 1 << 20),
    (str(MIN_STATE_BUDGET_BYTES), MIN_STATE_BUDGET_BYTES),
])
def test_explicit_budget_ignores_the_limit(value: str, expected: int, tmp_path: Path) -> None:
    b = budget({BUDGET: value, LIMIT: "4Gi"}, cgroup(tmp_path, v2="1"))
    assert b == StateBudget(expected, BUDGET)
    assert budget({BUDGET: value}, tmp_path / "no cgroup") == StateBudget(expected, BUDGET)


@pytest.mark.parametrize(("env", "needle"), [
    ({BUDGET: "lots"}, f"{BUDGET}='lots' is not a byte size (e.g. 512Mi"),
    ({BUDGET: "512m"}, f"{BUDGET}='512m' is not a byte size"),
    ({BUDGET: "512"}, f"{BUDGET}='512' is below the minimum of 256Ki (262144 bytes): "
                      "did you mean 512Mi?"),
    ({BUDGET: "100Ki"}, f"{BUDGET}='100Ki' is below the minimum of 256Ki"),
    ({LIMIT: "300000"}, f"{BUDGET}=auto: 0.5 of the memory limit 300000 "
                        f"({LIMIT}) is 150000 bytes, below the minimum"),
    ({BUDGET: "1Gi", LIMIT: "1Gi"}, f"{BUDGET}='1Gi' is not below the memory limit 1073741824 "
                                    f"({LIMIT}): the process would be killed before the budget"),
    ({LIMIT: "a gigabyte"}, f"{LIMIT}='a gigabyte' is not a memory size"),
    ({LIMIT: "0"}, f"{LIMIT}='0' is not a memory size"),
    ({FRACTION: "1"}, f"{FRACTION}='1' must be a number between 0 and 1 (exclusive)"),
    ({FRACTION: "0"}, f"{FRACTION}='0' must be a number between 0 and 1"),
    ({FRACTION: "-0.5"}, f"{FRACTION}='-0.5' must be a number between 0 and 1"),
    ({FRACTION: "half"}, f"{FRACTION}='half' must be a number between 0 and 1"),
    ({FRACTION: "nan"}, f"{FRACTION}='nan' must be a number between 0 and 1"),
])
def test_bad_values_are_one_line(env: dict[str, str], needle: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env, cgroup_root=tmp_path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_bad_fraction_and_a_bad_budget_are_both_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({FRACTION: "2", BUDGET: "huge"}, cgroup_root=tmp_path)
    assert FRACTION in str(info.value)
    assert f"{BUDGET}='huge'" in str(info.value)


def test_a_cgroup_too_small_for_the_minimum_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cgroup v2 .*below the minimum"):
        load_settings({}, cgroup_root=cgroup(tmp_path, v2=str(400 * 1024)))


# -- the stage's split ---------------------------------------------------------------------------------

@given(st.integers(min_value=MIN_STATE_BUDGET_BYTES, max_value=1 << 40),
       st.integers(min_value=1, max_value=1024))
def test_shares_never_add_up_to_more_than_the_budget(total: int, partitions: int) -> None:
    share = partition_budget(total, partitions)
    assert share is not None
    assert share * partitions <= total < (share + 1) * partitions


def test_no_budget_no_share() -> None:
    assert partition_budget(None, 3) is None
    assert partition_budget(1000, 0) == 1000  # nothing held yet: nothing to share


class Recording(Correlator):
    """A real correlator that remembers the budgets the stage gave it."""

    def __init__(self) -> None:
        super().__init__(CorrelatorConfig(), lambda: 1_767_225_600_000)
        self.budgets: list[int | None] = []

    def set_state_budget(self, max_bytes: int | None) -> None:
        self.budgets.append(max_bytes)
        super().set_state_budget(max_bytes)


class Pausing:
    """What the processor's rebalance callbacks use of the consumer."""

    def __init__(self) -> None:
        self.paused: list[TopicPartition] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.extend(partitions)


def processor(tmp_path: Path, env: dict[str, str]) -> tuple[CorrelateProcessor, Metrics]:
    schemas = load_schemas(load_settings({}, cgroup_root=tmp_path).schema_dir)
    metrics = Metrics()
    proc = CorrelateProcessor(
        load_settings(env, cgroup_root=tmp_path), CorrelatorConfig(), Decoder(schemas),
        lambda topic: single_object_encoder(schemas["OperationOutcome"]), metrics,
        clock=lambda: 1_767_225_600_000)
    return proc, metrics


def test_the_budget_is_split_over_every_partition_held(tmp_path: Path) -> None:
    proc, metrics = processor(tmp_path, {BUDGET: "12Mi"})
    assert metrics.registry.get_sample_value("vmevents_correlate_state_budget_bytes") == 12 << 20
    live = {p: Recording() for p in (0, 1)}
    proc.correlators.update(live)
    # two more partitions assigned: the live ones give up half their share before the restore
    consumer = Pausing()
    proc.on_assign(consumer, [TopicPartition("in", 2), TopicPartition("in", 3)])  # type: ignore[arg-type]
    assert [tp.partition for tp in consumer.paused] == [2, 3]
    assert live[0].budgets[-1] == live[1].budgets[-1] == 3 << 20
    # partition 3 revoked before its restore finished, partition 0 too: two held
    proc.on_revoke([TopicPartition("in", 3), TopicPartition("in", 0)])
    assert live[1].budgets[-1] == 6 << 20
    assert metrics.registry.get_sample_value("vmevents_correlate_state_bytes",
                                             {"partition": "0"}) == 0


def test_without_a_budget_the_correlators_get_none(tmp_path: Path) -> None:
    proc, metrics = processor(tmp_path, {BUDGET: "off"})
    assert metrics.registry.get_sample_value("vmevents_correlate_state_budget_bytes") == 0
    live = Recording()
    proc.correlators[0] = live
    proc.on_revoke([TopicPartition("in", 1)])
    assert live.budgets == [None]


def test_state_bytes_gauge_follows_the_batches(tmp_path: Path) -> None:
    proc, metrics = processor(tmp_path, {BUDGET: "1Gi"})
    corr = proc.correlators[0] = Recording()
    encode = single_object_encoder(load_schemas(proc.settings.schema_dir)["InstanceEvent"])

    def executing(i: int) -> dict[str, Any]:
        return {
            "vendor": "aliyun", "instance_id": f"i-{i}", "vendor_event_code": "SystemFailure.Reboot",
            "operation": "failure.reboot", "known": True, "phase": "executing",
            "vendor_status": None, "event_time": 1_767_225_600_000, "region": "cn-hangzhou",
            "account_id": "acct", "notification_id": f"n-{i}", "vendor_event_id": f"e-{i}",
            "level": None, "previous_state": None, "current_state": None, "publish_time": None,
            "not_before": None, "start_time": 1_767_225_600_000, "end_time": None,
            "source_format": "", "attributes": {}, "source": None,
        }

    messages = [Message(topic="in", partition=0, offset=i, value=encode(executing(i)))
                for i in range(5)]
    proc.process(messages, lambda *record: None)
    assert corr.pending_count == 5
    assert corr.state_bytes > 0
    assert metrics.registry.get_sample_value(
        "vmevents_correlate_state_bytes", {"partition": "0"}) == corr.state_bytes
