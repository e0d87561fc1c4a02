"""Resource policies, tags and reserved concurrency."""

import json

import pytest

from conftest import ARN, create, error_code


def test_add_get_remove_permission(lam):
    name = create(lam)["FunctionName"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    out = lam.add_permission(FunctionName=name, StatementId="s3", Action="lambda:InvokeFunction",
                             Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::bucket",
                             SourceAccount="123456789012")
    assert out["ResponseMetadata"]["HTTPStatusCode"] == 201
    statement = json.loads(out["Statement"])
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Resource"] == ARN + name
    assert statement["Condition"]["ArnLike"]["AWS:SourceArn"] == "arn:aws:s3:::bucket"
    lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    policy = lam.get_policy(FunctionName=name)
    document = json.loads(policy["Policy"])
    assert document["Version"] == "2012-10-17"
    assert [s["Sid"] for s in document["Statement"]] == ["s3", "url"]
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.add_permission(FunctionName=name, StatementId="s3", Action="lambda:InvokeFunction", Principal="*")
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.remove_permission(FunctionName=name, StatementId="s3", RevisionId="stale")
    lam.remove_permission(FunctionName=name, StatementId="s3", RevisionId=policy["RevisionId"])
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.remove_permission(FunctionName=name, StatementId="s3")
    lam.remove_permission(FunctionName=name, StatementId="url")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)


def test_permissions_per_qualifier(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.add_permission(FunctionName=name, Qualifier="live", StatementId="a", Action="lambda:InvokeFunction",
                       Principal="123456789012")
    document = json.loads(lam.get_policy(FunctionName=name, Qualifier="live")["Policy"])
    assert document["Statement"][0]["Resource"] == f"{ARN}{name}:live"
    assert document["Statement"][0]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_policy(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.add_permission(FunctionName=name, Qualifier="nope", StatementId="b",
                           Action="lambda:InvokeFunction", Principal="*")


@pytest.mark.parametrize("kwargs", [
    dict(StatementId="bad id!", Action="lambda:InvokeFunction", Principal="*"),
    dict(StatementId="a", Action="s3:GetObject", Principal="*"),
    dict(StatementId="a", Action="lambda:InvokeFunction", Principal="has space"),
])
def test_permission_validation(lam, kwargs):
    name = create(lam)["FunctionName"]
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.add_permission(FunctionName=name, **kwargs)
    assert error_code(e) == "ValidationException"


def test_tags(lam):
    name = create(lam, Tags={"a": "1"})["FunctionName"]
    arn = ARN + name
    lam.tag_resource(Resource=arn, Tags={"b": "2", "c": "3"})
    assert lam.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "2", "c": "3"}
    lam.untag_resource(Resource=arn, TagKeys=["a", "c"])
    assert lam.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    assert lam.get_function(FunctionName=name)["Tags"] == {"b": "2"}
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.tag_resource(Resource=arn + ":1", Tags={"x": "y"})
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_tags(Resource=ARN + "missing-fn")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.tag_resource(Resource=arn, Tags={f"k{i}": "v" for i in range(60)})


def test_reserved_concurrency(lam):
    name = create(lam)["FunctionName"]
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)["ReservedConcurrentExecutions"] == 0
    assert lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=950)
    assert "UnreservedConcurrentExecution below its minimum value of [100]" in e.value.response["Error"]["Message"]
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
