"""Asynchronous invocation end to end: durable events, retries, destinations, dead letters and
the EventInvokeConfig API, through boto3's `lambda` and `sqs` clients and a Redis stream."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest
import redis
from botocore.exceptions import ClientError

from conftest import (ACCESS_KEY, ARN, AWS, SECRET_KEY, create, error_code, make_zip, metrics, tmp_file,
                      unique, wait_for)

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"

HANDLER = """
import time

def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise RuntimeError("failing on purpose: " + str(event.get("n", "")))
    return {"echo": event, "request_id": context.aws_request_id}
"""


def function(lam, **overrides):
    return create(lam, Code={"ZipFile": make_zip({"index.py": HANDLER})}, **overrides)["FunctionName"]


def queue(sqs):
    name = unique("q")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return QUEUE_ARN + name, url


def take(sqs, url, count, timeout=30, **kwargs):
    """Receives and deletes messages until `count` have arrived; returns them."""
    got = []

    def more():
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           **kwargs).get("Messages", []):
            got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(got) >= count

    assert wait_for(more, timeout, 0), f"{len(got)} of {count} messages arrived"
    return got


def records(sqs, url, count, timeout=30):
    return [json.loads(m["Body"]) for m in take(sqs, url, count, timeout)]


def start_counts(server, name):
    """The function's invocations by request id, as its log shows them (a START line each)."""
    counts = {}
    logs = server.data_dir / "logs" / f"aws_lambda_{name}"
    for stream in logs.iterdir() if logs.exists() else []:
        for line in stream.read_text().splitlines():
            if line.startswith("START RequestId: "):
                request_id = line.split()[2]
                counts[request_id] = counts.get(request_id, 0) + 1
    return counts


def starts(server, name):
    """Invocations the function's log shows."""
    return sum(start_counts(server, name).values())


def records_by_n(sqs, url, total, timeout):
    """Receives success records of events `{"n": 0..total-1}` until every n has arrived; returns
    how often each did."""
    seen = {}

    def drain():
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", []):
            n = json.loads(message["Body"])["requestPayload"]["n"]
            seen[n] = seen.get(n, 0) + 1
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(seen) == total

    assert wait_for(drain, timeout, 0), f"missing events: {sorted(set(range(total)) - set(seen))}"
    return seen


def test_an_event_lands_a_success_record_in_a_queue(lam, sqs):
    name = function(lam)
    destination, url = queue(sqs)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": destination}})
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"hello": "world"}))
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    [record] = records(sqs, url, 1)
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    assert record["requestContext"] == {
        "requestId": request_id, "functionArn": f"{ARN}{name}:$LATEST",
        "condition": "Success", "approximateInvokeCount": 1}
    assert record["requestPayload"] == {"hello": "world"}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    # The function saw the request id the caller was given.
    assert record["responsePayload"] == {"echo": {"hello": "world"}, "request_id": request_id}


def test_the_deprecated_invoke_async_queues_an_event(server, lam, sqs):
    name = function(lam)
    destination, url = queue(sqs)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": destination}})
    assert lam.invoke_async(FunctionName=name, InvokeArgs=b'{"via": "boto3"}')["Status"] == 202
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")
    args = tmp_file(b'{"via": "cli"}', suffix=".json")
    out = subprocess.run([AWS, "lambda", "invoke-async", "--function-name", name, "--invoke-args", args,
                          "--endpoint-url", server.url, "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"Status": 202}
    payloads = sorted(r["requestPayload"]["via"] for r in records(sqs, url, 2))
    assert payloads == ["boto3", "cli"]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_async(FunctionName="no-such-function", InvokeArgs=b"{}")
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke_async(FunctionName=name, InvokeArgs=b"not json")


def test_a_failing_function_is_retried_then_lands_a_failure_record_and_a_dead_letter(lam, sqs):
    dead_letters, dlq_url = queue(sqs)
    failures, failure_url = queue(sqs)
    name = function(lam, DeadLetterConfig={"TargetArn": dead_letters})
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=2,
        DestinationConfig={"OnFailure": {"Destination": failures}})
    started = time.time()
    response = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"fail": True, "n": 7}))
    request_id = response["ResponseMetadata"]["RequestId"]
    [record] = records(sqs, failure_url, 1, timeout=60)
    # Retries wait 1× and 2× the retry interval (1 s in this suite; Lambda's is a minute).
    assert time.time() - started >= 2.5
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestPayload"] == {"fail": True, "n": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorMessage"] == "failing on purpose: 7"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    [letter] = take(sqs, dlq_url, 1, MessageAttributeNames=["All"])
    assert json.loads(letter["Body"]) == {"fail": True, "n": 7}
    attributes = letter["MessageAttributes"]
    assert attributes["RequestID"] == {"DataType": "String", "StringValue": request_id}
    assert attributes["ErrorCode"] == {"DataType": "Number", "StringValue": "200"}
    assert attributes["ErrorMessage"]["StringValue"] == "failing on purpose: 7"


