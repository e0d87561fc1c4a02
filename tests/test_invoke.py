"""Invoke through boto3 and the AWS CLI: real sandboxes, real runtimes, every failure mode."""

import base64
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import ARN, create, error_code, make_zip, status, tmp_file, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

PROBE = r'''
import json, os, socket, sys, time
count = 0

def handler(event, context):
    global count
    count += 1
    action = event.get("action") if isinstance(event, dict) else None
    if action == "fail":
        raise ValueError("asked to fail")
    if action == "sleep":
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(event.get("code", 1))
    if action == "oom":
        hog = bytearray(event["mb"] * 1024 * 1024)
        return len(hog)
    if action == "big":
        return "x" * event["bytes"]
    if action == "print":
        print(event["text"])
    if action == "probe":
        out = {}
        for path in ("/var/task/new", "/usr/new", "/tmp/new"):
            try:
                open(path, "w").write("x")
                out[path] = "written"
            except OSError as e:
                out[path] = e.strerror
        try:
            socket.create_connection(("127.0.0.1", 5432), 1)
            out["postgres"] = "reached"
        except OSError:
            out["postgres"] = "unreachable"
        out["uid"] = os.getuid()
        out["host_files"] = [p for p in ("/root", "/work", "/home") if os.path.exists(p)]
        return out
    return {
        "event": event,
        "count": count,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "client_context": getattr(getattr(context, "client_context", None), "custom", None),
        "env": {k: os.environ.get(k) for k in ("STAGE", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION",
                                                 "AWS_LAMBDA_RUNTIME_API", "_HANDLER", "LAMBDA_TASK_ROOT",
                                                 "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE")},
        "hostname": socket.gethostname(),
    }
'''


def probe(lam, **overrides):
    args = dict(Code={"ZipFile": make_zip({"probe.py": PROBE})}, Handler="probe.handler")
    args.update(overrides)
    return create(lam, **args)["FunctionName"]


def invoke(lam, name, event=None, **kwargs):
    payload = json.dumps(event if event is not None else {})
    response = lam.invoke(FunctionName=name, Payload=payload, **kwargs)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


def test_python_handler_sees_event_context_and_environment(lam):
    name = probe(lam, Environment={"Variables": {"STAGE": "test"}}, MemorySize=256)
    response, out = invoke(lam, name, {"hello": "world"})
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert out["event"] == {"hello": "world"}
    assert out["request_id"] == response["ResponseMetadata"]["RequestId"]
    assert (out["function_name"], out["function_version"], out["memory"]) == (name, "$LATEST", "256")
    assert out["invoked_arn"] == ARN + name
    assert out["log_group"] == f"/aws/lambda/{name}"
    assert "[$LATEST]" in out["log_stream"]
    assert 0 < out["remaining"] <= 3000
    env = out["env"]
    assert env["STAGE"] == "test"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert (env["_HANDLER"], env["LAMBDA_TASK_ROOT"]) == ("probe.handler", "/var/task")
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.11"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"


def test_warm_instances_keep_module_state(lam):
    name = probe(lam)
    counts = [invoke(lam, name)[1]["count"] for _ in range(3)]
    assert counts == [1, 2, 3]


def test_function_error_is_a_200_with_function_error(lam):
    name = probe(lam)
    response, out = invoke(lam, name, {"action": "fail"})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert (out["errorType"], out["errorMessage"]) == ("ValueError", "asked to fail")
    assert isinstance(out["stackTrace"], list)
    assert invoke(lam, name)[1]["count"] == 2, "a handled error keeps the instance"


@pytest.mark.parametrize("event,error_type", [
    ({"action": "exit", "code": 3}, "Runtime.ExitError"),
    ({"action": "oom", "mb": 400}, "Runtime.OutOfMemory"),
])
def test_crash_and_out_of_memory_then_recover(lam, event, error_type):
    name = probe(lam)
    response, out = invoke(lam, name, event)
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == error_type, out
    assert response["ResponseMetadata"]["RequestId"] in out["errorMessage"]
    response, out = invoke(lam, name)
    assert "FunctionError" not in response
    assert out["count"] == 1, "the next invoke runs on a fresh instance"


