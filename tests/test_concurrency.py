"""Concurrency through boto3: throttling, reserved and provisioned concurrency, scaling."""

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import create, error_code, make_zip, metrics, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")

# Reports how its instance was initialised and which instance it is.
PROBE = """
import os, socket, time
INIT_TYPE = os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE")
BOOTED = time.time()
calls = 0
def handler(event, context):
    global calls
    calls += 1
    if event.get("exit"):
        os._exit(3)
    time.sleep(event.get("sleep", 0))
    return {"init": INIT_TYPE, "host": socket.gethostname(), "calls": calls, "booted": BOOTED}
"""

BROKEN_INIT = "raise RuntimeError('cannot start')\ndef handler(event, context):\n    return 1\n"


def probe(lam, **overrides):
    args = dict(Code={"ZipFile": make_zip({"p.py": PROBE})}, Handler="p.handler", Timeout=30)
    args.update(overrides)
    return create(lam, **args)["FunctionName"]


def invoke(lam, name, event=None, **kwargs):
    response = lam.invoke(FunctionName=name, Payload=json.dumps(event or {}), **kwargs)
    return response, json.loads(response["Payload"].read())


def throttle_of(call):
    """Runs `call`, which must be throttled; returns (Reason, the Retry-After header if any)."""
    with pytest.raises(Exception) as e:
        call()
    assert error_code(e) == "TooManyRequestsException", e.value
    response = e.value.response
    return response.get("Reason"), response["ResponseMetadata"]["HTTPHeaders"].get("retry-after")


def in_parallel(n, call):
    """Runs `call(i)` n times at once; returns results and exceptions in order."""
    def guarded(i):
        try:
            return call(i)
        except Exception as e:  # the caller inspects throttles
            return e
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(guarded, range(n)))


def after(delay, call):
    """`call` once `delay` seconds have passed: lets earlier parallel calls take their places."""
    time.sleep(delay)
    return call()


def wait_status(lam, name, qualifier, want, seconds=60):
    deadline = time.time() + seconds
    while True:
        config = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        if config["Status"] == want or time.time() > deadline:
            return config
        time.sleep(0.1)


