"""SIGTERM reaches a stage whose main thread is stuck in C, and shutdown is bounded."""

import signal
import subprocess
import sys
import time

import pytest

from tests.integration.kafkatools import ROOT

CHILD = """
import select, sys, threading
from consumer.logs import configure
from consumer.signals import receive_signals
configure("json", "info")
stop = threading.Event()
receive_signals(stop, timeout=float(sys.argv[2]))
print("ready", flush=True)
if sys.argv[1] == "stuck":
    select.select([], [], [], 120)  # a C call that no Python signal handler interrupts
else:
    stop.wait()
    print("stopped cleanly", flush=True)
"""


def run_child(mode: str, timeout: float, signals: int = 1) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(timeout)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    for _ in range(signals):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    try:
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()
    return proc.returncode, out


def test_a_cooperative_main_thread_stops_and_exits_normally() -> None:
    code, out = run_child("cooperative", timeout=10)
    assert code == 0
    assert "stopped cleanly" in out
    assert '"signal":"SIGTERM"' in out


@pytest.mark.parametrize(("signals", "said"), [(1, "shutdown did not finish in time"),
                                               (2, "second signal: exiting now")])
def test_a_main_thread_stuck_in_c_is_ended_by_the_signal_thread(signals: int, said: str) -> None:
    code, out = run_child("stuck", timeout=1, signals=signals)
    assert code == 1
    assert said in out
