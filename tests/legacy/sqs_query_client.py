"""Drives Lamina's queue API with an older boto3 that speaks SQS's query protocol (form-encoded
requests, XML answers). Run by tests/test_sqs.py with the interpreter of .clients/query-venv;
prints what it observed as JSON. Arguments: the server URL. Credentials come from the
environment."""

import json
import os
import sys
import time
import urllib.request

import boto3
import botocore
from botocore.config import Config

url = sys.argv[1]
sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                   config=Config(retries={"total_max_attempts": 1}, read_timeout=30))
seen = {"botocore": botocore.__version__, "protocol": sqs.meta.service_model.protocol}
suffix = str(int(time.time() * 1000))

dlq = sqs.create_queue(QueueName=f"legacy-dlq-{suffix}", tags={"made-by": "legacy"})["QueueUrl"]
queue = sqs.create_queue(QueueName=f"legacy-{suffix}", Attributes={
    "VisibilityTimeout": "1",
    "RedrivePolicy": json.dumps({"deadLetterTargetArn": f"arn:aws:sqs:us-east-1:000000000000:legacy-dlq-{suffix}",
                                 "maxReceiveCount": 1}),
})["QueueUrl"]
seen["queue_url"] = queue
seen["got_url"] = sqs.get_queue_url(QueueName=f"legacy-{suffix}")["QueueUrl"]
seen["listed"] = sqs.list_queues(QueueNamePrefix=f"legacy-{suffix}")["QueueUrls"]
seen["dlq_tags"] = sqs.list_queue_tags(QueueUrl=dlq)["Tags"]

body = "tricky <&>\"' \r\n text, ünïcødé"
sent = sqs.send_message(QueueUrl=queue, MessageBody=body, MessageAttributes={
    "kind": {"DataType": "String", "StringValue": "greeting"},
    "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
    "n": {"DataType": "Number", "StringValue": "42"},
})
seen["sent_md5"] = sent["MD5OfMessageBody"]
batch = sqs.send_message_batch(QueueUrl=queue, Entries=[
    {"Id": "a", "MessageBody": "first"},
    {"Id": "b", "MessageBody": "second", "DelaySeconds": 0,
     "MessageAttributes": {"k": {"DataType": "String", "StringValue": "v"}}},
])
seen["batch_ok"] = sorted(e["Id"] for e in batch["Successful"])
seen["batch_failed"] = batch.get("Failed", [])

messages = []
deadline = time.time() + 10
while len(messages) < 3 and time.time() < deadline:
    messages += sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=30,
                                    AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])
seen["bodies"] = sorted(m["Body"] for m in messages)
tricky = next(m for m in messages if m["Body"] == body)
seen["attributes"] = {k: v for k, v in tricky["MessageAttributes"].items()}
seen["attributes"]["blob"]["BinaryValue"] = list(seen["attributes"]["blob"]["BinaryValue"])
seen["receive_count"] = tricky["Attributes"]["ApproximateReceiveCount"]

first = next(m for m in messages if m["Body"] == "first")
sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=first["ReceiptHandle"], VisibilityTimeout=60)
deleted = sqs.delete_message_batch(QueueUrl=queue, Entries=[
    {"Id": "x", "ReceiptHandle": tricky["ReceiptHandle"]},
    {"Id": "y", "ReceiptHandle": first["ReceiptHandle"]},
])
seen["deleted"] = sorted(e["Id"] for e in deleted["Successful"])
attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
seen["queue_attributes"] = {k: attributes[k] for k in ("VisibilityTimeout", "ApproximateNumberOfMessagesNotVisible", "QueueArn")}

# "second" was received once (maxReceiveCount) and is released: the next receive moves it to
# the dead-letter queue instead of delivering it again.
second = next(m for m in messages if m["Body"] == "second")
sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=second["ReceiptHandle"], VisibilityTimeout=0)
seen["after_redrive"] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=2).get("Messages", [])
seen["dead_letters"] = [m["Body"] for m in dead]
sqs.delete_message(QueueUrl=dlq, ReceiptHandle=dead[0]["ReceiptHandle"])

started = time.time()
seen["empty_poll"] = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=2).get("Messages", [])
seen["empty_poll_s"] = time.time() - started

try:
    sqs.get_queue_url(QueueName=f"missing-{suffix}")
    seen["missing"] = None
except sqs.exceptions.QueueDoesNotExist as err:
    seen["missing"] = err.response["Error"]["Code"]
try:
    sqs.create_queue(QueueName="bad name!")
except botocore.exceptions.ClientError as err:
    seen["bad_name"] = err.response["Error"]["Code"]

sqs.tag_queue(QueueUrl=queue, Tags={"team": "legacy", "stage": "test"})
sqs.untag_queue(QueueUrl=queue, TagKeys=["stage"])
seen["tags"] = sqs.list_queue_tags(QueueUrl=queue)["Tags"]
seen["dead_letter_sources"] = sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"]

# The same answers as the JSON protocol: trace headers, `*`, subsets of attributes, messages.
trace = {"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-5759e988-bd862e3fe1be46a994272793"}}
traced = sqs.send_message(QueueUrl=dlq, MessageBody="traced", MessageSystemAttributes=trace,
                          MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
seen["trace_md5"] = traced.get("MD5OfMessageSystemAttributes")
[got] = sqs.receive_message(QueueUrl=dlq, AttributeNames=["AWSTraceHeader"], MessageAttributeNames=["*"],
                            WaitTimeSeconds=1)["Messages"]
seen["trace"] = got["Attributes"].get("AWSTraceHeader")
seen["star"] = sorted(got.get("MessageAttributes", {}))
sqs.delete_message(QueueUrl=dlq, ReceiptHandle=got["ReceiptHandle"])
seen["subset_url"] = sqs.create_queue(QueueName=f"legacy-{suffix}", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
seen["no_match"] = "QueueUrls" in sqs.list_queues(QueueNamePrefix=f"nothing-{suffix}")
try:
    sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=11)
except botocore.exceptions.ClientError as err:
    seen["too_many"] = [err.response["Error"]["Code"], err.response["Error"]["Message"]]
try:
    sqs.send_message(QueueUrl=queue, MessageBody="m", MessageAttributes={"k": {"DataType": "String", "StringValue": ""}})
except botocore.exceptions.ClientError as err:
    seen["empty_value"] = err.response["Error"]["Code"]

for key, secret, label in (("LKIAUNKNOWN000000000", "x", "stranger"), (None, "wrong", "forger")):
    other = boto3.client("sqs", endpoint_url=url, region_name="us-east-1",
                         aws_access_key_id=key or os.environ["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}))
    try:
        other.list_queues()
    except botocore.exceptions.ClientError as err:
        seen[label] = err.response["Error"]["Code"]

# A presigned request, as a tool hands one on: its signature is in the query string; the SDK
# signs the operation's own method (POST), which is how it must be sent.
presigned = sqs.generate_presigned_url("get_queue_attributes", Params={
    "QueueUrl": queue, "AttributeNames": ["VisibilityTimeout"]})
with urllib.request.urlopen(urllib.request.Request(presigned, data=b"", method="POST")) as response:
    seen["presigned"] = response.read().decode()

sqs.purge_queue(QueueUrl=queue)
sqs.delete_queue(QueueUrl=queue)
sqs.delete_queue(QueueUrl=dlq)
seen["left"] = sqs.list_queues(QueueNamePrefix=f"legacy-{suffix}").get("QueueUrls", [])
print(json.dumps(seen))
