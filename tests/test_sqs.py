"""The SQS-compatible queue API, driven by boto3's unchanged `sqs` client and the AWS CLI."""

import hashlib
import json
import os
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import AWS, ACCESS_KEY, ROOT, SECRET_KEY, error_code, sqs_client, unique, wait_for

QUEUE_ARN = "arn:aws:sqs:us-east-1:000000000000:"


def new_queue(sqs, **attributes):
    name = unique("q")
    url = sqs.create_queue(QueueName=name, Attributes={k: str(v) for k, v in attributes.items()})["QueueUrl"]
    return name, url


def receive(sqs, url, **kwargs):
    return sqs.receive_message(QueueUrl=url, **kwargs).get("Messages", [])


def test_create_get_list_and_delete_queues(sqs):
    name, url = new_queue(sqs)
    assert url.endswith(f"/000000000000/{name}")
    # Creating again with the same attributes is idempotent; with others it is refused.
    assert sqs.create_queue(QueueName=name)["QueueUrl"] == url
    with pytest.raises(ClientError) as err:
        sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "7"})
    assert error_code(err) in ("QueueAlreadyExists", "QueueNameExists")
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url
    other, other_url = new_queue(sqs)
    prefix = name.rsplit("-", 3)[0]
    listed = sqs.list_queues(QueueNamePrefix=name)["QueueUrls"]
    assert listed == [url]
    assert other_url in sqs.list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    page = sqs.list_queues(QueueNamePrefix=prefix, MaxResults=1)
    assert len(page["QueueUrls"]) == 1 and "NextToken" in page
    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.get_queue_url(QueueName=name)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url, MessageBody="x")
    for bad in ("has space", "x" * 81, "dots.fifo"):
        with pytest.raises(ClientError) as err:
            sqs.create_queue(QueueName=bad)
        assert error_code(err) == "InvalidParameterValue"


def test_attributes_are_kept_and_validated(sqs):
    name, url = new_queue(sqs, VisibilityTimeout=5, DelaySeconds=0)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["QueueArn"] == QUEUE_ARN + name
    assert attributes["VisibilityTimeout"] == "5"
    assert attributes["MessageRetentionPeriod"] == "345600"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "9", "ReceiveMessageWaitTimeSeconds": "1"})
    some = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert some == {"VisibilityTimeout": "9"}
    for bad in ({"VisibilityTimeout": "43201"}, {"DelaySeconds": "-1"}, {"MessageRetentionPeriod": "59"},
                {"RedrivePolicy": "not json"},
                {"RedrivePolicy": json.dumps({"deadLetterTargetArn": QUEUE_ARN + "missing", "maxReceiveCount": 2})}):
        with pytest.raises(ClientError) as err:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=bad)
        assert error_code(err) == "InvalidAttributeValue", bad
    with pytest.raises(ClientError) as err:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"NoSuchThing": "1"})
    assert error_code(err) == "InvalidAttributeName"
    sqs.send_message(QueueUrl=url, MessageBody="one")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    receive(sqs, url, VisibilityTimeout=60)
    sqs.send_message(QueueUrl=url, MessageBody="two")
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (counts["ApproximateNumberOfMessages"], counts["ApproximateNumberOfMessagesNotVisible"],
            counts["ApproximateNumberOfMessagesDelayed"]) == ("1", "1", "1")