@pytest.mark.parametrize("event, error_type", [
    ({"sleep": 3}, "Sandbox.Timedout"),
    ({"exit": 3}, "Runtime.ExitError"),
])
def test_timeouts_and_crashes_are_function_errors(lam, sqs, event, error_type):
    failures, url = queue(sqs)
    code = HANDLER + """
import os

def crashing(event, context):
    if event.get("exit"):
        os._exit(event["exit"])
    return handler(event, context)
"""
    name = create(lam, Code={"ZipFile": make_zip({"index.py": code})}, Handler="index.crashing",
                  Timeout=1)["FunctionName"]
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, DestinationConfig={"OnFailure": {"Destination": failures}})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event))
    [record] = records(sqs, url, 1, timeout=60)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert record["responsePayload"]["errorType"] == error_type
    # The function still works: an instance lost to the failure was replaced.
    assert lam.invoke(FunctionName=name, Payload=b'{"ok": 1}')["StatusCode"] == 200


def test_a_record_too_large_for_a_function_destination_is_not_delivered(server, lam, sqs):
    """The record carries the event and the response: near the 1 MB limit each, it is too large
    to be an asynchronous event itself."""
    receiver, url = queue(sqs)
    second = function(lam)
    lam.put_function_event_invoke_config(FunctionName=second, DestinationConfig={"OnSuccess": {"Destination": receiver}})
    first = function(lam)
    lam.put_function_event_invoke_config(FunctionName=first, DestinationConfig={"OnSuccess": {"Destination": ARN + second}})
    before = int(metrics(server)["lamina_async_destination_delivery_failures_total"])
    lam.invoke(FunctionName=first, InvocationType="Event", Payload=json.dumps({"pad": "x" * 700_000}))
    assert wait_for(lambda: starts(server, first) == 1, 30)
    assert wait_for(lambda: int(metrics(server)["lamina_async_destination_delivery_failures_total"]) > before, 30)
    # Had the record been queued, the second function would have run by now.
    time.sleep(2)
    assert starts(server, second) == 0
    assert sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0).get("Messages", []) == []


def test_an_unreachable_destination_is_counted_and_does_not_hold_the_event(server, lam):
    name = function(lam)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": "redis://127.0.0.1:1/nowhere"}})
    before = int(metrics(server).get("lamina_async_destination_delivery_failures_total", "0"))
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    assert wait_for(lambda: int(metrics(server)["lamina_async_destination_delivery_failures_total"]) > before, 30)
    # The event is finished, not retried: the function ran once.
    time.sleep(1)
    assert starts(server, name) == 1


def test_retries_follow_the_configuration_of_the_invoked_alias(lam, sqs):
    failures, url = queue(sqs)
    name = function(lam, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.put_function_event_invoke_config(
        FunctionName=name, Qualifier="live", MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": failures}})
    lam.invoke(FunctionName=name, Qualifier="live", InvocationType="Event", Payload=json.dumps({"fail": True}))
    [record] = records(sqs, url, 1)
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert record["requestContext"]["functionArn"] == f"{ARN}{name}:live"
    assert record["responseContext"]["executedVersion"] == "1"


def test_reserved_concurrency_zero_sends_events_straight_to_failure(lam, sqs):
    dead_letters, dlq_url = queue(sqs)
    failures, url = queue(sqs)
    name = function(lam, DeadLetterConfig={"TargetArn": dead_letters})
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnFailure": {"Destination": failures}})
    assert lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"x": 1}')["StatusCode"] == 202
    [record] = records(sqs, url, 1)
    assert record["requestContext"]["condition"] == "ZeroReservedConcurrency"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responseContext" not in record
    [letter] = take(sqs, dlq_url, 1, MessageAttributeNames=["All"])
    assert letter["MessageAttributes"]["ErrorCode"]["StringValue"] == "429"


def test_a_function_destination_is_invoked_with_the_record(lam, sqs):
    final, url = queue(sqs)
    second = function(lam)
    lam.put_function_event_invoke_config(FunctionName=second, DestinationConfig={"OnSuccess": {"Destination": final}})
    first = function(lam)
    lam.put_function_event_invoke_config(
        FunctionName=first, DestinationConfig={"OnSuccess": {"Destination": ARN + second}})
    lam.invoke(FunctionName=first, InvocationType="Event", Payload=b'{"step": 1}')
    [record] = records(sqs, url, 1)
    # The second function ran with the first one's record as its event.
    assert record["requestContext"]["functionArn"] == f"{ARN}{second}:$LATEST"
    inner = record["requestPayload"]
    assert inner["requestContext"]["functionArn"] == f"{ARN}{first}:$LATEST"
    assert inner["responsePayload"]["echo"] == {"step": 1}


def test_a_redis_stream_receives_failure_records(lam):
    key = unique("lamina-failures")
    name = function(lam)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"redis://127.0.0.1:6379/{key}"}})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"fail": true}')
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        entries = wait_for(lambda: client.xrange(key), 30)
        assert entries, "no record reached the stream"
        [(_, fields)] = entries
        record = json.loads(fields[b"record"])
        assert fields[b"condition"] == b"RetriesExhausted"
        assert record["requestContext"]["condition"] == "RetriesExhausted"
        assert fields[b"requestId"].decode() == record["requestContext"]["requestId"]
    finally:
        client.delete(key)


