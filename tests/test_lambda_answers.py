"""Answers that clients and tools check, given as Lambda gives them: idempotent deletes, the
exception each mistake is, the model's patterns quoted in validation messages, and members a
response carries or leaves out."""

import re

import pytest

from conftest import ARN, create, error_code, make_zip, status, unique


def pattern(lam, shape):
    return lam.meta.service_model.shape_for(shape).metadata["pattern"]


def message(excinfo) -> str:
    return excinfo.value.response["Error"]["Message"]


def test_deleting_a_missing_version_or_alias_answers_204(lam):
    name = create(lam, Publish=True)["FunctionName"]
    assert lam.delete_function(FunctionName=name, Qualifier="9")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lam.delete_alias(FunctionName=name, Name="nope")["ResponseMetadata"]["HTTPStatusCode"] == 204
    # Nothing that exists was touched.
    assert lam.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Version"] == "1"
    # A function that does not exist is still not found.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=unique("missing"), Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_alias(FunctionName=unique("missing"), Name="nope")


def test_deleting_by_alias_is_refused_before_the_function_is_looked_up(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.delete_function(FunctionName=unique("missing"), Qualifier="live")
    assert message(e) == "Deletion of aliases is not currently supported."


def test_publish_with_a_code_sha256_that_differs_is_an_invalid_parameter(lam):
    cfg = create(lam)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.publish_version(FunctionName=cfg["FunctionName"], CodeSha256="wrong")
    assert status(e) == 400
    assert message(e) == (
        f"CodeSHA256 (wrong) is different from current CodeSHA256 in $LATEST ({cfg['CodeSha256']}). "
        "Please try again with the CodeSHA256 in $LATEST.")


def test_provisioned_concurrency_on_a_missing_alias_cannot_find_the_alias(lam):
    name = create(lam, Publish=True)["FunctionName"]
    missing = unique("missing")
    calls = [
        lambda fn: lam.get_provisioned_concurrency_config(FunctionName=fn, Qualifier="nope"),
        lambda fn: lam.put_provisioned_concurrency_config(
            FunctionName=fn, Qualifier="nope", ProvisionedConcurrentExecutions=1),
        lambda fn: lam.delete_provisioned_concurrency_config(FunctionName=fn, Qualifier="nope"),
    ]
    for call in calls:
        for fn in (name, missing):
            with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
                call(fn)
            assert status(e) == 404
            assert message(e) == f"Cannot find alias arn: {ARN}{fn}:nope"
    # A version that is not configured: Get says so, Delete has nothing to do.
    with pytest.raises(lam.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    deleted = lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="1")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_put_event_invoke_config_without_settings_is_refused_first(lam):
    name = create(lam)["FunctionName"]
    for fn in (name, unique("missing")):
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
            lam.put_function_event_invoke_config(FunctionName=fn)
        assert message(e) == "You must specify at least one of error handling or destination setting."
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)


def test_untag_without_keys_is_a_validation_error(lam):
    cfg = create(lam, Tags={"team": "core"})
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.untag_resource(Resource=cfg["FunctionArn"], TagKeys=[])
    assert (error_code(e), status(e)) == ("ValidationException", 400)
    assert message(e) == (
        "1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: "
        "Member must not be null")
    assert lam.list_tags(Resource=cfg["FunctionArn"])["Tags"] == {"team": "core"}


def test_a_wrongly_cased_latest_is_not_found(lam):
    name = create(lam)["FunctionName"]
    for call in (lam.get_function, lam.get_function_configuration):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call(FunctionName=name, Qualifier="$latest")
        assert message(e) == f"Function not found: {ARN}{name}:$latest"


def test_an_arn_of_another_region_is_not_reachable(lam):
    name = create(lam)["FunctionName"]
    elsewhere = f"arn:aws:lambda:eu-west-1:000000000000:function:{name}"
    calls = (
        lambda: lam.get_function(FunctionName=elsewhere),
        lambda: lam.get_function_configuration(FunctionName=elsewhere),
        lambda: lam.invoke(FunctionName=elsewhere, Payload=b"{}"),
        lambda: lam.update_function_configuration(FunctionName=elsewhere, Timeout=9),
        lambda: lam.delete_function(FunctionName=elsewhere),
    )
    for call in calls:
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as e:
            call()
        assert message(e) == "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
    cfg = lam.get_function_configuration(FunctionName=f"arn:aws:lambda:us-east-1:000000000000:function:{name}")
    assert cfg["Timeout"] == 3