def test_send_and_receive_with_attributes_and_digests(sqs):
    _, url = new_queue(sqs)
    body = "héllo wörld"
    sent = sqs.send_message(
        QueueUrl=url, MessageBody=body,
        MessageAttributes={
            "colour": {"DataType": "String", "StringValue": "red"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        })
    assert sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest()
    assert len(sent["MD5OfMessageAttributes"]) == 32
    [message] = receive(sqs, url, MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
    assert message["Body"] == body
    assert message["MessageId"] == sent["MessageId"]
    assert message["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert message["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert message["MessageAttributes"]["colour"] == {"DataType": "String", "StringValue": "red"}
    assert message["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    assert message["Attributes"]["ApproximateReceiveCount"] == "1"
    assert int(message["Attributes"]["SentTimestamp"]) > 0
    # Attribute names select: a prefix pattern, or none at all.
    sqs.send_message(QueueUrl=url, MessageBody="b", MessageAttributes={
        "colour": {"DataType": "String", "StringValue": "blue"},
        "size": {"DataType": "Number", "StringValue": "1"}})
    [message] = receive(sqs, url, MessageAttributeNames=["col.*"])
    assert list(message["MessageAttributes"]) == ["colour"]
    assert "Attributes" not in message


def test_batches_report_each_entry(sqs):
    _, url = new_queue(sqs)
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "first"},
        {"Id": "b", "MessageBody": "bad \u0000 character"},
        {"Id": "c", "MessageBody": "third", "DelaySeconds": 0},
    ])
    assert sorted(e["Id"] for e in result["Successful"]) == ["a", "c"]
    [failed] = result["Failed"]
    assert (failed["Id"], failed["SenderFault"], failed["Code"]) == ("b", True, "InvalidMessageContents")
    messages = receive(sqs, url, MaxNumberOfMessages=10)
    assert sorted(m["Body"] for m in messages) == ["first", "third"]
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": messages[0]["ReceiptHandle"]},
        {"Id": "y", "ReceiptHandle": "not-a-receipt"},
    ])
    assert [e["Id"] for e in deleted["Successful"]] == ["x"]
    assert deleted["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"
    with pytest.raises(ClientError) as err:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": "m"} for i in range(11)])
    assert "TooManyEntriesInBatchRequest" in error_code(err)
    with pytest.raises(ClientError) as err:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "same", "MessageBody": "m"}] * 2)
    assert "BatchEntryIdsNotDistinct" in error_code(err)


def test_visibility_timeout_hides_and_returns_messages(sqs):
    _, url = new_queue(sqs, VisibilityTimeout=30)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [first] = receive(sqs, url, VisibilityTimeout=1)
    assert receive(sqs, url) == []
    time.sleep(1.2)
    [again] = receive(sqs, url, AttributeNames=["ApproximateReceiveCount"])
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"
    # The old receipt no longer deletes the message (SQS answers success), the new one does.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    # ChangeMessageVisibility 0 releases it at once.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=0)
    [third] = receive(sqs, url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"])
    assert receive(sqs, url) == []
    with pytest.raises(ClientError) as err:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"], VisibilityTimeout=5)
    assert "MessageNotInflight" in error_code(err)
    with pytest.raises(ClientError) as err:
        sqs.delete_message(QueueUrl=url, ReceiptHandle="garbage")
    assert error_code(err) == "ReceiptHandleIsInvalid"


def test_long_polling_returns_when_a_message_arrives(sqs):
    _, url = new_queue(sqs)
    # Nothing arrives: the wait runs its course and returns no messages.
    started = time.time()
    assert receive(sqs, url, WaitTimeSeconds=1) == []
    assert time.time() - started >= 0.9
    got = {}

    def poll():
        began = time.time()
        got["messages"] = receive(sqs_client(sqs.meta.endpoint_url), url, WaitTimeSeconds=10)
        got["waited"] = time.time() - began

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    poller.join(15)
    assert [m["Body"] for m in got["messages"]] == ["wake up"]
    assert got["waited"] < 9, got
    # The queue's ReceiveMessageWaitTimeSeconds applies when the call names no wait.
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"ReceiveMessageWaitTimeSeconds": "1"})
    started = time.time()
    assert receive(sqs, url) == []
    assert time.time() - started >= 0.9
    with pytest.raises(ClientError) as err:
        receive(sqs, url, WaitTimeSeconds=21)
    assert error_code(err) == "InvalidParameterValue"


def test_delayed_messages_appear_after_their_delay(sqs):
    _, url = new_queue(sqs, DelaySeconds=1)
    sqs.send_message(QueueUrl=url, MessageBody="queue delay")
    sqs.send_message(QueueUrl=url, MessageBody="no delay", DelaySeconds=0)
    assert [m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)] == ["no delay"]
    messages = receive(sqs, url, WaitTimeSeconds=5)
    assert [m["Body"] for m in messages] == ["queue delay"]
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x", DelaySeconds=901)
    assert error_code(err) == "InvalidParameterValue"


