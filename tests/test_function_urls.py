"""Function URLs: the configuration API through boto3 and the AWS CLI, and the URLs themselves
through plain HTTP clients (http.client, curl) and SigV4-signed requests."""

import base64
import http.client
import json
import os
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import ACCESS_KEY, SECRET_KEY, create, error_code, make_zip, status

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

HANDLER = r'''
import base64, json, time
def handler(event, context):
    path = event["rawPath"]
    if path == "/status":
        return {"statusCode": 418, "headers": {"x-teapot": "yes", "access-control-allow-origin": "https://mine"},
                "cookies": ["a=1; Path=/", "b=2"], "body": "short and stout"}
    if path == "/binary":
        return {"statusCode": 200, "headers": {"content-type": "application/octet-stream"},
                "body": base64.b64encode(bytes(range(256))).decode(), "isBase64Encoded": True}
    if path == "/plain":
        return "Hello"
    if path == "/fail":
        raise RuntimeError("boom")
    if path == "/slow":
        time.sleep(5)
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
'''


def url_function(lam, **overrides):
    args = dict(Code={"ZipFile": make_zip({"u.py": HANDLER})}, Handler="u.handler", Timeout=2)
    args.update(overrides)
    return create(lam, **args)["FunctionName"]


def public_url(lam, name, qualifier=None, **config):
    """A function URL open to anyone, as the Lambda docs set one up."""
    extra = {"Qualifier": qualifier} if qualifier else {}
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE", **config, **extra)
    lam.add_permission(FunctionName=name, StatementId="public-url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE", **extra)
    return url["FunctionUrl"]