def test_timeout_kills_instance_and_next_invoke_succeeds(lam):
    name = probe(lam, Timeout=1)
    response, out = invoke(lam, name, {"action": "sleep", "seconds": 5}, LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    assert "Task timed out after 1.00 seconds" in out["errorMessage"]
    assert "Task timed out after 1.00 seconds" in base64.b64decode(response["LogResult"]).decode()
    response, out = invoke(lam, name)
    assert "FunctionError" not in response and out["count"] == 1


@pytest.mark.parametrize("files,handler,error_type", [
    ({"probe.py": PROBE}, "missing.handler", "Runtime.ImportModuleError"),
    ({"probe.py": PROBE}, "probe.nothing", "Runtime.HandlerNotFound"),
    ({"probe.py": PROBE}, "nodot", "Runtime.MalformedHandlerName"),
    ({"bad.py": "def handler(:\n"}, "bad.handler", "Runtime.UserCodeSyntaxError"),
    ({"boom.py": "raise KeyError('at import')\ndef handler(e, c): pass\n"}, "boom.handler", "KeyError"),
])
def test_init_errors(lam, files, handler, error_type):
    name = create(lam, Code={"ZipFile": make_zip(files)}, Handler=handler)["FunctionName"]
    response, out = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == error_type, out
    # Fixing the code makes the next invoke succeed.
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"probe.py": PROBE}))
    lam.update_function_configuration(FunctionName=name, Handler="probe.handler")
    response, out = invoke(lam, name)
    assert "FunctionError" not in response, out


def test_tail_returns_this_invocations_log(lam):
    name = probe(lam)
    response, _ = invoke(lam, name, {"action": "print", "text": "first words"}, LogType="Tail")
    log = base64.b64decode(response["LogResult"]).decode()
    request_id = response["ResponseMetadata"]["RequestId"]
    lines = log.splitlines()
    assert lines[0] == f"START RequestId: {request_id} Version: $LATEST"
    assert lines.index("first words") < lines.index(f"END RequestId: {request_id}")
    report = lines[-1]
    assert report.startswith(f"REPORT RequestId: {request_id}\tDuration: ")
    for field in ("Billed Duration:", "Memory Size: 128 MB", "Max Memory Used:", "Init Duration:"):
        assert field in report, report
    response, _ = invoke(lam, name, {}, LogType="Tail")
    assert "Init Duration" not in base64.b64decode(response["LogResult"]).decode()
    assert "LogResult" not in lam.invoke(FunctionName=name, Payload=b"{}")


def test_logs_are_persisted_under_the_log_group(lam, server):
    name = probe(lam)
    marker = unique("marker")
    invoke(lam, name, {"action": "print", "text": marker})
    group = server.data_dir / "logs" / f"aws_lambda_{name}"
    # Lines reach the file through the log writer thread, a moment after the response.
    import time
    deadline = time.time() + 10
    while time.time() < deadline:
        text = "".join(p.read_text() for p in group.glob("*.log"))
        if marker in text and "REPORT RequestId:" in text:
            break
        time.sleep(0.05)
    assert marker in text
    assert "REPORT RequestId:" in text


def test_dry_run_and_event_invocations(lam, server):
    name = probe(lam)
    assert lam.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204
    marker = unique("event")
    response = lam.invoke(FunctionName=name, InvocationType="Event",
                          Payload=json.dumps({"action": "print", "text": marker}))
    assert response["StatusCode"] == 202
    import time
    group = server.data_dir / "logs" / f"aws_lambda_{name}"
    deadline = time.time() + 20
    while time.time() < deadline:
        if any(marker in p.read_text() for p in group.glob("*.log")):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the event was never run")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function", InvocationType="DryRun")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName="no-such-function", InvocationType="Event", Payload=b"{}")