def test_redrive_moves_messages_to_the_dead_letter_queue(sqs):
    dlq_name, dlq = new_queue(sqs)
    policy = json.dumps({"deadLetterTargetArn": QUEUE_ARN + dlq_name, "maxReceiveCount": "2"})
    _, source = new_queue(sqs, VisibilityTimeout=0, RedrivePolicy=policy)
    attributes = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"])["Attributes"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": QUEUE_ARN + dlq_name, "maxReceiveCount": 2}
    sqs.send_message(QueueUrl=source, MessageBody="poison")
    for _ in range(2):
        assert [m["Body"] for m in receive(sqs, source)] == ["poison"]
    assert receive(sqs, source) == []
    [dead] = receive(sqs, dlq, AttributeNames=["All"])
    assert dead["Body"] == "poison"
    assert dead["Attributes"]["DeadLetterQueueSourceArn"] == QUEUE_ARN + source.rsplit("/", 1)[1]
    # The receive count goes on in the dead-letter queue, as in SQS.
    assert dead["Attributes"]["ApproximateReceiveCount"] == "3"


def test_purge_empties_a_queue(sqs):
    _, url = new_queue(sqs)
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)])
    sqs.purge_queue(QueueUrl=url)
    assert receive(sqs, url, MaxNumberOfMessages=10) == []


def test_requests_are_authenticated_and_limited(server, sqs):
    _, url = new_queue(sqs)
    stranger = sqs_client(server.url, access_key="LKIAUNKNOWN000000000")
    with pytest.raises(ClientError) as err:
        stranger.send_message(QueueUrl=url, MessageBody="x")
    assert error_code(err) == "UnrecognizedClientException"
    forger = sqs_client(server.url, secret_key="wrong")
    with pytest.raises(ClientError) as err:
        forger.send_message(QueueUrl=url, MessageBody="x")
    assert error_code(err) == "InvalidSignatureException"
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x" * (1024 * 1024 + 1))
    assert error_code(err) == "InvalidParameterValue"
    sqs.send_message(QueueUrl=url, MessageBody="x" * (1024 * 1024 - 100))
    with pytest.raises(ClientError) as err:
        receive(sqs, url, MaxNumberOfMessages=11)
    assert error_code(err) == "InvalidParameterValue"
    with pytest.raises(ClientError) as err:
        sqs.add_permission(QueueUrl=url, Label="share", AWSAccountIds=["111111111111"], Actions=["SendMessage"])
    assert "UnsupportedOperation" in error_code(err)


def test_the_aws_cli_sends_and_receives(server, sqs):
    _, url = new_queue(sqs)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")

    def aws(*args):
        out = subprocess.run([AWS, "--endpoint-url", server.url, "sqs", *args, "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    aws("send-message", "--queue-url", url, "--message-body", "from the cli")
    received = aws("receive-message", "--queue-url", url, "--wait-time-seconds", "1")
    assert received["Messages"][0]["Body"] == "from the cli"


def test_messages_survive_a_restart(fresh_server):
    fresh_server.start()
    sqs = fresh_server.sqs()
    url = sqs.create_queue(QueueName="kept", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="before")
    assert fresh_server.stop() == 0
    fresh_server.start()
    sqs = fresh_server.sqs()
    url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
    assert [m["Body"] for m in receive(sqs, url)] == ["before"]


def test_kill9_loses_no_acknowledged_message(fresh_server):
    """Senders run while the server is killed: every send that was answered must be there after
    restart, and messages that were received but not deleted come back."""
    fresh_server.start()
    sqs = fresh_server.sqs()
    url = sqs.create_queue(QueueName="durable", Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    acknowledged, lock, stop = set(), threading.Lock(), threading.Event()

    def sender(prefix):
        client = sqs_client(fresh_server.url)
        n = 0
        while not stop.is_set():
            body = f"{prefix}-{n}"
            try:
                client.send_message(QueueUrl=url, MessageBody=body)
            except Exception:
                return
            with lock:
                acknowledged.add(body)
            n += 1

    senders = [threading.Thread(target=sender, args=(f"s{i}",)) for i in range(4)]
    for thread in senders:
        thread.start()
    assert wait_for(lambda: len(acknowledged) >= 200, 30), "the senders made no progress"
    # Some messages are in flight (received, not deleted) when the server dies.
    in_flight = receive(sqs, url, MaxNumberOfMessages=10)
    assert in_flight
    fresh_server.kill()
    stop.set()
    for thread in senders:
        thread.join(30)
    fresh_server.start()
    sqs = fresh_server.sqs()
    found = set()

    def drain():
        for message in receive(sqs, url, MaxNumberOfMessages=10, WaitTimeSeconds=1):
            found.add(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return acknowledged <= found

    assert wait_for(drain, 60, 0), f"lost {len(acknowledged - found)} of {len(acknowledged)}"
    assert {m["Body"] for m in in_flight} <= found


def test_a_queue_url_of_another_account_names_no_queue(sqs):
    name, url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="same account")
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=url.replace("/000000000000/", "/111111111111/"), MessageBody="x")


def test_tags_and_dead_letter_sources(sqs):
    dlq_name, dlq = new_queue(sqs)
    name = unique("tagged")
    url = sqs.create_queue(QueueName=name, tags={"team": "payments"}, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": QUEUE_ARN + dlq_name, "maxReceiveCount": 3})})["QueueUrl"]
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "payments"}
    sqs.tag_queue(QueueUrl=url, Tags={"stage": "prod", "team": "billing"})
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"team": "billing", "stage": "prod"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["team", "absent"])
    assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == {"stage": "prod"}
    sqs.untag_queue(QueueUrl=url, TagKeys=["stage"])
    assert "Tags" not in sqs.list_queue_tags(QueueUrl=url)
    # Tags are not attributes: creating the queue again with other tags finds it.
    assert sqs.create_queue(QueueName=name, tags={"other": "x"})["QueueUrl"] == url
    for tags in ({"aws:reserved": "x"}, {"k" * 129: "x"}, {"k": "v" * 257}, {f"k{n}": "v" for n in range(51)}):
        with pytest.raises(ClientError) as err:
            sqs.tag_queue(QueueUrl=url, Tags=tags)
        assert error_code(err) == "InvalidParameterValue"
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]
    assert sqs.list_dead_letter_source_queues(QueueUrl=url)["queueUrls"] == []


