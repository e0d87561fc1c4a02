"""Functions through boto3: create, read, list, update, delete, in every naming form."""

import base64
import hashlib
import urllib.error
import urllib.request

import pytest

from conftest import ARN, ROLE, create, error_code, make_zip, status, unique


def test_create_returns_the_full_configuration(lam):
    code = make_zip()
    name = unique()
    cfg = lam.create_function(
        FunctionName=name, Runtime="python3.11", Role=ROLE, Handler="index.handler",
        Code={"ZipFile": code}, Description="d", Timeout=30, MemorySize=256,
        Environment={"Variables": {"STAGE": "test"}}, EphemeralStorage={"Size": 1024},
        Architectures=["arm64"], TracingConfig={"Mode": "Active"},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"},
    )
    assert cfg["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == ARN + name
    assert cfg["Version"] == "$LATEST"
    assert cfg["CodeSize"] == len(code)
    assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
    assert (cfg["Timeout"], cfg["MemorySize"], cfg["Description"]) == (30, 256, "d")
    assert cfg["Environment"] == {"Variables": {"STAGE": "test"}}
    assert cfg["EphemeralStorage"] == {"Size": 1024}
    assert cfg["Architectures"] == ["arm64"]
    assert cfg["TracingConfig"] == {"Mode": "Active"}
    assert cfg["LoggingConfig"]["ApplicationLogLevel"] == "DEBUG"
    assert cfg["LoggingConfig"]["LogGroup"] == f"/aws/lambda/{name}"
    assert (cfg["State"], cfg["LastUpdateStatus"], cfg["PackageType"]) == ("Active", "Successful", "Zip")
    assert cfg["RevisionId"]
    assert cfg["LastModified"].endswith("+0000")


def test_defaults_match_lambda(lam):
    cfg = create(lam)
    assert (cfg["Timeout"], cfg["MemorySize"]) == (3, 128)
    assert cfg["EphemeralStorage"] == {"Size": 512}
    assert cfg["Architectures"] == ["x86_64"]
    assert cfg["TracingConfig"] == {"Mode": "PassThrough"}
    assert "Environment" not in cfg


def test_waiters_pass_immediately(lam):
    name = create(lam)["FunctionName"]
    lam.get_waiter("function_exists").wait(FunctionName=name)
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    lam.get_waiter("function_active").wait(FunctionName=name)
    lam.update_function_configuration(FunctionName=name, Timeout=10)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.get_waiter("function_updated").wait(FunctionName=name)


@pytest.mark.parametrize("form", ["{name}", "{arn}", "000000000000:function:{name}", "{name}:$LATEST", "{arn}:$LATEST"])
def test_every_name_form_addresses_the_function(lam, form):
    name = create(lam)["FunctionName"]
    ident = form.format(name=name, arn=ARN + name)
    assert lam.get_function_configuration(FunctionName=ident)["FunctionName"] == name
    assert lam.get_function(FunctionName=ident)["Configuration"]["FunctionName"] == name


def test_get_function_serves_the_code_at_location(lam):
    code = make_zip({"index.py": "x = 42\n"})
    name = create(lam, Code={"ZipFile": code}, Tags={"team": "core"})["FunctionName"]
    out = lam.get_function(FunctionName=name)
    assert out["Code"]["RepositoryType"] == "S3"
    assert out["Tags"] == {"team": "core"}
    with urllib.request.urlopen(out["Code"]["Location"]) as resp:
        assert resp.read() == code
    tampered = out["Code"]["Location"].replace("signature=", "signature=0")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered)
    assert e.value.code == 403


def test_unknown_function_is_not_found(lam):
    for call in (lambda: lam.get_function(FunctionName="no-such-fn"),
                 lambda: lam.get_function_configuration(FunctionName="no-such-fn"),
                 lambda: lam.delete_function(FunctionName="no-such-fn"),
                 lambda: lam.update_function_configuration(FunctionName="no-such-fn", Timeout=5),
                 lambda: lam.update_function_code(FunctionName="no-such-fn", ZipFile=make_zip()),
                 lambda: lam.list_versions_by_function(FunctionName="no-such-fn")):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call()
        assert status(e) == 404
        assert "no-such-fn" in e.value.response["Error"]["Message"]
        assert e.value.response["ResponseMetadata"]["RequestId"]


