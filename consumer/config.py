"""Configuration from the environment, validated once at start.

Everything is read from environment variables (``VMEVENTS_*``, ``KAFKA_*``, ``SCHEMA_REGISTRY_*``)
because that is how a Kubernetes Deployment configures a container. Any ``KAFKA_<NAME>`` variable
is passed to librdkafka as ``<name>`` with ``_`` turned into ``.`` (``KAFKA_SASL_MECHANISM`` ->
``sasl.mechanism``), which covers SASL and SSL without a setting per option. Bad values raise
one :class:`~consumer.errors.ConfigError` whose one line names every bad variable, with secrets
masked (:mod:`consumer.redact`).
"""

from __future__ import annotations

import datetime
import math
import os
import re
import socket
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import unquote

from consumer.errors import ConfigError
from consumer.memory import CGROUP_ROOT, UNLIMITED_FROM, MemoryLimit, cgroup_memory_limit
from consumer.redact import SECRET_NAME, redact, url_without_credentials

T = TypeVar("T")

Guarantee = Literal["exactly_once", "at_least_once"]

DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parent.parent / "avro"

# librdkafka settings the stages own; a pass-through variable must not silently override them.
_RESERVED_KAFKA = frozenset({
    "bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "isolation.level", "transactional.id", "enable.idempotence",
})

MIN_STATE_BUDGET_BYTES = 256 * 1024
"""Smallest correlator state budget accepted: below it a budget holds a few hundred operations,
so it is a unit typo (``512`` meant as ``512Mi``), not a sizing decision."""


@dataclass(frozen=True)
class StateBudget:
    """The byte budget of the correlator state of the whole process, and how it was decided.

    The correlate stage splits it between its partitions; over its share a partition evicts the
    operations due first as ``timed_out`` (``vmevents.evicted``) instead of growing."""

    max_bytes: int | None = None
    """None: no byte cap, only ``VMEVENTS_CORRELATE_MAX_PENDING``."""
    source: str = "off"
    """Where the number came from, for the start log."""


@dataclass(frozen=True)
class Settings:
    """All settings of one process. Defaults are what a local run and most clusters want."""

    bootstrap_servers: str = "127.0.0.1:9092"
    kafka_extra: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    schema_registry_url: str | None = None  # never with credentials: they are in the next field
    schema_registry_auth: str | None = field(default=None, repr=False)
    schema_dir: Path = DEFAULT_SCHEMA_DIR
    raw_topics: tuple[str, ...] = ("vm.events.raw",)
    normalized_topic: str = "vm.events.normalized"
    dlq_topic: str = "vm.events.dlq"
    changelog_topic: str = "vmevents.correlate-changelog"
    open_operations_topic: str = "vm.operations.open"
    """Compacted public view of the open operations (``OpenOperation``); empty: not written."""
    outcome_topic_prefix: str = ""
    outcome_single_topic: str = ""
    normalize_group: str = "vmevents-normalize"
    correlate_group: str = "vmevents-correlate"
    guarantee: Guarantee = "exactly_once"
    transactional_id: str | None = None
    batch_size: int = 2000
    batch_timeout_ms: int = 100
    max_idle_ms: int = 500
    transaction_timeout_ms: int = 60_000
    kafka_call_timeout_ms: int = 30_000
    shutdown_timeout_s: int = 20
    default_timezone: str = "Asia/Shanghai"
    max_message_bytes: int = 1_048_576
    min_event_time_ms: int = 946_684_800_000  # 2000-01-01T00:00:00Z
    max_future_days: int = 366
    metrics_port: int = 8080
    metrics_host: str = "0.0.0.0"
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "info"
    correlate_timeouts: str = ""
    correlate_max_pending: int = 100_000
    correlate_state_budget: StateBudget = StateBudget()
    correlate_state_memory_fraction: float = 0.5
    correlate_allowed_lateness_ms: int = 600_000
    correlate_late_end_horizon_ms: int = 7 * 86_400_000
    create_topics: bool = True
    topic_partitions: int = 6
    topic_replication_factor: int = 1

    def transactional_id_for(self, group: str) -> str:
        """One id per process, so two stages on one host never fence each other.

        With EOS v2 the group generation fences a zombie, so the id need not survive a restart;
        the chart sets ``<group>-<pod name>``.
        """
        return self.transactional_id or f"{group}-{socket.gethostname()}-{os.getpid()}"

    def secret_values(self) -> list[str]:
        """The values no log line or error may show (for :mod:`consumer.redact`)."""
        secrets = [v for k, v in self.kafka_extra.items() if SECRET_NAME.search(k)]
        if self.schema_registry_auth:
            secrets += [self.schema_registry_auth, self.schema_registry_auth.partition(":")[2]]
        return secrets

    def kafka_common(self) -> dict[str, str | int | float | bool]:
        conf: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.kafka_extra)
        return conf


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0,
         maximum: int | None = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ConfigError(f"{name}={value} must be {bound}")
    return value