def test_an_sdk_speaking_the_query_protocol_works_unchanged(server):
    """boto3 1.28 (botocore before 1.31.81), like the AWS SDK for Java 1.x, speaks SQS's query
    protocol: form-encoded requests, XML answers, error codes such as
    AWS.SimpleQueueService.NonExistentQueue. It checks every MD5 the server sends back."""
    python = os.environ.get("LAMINA_QUERY_PYTHON") or str(ROOT / ".clients/query-venv/bin/python")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")
    out = subprocess.run([python, str(ROOT / "tests/legacy/sqs_query_client.py"), server.url],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["protocol"] == "query", seen["botocore"]
    assert seen["got_url"] == seen["queue_url"] and seen["listed"] == [seen["queue_url"]]
    assert seen["batch_ok"] == ["a", "b"] and seen["batch_failed"] == []
    tricky = "tricky <&>\"' \r\n text, ünïcødé"
    assert seen["bodies"] == sorted(["first", "second", tricky])
    assert seen["sent_md5"] == hashlib.md5(tricky.encode()).hexdigest()
    assert seen["attributes"] == {
        "kind": {"DataType": "String", "StringValue": "greeting"},
        "blob": {"DataType": "Binary", "BinaryValue": [0, 1, 255]},
        "n": {"DataType": "Number", "StringValue": "42"},
    }
    assert seen["receive_count"] == "1"
    assert seen["deleted"] == ["x", "y"]
    assert seen["queue_attributes"]["VisibilityTimeout"] == "1"
    assert seen["queue_attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"
    assert seen["queue_attributes"]["QueueArn"].startswith(QUEUE_ARN + "legacy-")
    assert seen["after_redrive"] == [] and seen["dead_letters"] == ["second"]
    assert seen["empty_poll"] == [] and seen["empty_poll_s"] >= 1.5
    assert seen["missing"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert seen["bad_name"] == "InvalidParameterValue"
    assert seen["dlq_tags"] == {"made-by": "legacy"} and seen["tags"] == {"team": "legacy"}
    assert seen["dead_letter_sources"] == [seen["queue_url"]]
    assert seen["left"] == []
    assert "<Name>VisibilityTimeout</Name><Value>1</Value>" in seen["presigned"], seen["presigned"]
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}}
    assert seen["trace_md5"] == attributes_md5(trace)
    assert seen["trace"] == trace["AWSTraceHeader"]["StringValue"] and seen["star"] == ["k"]
    assert seen["subset_url"] == seen["queue_url"] and seen["no_match"] is False
    assert seen["too_many"] == ["InvalidParameterValue", "Value 11 for parameter MaxNumberOfMessages is invalid. "
                                "Reason: Must be between 1 and 10, if provided."]
    assert seen["empty_value"] == "InvalidParameterValue"
    assert (seen["stranger"], seen["forger"]) == ("InvalidClientTokenId", "SignatureDoesNotMatch")


def test_a_query_request_may_address_its_queue_by_url(server, sqs):
    """The AWS SDK for Java 1.x sends a queue's operations to the queue's URL and leaves
    `QueueUrl` out of the form; the answer is XML."""
    import urllib.error
    import urllib.parse
    import urllib.request

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    name, url = new_queue(sqs)

    def post(target, form):
        request = botocore.awsrequest.AWSRequest(
            method="POST", url=target, data=urllib.parse.urlencode(form).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "sqs",
                                "us-east-1").add_auth(request)
        prepared = request.prepare()
        raw = urllib.request.Request(prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST")
        try:
            with urllib.request.urlopen(raw) as response:
                return response.status, response.headers["Content-Type"], response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], err.read().decode()

    status, content_type, body = post(url, {"Action": "SendMessage", "Version": "2012-11-05", "MessageBody": "hi"})
    assert (status, content_type) == (200, "text/xml"), body
    assert "<SendMessageResponse" in body and "<MessageId>" in body
    assert [m["Body"] for m in receive(sqs, url)] == ["hi"]
    status, _, body = post(server.url + "/000000000000/no-such-queue", {"Action": "GetQueueAttributes"})
    assert status == 400 and "<Code>AWS.SimpleQueueService.NonExistentQueue</Code>" in body, body
    status, _, body = post(server.url + "/", {"QueueName": name})
    assert status == 400 and "<Code>MissingAction</Code>" in body, body


def _send_raw(prepared):
    """Sends a prepared botocore request with urllib, as a user's own tool would."""
    import urllib.error
    import urllib.request

    raw = urllib.request.Request(prepared.url, data=prepared.body or None, headers=dict(prepared.headers),
                                 method=prepared.method)
    try:
        with urllib.request.urlopen(raw) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def _signed(method, url, params, presign=False, secret_key=SECRET_KEY, service="sqs"):
    import urllib.parse

    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials

    credentials = botocore.credentials.Credentials(ACCESS_KEY, secret_key)
    # Percent-encoded as botocore encodes (`%20`, not `+`, which SigV4 does not canonicalise).
    query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
    request = botocore.awsrequest.AWSRequest(method=method, url=f"{url}?{query}")
    signer = botocore.auth.SigV4QueryAuth if presign else botocore.auth.SigV4Auth
    signer(credentials, service, "us-east-1").add_auth(request)
    return request.prepare()


def test_query_requests_may_be_sent_as_get_or_presigned(server, sqs):
    """SQS answers the query protocol whatever the method, signed in the header or presigned in
    the query string, and routes by the signature's service."""
    import botocore.awsrequest

    name, url = new_queue(sqs)
    send = {"Action": "SendMessage", "Version": "2012-11-05", "QueueUrl": url, "MessageBody": "by get"}
    status, content_type, body = _send_raw(_signed("GET", server.url + "/", send))
    assert (status, content_type) == (200, "text/xml"), body
    assert "<SendMessageResponse" in body and "<MD5OfMessageBody>" in body
    # Presigned: the signature travels in the query string, to `/` or to the queue's URL.
    status, _, body = _send_raw(_signed("GET", url, {"Action": "SendMessage", "MessageBody": "presigned"},
                                        presign=True))
    assert status == 200, body
    status, _, body = _send_raw(_signed("POST", server.url + "/", {"Action": "GetQueueUrl", "QueueName": name},
                                        presign=True))
    assert status == 200 and f"<QueueUrl>{url}</QueueUrl>" in body, body
    assert sorted(m["Body"] for m in receive(sqs, url, MaxNumberOfMessages=10)) == ["by get", "presigned"]
    # A wrong key still fails, in SQS's XML, whichever way the signature comes.
    for presign in (False, True):
        status, _, body = _send_raw(_signed("GET", server.url + "/", {"Action": "ListQueues"}, presign=presign,
                                            secret_key="wrong"))
        assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    # Unsigned, it is still SQS's to answer: the query names an Action.
    status, _, body = _send_raw(botocore.awsrequest.AWSRequest(method="GET", url=server.url + "/?Action=ListQueues")
                                .prepare())
    assert status == 403 and "<Code>MissingAuthenticationToken</Code>" in body, body
    # A presigned request past its expiry is refused.
    import datetime
    from unittest import mock
    old = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(hours=2)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old):
        expired = _signed("GET", server.url + "/", {"Action": "ListQueues"}, presign=True)
    status, _, body = _send_raw(expired)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body and "expired" in body, body