def test_validation_messages_quote_the_models_patterns(lam):
    def quoted(call):
        with pytest.raises(lam.exceptions.ClientError) as e:
            call()
        assert error_code(e) == "ValidationException", message(e)
        return message(e).split("Member must satisfy regular expression pattern: ", 1)[1]

    name = create(lam)["FunctionName"]
    assert quoted(lambda: lam.get_function(FunctionName="bad!")) == pattern(lam, "NamespacedFunctionName")
    assert quoted(lambda: lam.invoke(FunctionName="bad!")) == pattern(lam, "NamespacedFunctionName")
    assert quoted(lambda: lam.create_function(
        FunctionName="bad!", Runtime="python3.11", Role="arn:aws:iam::000000000000:role/r",
        Handler="index.handler", Code={"ZipFile": make_zip()})) == pattern(lam, "FunctionName")
    assert quoted(lambda: lam.get_alias(FunctionName="bad!", Name="live")) == pattern(lam, "FunctionName")
    assert quoted(lambda: lam.get_function_url_config(FunctionName="bad!")) == pattern(lam, "FunctionUrlFunctionName")
    assert quoted(lambda: lam.get_function(FunctionName=name, Qualifier="bad!")) == pattern(
        lam, "NumericLatestPublishedOrAliasQualifier")
    assert quoted(lambda: lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="bad!")) == pattern(
        lam, "Qualifier")
    assert quoted(lambda: lam.get_function_url_config(FunctionName=name, Qualifier="1")) == pattern(
        lam, "FunctionUrlQualifier")
    assert quoted(lambda: lam.create_alias(FunctionName=name, Name="a b", FunctionVersion="1")) == pattern(lam, "Alias")
    assert quoted(lambda: lam.create_alias(FunctionName=name, Name="ab", FunctionVersion="x")) == pattern(
        lam, "VersionWithLatestPublished")
    assert quoted(lambda: lam.add_permission(FunctionName=name, StatementId="a.b", Action="lambda:InvokeFunction",
                                             Principal="*")) == pattern(lam, "StatementId")
    assert quoted(lambda: lam.add_permission(FunctionName=name, StatementId="ab", Action="invoke",
                                             Principal="*")) == pattern(lam, "Action")
    assert quoted(lambda: lam.update_function_configuration(FunctionName=name, Layers=["nope"])) == pattern(
        lam, "LayerVersionArn")
    assert quoted(lambda: lam.list_tags(Resource="arn:aws:lambda:us-east-1:000000000000:nothing")) == pattern(
        lam, "TaggableResource")
    # The newest model's `$LATEST.PUBLISHED` is well-formed where the namespaced shape takes it.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=f"{name}:$LATEST.PUBLISHED")


def test_configuration_names_the_runtime_version(lam):
    created = create(lam)
    name = created["FunctionName"]
    arn = created["RuntimeVersionConfig"]["RuntimeVersionArn"]
    assert re.fullmatch(r"arn:aws:lambda:us-east-1::runtime:[0-9a-f]{64}", arn), arn
    assert re.fullmatch(pattern(lam, "RuntimeVersionArn"), arn)
    assert lam.get_function_configuration(FunctionName=name)["RuntimeVersionConfig"] == {"RuntimeVersionArn": arn}
    assert lam.get_function(FunctionName=name)["Configuration"]["RuntimeVersionConfig"] == {"RuntimeVersionArn": arn}
    # The same runtime is the same version for every function.
    assert create(lam)["RuntimeVersionConfig"]["RuntimeVersionArn"] == arn


def test_url_config_answers_carry_invoke_mode_as_lambda_does(lam):
    name = create(lam)["FunctionName"]
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert "InvokeMode" not in created
    assert lam.get_function_url_config(FunctionName=name)["InvokeMode"] == "BUFFERED"
    updated = lam.update_function_url_config(FunctionName=name, AuthType="AWS_IAM")
    assert "InvokeMode" not in updated
    listed = lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"]
    assert [c["InvokeMode"] for c in listed] == ["BUFFERED"]
    streamed = lam.update_function_url_config(FunctionName=name, InvokeMode="RESPONSE_STREAM")
    assert streamed["InvokeMode"] == "RESPONSE_STREAM"
    assert lam.get_function_url_config(FunctionName=name)["InvokeMode"] == "RESPONSE_STREAM"
    other = create(lam)["FunctionName"]
    given = lam.create_function_url_config(FunctionName=other, AuthType="NONE", InvokeMode="BUFFERED")
    assert given["InvokeMode"] == "BUFFERED"


def test_a_throttle_carries_reason_and_no_retry_after(lam):
    name = create(lam)["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(lam.exceptions.TooManyRequestsException) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    response = e.value.response
    assert status(e) == 429
    assert response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert (response["Type"], response["message"]) == ("User", "Rate Exceeded.")
    assert "retryAfterSeconds" not in response
    assert "retry-after" not in response["ResponseMetadata"]["HTTPHeaders"]