def _date_ms(env: Mapping[str, str], name: str, default: str) -> int:
    """A UTC date (``2000-01-01``) as epoch milliseconds."""
    raw = env.get(name, "").strip() or default
    try:
        day = datetime.date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a date (YYYY-MM-DD)") from None
    return (day - datetime.date(1970, 1, 1)).days * 86_400_000


def _duration(env: Mapping[str, str], name: str, default: int) -> int:
    """``10m`` -> 600000 (units ms, s, m, h, d; a bare number is milliseconds)."""
    from consumer.correlation.config import parse_duration

    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        return parse_duration(raw)
    except ConfigError:
        raise ConfigError(f"{name}={raw!r} is not a duration (e.g. 10m, 90s, 7d)") from None


_BYTE_UNITS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
               "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
               "Ei": 2**60}
_BYTE_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kKMGTPE]i?)?")


def parse_bytes(text: str) -> int:
    """A byte size as Kubernetes writes memory: ``1073741824``, ``512Mi``, ``2G``, ``1.5Gi``.

    Decimal suffixes (k/K, M, G, T, P, E) are powers of 1000, ``Ki``...``Ei`` powers of 1024.
    Kubernetes' ``m`` is milli, never mega: ``512m`` is refused rather than guessed.
    """
    match = _BYTE_SIZE.fullmatch(text.strip())
    if match is None or (match[2] or "") not in _BYTE_UNITS:
        raise ConfigError(f"{text!r} is not a byte size")
    number, unit = match[1], match[2] or ""
    if "." in number:
        return int(float(number) * _BYTE_UNITS[unit])
    return int(number) * _BYTE_UNITS[unit]


def _fraction(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails too
        raise ConfigError(f"{name}={raw!r} must be a number between 0 and 1 (exclusive)")
    return value


def _memory_limit(env: Mapping[str, str], cgroup_root: Path) -> MemoryLimit | None:
    """``VMEVENTS_MEMORY_LIMIT_BYTES`` (the chart sets it from the container's
    ``limits.memory``), else the cgroup's limit; None when neither limits memory."""
    name = "VMEVENTS_MEMORY_LIMIT_BYTES"
    raw = env.get(name, "").strip()
    if raw == "":
        return cgroup_memory_limit(cgroup_root)
    try:
        value = parse_bytes(raw)
    except ConfigError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} is not a memory size in bytes (e.g. 1073741824, 1Gi)")
    return None if value >= UNLIMITED_FROM else MemoryLimit(value, name)