def call(server, url, method="GET", path="/", body=None, headers=None):
    """Requests `path` under the function URL `url`, exactly as returned by the API. Returns
    (status, headers, body)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.request(method, parts.path.rstrip("/") + path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.headers, data


def url_id(url):
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def test_url_config_lifecycle_and_errors(lam, server):
    name = url_function(lam)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    # By default a URL is the path form on the server's own address, which every client resolves.
    assert created["FunctionUrl"].startswith(server.url + "/_lamina/urls/")
    assert len(url_id(created["FunctionUrl"])) == 32
    assert created["FunctionUrl"].startswith("http://") and created["FunctionUrl"].endswith("/")
    # Lambda echoes InvokeMode only when the request set it; Get shows the default.
    assert created["AuthType"] == "NONE" and "InvokeMode" not in created
    assert created["FunctionArn"].endswith(f":function:{name}")
    got = lam.get_function_url_config(FunctionName=name)
    assert got["FunctionUrl"] == created["FunctionUrl"] and "LastModifiedTime" in got
    assert got["InvokeMode"] == "BUFFERED"
    cors = {"AllowOrigins": ["https://example.com"], "AllowMethods": ["GET", "POST"], "MaxAge": 60}
    updated = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM", Cors=cors)
    assert updated["AuthType"] == "AWS_IAM" and updated["Cors"] == cors
    assert updated["FunctionUrl"] == created["FunctionUrl"], "an update keeps the URL"
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["FunctionUrl"] for c in listed] == [created["FunctionUrl"]]

    errors = [
        (lambda: lam.create_function_url_config(FunctionName=name, AuthType="NONE"), "ResourceConflictException"),
        (lambda: lam.create_function_url_config(FunctionName=name, AuthType="NONE", Qualifier="x"), "ResourceNotFoundException"),
        (lambda: lam.create_function_url_config(FunctionName=name, AuthType="OPEN"), "ValidationException"),
        (lambda: lam.create_function_url_config(FunctionName=name, AuthType="NONE", Qualifier="1"), "ValidationException"),
        (lambda: lam.get_function_url_config(FunctionName=name, Qualifier="nosuchalias"), "ResourceNotFoundException"),
        (lambda: lam.create_function_url_config(FunctionName="nosuchfunction", AuthType="NONE"), "ResourceNotFoundException"),
        (lambda: lam.update_function_url_config(FunctionName=name, Cors={"MaxAge": 90000}), "ValidationException"),
    ]
    for attempt, code in errors:
        with pytest.raises(Exception) as e:
            attempt()
        assert error_code(e) == code
    lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(Exception) as e:
        lam.get_function_url_config(FunctionName=name)
    assert (error_code(e), status(e)) == ("ResourceNotFoundException", 404)
    # A URL that names no function answers as Lambda does for any host it does not serve.
    code, headers, body = call(server, created["FunctionUrl"])
    assert (code, json.loads(body)) == (403, {"Message": None})
    code, _, body = call(server, server.url + "/_lamina/urls/" + "0" * 32 + "/")
    assert (code, json.loads(body)) == (403, {"Message": None})


def test_auth_none_needs_the_public_permission(lam, server):
    name = url_function(lam)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    code, headers, body = call(server, url)
    assert code == 403 and json.loads(body) == {"Message": "Forbidden"}
    lam.add_permission(FunctionName=name, StatementId="public", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    assert call(server, url)[0] == 200
    lam.remove_permission(FunctionName=name, StatementId="public")
    assert call(server, url)[0] == 403


def test_requests_become_payload_format_2_events(lam, server):
    url = public_url(lam, url_function(lam))
    code, headers, body = call(server, url, "POST", "/some/path?p1=v1&p1=v2&q=a%20b",
                               body=b'{"hello": "url"}',
                               headers={"Content-Type": "application/json", "Cookie": "c1=v1; c2=v2",
                                        "X-Custom": "custom", "User-Agent": "test-agent"})
    assert code == 200 and headers["x-amzn-RequestId"]
    event = json.loads(body)
    assert event["version"] == "2.0" and event["routeKey"] == "$default"
    assert (event["rawPath"], event["rawQueryString"]) == ("/some/path", "p1=v1&p1=v2&q=a%20b")
    assert event["queryStringParameters"] == {"p1": "v1,v2", "q": "a b"}
    assert event["cookies"] == ["c1=v1", "c2=v2"]
    assert event["headers"]["x-custom"] == "custom" and "cookie" not in event["headers"]
    assert (event["body"], event["isBase64Encoded"]) == ('{"hello": "url"}', False)
    http_context = event["requestContext"]["http"]
    assert (http_context["method"], http_context["path"], http_context["userAgent"]) == ("POST", "/some/path", "test-agent")
    assert event["requestContext"]["accountId"] == "anonymous"
    assert event["requestContext"]["requestId"] == headers["x-amzn-RequestId"]
    # The event names the URL as Lambda would, whatever address served it.
    assert event["requestContext"]["domainName"] == f"{url_id(url)}.lambda-url.us-east-1.on.aws"
    assert event["requestContext"]["domainPrefix"] == url_id(url)
    # Binary request bodies arrive base64-encoded.
    code, _, body = call(server, url, "PUT", "/echo", body=bytes([0, 255, 1]),
                         headers={"Content-Type": "application/octet-stream"})
    event = json.loads(body)
    assert (event["rawPath"], event["isBase64Encoded"]) == ("/echo", True)
    assert base64.b64decode(event["body"]) == bytes([0, 255, 1])


def test_results_map_to_http_responses(lam, server):
    url = public_url(lam, url_function(lam))
    code, headers, body = call(server, url, path="/status")
    assert (code, body, headers["x-teapot"]) == (418, b"short and stout", "yes")
    assert headers.get_all("Set-Cookie") == ["a=1; Path=/", "b=2"]
    code, headers, body = call(server, url, path="/binary")
    assert (code, body, headers["Content-Type"]) == (200, bytes(range(256)), "application/octet-stream")
    code, headers, body = call(server, url, path="/plain")
    assert (code, body, headers["Content-Type"]) == (200, b'"Hello"', "application/json")
    code, headers, body = call(server, url, path="/fail")
    assert (code, body) == (502, b"Internal Server Error")
    assert headers["Content-Type"].startswith("text/plain")
    code, _, _ = call(server, url, path="/slow")
    assert code == 502, "a timeout is a bad gateway too"
    assert call(server, url)[0] == 200, "a fresh instance serves the next request"


def test_cors_preflight_and_response_headers(lam, server):
    cors = {"AllowOrigins": ["https://app.example"], "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["content-type", "x-custom"], "ExposeHeaders": ["x-teapot"], "MaxAge": 600,
            "AllowCredentials": True}
    url = public_url(lam, url_function(lam), Cors=cors)
    # A browser's preflight: answered by the platform, the function never runs.
    code, headers, body = call(server, url, "OPTIONS", "/status", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert code == 200 and body == b""
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Methods"] == "GET,POST"
    assert headers["Access-Control-Allow-Headers"] == "content-type,x-custom"
    assert (headers["Access-Control-Max-Age"], headers["Access-Control-Allow-Credentials"]) == ("600", "true")
    # The configured headers override what the function set.
    code, headers, _ = call(server, url, path="/status", headers={"Origin": "https://app.example"})
    assert code == 418
    assert headers.get_all("Access-Control-Allow-Origin") == ["https://app.example"]
    assert headers["Access-Control-Expose-Headers"] == "x-teapot"
    # Another origin gets no CORS headers.
    _, headers, _ = call(server, url, "OPTIONS", "/", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in headers


def signed(url, method, path, body=b"", key=(ACCESS_KEY, SECRET_KEY)):
    """A SigV4-signed request (service lambda) to `path` under the function URL `url`."""
    target = url.rstrip("/") + path
    request = AWSRequest(method=method, url=target, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(*key), "lambda", "us-east-1").add_auth(request)
    parts = urlsplit(target)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                       headers=dict(request.headers.items()))
    response = connection.getresponse()
    return response.status, response.read()


def test_aws_iam_urls_need_a_signature(lam, server):
    name = url_function(lam)
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    code, _, body = call(server, url)
    assert code == 403, body
    code, body = signed(url, "POST", "/signed?x=1", b'{"a": 1}')
    assert code == 200, body
    event = json.loads(body)
    assert (event["rawPath"], event["rawQueryString"]) == ("/signed", "x=1")
    iam = event["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == ACCESS_KEY and iam["accountId"] == "000000000000"
    # A signature by an unknown key is refused.
    assert signed(url, "GET", "/", key=("AKIDUNKNOWN000000000", "nope"))[0] == 403


def test_alias_urls(lam, server):
    name = url_function(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    url = public_url(lam, name, qualifier="live")
    config = lam.get_function_url_config(FunctionName=name, Qualifier="live")
    assert config["FunctionArn"].endswith(f":function:{name}:live")
    assert call(server, url)[0] == 200
    lam.delete_alias(FunctionName=name, Name="live")
    code, _, body = call(server, url)
    assert (code, json.loads(body)) == (403, {"Message": None}), "deleting the alias deletes its URL"


def test_the_returned_url_works_in_urllib_requests_and_node_fetch(lam, server):
    """The URL as printed, with clients that use the system resolver (no *.localhost magic)."""
    import urllib.request

    import requests

    url = public_url(lam, url_function(lam))
    with urllib.request.urlopen(url + "plain", timeout=30) as response:
        assert (response.status, response.read()) == (200, b'"Hello"')
    response = requests.post(url + "some/path?via=requests", json={"a": 1}, timeout=30)
    assert response.status_code == 200
    event = response.json()
    assert (event["rawPath"], event["rawQueryString"], event["body"]) == ("/some/path", "via=requests", '{"a": 1}')
    node = shutil.which("node")
    assert node, "Node.js is part of the test machine"
    script = ("fetch(process.argv[1]).then(async r => console.log(r.status, await r.text()))"
              ".catch(e => { console.error(e); process.exit(1); })")
    out = subprocess.run([node, "-e", script, url + "status"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "418 short and stout"


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_url_then_curl(server):
    """A public URL made with the AWS CLI, then requested with curl exactly as returned.
    Returns the URL."""
    from test_cli import aws

    name = url_function(server.client())
    created = json.loads(aws(server, "create-function-url-config", "--function-name", name,
                             "--auth-type", "NONE").stdout)
    aws(server, "add-permission", "--function-name", name, "--statement-id", "url", "--action",
        "lambda:InvokeFunctionUrl", "--principal", "*", "--function-url-auth-type", "NONE")
    out = subprocess.run(["curl", "-sS", "-i", created["FunctionUrl"] + "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 418"), out.stdout
    assert "short and stout" in out.stdout
    return created["FunctionUrl"]


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_host_form_under_a_function_url_base(fresh_server):
    """With --function-url-base naming a domain pointed at the server, URLs are host-addressed.
    Here the domain is `localhost`, whose subdomains curl resolves to loopback by itself."""
    port = free_port()
    fresh_server.extra_env["LAMINA_FUNCTION_URL_BASE"] = f"http://localhost:{port}"
    fresh_server.start(listen=f"127.0.0.1:{port}")
    url = cli_url_then_curl(fresh_server)
    host = urlsplit(url).netloc
    assert host.endswith(f".lambda-url.us-east-1.localhost:{port}") and len(host.split(".")[0]) == 32
    out = subprocess.run(["curl", "-sS", url + "echo"], capture_output=True, text=True, timeout=30)
    assert json.loads(out.stdout)["requestContext"]["domainName"] == host.split(":")[0]


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_cli_then_curl(server):
    assert cli_url_then_curl(server).startswith(server.url + "/_lamina/urls/")
