"""Every invalid parameter gets Lambda's exception and status, never a 500."""

import pytest

from conftest import ROLE, create, error_code, make_zip, status, unique

VALIDATION = ("ValidationException", 400)
INVALID = ("InvalidParameterValueException", 400)

CREATE_CASES = [
    ("name with space", dict(FunctionName="bad name"), VALIDATION),
    ("name too long", dict(FunctionName="x" * 65), INVALID),
    ("ARN too long", dict(FunctionName="x" * 141), VALIDATION),
    ("qualified name", dict(FunctionName="fn:1"), INVALID),
    ("role not an ARN", dict(Role="admin"), VALIDATION),
    ("memory above product", dict(MemorySize=10241), INVALID),
    ("timeout above product", dict(Timeout=901), INVALID),
    ("ephemeral above", dict(EphemeralStorage={"Size": 10241}), INVALID),
    ("unknown runtime", dict(Runtime="cobol9"), VALIDATION),
    ("runtime not on host", dict(Runtime="ruby3.3"), INVALID),
    ("handler with space", dict(Handler="a b"), VALIDATION),
    ("handler too long", dict(Handler="h" * 129), VALIDATION),
    ("description too long", dict(Description="d" * 257), VALIDATION),
    ("reserved env key", dict(Environment={"Variables": {"AWS_REGION": "x"}}), INVALID),
    ("bad env key", dict(Environment={"Variables": {"1X": "x"}}), VALIDATION),
    ("env over 4 KB", dict(Environment={"Variables": {"BIG": "x" * 4100}}), INVALID),
    ("two architectures", dict(Architectures=["x86_64", "arm64"]), VALIDATION),
    ("bad architecture", dict(Architectures=["sparc"]), VALIDATION),
    ("bad tracing mode", dict(TracingConfig={"Mode": "Loud"}), VALIDATION),
    ("log levels with text format", dict(LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "INFO"}), INVALID),
    ("bad log format", dict(LoggingConfig={"LogFormat": "XML"}), VALIDATION),
    ("bad layer ARN", dict(Layers=["not-an-arn"]), VALIDATION),
    ("too many layers", dict(Layers=[f"arn:aws:lambda:us-east-1:000000000000:layer:l:{i}" for i in range(1, 7)]), INVALID),
    ("layer that does not exist", dict(Layers=["arn:aws:lambda:us-east-1:000000000000:layer:l:1"]), INVALID),
    ("image package", dict(PackageType="Image", Code={"ImageUri": "x"}), INVALID),
    ("s3 code", dict(Code={"S3Bucket": "bucket", "S3Key": "k"}), INVALID),
    ("no runtime", dict(Runtime=None), INVALID),
    ("reserved tag", dict(Tags={"aws:x": "y"}), INVALID),
]


@pytest.mark.parametrize("label,overrides,expected", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_rejects(lam, label, overrides, expected):
    args = dict(FunctionName=unique(), Runtime="python3.11", Role=ROLE, Handler="index.handler",
                Code={"ZipFile": make_zip()})
    args.update(overrides)
    args = {k: v for k, v in args.items() if v is not None}
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.create_function(**args)
    assert (error_code(e), status(e)) == expected, e.value.response["Error"]["Message"]
    assert e.value.response["Error"]["Message"]
    # Nothing was created.
    if "FunctionName" in overrides:
        return
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=args["FunctionName"])


def test_product_limit_message_reads_like_lambda(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        create(lam, MemorySize=20000)
    assert e.value.response["Error"]["Message"] == (
        "'MemorySize' value failed to satisfy constraint: Member must have value less than or equal to 10240")


def test_update_configuration_validates_the_result(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.update_function_configuration(FunctionName=name, MemorySize=20000)
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.update_function_configuration(FunctionName=name, Role="nope")
    assert error_code(e) == "ValidationException"
    cfg = lam.get_function_configuration(FunctionName=name)
    assert (cfg["MemorySize"], cfg["Role"]) == (128, ROLE)


def test_malformed_json_is_invalid_request_content(server):
    import botocore.auth, botocore.awsrequest, botocore.credentials, urllib.request, urllib.error, json
    from conftest import ACCESS_KEY, SECRET_KEY
    req = botocore.awsrequest.AWSRequest(method="POST", url=server.url + "/2015-03-31/functions",
                                         data=b"{not json", headers={"Content-Type": "application/json"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "us-east-1").add_auth(req)
    p = req.prepare()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(p.url, data=p.body, headers=dict(p.headers), method="POST"))
    assert e.value.code == 400
    assert e.value.headers["x-amzn-ErrorType"] == "InvalidRequestContentException"
    body = json.loads(e.value.read())
    assert body["Type"] == "User" and body["message"]


# botocore refuses these before sending (it checks `min`); other clients do not, so the server
# must answer them too.
RAW_CASES = [
    ("memory below model", {"MemorySize": 64}),
    ("timeout zero", {"Timeout": 0}),
    ("negative timeout", {"Timeout": -5}),
    ("ephemeral below", {"EphemeralStorage": {"Size": 511}}),
    ("empty tag key", {"Tags": {"": "y"}}),
    ("empty name", {"FunctionName": ""}),
]


@pytest.mark.parametrize("label,overrides", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_create_rejects_what_botocore_would_not_send(server, label, overrides):
    import base64
    from conftest import signed
    body = {"FunctionName": unique(), "Runtime": "python3.11", "Role": ROLE, "Handler": "index.handler",
            "Code": {"ZipFile": base64.b64encode(make_zip()).decode()}}
    body.update(overrides)
    code, headers, out = signed(server, "POST", "/2015-03-31/functions", body)
    assert (headers["x-amzn-ErrorType"], code) == VALIDATION, out
    assert out["Type"] == "User" and out["message"]


@pytest.mark.parametrize("body", [b"[]", b'{"FunctionName": 5}', b'{"Code": "x"}', b"\xff\xfe"])
def test_wrong_shapes_are_invalid_request_content(server, body):
    from conftest import signed
    code, headers, _ = signed(server, "POST", "/2015-03-31/functions", body)
    assert (headers["x-amzn-ErrorType"], code) == ("InvalidRequestContentException", 400)
