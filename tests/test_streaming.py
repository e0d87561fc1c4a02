"""Response streaming: InvokeWithResponseStream through boto3 (its event-stream decoder), and
function URLs in RESPONSE_STREAM mode through a plain HTTP client; functions that stream with
our Node.js `awslambda.streamifyResponse` and with the official Rust `lambda_http` crate."""

import base64
import http.client
import io
import json
import os
import stat
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import create, error_code, make_zip

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

NODE_STREAMING = r"""
export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.http) {
    responseStream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 201, headers: { "x-streamed": "yes", "content-type": "text/plain" }, cookies: ["s=1"],
    });
  } else {
    responseStream.setContentType("text/plain");
  }
  responseStream.write("first ");
  await new Promise((resolve) => setTimeout(resolve, 1000));
  if (event.fail) {
    throw new TypeError("failed mid-stream");
  }
  responseStream.write("second");
  responseStream.end();
});
"""

PYTHON = """
def handler(event, context):
    if isinstance(event, dict) and event.get("rawPath"):
        return {"statusCode": 202, "headers": {"x-python": "buffered"}, "body": "from python"}
    if isinstance(event, dict) and event.get("fail"):
        raise ValueError("python says no")
    return {"buffered": event}
"""


def node_streaming(lam, **overrides):
    args = dict(Runtime="nodejs20.x", Handler="index.handler",
                Code={"ZipFile": make_zip({"index.mjs": NODE_STREAMING})}, Timeout=10)
    args.update(overrides)
    return create(lam, **args)["FunctionName"]


def stream(lam, name, payload, **kwargs):
    """Invokes with a response stream; returns (response, [(seconds since start, event)])."""
    started = time.time()
    response = lam.invoke_with_response_stream(FunctionName=name, Payload=json.dumps(payload), **kwargs)
    events = [(time.time() - started, event) for event in response["EventStream"]]
    return response, events


def chunks(events):
    return b"".join(e["PayloadChunk"]["Payload"] for _, e in events if "PayloadChunk" in e)


def complete(events):
    assert "InvokeComplete" in events[-1][1], events
    return events[-1][1]["InvokeComplete"]


def test_chunks_reach_the_client_as_the_function_writes_them(lam):
    name = node_streaming(lam)
    response, events = stream(lam, name, {})
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert response["ResponseStreamContentType"] == "application/vnd.amazon.eventstream"
    assert chunks(events) == b"first second"
    first = next(at for at, e in events if "PayloadChunk" in e)
    end = events[-1][0]
    assert end - first >= 0.8, f"the first chunk came at {first:.2f} s, the end at {end:.2f} s"
    assert complete(events).get("ErrorCode") is None


def test_a_buffered_function_streams_in_one_chunk_with_its_log(lam):
    name = create(lam, Code={"ZipFile": make_zip({"p.py": PYTHON})}, Handler="p.handler")["FunctionName"]
    _, events = stream(lam, name, {"n": 1}, LogType="Tail")
    assert json.loads(chunks(events)) == {"buffered": {"n": 1}}
    log = base64.b64decode(complete(events)["LogResult"]).decode()
    assert "START RequestId" in log and "REPORT RequestId" in log
    _, events = stream(lam, name, {"fail": True})
    done = complete(events)
    assert (done["ErrorCode"], done["ErrorDetails"]) == ("ValueError", "python says no")


def test_an_error_after_the_stream_began_ends_it_with_the_error(lam):
    name = node_streaming(lam)
    _, events = stream(lam, name, {"fail": True})
    assert chunks(events) == b"first "
    done = complete(events)
    assert (done["ErrorCode"], done["ErrorDetails"]) == ("TypeError", "failed mid-stream")
    # The instance lives on.
    assert chunks(stream(lam, name, {})[1]) == b"first second"


