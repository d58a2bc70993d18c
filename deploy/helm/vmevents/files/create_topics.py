"""Create vmevents' topics with their partitions and configs (the chart's topics hook Job).

    python create_topics.py topics.json            # create what is missing, check the rest
    python create_topics.py topics.json --dry-run  # print the plan, touch nothing

It runs in the vmevents image: confluent-kafka is there, and so is vmevents' operation table, which
names the derived ``<operation>.<outcome>`` topics. Kafka settings come from the same environment
as the stages (``KAFKA_BOOTSTRAP_SERVERS`` and the ``KAFKA_*`` librdkafka pass-through, so SASL and
TLS work the same way). Existing topics are never deleted or shrunk; a partition count that differs
from the plan is an error for the normalized topic and the changelog (the correlator's state is
partitioned like its input) and an error or a warning for the others (``onPartitionMismatch``).
Exit status: 0 done, 1 something is wrong (each problem printed on one line), 2 bad arguments.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    config: Mapping[str, str] = field(default_factory=dict)
    # The partition count is part of correctness (co-partitioned with another topic).
    strict: bool = False


def _str_config(config: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (config or {}).items()}


def known_operations() -> list[str]:
    """Every operation an outcome topic is named after, from the image's own correlator."""
    from consumer.correlator import outcome_operations

    return outcome_operations()


def known_outcomes() -> list[str]:
    from consumer.correlation.outcome import OUTCOME_KINDS

    return list(OUTCOME_KINDS)


def plan(spec: Mapping[str, Any], operations: Sequence[str] | None = None,
         outcomes: Sequence[str] | None = None) -> list[TopicPlan]:
    """The topics to ensure, in creation order. ``spec`` is the chart's topics.json."""
    min_isr = str(spec.get("minInsyncReplicas", 1))

    def with_isr(config: Mapping[str, Any] | None) -> dict[str, str]:
        return {"min.insync.replicas": min_isr, **_str_config(config)}

    topics: list[TopicPlan] = []
    for raw in spec.get("raw", []):
        if raw.get("create", False):
            topics.append(TopicPlan(raw["name"], int(raw["partitions"]), with_isr(raw.get("config"))))
    normalized = spec["normalized"]
    topics.append(TopicPlan(normalized["name"], int(normalized["partitions"]),
                            with_isr(normalized.get("config")), strict=True))
    dlq = spec["dlq"]
    topics.append(TopicPlan(dlq["name"], int(dlq["partitions"]), with_isr(dlq.get("config"))))
    changelog = spec["changelog"]
    topics.append(TopicPlan(changelog["name"], int(normalized["partitions"]),
                            with_isr(changelog.get("config")), strict=True))
    opened = spec.get("openOperations") or {}
    if opened.get("name"):  # empty: the view is turned off
        topics.append(TopicPlan(opened["name"], int(opened.get("partitions", 3)),
                                with_isr(opened.get("config"))))
    out = spec.get("outcomes", {})
    if out.get("create", True):
        config = with_isr(out.get("config"))
        partitions = int(out.get("partitions", 3))
        if out.get("singleTopic"):
            names = [out["singleTopic"]]
        else:
            ops = list(out.get("operations") or operations or known_operations())
            kinds = list(out.get("kinds") or outcomes or known_outcomes())
            prefix = out.get("prefix", "")
            names = [f"{prefix}{op}.{kind}" for op in ops for kind in kinds]
        topics.extend(TopicPlan(name, partitions, config) for name in names)
    seen: set[str] = set()
    unique = []
    for t in topics:
        if t.name not in seen:
            seen.add(t.name)
            unique.append(t)
    return unique


def kafka_conf(env: Mapping[str, str]) -> dict[str, str]:
    """AdminClient settings from the stages' environment (same mapping as the app's)."""
    from consumer.config import kafka_passthrough

    conf = {"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]}
    conf.update(kafka_passthrough(env))
    return conf


def say(level: str, message: str, **fields: Any) -> None:
    print(json.dumps({"level": level, "event": message, **fields}, sort_keys=True), flush=True)


def apply(admin: Any, topics: Iterable[TopicPlan], replication_factor: int,
          on_mismatch: str = "fail", alter_existing: bool = False,
          timeout: float = 60.0) -> list[str]:
    """Create missing topics and check existing ones; returns the problems found."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
        ResourceType,
    )

    topics = list(topics)
    existing = admin.list_topics(timeout=timeout).topics
    problems: list[str] = []
    missing = [t for t in topics if t.name not in existing]
    if missing:
        futures = admin.create_topics(
            [NewTopic(t.name, num_partitions=t.partitions, replication_factor=replication_factor,
                      config=dict(t.config)) for t in missing],
            operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result()
                say("info", "topic created", topic=name)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    say("info", "topic already exists", topic=name)
                else:
                    problems.append(f"cannot create topic {name}: {err.str()}")
    for t in topics:
        meta = existing.get(t.name)
        if meta is None:
            continue
        have = len(meta.partitions)
        if have != t.partitions:
            msg = (f"topic {t.name} has {have} partitions, the values say {t.partitions}: set "
                   f"topics.*.partitions to the real count (it bounds the replicas), or "
                   f"repartition the topic")
            if t.strict or on_mismatch == "fail":
                problems.append(msg + (" (must match: the correlator's state is partitioned "
                                       "like its input)" if t.strict else ""))
            else:
                say("warning", msg, topic=t.name)
        else:
            say("info", "topic exists", topic=t.name, partitions=have)
        if alter_existing and t.config:
            resource = ConfigResource(
                ResourceType.TOPIC, t.name,
                incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                                     for k, v in sorted(t.config.items())])
            for _res, fut in admin.incremental_alter_configs([resource]).items():
                try:
                    fut.result()
                    say("info", "topic configs set", topic=t.name, configs=dict(t.config))
                except KafkaException as exc:
                    problems.append(f"cannot set configs of {t.name}: {exc.args[0].str()}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    dry_run = "--dry-run" in args
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 1:
        print("usage: create_topics.py topics.json [--dry-run]", file=sys.stderr)
        return 2
    with open(paths[0], encoding="utf-8") as f:
        spec = json.load(f)
    rf = int(spec.get("replicationFactor", 3))
    if int(spec.get("minInsyncReplicas", 1)) > rf:
        print(f"minInsyncReplicas={spec['minInsyncReplicas']} exceeds replicationFactor={rf}: "
              "acks=all producers could never write", file=sys.stderr)
        return 1
    topics = plan(spec)
    say("info", "topic plan", topics=len(topics), replication_factor=rf)
    if dry_run:
        for t in topics:
            print(json.dumps({"name": t.name, "partitions": t.partitions,
                              "config": dict(t.config), "strict": t.strict}, sort_keys=True))
        return 0
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka_conf(os.environ))
    problems = apply(admin, topics, rf, on_mismatch=spec.get("onPartitionMismatch", "fail"),
                     alter_existing=bool(spec.get("alterExistingConfigs", False)))
    for p in problems:
        say("error", p)
    if problems:
        return 1
    say("info", "topics ready", topics=len(topics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