def test_a_presigned_url_covers_no_body_but_its_own(server, sqs):
    """A URL presigned with UNSIGNED-PAYLOAD (as S3-style presigners make them) lets its holder
    repeat its request, not send another operation in a body of their own."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    import urllib.parse

    name, url = new_queue(sqs)
    query = urllib.parse.urlencode({"Action": "GetQueueUrl", "QueueName": name}, quote_via=urllib.parse.quote)
    request = botocore.awsrequest.AWSRequest(method="POST", url=f"{server.url}/?{query}")
    botocore.auth.S3SigV4QueryAuth(botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY), "sqs",
                                   "us-east-1").add_auth(request)
    prepared = request.prepare()
    assert "X-Amz-Signature=" in prepared.url
    status, _, body = _send_raw(prepared)
    assert status == 200 and f"<QueueUrl>{url}</QueueUrl>" in body, body
    # The same URL with a body naming another operation is refused, and the queue stays.
    forged = botocore.awsrequest.AWSRequest(
        method="POST", url=prepared.url, data=f"Action=DeleteQueue&QueueUrl={urllib.parse.quote(url, safe='')}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"}).prepare()
    status, _, body = _send_raw(forged)
    assert status == 403 and "<Code>SignatureDoesNotMatch</Code>" in body, body
    assert sqs.get_queue_url(QueueName=name)["QueueUrl"] == url


def attributes_md5(attributes):
    """SQS's digest of message (or system) attributes, written from its documentation."""
    digest = hashlib.md5()
    for name in sorted(attributes):
        value = attributes[name]
        for part in (name.encode(), value["DataType"].encode()):
            digest.update(len(part).to_bytes(4, "big") + part)
        if "BinaryValue" in value:
            data = value["BinaryValue"]
            digest.update(b"\x02" + len(data).to_bytes(4, "big") + data)
        else:
            data = value["StringValue"].encode()
            digest.update(b"\x01" + len(data).to_bytes(4, "big") + data)
    return digest.hexdigest()


