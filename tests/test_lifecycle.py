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


def instance_ids(server, name: str) -> list[str]:
    """The ids of the function's instances: the suffix of their log streams' names."""
    group = server.data_dir / "logs" / f"aws_lambda_{name}"
    return [p.stem.rsplit("]", 1)[1] for p in group.glob("*.log")] if group.exists() else []


def processes_of(server, name: str) -> list[int]:
    """Pids in the cgroups of the function's instances (a runtime started ahead of time keeps
    its start-up environment, so the function's variables do not identify it)."""
    ids = instance_ids(server, name)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            lines = (entry / "cgroup").read_text().splitlines()
        except OSError:
            continue
        if any(line.rsplit("/", 1)[-1] in ids for line in lines):
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now: the server's sandboxes, pooled or running."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pids) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def wait_until(predicate, seconds=5.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def sleeper(lam, timeout=30):
    return create(lam, Code={"ZipFile": make_zip({"s.py": SLEEPER})}, Handler="s.handler",
                  Timeout=timeout)["FunctionName"]


def test_warm_instance_survives_idle_time(lam):
    """Regression: sandboxes once died when the thread that forked them retired (~10 s)."""
    name = sleeper(lam)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"
    time.sleep(13)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"2"


def test_sigterm_finishes_in_flight_invocations_then_stops_every_sandbox(fresh_server):
    fresh_server.start()
    lam = fresh_server.client()
    name = sleeper(lam)
    result = {}

    def slow():
        response = lam.invoke(FunctionName=name, Payload=json.dumps({"sleep": 2}))
        result["payload"] = response["Payload"].read()
        result["error"] = response.get("FunctionError")

    thread = threading.Thread(target=slow)
    thread.start()
    assert wait_until(lambda: processes_of(fresh_server, name)), "the function never started"
    sandboxes = descendants(fresh_server.proc.pid)
    assert fresh_server.stop(signal.SIGTERM) == 0, fresh_server.log()
    thread.join()
    assert result == {"payload": b"1", "error": None}
    # Killed sandbox processes may linger as zombies for a moment until they are reaped.
    assert wait_until(lambda: not alive(sandboxes), 2), [
        (pid, Path(f"/proc/{pid}/stat").read_text()[:60]) for pid in alive(sandboxes)]


def test_kill9_leaves_no_sandbox_and_restart_cleans_up(fresh_server):
    fresh_server.start()
    lam = fresh_server.client()
    name = sleeper(lam, timeout=60)
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"sleep": 50}))
    assert wait_until(lambda: processes_of(fresh_server, name)), "the function never started"
    sandboxes = descendants(fresh_server.proc.pid)
    fresh_server.kill()
    assert wait_until(lambda: not alive(sandboxes)), "a sandbox process outlived the server"
    fresh_server.start()
    log = fresh_server.log()
    assert "removed sandboxes left by an earlier run" in log
    lam = fresh_server.client()
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"


def test_idle_instances_are_frozen_between_invocations(lam, server):
    name = sleeper(lam)
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"
    assert wait_until(lambda: processes_of(server, name))
    pids = processes_of(server, name)
    assert pids
    # State D (frozen by the cgroup freezer) or S with the freezer cgroup FROZEN.
    def freezer(pid):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "freezer" in controllers.split(","):
                return path

    # The sandbox's init and runtime are in its freezer cgroup; its helper stays out of it (so it
    # can thaw the sandbox should the server die).
    ids = instance_ids(server, name)
    in_freezer = [pid for pid in pids if freezer(pid).rsplit("/", 1)[-1] in ids]
    assert len(in_freezer) >= 2, (pids, [freezer(p) for p in pids])

    def state(pid):
        return Path(f"/sys/fs/cgroup/freezer{freezer(pid)}/freezer.state").read_text().strip()
    assert wait_until(lambda: all(state(pid) == "FROZEN" for pid in in_freezer)), [state(p) for p in in_freezer]
    assert lam.invoke(FunctionName=name)["Payload"].read() == b"2"


def test_kill9_while_instances_are_frozen_leaves_no_sandbox(fresh_server):
    """Frozen processes cannot act on SIGKILL (cgroup v1): killing the server while its idle
    instances are frozen must still take every sandbox along, without a restart."""
    fresh_server.start()
    lam = fresh_server.client()
    names = [sleeper(lam) for _ in range(2)]
    for name in names:
        assert lam.invoke(FunctionName=name)["Payload"].read() == b"1"
    assert wait_until(lambda: all(processes_of(fresh_server, name) for name in names))
    time.sleep(0.3)  # idle long enough to be frozen
    sandboxes = descendants(fresh_server.proc.pid)
    fresh_server.kill()
    assert wait_until(lambda: not alive(sandboxes)), [
        (pid, Path(f"/proc/{pid}/wchan").read_text()) for pid in alive(sandboxes)]


def test_text_logs_have_no_colour_codes_when_not_a_terminal(tmp_path):
    """A service's journal, a redirect or CI: the text format is plain text."""
    import subprocess

    from conftest import ACCESS_KEY, SECRET_KEY, lamina_binary

    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    env.update(LAMINA_ACCESS_KEY_ID=ACCESS_KEY, LAMINA_SECRET_ACCESS_KEY=SECRET_KEY)
    with open(log, "w") as out:
        proc = subprocess.Popen([lamina_binary(), "server", "--listen", "127.0.0.1:0", "--data-dir",
                                 str(tmp_path / "data"), "--log-format", "text"],
                                stdout=out, stderr=out, env=env)
    try:
        deadline = time.time() + 30
        while "lamina is listening" not in log.read_text() and time.time() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log.read_text()
    assert "lamina is listening" in text and "lamina stopped" in text
    assert "\x1b[" not in text, text


def test_sandboxes_are_built_ahead_at_start(fresh_server):
    """The first cold start after a start finds its sandbox built: one of each default kind
    (the plain one, each interpreter's zygote) is built in the background once the server
    listens, before any function exists."""
    from conftest import metrics, wait_for

    fresh_server.start()
    ready = wait_for(lambda: int(metrics(fresh_server)["lamina_sandboxes_ready"]) >= 3, 30)
    assert ready, metrics(fresh_server)["lamina_sandboxes_ready"]
    lam = fresh_server.client()
    name = create(lam)["FunctionName"]
    assert lam.invoke(FunctionName=name, Payload=b"{}")["StatusCode"] == 200