def looping(lam):
    """A function that answers with its chain's depth: its event is its cause's record."""
    code = """
def handler(event, context):
    return {"depth": (event.get("responsePayload") or {}).get("depth", 0) + 1}
"""
    return create(lam, Code={"ZipFile": make_zip({"index.py": code})})["FunctionName"]


def test_a_loop_of_destinations_stops_after_16_invocations(server, lam):
    name = looping(lam)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": ARN + name}})
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    before = int(metrics(server)["lamina_async_recursive_invocations_dropped_total"])
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    assert wait_for(lambda: int(metrics(server)["lamina_async_recursive_invocations_dropped_total"]) > before, 60)
    time.sleep(1)
    assert starts(server, name) == 16
    assert int(metrics(server)["lamina_async_recursive_invocations_dropped_total"]) == before + 1


def test_recursion_config_allow_lets_a_loop_go_on(server, lam):
    name = looping(lam)
    assert lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")["RecursiveLoop"] == "Allow"
    assert lam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Allow"
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": ARN + name}})
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    try:
        assert wait_for(lambda: starts(server, name) >= 20, 60)
    finally:
        # Deleting the function ends the loop: events of a deleted function are dropped.
        lam.delete_function(FunctionName=name)
    with pytest.raises(ClientError) as err:
        lam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert error_code(err) == "ResourceNotFoundException"
    other = function(lam)
    with pytest.raises(ClientError) as err:
        lam.put_function_recursion_config(FunctionName=other, RecursiveLoop="Sometimes")
    assert error_code(err) == "ValidationException"