def _state_budget(env: Mapping[str, str], fraction: float, cgroup_root: Path) -> StateBudget:
    """``VMEVENTS_CORRELATE_MAX_STATE_BYTES``: a byte size below the memory limit, ``auto``
    (``fraction`` of the memory limit; no byte cap without one) or ``0``/``off``."""
    name = "VMEVENTS_CORRELATE_MAX_STATE_BYTES"
    raw = env.get(name, "").strip()
    minimum = f"the minimum of 256Ki ({MIN_STATE_BUDGET_BYTES} bytes)"
    if raw.lower() in ("0", "off"):
        return StateBudget(None, f"{name}={raw}")
    if raw.lower() in ("", "auto"):
        limit = _memory_limit(env, cgroup_root)
        if limit is None:
            return StateBudget(None, "auto, and no memory limit (VMEVENTS_MEMORY_LIMIT_BYTES "
                                     "unset, cgroup unlimited)")
        budget = int(limit.bytes * fraction)
        if budget < MIN_STATE_BUDGET_BYTES:
            raise ConfigError(
                f"{name}=auto: {fraction:g} of the memory limit {limit.bytes} ({limit.source}) "
                f"is {budget} bytes, below {minimum}: raise the limit or set {name}")
        return StateBudget(budget, f"auto, {fraction:g} of the memory limit {limit.bytes} "
                                   f"({limit.source})")
    try:
        value = parse_bytes(raw)
    except ConfigError:
        raise ConfigError(f"{name}={raw!r} is not a byte size "
                          "(e.g. 512Mi, 2G, 1073741824, auto, off)") from None
    if value < MIN_STATE_BUDGET_BYTES:
        hint = f": did you mean {raw}Mi?" if raw.isdigit() else ""
        raise ConfigError(f"{name}={raw!r} is below {minimum}{hint}")
    limit = _memory_limit(env, cgroup_root)
    if limit is not None and value >= limit.bytes:
        raise ConfigError(f"{name}={raw!r} is not below the memory limit {limit.bytes} "
                          f"({limit.source}): the process would be killed before the budget "
                          "evicts; use auto or a smaller size")
    return StateBudget(value, name)


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} must be true or false")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower() or default
    if raw not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _topic(env: Mapping[str, str], name: str, default: str, *, allow_empty: bool = False) -> str:
    raw = env.get(name, default).strip()
    if raw == "" and allow_empty:
        return raw
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    if not raw or len(raw) > 249 or not set(raw) <= allowed or raw in (".", ".."):
        raise ConfigError(f"{name}={raw!r} is not a valid Kafka topic name")
    return raw


def kafka_passthrough(env: Mapping[str, str]) -> dict[str, str]:
    """``KAFKA_SASL_MECHANISM=PLAIN`` -> ``{"sasl.mechanism": "PLAIN"}``."""
    extra: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith("KAFKA_") or name == "KAFKA_BOOTSTRAP_SERVERS":
            continue
        prop = name[len("KAFKA_"):].lower().replace("_", ".")
        if prop in _RESERVED_KAFKA:
            raise ConfigError(f"{name} is managed by vmevents and cannot be overridden")
        extra[prop] = value
    return extra


def _registry(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``SCHEMA_REGISTRY_URL`` without credentials, and the credentials from wherever they were.

    Credentials in the URL (``http://user:pass@host``) move to the basic-auth setting, so the URL
    can be logged and shown in errors as it is. Credentials in both places are a conflict.
    """
    raw = env.get("SCHEMA_REGISTRY_URL", "").strip()
    if not raw:
        return None, env.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") or None
    urls, userinfos = [], set()
    for item in raw.split(","):
        url, userinfo = url_without_credentials(item.strip())
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"SCHEMA_REGISTRY_URL={redact(raw)!r} must start with http:// or https://")
        urls.append(url)
        if userinfo is not None:
            userinfos.add(userinfo)
    explicit = env.get("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO") or None
    if userinfos and explicit:
        raise ConfigError("SCHEMA_REGISTRY_URL carries credentials and "
                          "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO is set too: give them in one place")
    if len(userinfos) > 1:
        raise ConfigError("SCHEMA_REGISTRY_URL lists URLs with different credentials")
    if userinfos:
        user, _, password = userinfos.pop().partition(":")
        explicit = f"{unquote(user)}:{unquote(password)}"
    if explicit is not None and ":" not in explicit:
        raise ConfigError("SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO must be user:password")
    return ",".join(urls), explicit


class _Problems:
    """Collects every bad variable, so one start reports them all on one line."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def check(self, read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except ConfigError as exc:
            self.messages.append(str(exc))
            return fallback


def _raw_topics(env: Mapping[str, str]) -> tuple[str, ...]:
    raw_topics = tuple(
        t.strip() for t in env.get("VMEVENTS_RAW_TOPICS", "vm.events.raw").split(",") if t.strip()
    )
    if not raw_topics:
        raise ConfigError("VMEVENTS_RAW_TOPICS must name at least one topic")
    for t in raw_topics:
        _topic({"VMEVENTS_RAW_TOPICS": t}, "VMEVENTS_RAW_TOPICS", t)
    return raw_topics


def _timezone(env: Mapping[str, str]) -> str:
    tz = env.get("VMEVENTS_DEFAULT_TIMEZONE", "Asia/Shanghai")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"VMEVENTS_DEFAULT_TIMEZONE={tz!r} is not a known time zone") from None
    return tz


def _bootstrap(env: Mapping[str, str]) -> str:
    bootstrap = env.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092").strip()
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"KAFKA_BOOTSTRAP_SERVERS={redact(bootstrap)!r}: "
                              "expected host:port[,host:port]")
    return bootstrap


