"""Execution-role credentials: every execution environment gets temporary credentials of its
function's role; the server verifies them (SigV4 with the session token) and attributes what
they sign to the role session; STS GetCallerIdentity names the caller."""

import http.client
import json
import os
import subprocess
import time
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from conftest import ACCESS_KEY, AWS, ROLE, SECRET_KEY, create, error_code, make_zip, unique

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

CREDENTIALS = """
import os
def handler(event, context):
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
    return {name: os.environ.get(name) for name in names}
"""

ACCOUNT = "000000000000"


def credentials_of(lam, name):
    """The credentials the function's execution environment was given, as it reports them."""
    out = json.loads(lam.invoke(FunctionName=name, Payload=b"{}")["Payload"].read())
    return out


def function(lam):
    return create(lam, Code={"ZipFile": make_zip({"index.py": CREDENTIALS})})["FunctionName"]


def client(server, service, creds=None, token=None):
    creds = creds or {}
    return boto3.client(
        service, endpoint_url=server.url, region_name="us-east-1",
        aws_access_key_id=creds.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        aws_secret_access_key=creds.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        aws_session_token=token if token is not None else creds.get("AWS_SESSION_TOKEN"),
        config=Config(retries={"total_max_attempts": 1}))


def test_a_function_gets_temporary_credentials_of_its_role(server, lam):
    name = function(lam)
    creds = credentials_of(lam, name)
    assert creds["AWS_ACCESS_KEY_ID"].startswith("ASIA") and creds["AWS_SESSION_TOKEN"]
    assert creds["AWS_REGION"] == "us-east-1"
    # The same environment keeps its credentials; a caller outside uses them as the role.
    assert credentials_of(lam, name) == creds
    identity = client(server, "sts", creds).get_caller_identity()
    role_name = ROLE.rsplit("/", 1)[-1]
    assert identity["Arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/{role_name}/{name}"
    assert identity["Account"] == ACCOUNT
    assert identity["UserId"].startswith("AROA") and identity["UserId"].endswith(f":{name}")
    root = client(server, "sts").get_caller_identity()
    assert (root["Arn"], root["UserId"], root["Account"]) == (f"arn:aws:iam::{ACCOUNT}:root", ACCOUNT, ACCOUNT)
    # The Lambda API takes them too (permissions are not enforced yet: authentication only).
    listed = client(server, "lambda", creds).list_functions()["Functions"]
    assert name in [f["FunctionName"] for f in listed]
    # What they send is attributed to the role session.
    sqs_as_role = client(server, "sqs", creds)
    url = sqs_as_role.create_queue(QueueName=unique("from-role"))["QueueUrl"]
    sqs_as_role.send_message(QueueUrl=url, MessageBody="hello")
    message = client(server, "sqs").receive_message(QueueUrl=url, AttributeNames=["SenderId"],
                                                    WaitTimeSeconds=1)["Messages"][0]
    assert message["Attributes"]["SenderId"] == identity["UserId"]


def test_an_aws_iam_function_url_names_the_role_session(server, lam):
    handler = "import json\ndef handler(event, context):\n    return event['requestContext']['authorizer']['iam']\n"
    name = create(lam, Code={"ZipFile": make_zip({"index.py": handler})})["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="AWS_IAM")["FunctionUrl"]
    creds = credentials_of(lam, function(lam))
    request = AWSRequest(method="GET", url=url, headers={})
    SigV4Auth(Credentials(creds["AWS_ACCESS_KEY_ID"], creds["AWS_SECRET_ACCESS_KEY"], creds["AWS_SESSION_TOKEN"]),
              "lambda", "us-east-1").add_auth(request)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=30)
    connection.request("GET", parts.path, headers=dict(request.headers.items()))
    response = connection.getresponse()
    iam = json.loads(response.read())
    assert response.status == 200, iam
    assert iam["accessKey"] == creds["AWS_ACCESS_KEY_ID"]
    assert iam["userArn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/")
    assert iam["userId"].startswith("AROA")


def test_forged_or_missing_session_tokens_are_refused(server, lam):
    creds = credentials_of(lam, function(lam))
    token = creds["AWS_SESSION_TOKEN"]
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for bad in (forged, ""):
        with pytest.raises(Exception) as e:
            client(server, "lambda", creds, token=bad).list_functions()
        assert error_code(e) == "UnrecognizedClientException"
        with pytest.raises(Exception) as e:
            client(server, "sts", creds, token=bad).get_caller_identity()
        assert error_code(e) == "InvalidClientTokenId"
    # A token belongs to its access key.
    other = credentials_of(lam, function(lam))
    with pytest.raises(Exception) as e:
        client(server, "lambda", creds, token=other["AWS_SESSION_TOKEN"]).list_functions()
    assert error_code(e) == "UnrecognizedClientException"


def test_credentials_expire_and_a_new_environment_gets_fresh_ones(fresh_server):
    fresh_server.extra_env["LAMINA_CREDENTIALS_LIFETIME"] = "2"
    fresh_server.start()
    lam = fresh_server.client()
    name = function(lam)
    creds = credentials_of(lam, name)
    assert client(fresh_server, "sts", creds).get_caller_identity()["Arn"].endswith(f"/{name}")
    time.sleep(2.5)
    with pytest.raises(Exception) as e:
        client(fresh_server, "lambda", creds).list_functions()
    assert error_code(e) == "ExpiredTokenException"
    with pytest.raises(Exception) as e:
        client(fresh_server, "sts", creds).get_caller_identity()
    assert error_code(e) == "ExpiredToken"
    # The environment whose credentials ran out is not used again: the next invocation runs
    # in a new one, with new credentials.
    fresh = credentials_of(lam, name)
    assert fresh["AWS_ACCESS_KEY_ID"] != creds["AWS_ACCESS_KEY_ID"]
    assert client(fresh_server, "sts", fresh).get_caller_identity()["Arn"].endswith(f"/{name}")
    # So does a configuration change.
    lam.update_function_configuration(FunctionName=name, MemorySize=256)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert credentials_of(lam, name)["AWS_ACCESS_KEY_ID"] != fresh["AWS_ACCESS_KEY_ID"]


def test_the_cli_asks_sts_who_it_is(server, lam):
    base = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="",
                AWS_MAX_ATTEMPTS="1")
    creds = credentials_of(lam, function(lam))
    for env, arn in [(dict(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY), f"arn:aws:iam::{ACCOUNT}:root"),
                     ({k: v for k, v in creds.items() if k != "AWS_REGION"}, f"arn:aws:sts::{ACCOUNT}:assumed-role/")]:
        out = subprocess.run([AWS, "sts", "get-caller-identity", "--endpoint-url", server.url, "--output", "json"],
                             capture_output=True, text=True, env={**base, **env}, timeout=60)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["Arn"].startswith(arn)