def test_event_invoke_config_api(lam):
    name = function(lam, Publish=True)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_event_invoke_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    put = lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    assert put["FunctionArn"] == f"{ARN}{name}:$LATEST"
    assert put["MaximumRetryAttempts"] == 1
    assert "MaximumEventAgeInSeconds" not in put
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    assert put["LastModified"].year >= 2026
    # Update merges; Put replaces.
    updated = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=600,
        DestinationConfig={"OnSuccess": {"Destination": QUEUE_ARN + "somewhere"}})
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (1, 600)
    assert updated["DestinationConfig"]["OnSuccess"] == {"Destination": QUEUE_ARN + "somewhere"}
    replaced = lam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in replaced
    assert replaced["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    got = lam.get_function_event_invoke_config(FunctionName=name)
    assert got["MaximumEventAgeInSeconds"] == 60
    for qualifier in ("1", "live"):
        lam.put_function_event_invoke_config(FunctionName=name, Qualifier=qualifier, MaximumRetryAttempts=0)
    assert lam.get_function_event_invoke_config(FunctionName=f"{name}:live")["FunctionArn"] == f"{ARN}{name}:live"
    listed = lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == sorted(f"{ARN}{name}:{q}" for q in ("$LATEST", "1", "live"))
    page = lam.list_function_event_invoke_configs(FunctionName=name, MaxItems=2)
    rest = lam.list_function_event_invoke_configs(FunctionName=name, Marker=page["NextMarker"])
    assert len(page["FunctionEventInvokeConfigs"]) + len(rest["FunctionEventInvokeConfigs"]) == 3
    assert "NextMarker" not in rest
    # Deleting an alias deletes its configuration.
    lam.delete_alias(FunctionName=name, Name="live")
    assert len(lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]) == 2
    lam.delete_function_event_invoke_config(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_event_invoke_config(FunctionName=name, Qualifier="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName=name, Qualifier="9", MaximumRetryAttempts=0)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.put_function_event_invoke_config(FunctionName="no-such-function", MaximumRetryAttempts=0)


@pytest.mark.parametrize("request_, exception", [
    ({"MaximumRetryAttempts": 3}, "ValidationException"),
    ({"MaximumEventAgeInSeconds": 21601}, "ValidationException"),
    ({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:000000000000:topic"}}},
     "InvalidParameterValueException"),
    ({"DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:111111111111:q"}}},
     "InvalidParameterValueException"),
    ({"DestinationConfig": {"OnFailure": {"Destination": "redis://127.0.0.1:6379"}}},
     "InvalidParameterValueException"),
])
def test_event_invoke_config_is_validated(lam, request_, exception):
    name = function(lam)
    with pytest.raises(ClientError) as err:
        lam.put_function_event_invoke_config(FunctionName=name, **request_)
    assert error_code(err) == exception


def test_dead_letter_targets_must_be_queues(lam):
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        function(lam, DeadLetterConfig={"TargetArn": "arn:aws:sns:us-east-1:000000000000:topic"})
    name = function(lam, DeadLetterConfig={"TargetArn": QUEUE_ARN + "dlq"})
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {"TargetArn": QUEUE_ARN + "dlq"}


def test_events_too_old_fail_with_event_age_exceeded(lam, sqs):
    """A throttled event backs off (1 s, 2 s, 4 s …) until MaximumEventAgeInSeconds (60 s at
    least) runs out."""
    failures, url = queue(sqs)
    name = function(lam, Timeout=120)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=60, DestinationConfig={"OnFailure": {"Destination": failures}})
    # A synchronous call holds the function's one unit of concurrency for longer than that.
    holder = threading.Thread(target=lambda: lam.invoke(FunctionName=name, Payload=b'{"sleep": 75}'))
    holder.start()
    time.sleep(2)
    accepted = time.time()
    lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"late": true}')
    [record] = records(sqs, url, 1, timeout=90)
    assert time.time() - accepted >= 59
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert "responsePayload" not in record
    holder.join(60)


def test_a_full_queue_refuses_events(fresh_server):
    fresh_server.extra_env = {"LAMINA_ASYNC_QUEUE_DEPTH": "3", "LAMINA_ASYNC_CONCURRENCY": "1"}
    fresh_server.start()
    lam = fresh_server.client()
    name = function(lam, Timeout=30)
    statuses = []
    for _ in range(3):
        statuses.append(lam.invoke(FunctionName=name, InvocationType="Event", Payload=b'{"sleep": 3}')["StatusCode"])
    assert statuses == [202] * 3
    with pytest.raises(lam.exceptions.TooManyRequestsException) as err:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
    assert err.value.response["Reason"] == "FunctionInvocationRateLimitExceeded"
    # It drains, and takes events again.
    def accepted():
        try:
            return lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")["StatusCode"] == 202
        except lam.exceptions.TooManyRequestsException:
            return False
    assert wait_for(accepted, 30, 0.5)
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps("x" * (1024 * 1024)).encode())


def test_kill9_loses_no_accepted_event(fresh_server):
    """Events are accepted, some are running, the server is killed: after restart every accepted
    event runs to a success record; only those in flight at the kill may run twice."""
    fresh_server.extra_env = {"LAMINA_ASYNC_CONCURRENCY": "4"}
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    destination, url = queue(sqs)
    name = function(lam)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": destination}})
    total = 60
    for n in range(total):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": n, "sleep": 0.2}))
    # Let some run (and land), then kill the server mid-flight.
    assert wait_for(lambda: int(sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]) >= 4, 30)
    fresh_server.kill()
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    seen = records_by_n(sqs, url, total, timeout=120)
    duplicates = sum(count - 1 for count in seen.values())
    assert duplicates <= 4, seen