def test_versions_aliases_and_name_forms(lam):
    name = create(lam, Code={"ZipFile": make_zip({"v.py": "def handler(e, c):\n    return 'one'\n"})},
                  Handler="v.handler", Publish=True)["FunctionName"]
    lam.update_function_code(FunctionName=name, ZipFile=make_zip({"v.py": "def handler(e, c):\n    return 'two'\n"}),
                             Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    def call(**kwargs):
        response = lam.invoke(Payload=b"{}", **kwargs)
        return response["ExecutedVersion"], json.loads(response["Payload"].read())

    assert call(FunctionName=name) == ("$LATEST", "two")
    assert call(FunctionName=name, Qualifier="1") == ("1", "one")
    assert call(FunctionName=f"{name}:2") == ("2", "two")
    assert call(FunctionName=f"{name}:live") == ("1", "one")
    assert call(FunctionName=f"{ARN}{name}:live") == ("1", "one")
    assert call(FunctionName=f"000000000000:function:{name}", Qualifier="live") == ("1", "one")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="9")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, Qualifier="nope")
    lam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    seen = {call(FunctionName=name, Qualifier="live")[0] for _ in range(30)}
    assert seen == {"1", "2"}, "weighted routing sends traffic to both versions"
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2", RoutingConfig={"AdditionalVersionWeights": {}})
    assert call(FunctionName=name, Qualifier="live") == ("2", "two")


def test_configuration_changes_take_effect_on_the_next_invoke(lam):
    name = probe(lam, Environment={"Variables": {"STAGE": "one"}})
    assert invoke(lam, name)[1]["env"]["STAGE"] == "one"
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"STAGE": "two"}})
    out = invoke(lam, name)[1]
    assert out["env"]["STAGE"] == "two"
    assert out["count"] == 1, "instances of the old configuration are discarded"


def test_payload_validation(lam):
    name = probe(lam)
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{not json")
    assert (error_code(e), status(e)) == ("InvalidRequestContentException", 400)
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, Payload=json.dumps("x" * (6 * 1024 * 1024)).encode())
    assert (error_code(e), status(e)) == ("RequestTooLargeException", 413)
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps("x" * (1024 * 1024)).encode())
    assert (error_code(e), status(e)) == ("RequestTooLargeException", 413)
    assert lam.invoke(FunctionName=name)["StatusCode"] == 200, "an empty payload is fine"


def test_response_over_6_mb_is_a_function_error(lam):
    name = probe(lam, MemorySize=512)
    response, out = invoke(lam, name, {"action": "big", "bytes": 7 * 1024 * 1024})
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Function.ResponseSizeTooLarge"


def test_client_context_reaches_the_function_and_bad_ones_are_refused(lam):
    name = probe(lam)
    context = base64.b64encode(json.dumps({"custom": {"tenant": "a"}, "env": {}, "client": {}}).encode()).decode()
    _, out = invoke(lam, name, {}, ClientContext=context)
    assert out["client_context"] == {"tenant": "a"}
    for bad in ("not-base64!", base64.b64encode(b"[1, 2]").decode(),
                base64.b64encode(json.dumps({"custom": {"n": 1}}).encode()).decode()):
        with pytest.raises(lam.exceptions.ClientError) as e:
            lam.invoke(FunctionName=name, Payload=b"{}", ClientContext=bad)
        assert error_code(e) == "InvalidRequestContentException"
    assert invoke(lam, name)[1]["count"] >= 2, "the instance survived"


def test_isolation_seen_from_a_function(lam):
    _, out = invoke(lam, probe(lam), {"action": "probe"})
    assert out["uid"] == 993
    assert out["/var/task/new"] == "Read-only file system"
    assert out["/usr/new"] == "Read-only file system"
    assert out["/tmp/new"] == "written"
    assert out["postgres"] == "unreachable"
    assert out["host_files"] == []