def test_duplicate_create_conflicts(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        create(lam, name)
    assert status(e) == 409


def test_list_functions_paginates_and_lists_all_versions(lam):
    names = sorted(create(lam, unique("list"))["FunctionName"] for _ in range(5))
    lam.publish_version(FunctionName=names[0])
    seen = []
    for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 2}):
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
    assert all(n in seen for n in names)
    assert len(seen) == len(set(seen))
    everything = [(f["FunctionName"], f["Version"])
                  for p in lam.get_paginator("list_functions").paginate(FunctionVersion="ALL")
                  for f in p["Functions"]]
    assert (names[0], "$LATEST") in everything and (names[0], "1") in everything
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.list_functions(FunctionVersion="SOME")
    assert status(e) == 400


def test_update_configuration_changes_revision_and_merges(lam):
    cfg = create(lam, Environment={"Variables": {"AA": "1"}})
    name, rev = cfg["FunctionName"], cfg["RevisionId"]
    new = lam.update_function_configuration(FunctionName=name, MemorySize=512, Description="x")
    assert new["RevisionId"] != rev
    assert (new["MemorySize"], new["Description"], new["Timeout"]) == (512, "x", 3)
    assert new["Environment"] == {"Variables": {"AA": "1"}}
    new = lam.update_function_configuration(FunctionName=name, Environment={"Variables": {}})
    assert new["Environment"] == {"Variables": {}}


def test_stale_revision_id_is_a_failed_precondition(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    for call in (lambda: lam.update_function_configuration(FunctionName=name, Timeout=6, RevisionId=cfg["RevisionId"]),
                 lambda: lam.update_function_code(FunctionName=name, ZipFile=make_zip(), RevisionId=cfg["RevisionId"]),
                 lambda: lam.publish_version(FunctionName=name, RevisionId=cfg["RevisionId"])):
        with pytest.raises(lam.exceptions.PreconditionFailedException) as e:
            call()
        assert status(e) == 412
    current = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    assert lam.update_function_configuration(FunctionName=name, Timeout=7, RevisionId=current)["Timeout"] == 7


def test_update_code_replaces_the_package(lam):
    name = create(lam)["FunctionName"]
    code = make_zip({"index.py": "def handler(e, c):\n    return 2\n"})
    cfg = lam.update_function_code(FunctionName=name, ZipFile=code)
    assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(code).digest()).decode()
    assert lam.get_function_configuration(FunctionName=name)["CodeSize"] == len(code)
    dry = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"a.py": ""}), DryRun=True)
    assert dry["CodeSha256"] != cfg["CodeSha256"]
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == cfg["CodeSha256"]


def test_delete_function_removes_everything(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.delete_function(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name)
    # The name is free again, with nothing left of the old function.
    create(lam, name)
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] == ["$LATEST"]
    assert lam.list_aliases(FunctionName=name)["Aliases"] == []


def test_trailing_slash_and_missing_content_type_are_accepted(lam, server):
    """Signed raw requests: `/functions/` routes like `/functions`; no Content-Type needed."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import urllib.request

    from conftest import ACCESS_KEY, SECRET_KEY

    name = create(lam)["FunctionName"]
    for path in ("/2015-03-31/functions/", f"/2015-03-31/functions/{name}/"):
        req = botocore.awsrequest.AWSRequest(method="GET", url=server.url + path)
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "lambda", "us-east-1").add_auth(req)
        prepared = req.prepare()
        assert "Content-Type" not in prepared.headers
        with urllib.request.urlopen(urllib.request.Request(prepared.url, headers=dict(prepared.headers))) as resp:
            assert resp.status == 200


def test_account_settings_report_real_usage(lam):
    before = lam.get_account_settings()
    code = make_zip({"index.py": "#" * 100})
    name = create(lam, Code={"ZipFile": code})["FunctionName"]
    after = lam.get_account_settings()
    assert after["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["AccountUsage"]["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + len(code)
    limit = after["AccountLimit"]
    assert (limit["CodeSizeZipped"], limit["CodeSizeUnzipped"], limit["ConcurrentExecutions"]) == (52428800, 262144000, 1000)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=10)
    reserved = lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert reserved == limit["UnreservedConcurrentExecutions"] - 10
    lam.delete_function(FunctionName=name)