def test_message_size_counts_attribute_names_types_and_values(sqs):
    _, url = new_queue(sqs, MaximumMessageSize=1024)
    one = {"a": {"DataType": "String", "StringValue": "b"}}  # 1 + 6 + 1 bytes
    for body in ("x" * 1023, "x" * 1017):
        with pytest.raises(ClientError) as err:
            sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=one)
        assert error_code(err) == "InvalidParameterValue"
        assert err.value.response["Error"]["Message"] == (
            "One or more parameters are invalid. Reason: Message must be shorter than 1024 bytes.")
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1016, MessageAttributes=one)
    binary = {"b": {"DataType": "Binary", "BinaryValue": b"\x00" * 10}}  # 1 + 6 + 10 bytes
    sqs.send_message(QueueUrl=url, MessageBody="x" * 1007, MessageAttributes=binary)
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "fits", "MessageBody": "x" * 1016, "MessageAttributes": one},
        {"Id": "over", "MessageBody": "x" * 1017, "MessageAttributes": one}])
    assert [e["Id"] for e in result["Successful"]] == ["fits"]
    assert [(e["Id"], e["Code"]) for e in result["Failed"]] == [("over", "InvalidParameterValue")]


def test_message_attribute_values_are_validated(sqs):
    _, url = new_queue(sqs)
    bad = [
        {"DataType": "String", "StringValue": ""},
        {"DataType": "String", "StringValue": "bell \x07"},
        {"DataType": "String", "StringValue": "\ufffe"},
        {"DataType": "Number", "StringValue": "many"},
        {"DataType": "Text", "StringValue": "x"},
        {"DataType": "Binary", "BinaryValue": b""},
    ]
    for value in bad:
        with pytest.raises(ClientError) as err:
            sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={"k": value})
        assert error_code(err) == "InvalidParameterValue", value
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes={"k": bad[0]})
    assert err.value.response["Error"]["Message"] == (
        "The message attribute 'k' must contain non-empty message attribute value for message attribute type 'String'.")
    for name in ("AWS.reserved", "two..dots", "has space"):
        with pytest.raises(ClientError) as err:
            sqs.send_message(QueueUrl=url, MessageBody="m",
                             MessageAttributes={name: {"DataType": "String", "StringValue": "v"}})
        assert error_code(err) == "InvalidParameterValue", name
    fine = {"k": {"DataType": "String", "StringValue": "tab\t, newline\n, \U0001F600 and \ue000"},
            "n": {"DataType": "Number.float", "StringValue": "-1.5e3"}}
    sent = sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes=fine)
    assert sent["MD5OfMessageAttributes"] == attributes_md5(fine)
    result = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "bad", "MessageBody": "m", "MessageAttributes": {"k": bad[1]}}])
    assert [(e["Id"], e["Code"]) for e in result["Failed"]] == [("bad", "InvalidParameterValue")]


