"""The local stack stops whatever happened to our output: `stack.py down` and `make run`'s trap.

Both run against Tansu (seconds to start, no JVM): the code path that stops processes is the same
for every flavor. The reader of the output is gone before the stop, as with
``make run 2>&1 | tee run.log`` and a Ctrl-C that kills tee too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.kafkatools import ROOT

STACK = ROOT / "deploy" / "local" / "stack.py"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def session_pids(sid: int) -> set[int]:
    """Every live process of a session (what a terminal's Ctrl-C would reach, and more)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.add(int(entry.name))
    return pids


def tansu_up(state: Path) -> int:
    subprocess.run([sys.executable, str(STACK), "up", "--tansu", "--python", sys.executable,
                    "--state-dir", str(state)], check=True, capture_output=True, timeout=120)
    return int((state / "tansu.pid").read_text())


def down_quietly(state: Path) -> None:
    """Clean-up when a test failed half-way: nothing of ours may outlive it."""
    subprocess.run([sys.executable, str(STACK), "down", "--state-dir", str(state)],
                   capture_output=True, timeout=120, check=False)


def test_down_with_a_closed_stderr_still_stops_the_broker(tmp_path: Path) -> None:
    pid = tansu_up(tmp_path)
    assert alive(pid)
    # `| true` exits at once: every line `down` writes meets a closed pipe.
    try:
        result = subprocess.run(
            ["bash", "-c", 'set -o pipefail; "$0" "$1" down --state-dir "$2" 2>&1 | true',
             sys.executable, str(STACK), str(tmp_path)], capture_output=True, timeout=120,
            check=False)
    finally:
        alive_before_cleanup = alive(pid)
        down_quietly(tmp_path)
    assert not alive_before_cleanup
    assert result.returncode == 0, result


def free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two adjacent free ports")


def serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_make_run_with_its_reader_gone_and_ctrl_c_leaves_no_process(tmp_path: Path) -> None:
    port = free_port_pair()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VMEVENTS_", "KAFKA_", "SCHEMA_REGISTRY_"))}
    env.update(STACK_DIR=str(tmp_path), VMEVENTS_LOCAL_BROKER="tansu",
               VMEVENTS_METRICS_PORT=str(port), PY=sys.executable,
               VMEVENTS=str(Path(sys.executable).parent / "vmevents"))
    run = subprocess.Popen(["bash", "deploy/local/run.sh"], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
    assert run.stdout is not None
    deadline = time.monotonic() + 120
    seen = b""
    try:
        while b"vmevents is running" not in seen:
            line = run.stdout.readline()
            assert line, f"run.sh ended early: {seen.decode(errors='replace')[-2000:]}"
            seen += line
            assert time.monotonic() < deadline
        while not (serving(port) and serving(port + 1)):
            assert run.poll() is None, seen.decode(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the stages never served /metrics"
            time.sleep(0.2)
        tansu = int((tmp_path / "tansu.pid").read_text())
        ours = session_pids(run.pid)
        assert len(ours) >= 4  # bash, `vmevents run`, and its two stages
        run.stdout.close()  # the reader dies first (tee under the same Ctrl-C) ...
        os.killpg(run.pid, signal.SIGINT)  # ... then the terminal's SIGINT reaches the group
        rc = run.wait(90)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        broker_survived = (tmp_path / "tansu.pid").exists()
        down_quietly(tmp_path)
    assert not broker_survived
    assert rc == 130
    assert not alive(tansu), "the broker outlived make run"
    left = {pid for pid in ours if alive(pid)}
    assert not left, f"processes left behind: {left}"


if not (Path(sys.executable).parent / "vmevents").exists():  # pragma: no cover
    pytest.skip("the vmevents console script is not installed in this interpreter's venv",
                allow_module_level=True)
