"""SigV4: every API request is signed with the root key pair, or refused."""

import datetime
import urllib.error
import urllib.request
from unittest import mock

import pytest

from conftest import ACCESS_KEY, lambda_client


def test_unknown_access_key(server):
    lam = lambda_client(server.url, access_key="AKIAUNKNOWN000000000")
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_functions()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_wrong_secret(server):
    lam = lambda_client(server.url, secret_key="not-the-secret")
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_functions()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_any_region_in_the_scope_is_accepted(server):
    assert "Functions" in lambda_client(server.url, region="eu-west-3").list_functions()


def test_session_token_is_signed_and_accepted(server):
    import boto3
    from botocore.config import Config
    from conftest import SECRET_KEY
    lam = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1",
                       aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                       aws_session_token="some-session-token",
                       config=Config(retries={"total_max_attempts": 1}))
    assert "Functions" in lam.list_functions()


def test_clock_skew_is_refused(server):
    lam = lambda_client(server.url)
    skewed = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=skewed):
        with pytest.raises(lam.exceptions.ClientError) as e:
            lam.list_functions()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "Signature expired" in e.value.response["Error"]["Message"]


def test_unsigned_request_is_refused(server):
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(server.url + "/2015-03-31/functions")
    assert e.value.code == 403
    assert e.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert e.value.headers["x-amzn-RequestId"]


def test_tampered_body_is_refused(server):
    import botocore.auth, botocore.awsrequest, botocore.credentials
    from conftest import SECRET_KEY
    req = botocore.awsrequest.AWSRequest(method="PUT", url=server.url + "/2017-10-31/functions/x/concurrency",
                                         data=b'{"ReservedConcurrentExecutions": 1}')
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "us-east-1").add_auth(req)
    p = req.prepare()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(
            p.url, data=b'{"ReservedConcurrentExecutions": 9}', headers=dict(p.headers), method="PUT"))
    assert e.value.code == 403
    assert e.value.headers["x-amzn-ErrorType"] == "InvalidSignatureException"


def test_unknown_operation_is_a_clear_error(lam):
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_layers()
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert e.value.response["Error"]["Code"] == "UnknownOperationException"
