"""moto's SQS backend pickled to disk and back (rtrec_local.moto_persistent), without a server."""

from __future__ import annotations

import io

import boto3
from moto import mock_aws

from rtrec_local.moto_persistent import READ_ONLY_SQS_ACTIONS, SqsState, _sqs_action


def test_queues_and_messages_come_back_from_the_saved_state(tmp_path):
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        url = sqs.create_queue(QueueName="dlq", Attributes={"MessageRetentionPeriod": "1209600"})["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="one")
        sqs.send_message(QueueUrl=url, MessageBody="two")
        SqsState(tmp_path).save()
    assert (tmp_path / "sqs.pickle").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    with mock_aws():  # a fresh moto: nothing until the state is loaded
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        assert not sqs.list_queues().get("QueueUrls")
        assert SqsState(tmp_path).load() == 1
        url = sqs.get_queue_url(QueueName="dlq")["QueueUrl"]
        bodies = sorted(m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"])
        assert bodies == ["one", "two"]
        sqs.send_message(QueueUrl=url, MessageBody="three")  # the restored queue's lock works


def test_a_damaged_state_file_is_moved_aside_and_the_server_starts_empty(tmp_path):
    (tmp_path / "sqs.pickle").write_bytes(b"not a pickle")
    with mock_aws():
        assert SqsState(tmp_path).load() == 0
    assert not (tmp_path / "sqs.pickle").exists()
    assert list(tmp_path.glob("sqs.pickle.broken-*"))


def test_only_sqs_requests_are_recognised_and_reads_need_no_save():
    json_request = {"HTTP_X_AMZ_TARGET": "AmazonSQS.SendMessage", "wsgi.input": io.BytesIO()}
    assert _sqs_action(json_request, b"") == "SendMessage"
    query = {"HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=test/20261204/us-east-1/sqs/aws4_request, ..."}
    assert _sqs_action(query, b"Action=DeleteMessage&QueueUrl=x") == "DeleteMessage"
    dynamodb = {
        "HTTP_X_AMZ_TARGET": "DynamoDB_20120810.GetItem",
        "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=test/20261204/us-east-1/dynamodb/aws4_request",
    }
    assert _sqs_action(dynamodb, b"{}") is None
    assert "ListQueues" in READ_ONLY_SQS_ACTIONS
    assert "ReceiveMessage" not in READ_ONLY_SQS_ACTIONS
