"""The AWS CLI, as a user would run it against Lamina."""

import json
import os
import subprocess

import pytest

from conftest import AWS, ACCESS_KEY, ROLE, SECRET_KEY, make_zip, tmp_file, unique


def aws_service(server, service, *args, check=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="", AWS_MAX_ATTEMPTS="1")
    proc = subprocess.run([AWS, service, *args, "--endpoint-url", server.url, "--output", "json"],
                          capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def aws(server, *args, check=True):
    return aws_service(server, "lambda", *args, check=check)


def test_cli_function_lifecycle(server):
    name = unique("cli")
    zip_path = tmp_file(make_zip())
    out = json.loads(aws(server, "create-function", "--function-name", name, "--runtime", "python3.11",
                         "--role", ROLE, "--handler", "index.handler", "--zip-file", f"fileb://{zip_path}",
                         "--environment", "Variables={STAGE=cli}", "--tags", "team=cli").stdout)
    assert out["FunctionName"] == name and out["Environment"]["Variables"] == {"STAGE": "cli"}
    aws(server, "wait", "function-active-v2", "--function-name", name)
    got = json.loads(aws(server, "get-function", "--function-name", name).stdout)
    assert got["Tags"] == {"team": "cli"}
    aws(server, "update-function-configuration", "--function-name", name, "--timeout", "15")
    aws(server, "wait", "function-updated-v2", "--function-name", name)
    new_zip = tmp_file(make_zip({"index.py": "def handler(e, c):\n    return 1\n"}))
    updated = json.loads(aws(server, "update-function-code", "--function-name", name,
                             "--zip-file", f"fileb://{new_zip}", "--publish").stdout)
    assert updated["Version"] == "1"
    alias = json.loads(aws(server, "create-alias", "--function-name", name, "--name", "live",
                           "--function-version", "1").stdout)
    assert alias["AliasArn"].endswith(f"{name}:live")
    listed = json.loads(aws(server, "list-functions").stdout)
    assert name in [f["FunctionName"] for f in listed["Functions"]]
    versions = json.loads(aws(server, "list-versions-by-function", "--function-name", name).stdout)
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]
    aws(server, "add-permission", "--function-name", name, "--statement-id", "s",
        "--action", "lambda:InvokeFunction", "--principal", "sns.amazonaws.com")
    policy = json.loads(json.loads(aws(server, "get-policy", "--function-name", name).stdout)["Policy"])
    assert policy["Statement"][0]["Sid"] == "s"
    aws(server, "put-function-concurrency", "--function-name", name, "--reserved-concurrent-executions", "2")
    settings = json.loads(aws(server, "get-account-settings").stdout)
    assert settings["AccountUsage"]["FunctionCount"] >= 1
    aws(server, "delete-alias", "--function-name", name, "--name", "live")
    aws(server, "delete-function", "--function-name", name)
    gone = aws(server, "get-function", "--function-name", name, check=False)
    assert gone.returncode == 255
    assert "ResourceNotFoundException" in gone.stderr


def test_cli_async_invocation_with_a_queue_destination(server):
    """The AWS CLI's lambda and sqs commands, end to end: a queue, a destination, an Event."""
    name = unique("cli-async")
    queue_url = json.loads(aws_service(server, "sqs", "create-queue", "--queue-name", name).stdout)["QueueUrl"]
    aws(server, "create-function", "--function-name", name, "--runtime", "python3.11", "--role", ROLE,
        "--handler", "index.handler", "--zip-file", f"fileb://{tmp_file(make_zip())}")
    config = json.loads(aws(server, "put-function-event-invoke-config", "--function-name", name,
                            "--maximum-retry-attempts", "0", "--destination-config",
                            json.dumps({"OnSuccess": {"Destination": f"arn:aws:sqs:us-east-1:000000000000:{name}"}})
                            ).stdout)
    assert config["MaximumRetryAttempts"] == 0
    listed = json.loads(aws(server, "list-function-event-invoke-configs", "--function-name", name).stdout)
    assert len(listed["FunctionEventInvokeConfigs"]) == 1
    out = tmp_file(b"", suffix=".json")
    payload = tmp_file(json.dumps({"from": "cli"}).encode(), suffix=".json")
    invoked = json.loads(aws(server, "invoke", "--function-name", name, "--invocation-type", "Event",
                             "--payload", f"fileb://{payload}", out).stdout)
    assert invoked["StatusCode"] == 202
    received = json.loads(aws_service(server, "sqs", "receive-message", "--queue-url", queue_url,
                                      "--wait-time-seconds", "20").stdout)
    record = json.loads(received["Messages"][0]["Body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestPayload"] == {"from": "cli"}
    aws(server, "delete-function-event-invoke-config", "--function-name", name)
    gone = aws(server, "get-function-event-invoke-config", "--function-name", name, check=False)
    assert gone.returncode == 255 and "ResourceNotFoundException" in gone.stderr


@pytest.mark.parametrize("args,expected", [
    (["--memory-size", "20000"], "InvalidParameterValueException"),
    (["--runtime", "cobol"], "ValidationException"),
])
def test_cli_reports_lambda_errors(server, args, expected):
    zip_path = tmp_file(make_zip())
    base = {"--function-name": unique("cli"), "--runtime": "python3.11", "--role": ROLE,
            "--handler": "index.handler"}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    flat = [x for kv in base.items() for x in kv]
    proc = aws(server, "create-function", *flat, "--zip-file", f"fileb://{zip_path}", check=False)
    assert proc.returncode == 255
    assert expected in proc.stderr