def test_reserved_zero_throttles_every_invocation(lam, server):
    name = probe(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    reason, retry_after = throttle_of(lambda: lam.invoke(FunctionName=name, Payload=b"{}"))
    assert reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert retry_after is None, "Lambda sends no Retry-After"
    series = metrics(server)
    assert series[f'lamina_function_throttles_total{{function="{name}"}}'] == "1"
    assert series[f'lamina_function_reserved_concurrency{{function="{name}"}}'] == "0"
    lam.delete_function_concurrency(FunctionName=name)
    assert invoke(lam, name)[1]["calls"] == 1
    series = metrics(server)
    assert series[f'lamina_function_invocations_total{{function="{name}"}}'] == "1"
    assert series[f'lamina_function_cold_starts_total{{function="{name}"}}'] == "1"
    assert f'lamina_function_reserved_concurrency{{function="{name}"}}' not in series


def test_reserved_concurrency_caps_the_function(lam):
    name = probe(lam)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    results = in_parallel(3, lambda i: invoke(lam, name, {"sleep": 1.5}) if i < 2
                          else after(0.7, lambda: invoke(lam, name)))
    throttled = [r for r in results if isinstance(r, Exception)]
    assert len(throttled) == 1, results
    assert throttled[0].response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    # Concurrency comes back as invocations finish.
    assert "FunctionError" not in invoke(lam, name)[0]


def test_twenty_slow_invocations_run_at_once_on_twenty_instances(lam):
    name = probe(lam)
    started = time.time()
    results = in_parallel(20, lambda i: invoke(lam, name, {"sleep": 2}))
    elapsed = time.time() - started
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({out["host"] for _, out in results}) == 20
    assert elapsed < 3.9, f"20 invocations of 2 s took {elapsed:.1f} s: they did not overlap"


def limited_server(fresh_server, **env):
    fresh_server.extra_env.update({k: str(v) for k, v in env.items()})
    fresh_server.start()
    return fresh_server.client()


def test_account_limit_and_reservations_shape_the_unreserved_pool(fresh_server):
    lam = limited_server(fresh_server, LAMINA_CONCURRENCY_LIMIT=4, LAMINA_MIN_UNRESERVED_CONCURRENCY=1)
    shared, reserved = probe(lam), probe(lam)
    lam.put_function_concurrency(FunctionName=reserved, ReservedConcurrentExecutions=2)
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 2
    with pytest.raises(Exception) as e:
        lam.put_function_concurrency(FunctionName=shared, ReservedConcurrentExecutions=2)
    assert error_code(e) == "InvalidParameterValueException"
    # Two unreserved slots: a third overlapping invocation of an unreserved function is
    # throttled, while the reserved function still has its own two.
    results = in_parallel(5, lambda i: invoke(lam, shared, {"sleep": 2}) if i < 2
                          else after(0.7, lambda: invoke(lam, shared if i == 2 else reserved, {"sleep": 0.5})))
    assert isinstance(results[2], Exception), results
    assert results[2].response["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i != 2), results


def test_scaling_rate_limits_new_instances_not_warm_ones(fresh_server):
    lam = limited_server(fresh_server, LAMINA_SCALE_OUT_RATE=2)
    name = probe(lam)
    results = in_parallel(3, lambda i: invoke(lam, name, {"sleep": 1.5}) if i < 2
                          else after(0.7, lambda: invoke(lam, name)))
    assert isinstance(results[2], Exception), results
    assert error_code_of(results[2]) == "TooManyRequestsException"
    # The two warm instances serve on without touching the rate.
    for _ in range(5):
        assert "FunctionError" not in invoke(lam, name)[0]


def error_code_of(exception):
    return exception.response["Error"]["Code"]


def test_memory_pressure_evicts_idle_instances_before_refusing(fresh_server):
    lam = limited_server(fresh_server, LAMINA_MEMORY_BUDGET_MB=256)
    first, second, third = probe(lam), probe(lam), probe(lam)
    assert invoke(lam, first)[1]["calls"] == 1
    assert invoke(lam, second)[1]["calls"] == 1
    # Room for two 128 MB instances: the third function's instance evicts the longest idle.
    assert invoke(lam, third)[1]["calls"] == 1
    assert invoke(lam, second)[1]["calls"] == 2, "the most recently used instance stayed warm"
    assert invoke(lam, first)[1]["calls"] == 1, "the longest idle instance was evicted"
    # With nothing idle to evict, a third concurrent instance is refused, not overcommitted.
    results = in_parallel(3, lambda i: invoke(lam, [first, second][i], {"sleep": 1.5}) if i < 2
                          else after(0.7, lambda: invoke(lam, third)))
    assert isinstance(results[2], Exception) and error_code_of(results[2]) == "TooManyRequestsException", results


def test_provisioned_concurrency_initialises_before_invocations_and_spills_over(lam):
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version,
                                                 ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert (put["RequestedProvisionedConcurrentExecutions"], put["Status"]) == (2, "IN_PROGRESS")
    config = wait_status(lam, name, version, "READY")
    assert config["Status"] == "READY", config
    assert config["AllocatedProvisionedConcurrentExecutions"] == 2
    assert config["AvailableProvisionedConcurrentExecutions"] == 2
    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed] == [version]
    assert listed[0]["Status"] == "READY"

    # Initialised before the first invocation ...
    response, out = invoke(lam, name, Qualifier=version)
    assert out["init"] == "provisioned-concurrency"
    assert time.time() - out["booted"] > 0 and out["calls"] == 1
    # ... three at once: two on provisioned instances, one spills to on demand.
    results = in_parallel(3, lambda i: invoke(lam, name, {"sleep": 1}, Qualifier=version)[1]["init"])
    assert sorted(results) == ["on-demand", "provisioned-concurrency", "provisioned-concurrency"]
    # $LATEST never uses them.
    assert invoke(lam, name)[1]["init"] == "on-demand"

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    with pytest.raises(Exception) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    assert error_code(e) == "ProvisionedConcurrencyConfigNotFoundException"


def test_provisioned_concurrency_on_an_alias(lam):
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, name, "live", "READY")["Status"] == "READY"
    assert invoke(lam, name, Qualifier="live")[1]["init"] == "provisioned-concurrency"
    # Provisioned concurrency belongs to the version: invoking it directly uses it too ...
    assert invoke(lam, name, Qualifier=version)[1]["init"] == "provisioned-concurrency"
    assert invoke(lam, name)[1]["init"] == "on-demand", "$LATEST is another version"
    # ... and it cannot get a configuration of its own while an alias on it has one.
    with pytest.raises(Exception) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert error_code(e) == "ResourceConflictException"
    # Deleting the alias takes its configuration along.
    lam.delete_alias(FunctionName=name, Name="live")
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_a_reservation_pays_for_provisioned_concurrency_first(lam):
    """Reserved 1 with 1 provisioned on version 1: the provisioned instance serves version 1,
    and nothing is left on demand, so $LATEST is throttled, as on Lambda."""
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, name, version, "READY")["Status"] == "READY"
    assert invoke(lam, name, Qualifier=version)[1]["init"] == "provisioned-concurrency"
    reason, _ = throttle_of(lambda: invoke(lam, name))
    assert reason == "ReservedFunctionConcurrentInvocationLimitExceeded"
    # Without the provisioned concurrency the whole reservation is on demand again.
    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)

    def served():
        try:
            return invoke(lam, name)[1]["init"] == "on-demand"
        except lam.exceptions.TooManyRequestsException:
            return False
    assert wait_for(served, 10)