def test_streaming_requests_are_checked_like_invoke(lam):
    name = node_streaming(lam)
    dry = lam.invoke_with_response_stream(FunctionName=name, InvocationType="DryRun")
    assert dry["StatusCode"] == 204
    for bad, code in [(dict(FunctionName="no-such-function"), "ResourceNotFoundException"),
                      (dict(FunctionName=name, Payload=b"not json"), "InvalidRequestContentException")]:
        with pytest.raises(Exception) as e:
            lam.invoke_with_response_stream(**bad)
        assert error_code(e) == code
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(Exception) as e:
        lam.invoke_with_response_stream(FunctionName=name, Payload=b"{}")
    assert error_code(e) == "TooManyRequestsException"


def test_a_streaming_function_invoked_plainly_answers_in_full(lam):
    response = lam.invoke(FunctionName=node_streaming(lam), Payload=b"{}")
    assert response["Payload"].read() == b"first second"


def streaming_url(lam, name):
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE", InvokeMode="RESPONSE_STREAM")["FunctionUrl"]
    lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    return url


def get(server, url, method="GET", path="/", body=None):
    """Requests `path` under the URL as returned; returns (status, headers, [(seconds since
    start, bytes)])."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    started = time.time()
    connection.request(method, parts.path.rstrip("/") + path, body=body)
    response = connection.getresponse()
    pieces = []
    while piece := response.read1(65536):
        pieces.append((time.time() - started, piece))
    return response.status, response.headers, pieces


def test_response_stream_urls_send_status_headers_then_chunks_as_written(lam, server):
    name = node_streaming(lam)
    url = streaming_url(lam, name)
    # The Node function builds its prelude from the event only when asked: a URL request's
    # event has "rawPath", so mark it through the query string of the event body.
    lam.update_function_configuration(FunctionName=name, Environment={"Variables": {"unused": "x"}})
    code = make_zip({"index.mjs": NODE_STREAMING.replace("if (event.http)", "if (event.rawPath)")})
    lam.update_function_code(FunctionName=name, ZipFile=code)
    status, headers, pieces = get(server, url, path="/live")
    assert status == 201
    assert headers["x-streamed"] == "yes" and headers["Set-Cookie"] == "s=1"
    assert b"".join(p for _, p in pieces) == b"first second"
    assert pieces[-1][0] - pieces[0][0] >= 0.8, pieces


def test_buffered_answers_behind_a_streaming_url_are_mapped_as_usual(lam, server):
    name = create(lam, Code={"ZipFile": make_zip({"p.py": PYTHON})}, Handler="p.handler")["FunctionName"]
    status, headers, pieces = get(server, streaming_url(lam, name))
    assert (status, headers["x-python"], b"".join(p for _, p in pieces)) == (202, "buffered", b"from python")


def rust_http(lam, **overrides):
    binary = os.environ.get("LAMINA_RUST_HTTP_FUNCTION")
    if not binary:
        pytest.skip("scripts/test builds tests/fixtures/rust-hello and sets LAMINA_RUST_HTTP_FUNCTION")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        z.writestr(info, Path(binary).read_bytes())
    args = dict(Runtime="provided.al2023", Handler="bootstrap", Code={"ZipFile": buf.getvalue()}, Timeout=10)
    args.update(overrides)
    return create(lam, **args)["FunctionName"]


def test_a_lambda_http_function_behind_a_url(lam, server):
    name = rust_http(lam)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    status, headers, pieces = get(server, url, "POST", "/rust/path?name=lamina", body=b"hello rust")
    assert (status, headers["x-rust"]) == (201, "lambda_http")
    assert json.loads(b"".join(p for _, p in pieces)) == {
        "method": "POST", "path": "/rust/path", "name": "lamina", "body": "hello rust"}


def test_a_lambda_http_function_streaming_through_a_url(lam, server):
    name = rust_http(lam, Environment={"Variables": {"STREAM": "1"}})
    status, headers, pieces = get(server, streaming_url(lam, name))
    assert (status, headers["x-rust"], headers["Content-Type"]) == (200, "streaming", "text/plain")
    assert b"".join(p for _, p in pieces) == b"one two three"
    assert pieces[-1][0] - pieces[0][0] >= 0.4, pieces
