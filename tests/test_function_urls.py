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


def call(server, url, method="GET", path="/", body=None, headers=None, by_path=False):
    """Requests `path` of the function URL `url`, addressed by its Host header (or by the path
    form on the main address). Returns (status, headers, body)."""
    host = urlsplit(url).netloc
    url_id = host.split(".")[0]
    main = urlsplit(server.url).netloc
    connection = http.client.HTTPConnection(main, timeout=30)
    headers = dict(headers or {})
    if by_path:
        path = f"/_lamina/urls/{url_id}{path}"
    else:
        headers["Host"] = host
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.headers, data


def test_url_config_lifecycle_and_errors(lam, server):
    name = url_function(lam)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    port = urlsplit(server.url).port
    host = urlsplit(created["FunctionUrl"]).netloc
    assert host.endswith(f".lambda-url.us-east-1.localhost:{port}") and len(host.split(".")[0]) == 32
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
    assert call(server, created["FunctionUrl"])[0] == 404


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
    assert event["requestContext"]["domainName"] == urlsplit(url).hostname
    # Binary request bodies arrive base64-encoded; the path form reaches the same function.
    code, _, body = call(server, url, "PUT", "/echo", body=bytes([0, 255, 1]),
                         headers={"Content-Type": "application/octet-stream"}, by_path=True)
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
    assert code == 502 and json.loads(body) == {"Message": "Internal Server Error"}
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


def signed(server, url, method, path, body=b""):
    """A SigV4-signed request (service lambda) to the function URL, addressed by Host."""
    target = url.rstrip("/") + path
    request = AWSRequest(method=method, url=target, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "us-east-1").add_auth(request)
    headers = dict(request.headers.items(), Host=urlsplit(url).netloc)
    connection = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=30)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, response.read()


def test_aws_iam_urls_need_a_signature(lam, server):
    name = url_function(lam)
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    code, _, body = call(server, url)
    assert code == 403, body
    code, body = signed(server, url, "POST", "/signed?x=1", b'{"a": 1}')
    assert code == 200, body
    iam = json.loads(body)["requestContext"]["authorizer"]["iam"]
    assert iam["accessKey"] == ACCESS_KEY and iam["accountId"] == "000000000000"
    # A signature by an unknown key is refused.
    request = AWSRequest(method="GET", url=url, headers={})
    SigV4Auth(Credentials("AKIDUNKNOWN000000000", "nope"), "lambda", "us-east-1").add_auth(request)
    connection = http.client.HTTPConnection(urlsplit(server.url).netloc, timeout=30)
    connection.request("GET", "/", headers=dict(request.headers.items(), Host=urlsplit(url).netloc))
    assert connection.getresponse().status == 403


def test_alias_urls(lam, server):
    name = url_function(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    url = public_url(lam, name, qualifier="live")
    config = lam.get_function_url_config(FunctionName=name, Qualifier="live")
    assert config["FunctionArn"].endswith(f":function:{name}:live")
    assert call(server, url)[0] == 200
    lam.delete_alias(FunctionName=name, Name="live")
    assert call(server, url)[0] == 404, "deleting the alias deletes its URL"


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_cli_then_curl(server):
    from test_cli import aws
    lam = server.client()
    name = url_function(lam)
    created = json.loads(aws(server, "create-function-url-config", "--function-name", name,
                             "--auth-type", "NONE").stdout)
    aws(server, "add-permission", "--function-name", name, "--statement-id", "url", "--action",
        "lambda:InvokeFunctionUrl", "--principal", "*", "--function-url-auth-type", "NONE")
    # curl resolves every *.localhost name to loopback itself: the URL works as printed.
    out = subprocess.run(["curl", "-sS", "-i", created["FunctionUrl"] + "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HTTP/1.1 418"), out.stdout
    assert "short and stout" in out.stdout
