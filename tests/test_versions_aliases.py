"""Versions are immutable snapshots; aliases point at them, optionally splitting traffic."""

import pytest

from conftest import ARN, create, error_code, make_zip, status


def test_publish_snapshots_code_and_configuration(lam):
    name = create(lam, Description="first")["FunctionName"]
    v1 = lam.publish_version(FunctionName=name, Description="release 1")
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert v1["Version"] == "1"
    assert v1["FunctionArn"] == f"{ARN}{name}:1"
    assert v1["Description"] == "release 1"
    # Publishing again with nothing changed returns the same version.
    assert lam.publish_version(FunctionName=name)["Version"] == "1"
    lam.update_function_configuration(FunctionName=name, Timeout=42)
    v2 = lam.publish_version(FunctionName=name)
    assert (v2["Version"], v2["Timeout"]) == ("2", 42)
    # Version 1 is unchanged.
    assert lam.get_function_configuration(FunctionName=name, Qualifier="1")["Timeout"] == 3
    assert lam.get_function_configuration(FunctionName=f"{name}:1")["Description"] == "release 1"
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]]
    assert versions == ["$LATEST", "1", "2"]


def test_publish_preconditions(lam):
    cfg = create(lam)
    name = cfg["FunctionName"]
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.publish_version(FunctionName=name, CodeSha256="wrong")
    assert lam.publish_version(FunctionName=name, CodeSha256=cfg["CodeSha256"], RevisionId=cfg["RevisionId"])["Version"] == "1"


def test_create_and_update_code_with_publish(lam):
    cfg = create(lam, Publish=True)
    assert cfg["Version"] == "1"
    name = cfg["FunctionName"]
    v2 = lam.update_function_code(FunctionName=name, ZipFile=make_zip({"index.py": "v=2\n"}), Publish=True)
    assert v2["Version"] == "2"
    assert lam.get_function_configuration(FunctionName=name)["CodeSha256"] == v2["CodeSha256"]


def test_version_numbers_are_never_reused(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Timeout=5)
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    lam.delete_function(FunctionName=name, Qualifier="2")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName=name, Qualifier="2")
    lam.update_function_configuration(FunctionName=name, Timeout=6)
    assert lam.publish_version(FunctionName=name)["Version"] == "3"


def test_delete_version_rules(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.delete_function(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    # A version that does not exist is already deleted, as in Lambda.
    assert lam.delete_function(FunctionName=name, Qualifier="9")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_versions_pagination(lam):
    name = create(lam)["FunctionName"]
    for t in range(4, 9):
        lam.update_function_configuration(FunctionName=name, Timeout=t)
        lam.publish_version(FunctionName=name)
    pages = list(lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 2}))
    assert [v["Version"] for p in pages for v in p["Versions"]] == ["$LATEST", "1", "2", "3", "4", "5"]
    assert len(pages) == 3


def test_alias_lifecycle_with_routing(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Timeout=9)
    lam.publish_version(FunctionName=name)
    alias = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1", Description="prod",
                             RoutingConfig={"AdditionalVersionWeights": {"2": 0.25}})
    assert alias["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert alias["AliasArn"] == f"{ARN}{name}:live"
    assert alias["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.25}}
    got = lam.get_alias(FunctionName=name, Name="live")
    assert got["RevisionId"] == alias["RevisionId"]
    # The alias qualifies the function everywhere.
    assert lam.get_function_configuration(FunctionName=f"{name}:live")["Version"] == "1"
    assert lam.get_function(FunctionName=name, Qualifier="live")["Configuration"]["FunctionArn"] == f"{ARN}{name}:live"
    updated = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                               RoutingConfig={"AdditionalVersionWeights": {}})
    assert updated["FunctionVersion"] == "2" and "RoutingConfig" not in updated
    with pytest.raises(lam.exceptions.PreconditionFailedException):
        lam.update_alias(FunctionName=name, Name="live", Description="x", RevisionId=alias["RevisionId"])
    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="$LATEST")
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name)["Aliases"]] == ["beta", "live"]
    assert [a["Name"] for a in lam.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]] == ["live"]
    lam.delete_alias(FunctionName=name, Name="beta")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_alias(FunctionName=name, Name="beta")


@pytest.mark.parametrize("kwargs,expected", [
    (dict(Name="123", FunctionVersion="1"), "ValidationException"),
    (dict(Name="x y", FunctionVersion="1"), "ValidationException"),
    (dict(Name="a", FunctionVersion="7"), "ResourceNotFoundException"),
    (dict(Name="a", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}}), "InvalidParameterValueException"),
    (dict(Name="a", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 1.5}}), "ValidationException"),
    (dict(Name="a", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"9": 0.5}}), "ResourceNotFoundException"),
])
def test_alias_validation(lam, kwargs, expected):
    name = create(lam, Publish=True)["FunctionName"]
    with pytest.raises(lam.exceptions.ClientError) as e:
        lam.create_alias(FunctionName=name, **kwargs)
    assert error_code(e) == expected


def test_duplicate_alias_conflicts(lam):
    name = create(lam, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceConflictException) as e:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    assert status(e) == 409