def test_create_queue_compares_only_the_attributes_given(sqs):
    name, url = new_queue(sqs, VisibilityTimeout=5, DelaySeconds=2)
    assert sqs.create_queue(QueueName=name, Attributes={"DelaySeconds": "2"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "5", "DelaySeconds": "2"})["QueueUrl"] == url
    with pytest.raises(ClientError) as err:
        sqs.create_queue(QueueName=name, Attributes={"DelaySeconds": "2", "VisibilityTimeout": "6"})
    assert error_code(err) == "QueueAlreadyExists"
    assert err.value.response["Error"]["QueryErrorCode"] == "QueueNameExists"
    # Clearing an attribute the queue has is a difference too.
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": policy})
    assert sqs.create_queue(QueueName=name, Attributes={"Policy": policy})["QueueUrl"] == url
    with pytest.raises(ClientError) as err:
        sqs.create_queue(QueueName=name, Attributes={"Policy": ""})
    assert error_code(err) == "QueueAlreadyExists"


def test_message_attribute_names_star_chooses_all(sqs):
    _, url = new_queue(sqs)
    attributes = {"a": {"DataType": "String", "StringValue": "1"}, "b": {"DataType": "Number", "StringValue": "2"}}
    sqs.send_message(QueueUrl=url, MessageBody="m", MessageAttributes=attributes)
    [message] = receive(sqs, url, MessageAttributeNames=["*"])
    assert message["MessageAttributes"] == attributes
    assert message["MD5OfMessageAttributes"] == attributes_md5(attributes)


