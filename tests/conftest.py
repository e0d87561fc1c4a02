"""Black-box harness: starts the real `lamina` binary and talks to it with real clients."""

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
ACCESS_KEY = "LKIATESTTESTTEST0000"
SECRET_KEY = "test-secret-key-for-the-black-box-suite"
ROLE = "arn:aws:iam::000000000000:role/lambda-role"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:"
# The pinned AWS CLI of the test venv, not whichever `aws` is on the PATH.
AWS = str(Path(sys.executable).with_name("aws"))


def lamina_binary() -> str:
    if os.environ.get("LAMINA_BIN"):
        return os.environ["LAMINA_BIN"]
    for profile in ("debug", "release"):
        path = ROOT / "target" / profile / "lamina"
        if path.exists():
            return str(path)
    raise RuntimeError("build lamina first (cargo build), or set LAMINA_BIN")


class Server:
    """One `lamina server` process on a free port with its own data directory."""

    def __init__(self, data_dir: Path, env: dict | None = None):
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.proc = None
        self.url = None
        self.log_path = data_dir.parent / f"{data_dir.name}.log"

    def start(self, listen: str = "127.0.0.1:0"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
        env.update(LAMINA_ACCESS_KEY_ID=ACCESS_KEY, LAMINA_SECRET_ACCESS_KEY=SECRET_KEY)
        # Retries of failed asynchronous events after 1 s and 2 s instead of Lambda's minutes.
        env.update(LAMINA_ASYNC_RETRY_INTERVAL="1")
        env.update(self.extra_env)
        already = len(self.log_path.read_text().splitlines()) if self.log_path.exists() else 0
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [lamina_binary(), "server", "--listen", listen, "--data-dir", str(self.data_dir),
             "--log-format", "json"],
            stdout=log, stderr=log, env=env,
        )
        self.url = "http://" + self._wait_listening(already)
        return self

    def _wait_listening(self, seen: int) -> str:
        """The server is ready when it logs that it listens (the readiness contract)."""
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lamina exited with {self.proc.returncode}:\n{self.log()}")
            lines = self.log_path.read_text().splitlines()
            for line in lines[seen:]:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                fields = record.get("fields", {})
                if fields.get("message") == "lamina is listening":
                    return fields["address"]
            seen = len(lines)
            time.sleep(0.02)
        raise RuntimeError(f"lamina did not start listening:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout=20) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        self.stop(signal.SIGKILL)

    def client(self, **kwargs):
        return lambda_client(self.url, **kwargs)

    def sqs(self, **kwargs):
        return sqs_client(self.url, **kwargs)


def lambda_client(url, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1"):
    return boto3.client(
        "lambda",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


def sqs_client(url, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region="us-east-1"):
    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=60),
    )


def wait_for(predicate, timeout=20.0, interval=0.05):
    """Polls `predicate` until it returns something truthy (returned) or `timeout` passes (None)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("lamina") / "data").start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of the test's own, for restarts and kills."""
    srv = Server(tmp_path / "data")
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.kill()


@pytest.fixture(scope="session")
def lam(server):
    return server.client()


@pytest.fixture(scope="session")
def sqs(server):
    return server.sqs()


def make_zip(files: dict | None = None) -> bytes:
    files = files or {"index.py": "def handler(event, context):\n    return event\n"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in files.items():
            # A fixed timestamp: the same files always make the same bytes.
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, body, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


_counter = [0]


def unique(prefix="fn"):
    _counter[0] += 1
    return f"{prefix}-{os.getpid()}-{_counter[0]}-{int(time.time() * 1000) % 100000}"


def create(lam, name=None, **overrides):
    name = name or unique()
    args = dict(FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
                Code={"ZipFile": make_zip()})
    args.update(overrides)
    return lam.create_function(**args)


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def status(excinfo) -> int:
    return excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"]


def tmp_file(data: bytes, suffix=".zip") -> str:
    f = tempfile.NamedTemporaryFile(delete=False, suffix=suffix)
    f.write(data)
    f.close()
    return f.name


def signed(server, method, path, body=b"", headers=None):
    """Sends a request signed with the root pair, bypassing botocore's client-side validation.
    Returns (status, headers, parsed JSON body or None)."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import urllib.error
    import urllib.request

    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    req = botocore.awsrequest.AWSRequest(method=method, url=server.url + path, data=body, headers=headers or {})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "us-east-1").add_auth(req)
    p = req.prepare()
    raw = urllib.request.Request(p.url, data=p.body or None, headers=dict(p.headers), method=method)
    try:
        with urllib.request.urlopen(raw) as resp:
            status, hdrs, data = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        status, hdrs, data = err.code, err.headers, err.read()
    return status, hdrs, (json.loads(data) if data else None)


def metrics(server):
    """The Prometheus text of /_lamina/metrics, as {series: value}."""
    import urllib.request

    with urllib.request.urlopen(server.url + "/_lamina/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