def test_parallel_invocations_run_on_separate_instances(lam):
    """Five overlapping invocations: each gets an instance of its own (one invocation per
    instance at a time), and all five finish without error."""
    name = probe(lam, Timeout=10)
    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: invoke(lam, name, {"action": "sleep", "seconds": 1}), range(5)))
    assert all("FunctionError" not in response for response, _ in results), results
    assert len({out["hostname"] for _, out in results}) == 5


CURL_BOOTSTRAP = """#!/bin/sh
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -LD "$HEADERS" "$API/next")"
  ID="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  curl -sS -X POST "$API/$ID/response" -d "{\\"shell\\": $EVENT, \\"handler\\": \\"$_HANDLER\\"}" > /dev/null
done
"""


def zip_with_modes(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, (body, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | mode) << 16
            z.writestr(info, body)
    return buf.getvalue()


def test_custom_runtime_shell_bootstrap_with_curl(lam):
    package = zip_with_modes({"bootstrap": (CURL_BOOTSTRAP, 0o755)})
    name = create(lam, Runtime="provided.al2023", Handler="function.handler", Code={"ZipFile": package})["FunctionName"]
    for n in range(3):
        _, out = invoke(lam, name, {"n": n})
        assert out == {"shell": {"n": n}, "handler": "function.handler"}


# Written for Lambda's images, where /bin/sh is bash: pipefail, [[ ]], arrays, $BASH_VERSION.
BASH_BOOTSTRAP = """#!/bin/sh
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
words=(from bash)
while true; do
  HEADERS="$(mktemp)"
  EVENT="$(curl -sS -LD "$HEADERS" "$API/next")"
  ID="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  [[ -n "$ID" ]]
  SH="$(readlink -f /proc/$$/exe)"
  curl -sS -X POST "$API/$ID/response" -d "{\\"words\\": \\"${words[*]}\\", \\"bash\\": \\"${BASH_VERSION%%.*}\\", \\"sh\\": \\"$SH\\"}" > /dev/null
done
"""


def test_bin_sh_is_bash_as_on_lambda(lam):
    package = zip_with_modes({"bootstrap": (BASH_BOOTSTRAP, 0o755)})
    name = create(lam, Runtime="provided.al2023", Handler="x", Code={"ZipFile": package})["FunctionName"]
    response, out = invoke(lam, name)
    assert "FunctionError" not in response, out
    assert out["words"] == "from bash" and out["bash"] == "5", out
    assert out["sh"].endswith("/dash"), "bash is mounted over the file /bin/sh leads to"


def test_custom_runtime_without_bootstrap_is_invalid_entrypoint(lam):
    name = create(lam, Runtime="provided.al2", Handler="x", Code={"ZipFile": make_zip({"readme.txt": "no bootstrap"})})["FunctionName"]
    response, out = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Runtime.InvalidEntrypoint"


def test_official_python_runtime_client_awslambdaric(lam):
    """awslambdaric, pip-installed into the package, run by a provided.al2023 bootstrap."""
    import awslambdaric
    import simplejson
    site = Path(awslambdaric.__file__).parent.parent
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for package in (Path(awslambdaric.__file__).parent, Path(simplejson.__file__).parent):
            for path in package.rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    info = zipfile.ZipInfo(str(path.relative_to(site)))
                    info.external_attr = (stat.S_IFREG | 0o755) << 16
                    z.writestr(info, path.read_bytes())
        for extra in [*site.glob("snapshot_restore_py*"), *site.glob("runtime_client*.so")]:
            if extra.is_file():
                z.write(extra, extra.name)
            else:
                for path in extra.rglob("*"):
                    if path.is_file():
                        z.write(path, str(path.relative_to(site)))
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        z.writestr(info, "#!/bin/sh\ncd /var/task\nexec /usr/bin/python3.11 -m awslambdaric \"$_HANDLER\"\n")
        z.writestr("app.py", "def handler(event, context):\n"
                             "    if event.get('fail'):\n        raise RuntimeError('ric failure')\n"
                             "    return {'ric': event, 'id': context.aws_request_id}\n")
    name = create(lam, Runtime="provided.al2023", Handler="app.handler", Code={"ZipFile": buf.getvalue()},
                  Timeout=30)["FunctionName"]
    response, out = invoke(lam, name, {"a": 1})
    assert "FunctionError" not in response, out
    assert out == {"ric": {"a": 1}, "id": response["ResponseMetadata"]["RequestId"]}
    response, out = invoke(lam, name, {"fail": True})
    assert response["FunctionError"] == "Unhandled"
    assert (out["errorType"], out["errorMessage"]) == ("RuntimeError", "ric failure")
    assert invoke(lam, name, {"b": 2})[1]["ric"] == {"b": 2}


def test_cli_invoke(server):
    from test_cli import aws
    lam = server.client()
    name = probe(lam)
    payload = tmp_file(json.dumps({"from": "cli"}).encode(), suffix=".json")
    out_file = tmp_file(b"", suffix=".out")
    result = json.loads(aws(server, "invoke", "--function-name", name, "--payload", f"fileb://{payload}",
                            "--log-type", "Tail", out_file).stdout)
    assert result["StatusCode"] == 200 and result["ExecutedVersion"] == "$LATEST"
    assert "START RequestId" in base64.b64decode(result["LogResult"]).decode()
    assert json.loads(Path(out_file).read_text())["event"] == {"from": "cli"}


NODE_CJS = """
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  console.log("node says", JSON.stringify(event));
  if (event.fail) { throw new TypeError("node failure"); }
  return { event, count, id: context.awsRequestId, fn: context.functionName,
           remaining: context.getRemainingTimeInMillis() > 0, node: process.version };
};
exports.callback = (event, context, callback) => { setTimeout(() => callback(null, { cb: event }), 10); };
"""

NODE_ESM = """
export const handler = async (event) => ({ esm: event });
"""


def test_nodejs_handlers_async_callback_and_esm(lam):
    code = make_zip({"index.js": NODE_CJS, "src/mod.mjs": NODE_ESM})
    name = create(lam, Runtime="nodejs20.x", Handler="index.handler", Code={"ZipFile": code})["FunctionName"]
    response, out = invoke(lam, name, {"a": 1}, LogType="Tail")
    assert "FunctionError" not in response, out
    assert out["event"] == {"a": 1} and out["count"] == 1
    assert out["id"] == response["ResponseMetadata"]["RequestId"] and out["fn"] == name
    assert out["remaining"] is True and out["node"].startswith("v20.")
    log = base64.b64decode(response["LogResult"]).decode()
    assert f"{out['id']}\tINFO\tnode says {{\"a\":1}}" in log
    assert invoke(lam, name)[1]["count"] == 2
    response, out = invoke(lam, name, {"fail": True})
    assert response["FunctionError"] == "Unhandled"
    assert (out["errorType"], out["errorMessage"]) == ("TypeError", "node failure")
    assert isinstance(out["trace"], list)
    lam.update_function_configuration(FunctionName=name, Handler="index.callback")
    assert invoke(lam, name, {"b": 2})[1] == {"cb": {"b": 2}}
    lam.update_function_configuration(FunctionName=name, Handler="src/mod.handler")
    assert invoke(lam, name, {"c": 3})[1] == {"esm": {"c": 3}}


@pytest.mark.parametrize("files,handler,error_type", [
    ({"index.js": NODE_CJS}, "missing.handler", "Runtime.ImportModuleError"),
    ({"index.js": NODE_CJS}, "index.nothing", "Runtime.HandlerNotFound"),
    ({"index.js": "exports.handler = async (e) => {"}, "index.handler", "Runtime.UserCodeSyntaxError"),
])
def test_nodejs_init_errors(lam, files, handler, error_type):
    name = create(lam, Runtime="nodejs20.x", Handler=handler, Code={"ZipFile": make_zip(files)})["FunctionName"]
    response, out = invoke(lam, name)
    assert response["FunctionError"] == "Unhandled"
    assert out["errorType"] == error_type, out


def test_ephemeral_storage_sizes_tmp(lam):
    code = make_zip({"t.py": "import os\ndef handler(e, c):\n    s = os.statvfs('/tmp')\n    return s.f_blocks * s.f_frsize >> 20\n"})
    name = create(lam, Code={"ZipFile": code}, Handler="t.handler", EphemeralStorage={"Size": 1024})["FunctionName"]
    assert 960 <= invoke(lam, name)[1] <= 1024
    lam.update_function_configuration(FunctionName=name, EphemeralStorage={"Size": 600})
    assert 560 <= invoke(lam, name)[1] <= 600


def test_rust_function_built_with_lambda_runtime(lam):
    binary = os.environ.get("LAMINA_RUST_FUNCTION")
    if not binary:
        pytest.skip("scripts/test builds tests/fixtures/rust-hello and sets LAMINA_RUST_FUNCTION")
    package = zip_with_modes({"bootstrap": (Path(binary).read_bytes(), 0o755)})
    name = create(lam, Runtime="provided.al2023", Handler="bootstrap", Code={"ZipFile": package},
                  MemorySize=256)["FunctionName"]
    response, out = invoke(lam, name, {"hello": "rust"})
    assert "FunctionError" not in response, out
    assert out == {"rust": {"hello": "rust"}, "request_id": response["ResponseMetadata"]["RequestId"],
                   "function_arn": ARN + name, "memory": "256"}
    response, out = invoke(lam, name, {"fail": True})
    assert response["FunctionError"] == "Unhandled"
    assert out["errorMessage"] == "rust function failed on purpose"
    assert invoke(lam, name, {"again": 1})[1]["rust"] == {"again": 1}


STARTUP_PROBE = """
import os, sys
def handler(event, context):
    return {"optimize": sys.flags.optimize, "path": sys.path[:6],
            "ld": os.environ.get("LD_LIBRARY_PATH"), "extra": os.environ.get("EXTRA")}
"""


def test_python_startup_environment_is_honoured_with_or_without_a_waiting_interpreter(lam):
    """Interpreters wait in pre-built sandboxes; a function whose variables only work at start-up
    gets a fresh one, and PYTHONPATH is honoured either way."""
    plain = create(lam, Code={"ZipFile": make_zip({"s.py": STARTUP_PROBE})}, Handler="s.handler",
                   Environment={"Variables": {"EXTRA": "x", "PYTHONPATH": "/var/task/vendor"}})["FunctionName"]
    out = invoke(lam, plain)[1]
    assert out["extra"] == "x" and out["optimize"] == 0
    assert "/var/task/vendor" in out["path"]
    assert out["ld"] == "/var/task"
    optimized = create(lam, Code={"ZipFile": make_zip({"s.py": STARTUP_PROBE, "lib/libx.so": "not really"})},
                       Handler="s.handler", Environment={"Variables": {"PYTHONOPTIMIZE": "1"}})["FunctionName"]
    out = invoke(lam, optimized)[1]
    assert out["optimize"] == 1, "PYTHONOPTIMIZE needs the interpreter started with it"
    assert out["ld"] == "/var/task:/var/task/lib"


def test_node_options_reach_a_freshly_started_node(lam):
    code = make_zip({"index.js": "const v8 = require('v8');\n"
                                 "exports.handler = async () => ({ limit: v8.getHeapStatistics().heap_size_limit,"
                                 " options: process.env.NODE_OPTIONS });\n"})
    name = create(lam, Runtime="nodejs20.x", Handler="index.handler", Code={"ZipFile": code},
                  MemorySize=512, Environment={"Variables": {"NODE_OPTIONS": "--max-old-space-size=100"}})["FunctionName"]
    out = invoke(lam, name)[1]
    assert out["options"] == "--max-old-space-size=100"
    assert out["limit"] < 200 * 1024 * 1024, out


def report_of(response):
    """The REPORT line of an invocation's log tail, as {field: value}."""
    line = base64.b64decode(response["LogResult"]).decode().splitlines()[-1]
    assert line.startswith("REPORT RequestId: "), line
    return dict(field.split(": ", 1) for field in line.split("\t"))


def assert_report(report, cold):
    duration = float(report["Duration"].removesuffix(" ms"))
    billed = int(report["Billed Duration"].removesuffix(" ms"))
    assert duration > 0 and billed >= 1 and billed >= duration, report
    assert ("Init Duration" in report) == cold, report


def check_cold_then_warm(lam, name):
    first = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert_report(report_of(first), cold=True)
    second = lam.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
    assert_report(report_of(second), cold=False)


def test_report_durations_are_never_zero_on_pooled_instances(lam):
    """Cold starts on sandboxes built ahead (Python and Node.js zygotes, custom runtimes), warm
    invocations, and the first invocation after a configuration change."""
    node = {"index.js": "exports.handler = async (event) => event;\n"}
    for _ in range(4):
        check_cold_then_warm(lam, create(lam)["FunctionName"])
    check_cold_then_warm(lam, create(lam, Runtime="nodejs20.x", Code={"ZipFile": make_zip(node)})["FunctionName"])
    package = zip_with_modes({"bootstrap": (CURL_BOOTSTRAP, 0o755)})
    custom = create(lam, Runtime="provided.al2023", Handler="x", Code={"ZipFile": package})
    check_cold_then_warm(lam, custom["FunctionName"])
    name = create(lam)["FunctionName"]
    check_cold_then_warm(lam, name)
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    check_cold_then_warm(lam, name)


def test_report_durations_are_never_zero_on_demand(fresh_server):
    """With no sandboxes built ahead, every cold start builds its own."""
    fresh_server.extra_env["LAMINA_SANDBOX_POOL"] = "0"
    lam = fresh_server.start().client()
    for _ in range(2):
        check_cold_then_warm(lam, create(lam)["FunctionName"])


SDK_PROBE = """
import boto3, botocore
def handler(event, context):
    sqs = boto3.client("sqs", region_name="us-east-1")  # made offline, as at a module's top
    return {"boto3": boto3.__version__, "botocore": botocore.__version__, "file": boto3.__file__,
            "client": type(sqs).__name__}
"""


def sdk_installed():
    """The runtimes' boto3, installed as scripts/test (and a server, in the background) does."""
    from conftest import lamina_binary
    out = subprocess.run([lamina_binary(), "install-sdk"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def test_python_functions_import_boto3_without_bundling_it(lam):
    sdk_installed()
    name = create(lam, Code={"ZipFile": make_zip({"index.py": SDK_PROBE})})["FunctionName"]
    response, out = invoke(lam, name)
    assert "FunctionError" not in response, out
    assert (out["boto3"], out["botocore"], out["client"]) == ("1.44.5", "1.44.5", "SQS")
    assert out["file"].startswith("/var/runtime/sdk/python/")


def test_a_function_that_bundles_boto3_gets_its_own(lam):
    sdk_installed()
    files = {"index.py": SDK_PROBE.replace('sqs = boto3.client("sqs", region_name="us-east-1")', "sqs = 0"),
             "boto3/__init__.py": "__version__ = 'bundled'\n"}
    response, out = invoke(lam, create(lam, Code={"ZipFile": make_zip(files)})["FunctionName"])
    assert "FunctionError" not in response, out
    assert (out["boto3"], out["botocore"]) == ("bundled", "1.44.5")
    assert out["file"] == "/var/task/boto3/__init__.py"