def test_errors_quote_the_value_and_carry_both_codes(sqs):
    _, url = new_queue(sqs)
    cases = [
        (lambda: receive(sqs, url, MaxNumberOfMessages=11),
         "Value 11 for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."),
        (lambda: receive(sqs, url, WaitTimeSeconds=21),
         "Value 21 for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."),
        (lambda: sqs.send_message(QueueUrl=url, MessageBody="m", DelaySeconds=901),
         "Value 901 for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and <= 900."),
    ]
    for call, message in cases:
        with pytest.raises(ClientError) as err:
            call()
        assert (error_code(err), err.value.response["Error"]["Message"]) == ("InvalidParameterValue", message)
    # The JSON protocol names the modeled shape in `__type` and the query code in
    # `x-amzn-query-error`, which boto3 reports as the code.
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as err:
        sqs.get_queue_url(QueueName="no-such-queue-anywhere")
    error = err.value.response["Error"]
    assert (error["Code"], error["QueryErrorCode"], error["Type"]) == (
        "AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "Sender")
    assert error["Message"] == "The specified queue does not exist."


def test_an_earlier_receipt_changes_visibility_while_in_flight(sqs):
    _, url = new_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    [first] = receive(sqs, url, VisibilityTimeout=1)
    time.sleep(1.2)
    [second] = receive(sqs, url, VisibilityTimeout=60)
    assert second["ReceiptHandle"] != first["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=0)
    [third] = receive(sqs, url, AttributeNames=["ApproximateReceiveCount"])
    assert third["Attributes"]["ApproximateReceiveCount"] == "3"
    # Visible again, the message is not in flight: no receipt of an earlier delivery changes it.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=third["ReceiptHandle"], VisibilityTimeout=0)
    with pytest.raises(ClientError) as err:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=5)
    assert error_code(err) == "AWS.SimpleQueueService.MessageNotInflight"


def test_encryption_attributes_read_back(sqs):
    name, url = new_queue(sqs)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["SqsManagedSseEnabled"] == "true"
    assert "KmsMasterKeyId" not in attributes and "KmsDataKeyReusePeriodSeconds" not in attributes
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"KmsMasterKeyId": "alias/aws/sqs"})
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["KmsMasterKeyId"], attributes["KmsDataKeyReusePeriodSeconds"],
            attributes["SqsManagedSseEnabled"]) == ("alias/aws/sqs", "300", "false")
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"KmsDataKeyReusePeriodSeconds": "600"})
    some = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsDataKeyReusePeriodSeconds", "KmsMasterKeyId"])
    assert some["Attributes"] == {"KmsDataKeyReusePeriodSeconds": "600", "KmsMasterKeyId": "alias/aws/sqs"}
    with pytest.raises(ClientError) as err:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"KmsDataKeyReusePeriodSeconds": "59"})
    assert error_code(err) == "InvalidAttributeValue"
    # Created with a key: the same queue again with the same key.
    kms_name = unique("kms")
    kms_url = sqs.create_queue(QueueName=kms_name, Attributes={"KmsMasterKeyId": "alias/mine"})["QueueUrl"]
    assert sqs.create_queue(QueueName=kms_name, Attributes={"KmsMasterKeyId": "alias/mine"})["QueueUrl"] == kms_url
    sqs.set_queue_attributes(QueueUrl=kms_url, Attributes={"SqsManagedSseEnabled": "true"})
    attributes = sqs.get_queue_attributes(QueueUrl=kms_url, AttributeNames=["All"])["Attributes"]
    assert attributes["SqsManagedSseEnabled"] == "true" and "KmsMasterKeyId" not in attributes


def test_the_trace_header_travels_as_a_system_attribute(sqs):
    _, url = new_queue(sqs)
    trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"}}
    sent = sqs.send_message(QueueUrl=url, MessageBody="traced", MessageSystemAttributes=trace)
    assert sent["MD5OfMessageSystemAttributes"] == attributes_md5(trace)
    batch = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "t", "MessageBody": "batched", "MessageSystemAttributes": trace}, {"Id": "u", "MessageBody": "plain"}])
    by_id = {e["Id"]: e for e in batch["Successful"]}
    assert by_id["t"]["MD5OfMessageSystemAttributes"] == attributes_md5(trace)
    assert "MD5OfMessageSystemAttributes" not in by_id["u"]
    messages = receive(sqs, url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["AWSTraceHeader"])
    headers = {m["Body"]: m.get("Attributes", {}).get("AWSTraceHeader") for m in messages}
    value = trace["AWSTraceHeader"]["StringValue"]
    assert headers == {"traced": value, "batched": value, "plain": None}
    # Only the trace header may be sent, as a string.
    with pytest.raises(ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="m", MessageSystemAttributes={
            "AWSTraceHeader": {"DataType": "String", "StringValue": ""}})
    assert error_code(err) == "InvalidParameterValue"


def test_list_queues_with_no_match_leaves_the_urls_out(sqs):
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="no-queue-has-this-prefix")


def test_fifo_and_move_tasks_are_refused_in_sqs_words(sqs):
    with pytest.raises(ClientError) as err:
        sqs.create_queue(QueueName=unique("f") + ".fifo", Attributes={"FifoQueue": "true"})
    assert (error_code(err), err.value.response["Error"]["Message"]) == (
        "InvalidAttributeName", "Unknown Attribute FifoQueue.")
    _, url = new_queue(sqs)
    with pytest.raises(ClientError) as err:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"ContentBasedDeduplication": "true"})
    assert err.value.response["Error"]["Message"] == "Unknown Attribute ContentBasedDeduplication."
    assert "Attributes" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["FifoQueue"])
    with pytest.raises(ClientError) as err:
        sqs.start_message_move_task(SourceArn=QUEUE_ARN + "x")
    assert "UnsupportedOperation" in error_code(err)
    assert "Lamina" not in err.value.response["Error"]["Message"]
