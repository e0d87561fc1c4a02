"""Execution environments across the server's life: idle, SIGTERM, kill -9, restart."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from conftest import create, make_zip, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

SLEEPER = """
import time
n = 0
def handler(event, context):
    global n
    n += 1
    time.sleep(event.get("sleep", 0))
    return n
"""


def processes_with(marker: str) -> list[int]:
    """Pids whose environment carries `marker` (only a function started with it does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def wait_until(predicate, seconds=5.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sleeper(lam, marker, timeout=30):
    return create(lam, Code={"ZipFile": make_zip({"s.py": SLEEPER})}, Handler="s.handler",
                  Timeout=timeout, Environment={"Variables": {"MARKER": marker}})["FunctionName"]


def test_warm_instance_survives_idle_time(lam):
    """Regression: sandboxes once died when the thread that forked them retired (~10 s)."""
    name = sleeper(lam, unique("idle"))
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"
    time.sleep(13)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"2"


def test_sigterm_finishes_in_flight_invocations_then_stops_every_sandbox(fresh_server):
    fresh_server.start()
    lam = fresh_server.client()
    marker = unique("drain")
    name = sleeper(lam, marker)
    result = {}

    def slow():
        response = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 2}))
        result["payload"] = response["Payload"].read()
        result["error"] = response.get("FunctionError")

    thread = threading.Thread(target=slow)
    thread.start()
    assert wait_until(lambda: processes_with(marker)), "the function never started"
    assert fresh_server.stop(signal.SIGTERM) == 0, fresh_server.log()
    thread.join()
    assert result == {"payload": b"1", "error": None}
    assert processes_with(marker) == []


def test_kill9_leaves_no_sandbox_and_restart_cleans_up(fresh_server):
    fresh_server.start()
    lam = fresh_server.client()
    marker = unique("kill9")
    name = sleeper(lam, marker, timeout=60)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"sleep": 50}))
    assert wait_until(lambda: processes_with(marker)), "the function never started"
    fresh_server.kill()
    assert wait_until(lambda: not processes_with(marker)), "a sandbox process outlived the server"
    fresh_server.start()
    log = fresh_server.log()
    assert "removed sandboxes left by an earlier run" in log
    lam = fresh_server.client()
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"


def test_idle_instances_are_frozen_between_invocations(lam):
    marker = unique("frozen")
    name = sleeper(lam, marker)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"
    pids = processes_with(marker)
    assert pids
    # State D (frozen by the cgroup freezer) or S with the freezer cgroup FROZEN.
    def frozen(pid):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                return Path(f"/sys/fs/cgroup/freezer{path}/freezer.state").read_text().strip()
    assert wait_until(lambda: all(frozen(pid) == "FROZEN" for pid in pids)), [frozen(p) for p in pids]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"2"