def _schema_dir(env: Mapping[str, str]) -> Path:
    schema_dir = Path(env.get("VMEVENTS_SCHEMA_DIR", str(DEFAULT_SCHEMA_DIR)))
    if not (schema_dir / "InstanceEvent.avsc").is_file():
        raise ConfigError(f"VMEVENTS_SCHEMA_DIR={str(schema_dir)!r} holds no InstanceEvent.avsc")
    return schema_dir


def load_settings(env: Mapping[str, str] | None = None, *,
                  cgroup_root: Path = CGROUP_ROOT) -> Settings:
    """Read and validate settings; raises one ConfigError naming every bad variable.

    ``cgroup_root`` is where the container's memory limit is read when the state budget is
    ``auto`` and ``VMEVENTS_MEMORY_LIMIT_BYTES`` is unset."""
    env = os.environ if env is None else env
    p = _Problems()
    c = p.check
    fraction = c(lambda: _fraction(env, "VMEVENTS_CORRELATE_STATE_MEMORY_FRACTION", 0.5), 0.5)
    no_registry: tuple[str | None, str | None] = (None, None)
    registry, registry_auth = c(lambda: _registry(env), no_registry)
    guarantee = c(lambda: _choice(env, "VMEVENTS_PROCESSING_GUARANTEE", "exactly_once",
                                  ("exactly_once", "at_least_once")), "exactly_once")
    log_format = c(lambda: _choice(env, "VMEVENTS_LOG_FORMAT", "auto", ("auto", "json", "console")),
                   "auto")
    settings = Settings(
        bootstrap_servers=c(lambda: _bootstrap(env), ""),
        kafka_extra=c(lambda: kafka_passthrough(env), {}),
        schema_registry_url=registry,
        schema_registry_auth=registry_auth,
        schema_dir=c(lambda: _schema_dir(env), DEFAULT_SCHEMA_DIR),
        raw_topics=c(lambda: _raw_topics(env), ()),
        normalized_topic=c(lambda: _topic(env, "VMEVENTS_NORMALIZED_TOPIC", "vm.events.normalized"), ""),
        dlq_topic=c(lambda: _topic(env, "VMEVENTS_DLQ_TOPIC", "vm.events.dlq"), ""),
        changelog_topic=c(lambda: _topic(env, "VMEVENTS_CHANGELOG_TOPIC",
                                         "vmevents.correlate-changelog"), ""),
        open_operations_topic=c(lambda: _topic(env, "VMEVENTS_OPEN_OPERATIONS_TOPIC",
                                               "vm.operations.open", allow_empty=True), ""),
        outcome_topic_prefix=c(lambda: _topic(env, "VMEVENTS_OUTCOME_TOPIC_PREFIX", "",
                                              allow_empty=True), ""),
        outcome_single_topic=c(lambda: _topic(env, "VMEVENTS_OUTCOME_SINGLE_TOPIC", "",
                                              allow_empty=True), ""),
        normalize_group=env.get("VMEVENTS_NORMALIZE_GROUP", "vmevents-normalize"),
        correlate_group=env.get("VMEVENTS_CORRELATE_GROUP", "vmevents-correlate"),
        guarantee="exactly_once" if guarantee == "exactly_once" else "at_least_once",
        transactional_id=env.get("VMEVENTS_TRANSACTIONAL_ID") or None,
        batch_size=c(lambda: _int(env, "VMEVENTS_BATCH_SIZE", 2000, minimum=1, maximum=1_000_000), 1),
        batch_timeout_ms=c(lambda: _int(env, "VMEVENTS_BATCH_TIMEOUT_MS", 100, minimum=1), 1),
        max_idle_ms=c(lambda: _int(env, "VMEVENTS_MAX_IDLE_MS", 500, minimum=0, maximum=60_000),
                      500),
        transaction_timeout_ms=c(lambda: _int(env, "VMEVENTS_TRANSACTION_TIMEOUT_MS", 60_000,
                                              minimum=1000), 60_000),
        kafka_call_timeout_ms=c(lambda: _int(env, "VMEVENTS_KAFKA_CALL_TIMEOUT_MS", 30_000,
                                             minimum=1000), 30_000),
        shutdown_timeout_s=c(lambda: _int(env, "VMEVENTS_SHUTDOWN_TIMEOUT_S", 20, minimum=1), 20),
        default_timezone=c(lambda: _timezone(env), "UTC"),
        max_message_bytes=c(lambda: _int(env, "VMEVENTS_MAX_MESSAGE_BYTES", 1_048_576,
                                         minimum=1024), 1_048_576),
        min_event_time_ms=c(lambda: _date_ms(env, "VMEVENTS_MIN_EVENT_TIME", "2000-01-01"),
                            946_684_800_000),
        max_future_days=c(lambda: _int(env, "VMEVENTS_MAX_FUTURE_DAYS", 366, minimum=0,
                                       maximum=36_500), 366),
        metrics_port=c(lambda: _int(env, "VMEVENTS_METRICS_PORT", 8080, minimum=0, maximum=65535), 0),
        metrics_host=env.get("VMEVENTS_METRICS_HOST", "0.0.0.0"),
        log_format="json" if log_format == "json" else "console" if log_format == "console" else "auto",
        log_level=c(lambda: _choice(env, "VMEVENTS_LOG_LEVEL", "info",
                                    ("debug", "info", "warning", "error", "critical")), "info"),
        correlate_timeouts=env.get("VMEVENTS_CORRELATE_TIMEOUTS", ""),
        correlate_max_pending=c(lambda: _int(env, "VMEVENTS_CORRELATE_MAX_PENDING", 100_000,
                                             minimum=1), 1),
        correlate_state_budget=c(lambda: _state_budget(env, fraction, cgroup_root), StateBudget()),
        correlate_state_memory_fraction=fraction,
        correlate_allowed_lateness_ms=c(lambda: _duration(
            env, "VMEVENTS_CORRELATE_ALLOWED_LATENESS", 600_000), 600_000),
        correlate_late_end_horizon_ms=c(lambda: _duration(
            env, "VMEVENTS_CORRELATE_LATE_END_HORIZON", 7 * 86_400_000), 7 * 86_400_000),
        create_topics=c(lambda: _bool(env, "VMEVENTS_CREATE_TOPICS", True), True),
        topic_partitions=c(lambda: _int(env, "VMEVENTS_TOPIC_PARTITIONS", 6, minimum=1), 1),
        topic_replication_factor=c(lambda: _int(env, "VMEVENTS_TOPIC_REPLICATION_FACTOR", 1,
                                                minimum=1), 1),
    )
    if p.messages:
        raise ConfigError("; ".join(p.messages))
    return settings