def test_a_version_uses_what_every_alias_on_it_provisioned(lam):
    """Two aliases on version 1 with one provisioned instance each, reserved 2: two invocations
    of the version at once both run on provisioned instances (nothing is left on demand)."""
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for alias in ("a", "b"):
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=alias, ProvisionedConcurrentExecutions=1)
    for alias in ("a", "b"):
        assert wait_status(lam, name, alias, "READY")["Status"] == "READY"
    results = in_parallel(2, lambda _: invoke(lam, name, {"sleep": 1}, Qualifier=version)[1])
    assert [r["init"] for r in results] == ["provisioned-concurrency"] * 2, results


def test_provisioned_concurrency_requests_are_validated(lam):
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    cases = [
        (dict(Qualifier="$LATEST", ProvisionedConcurrentExecutions=1), "InvalidParameterValueException"),
        (dict(Qualifier="99", ProvisionedConcurrentExecutions=1), "ResourceNotFoundException"),
        (dict(Qualifier="nosuchalias", ProvisionedConcurrentExecutions=1), "ResourceNotFoundException"),
        (dict(Qualifier=version, ProvisionedConcurrentExecutions=901), "InvalidParameterValueException"),
    ]
    for args, code in cases:
        with pytest.raises(Exception) as e:
            lam.put_provisioned_concurrency_config(FunctionName=name, **args)
        assert error_code(e) == code, args
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    with pytest.raises(Exception) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=3)
    assert error_code(e) == "InvalidParameterValueException"
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2)
    with pytest.raises(Exception) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(Exception) as e:
        lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="7")
    assert error_code(e) == "ResourceNotFoundException"


def test_provisioned_concurrency_fails_with_a_reason_when_init_fails(lam):
    name = create(lam, Code={"ZipFile": make_zip({"b.py": BROKEN_INIT})}, Handler="b.handler")["FunctionName"]
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    config = wait_status(lam, name, version, "FAILED")
    assert config["Status"] == "FAILED", config
    assert "cannot start" in config["StatusReason"], config


def test_provisioned_concurrency_is_allocated_again_after_a_restart(fresh_server):
    fresh_server.start()
    lam = fresh_server.client()
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, name, version, "READY")["Status"] == "READY"
    fresh_server.kill()
    fresh_server.start()
    lam = fresh_server.client()
    assert wait_status(lam, name, version, "READY")["Status"] == "READY"
    assert invoke(lam, name, Qualifier=version)[1]["init"] == "provisioned-concurrency"


def test_a_crashed_provisioned_instance_is_replaced(lam):
    name = probe(lam)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, name, version, "READY")["Status"] == "READY"
    first = invoke(lam, name, Qualifier=version)[1]
    response, out = invoke(lam, name, {"exit": True}, Qualifier=version)
    assert out["errorType"] == "Runtime.ExitError"
    # The configuration gets a fresh, initialised instance in the lost one's place.
    assert wait_status(lam, name, version, "READY")["Status"] == "READY"
    replacement = invoke(lam, name, Qualifier=version)[1]
    assert replacement["init"] == "provisioned-concurrency"
    assert replacement["host"] != first["host"] and replacement["calls"] == 1


def test_sandboxes_are_built_ahead_and_work_without_a_pool(fresh_server, server, lam):
    # The shared server keeps sandboxes ready once a kind of sandbox has been used.
    assert invoke(lam, probe(lam))[1]["calls"] == 1
    deadline = time.time() + 10
    while int(metrics(server)["lamina_sandboxes_ready"]) == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert int(metrics(server)["lamina_sandboxes_ready"]) > 0
    # Without a pool every sandbox is built on demand, and everything still works.
    lam = limited_server(fresh_server, LAMINA_SANDBOX_POOL=0)
    name = probe(lam)
    results = in_parallel(3, lambda i: invoke(lam, name, {"sleep": 0.5})[1]["host"])
    assert len(set(results)) == 3
    assert int(metrics(fresh_server)["lamina_sandboxes_ready"]) == 0