def test_sigterm_lets_running_events_finish_and_runs_none_twice(fresh_server):
    """A graceful stop is not a failure: events running at SIGTERM finish and land their
    success records, events still waiting stay queued for the next start, and none of them is
    reported as failed or run twice."""
    fresh_server.extra_env = {"LAMINA_ASYNC_CONCURRENCY": "2"}
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    successes, url = queue(sqs)
    failures, failure_url = queue(sqs)
    name = function(lam, Timeout=30)
    lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0,
        DestinationConfig={"OnSuccess": {"Destination": successes}, "OnFailure": {"Destination": failures}})
    total = 6
    for n in range(total):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps({"n": n, "sleep": 2}))
    # Two are running now (the dispatcher runs two at a time); stop the server under them.
    time.sleep(1)
    assert fresh_server.stop(signal.SIGTERM, timeout=40) == 0, fresh_server.log()
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    seen = records_by_n(sqs, url, total, timeout=60)
    assert all(count == 1 for count in seen.values()), seen
    assert sqs.receive_message(QueueUrl=failure_url, WaitTimeSeconds=1).get("Messages", []) == []
    # Each event started once: the function's log has one START per request id.
    counts = start_counts(fresh_server, name)
    assert len(counts) == total and set(counts.values()) == {1}, counts


def test_sigterm_does_not_wait_out_long_polls(fresh_server):
    fresh_server.start()
    sqs = fresh_server.sqs()
    url = sqs.create_queue(QueueName="idle")["QueueUrl"]
    poller = threading.Thread(target=lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20))
    poller.start()
    time.sleep(0.5)
    started = time.time()
    assert fresh_server.stop(signal.SIGTERM) == 0, fresh_server.log()
    poller.join(5)
    # The poll would have run 20 s; the server answered it and stopped well before.
    assert time.time() - started < 10


def backlog(lam, sqs, reserved, total, sleep=0.2):
    """A function with `reserved` concurrency and a success queue, sent `total` events that each
    take `sleep` seconds. Returns (function, queue URL)."""
    destination, url = queue(sqs)
    name = function(lam, Timeout=30)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=reserved)
    lam.put_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": destination}})
    for n in range(total):
        assert lam.invoke(FunctionName=name, InvocationType="Event",
                          Payload=json.dumps({"n": n, "sleep": sleep}))["StatusCode"] == 202
    return name, url


def test_a_backlog_drains_at_the_functions_reserved_concurrency(server, lam, sqs):
    """40 events of 0.2 s for a function with reserved concurrency 1 take about 8 s: each runs
    as soon as the one before ends, none is throttled into backoff."""
    started = time.time()
    name, url = backlog(lam, sqs, reserved=1, total=40)
    seen = records_by_n(sqs, url, 40, timeout=60)
    took = time.time() - started
    assert all(count == 1 for count in seen.values()), seen
    assert took < 30, f"the backlog took {took:.1f} s (serially: 8 s)"
    series = f'lamina_function_throttles_total{{function="{name}"}}'
    assert metrics(server).get(series, "0") == "0", "waiting for room is not a throttle"


def test_a_backlog_of_one_function_does_not_hold_up_another(server, lam, sqs):
    slow, _ = backlog(lam, sqs, reserved=1, total=30, sleep=1)
    destination, url = queue(sqs)
    quick = function(lam)
    lam.put_function_event_invoke_config(FunctionName=quick, DestinationConfig={"OnSuccess": {"Destination": destination}})
    started = time.time()
    lam.invoke(FunctionName=quick, InvocationType="Event", Payload=json.dumps({"n": 0}))
    records_by_n(sqs, url, 1, timeout=20)
    assert time.time() - started < 10, "the other function's event ran while the backlog waits"


def test_a_backlog_drains_after_kill9(fresh_server):
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    name, url = backlog(lam, sqs, reserved=1, total=40)
    assert wait_for(lambda: starts(fresh_server, name) >= 10, 30)
    fresh_server.kill()
    fresh_server.start()
    restarted = time.time()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    seen = records_by_n(sqs, url, 40, timeout=60)
    took = time.time() - restarted
    assert took < 30, f"the rest of the backlog took {took:.1f} s after the restart"
    # One event ran at a time: only the one running at the kill may have run twice.
    assert sum(count - 1 for count in seen.values()) <= 1, seen


def test_sigterm_hands_back_events_waiting_for_room_and_runs_none_twice(fresh_server):
    """Events leased but waiting for their function's only place when the server stops go back
    to the queue at once: after the restart each runs exactly once."""
    fresh_server.start()
    lam, sqs = fresh_server.client(), fresh_server.sqs()
    name, url = backlog(lam, sqs, reserved=1, total=6, sleep=1)
    time.sleep(0.5)  # one runs, the rest wait for room
    assert fresh_server.stop(signal.SIGTERM, timeout=40) == 0, fresh_server.log()
    fresh_server.start()
    sqs = fresh_server.sqs()
    seen = records_by_n(sqs, url, 6, timeout=60)
    assert all(count == 1 for count in seen.values()), seen
    counts = start_counts(fresh_server, name)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
