"""SqsDeadLetterQueue with fakes of SQS and S3: dead letters of any size, short reasons, SDK failures as
DependencyError, and by-reference letters read back and deleted in a safe order."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rtrec.adapters.aws.sqs import MAX_INLINE_BYTES, SqsDeadLetterQueue, is_reference
from rtrec.errors import MAX_REASON_CHARS, DependencyError, short_reason
from rtrec.resources import ResourceNames

SQS_LIMIT = 256 * 1024


class FakeSqs:
    """SQS's size limit as moto and AWS apply it; optional injected failures."""

    def __init__(self, failures: int = 0) -> None:
        self.queue: list[tuple[str, str]] = []  # (receipt handle, body)
        self.failures = failures
        self.calls: list[str] = []

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self.calls.append("send")
        if self.failures:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "SendMessage")
        if len(MessageBody.encode()) > SQS_LIMIT:
            raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "too long"}}, "SendMessage")
        self.queue.append((f"h{len(self.queue)}", MessageBody))
        return {"MessageId": str(len(self.queue))}

    def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int, **_: Any) -> dict:
        return {"Messages": [{"Body": b, "ReceiptHandle": h} for h, b in self.queue[:MaxNumberOfMessages]]}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> dict:
        self.calls.append("delete_message")
        self.queue = [(h, b) for h, b in self.queue if h != ReceiptHandle]
        return {}


class FakeS3:
    def __init__(self, failures: int = 0) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.failures = failures
        self.calls: list[str] = []

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str = "") -> dict:
        if self.failures:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")
        self.objects[(Bucket, Key)] = Body
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict:
        class Body:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def read(self) -> bytes:
                return self.data

        return {"Body": Body(self.objects[(Bucket, Key)])}

    def delete_object(self, Bucket: str, Key: str) -> dict:
        self.calls.append("delete_object")
        self.objects.pop((Bucket, Key), None)
        return {}


def record(size: int, seq: str = "49590338271490256608559692538361571095921575989136588898") -> dict[str, Any]:
    data = base64.b64encode(b"x" * size).decode()
    return {
        "kinesis": {"partitionKey": "u1", "sequenceNumber": seq, "data": data},
        "eventID": f"shardId-000000000000:{seq}",
        "eventSource": "aws:kinesis",
    }


def make(sqs: FakeSqs | None = None, s3: FakeS3 | None = None, bucket: str | None = "rtrec-dead-letters"):
    sqs, s3 = sqs or FakeSqs(), s3 or FakeS3()
    return (
        SqsDeadLetterQueue(client=sqs, queue_url="https://sqs.local/123/rtrec-events-dlq", bucket=bucket, s3_client=s3),
        sqs,
        s3,
    )


def test_a_small_letter_goes_whole_to_sqs():
    dlq, sqs, s3 = make()
    dlq.send({"reason": "malformed record: bad json", "source": "stream_consumer", "record": record(100)})
    body = json.loads(sqs.queue[0][1])
    assert not is_reference(body)
    assert body["record"]["kinesis"]["data"]
    assert s3.objects == {}
    assert dlq.queue_name == "rtrec-events-dlq"


@pytest.mark.parametrize("size", [300_000, 900_000, 1_000_000])
def test_an_oversized_letter_goes_by_reference_and_reads_back_whole(size):
    dlq, sqs, s3 = make()
    letter = {
        "reason": "malformed record: " + "y" * 100_000,
        "source": "stream_consumer",
        "event_id": f"shardId-000000000000:{size}",
        "record": record(size),
    }
    dlq.send(letter)

    body = json.loads(sqs.queue[0][1])
    assert len(sqs.queue[0][1].encode()) < 4096  # the reference only
    assert is_reference(body)
    assert body["s3_bucket"] == "rtrec-dead-letters"
    assert body["size"] > size
    assert body["source"] == "stream_consumer"
    assert body["event_id"] == letter["event_id"]
    assert len(body["reason"]) <= MAX_REASON_CHARS
    assert "record" not in body
    source, date, name = body["s3_key"].split("/")
    assert source == "stream_consumer"
    assert len(date) == 10
    assert name.startswith("shardId-000000000000-")
    assert name.endswith(".json")
    stored = json.loads(s3.objects[("rtrec-dead-letters", body["s3_key"])])
    assert stored["record"] == letter["record"]
    assert len(stored["reason"]) <= MAX_REASON_CHARS

    [(shown, handle)] = dlq.receive_with_handles()
    assert shown == body  # exposed as sent
    whole = dlq.resolve(shown)
    assert whole["record"] == letter["record"]
    assert whole["s3_key"] == body["s3_key"]
    assert dlq.receive()[0]["record"] == letter["record"]  # receive resolves
    dlq.delete(handle, shown)
    assert sqs.queue == []
    assert s3.objects == {}
    assert sqs.calls[-1] == "delete_message"
    assert s3.calls == ["delete_object"]


def test_the_threshold_is_on_the_utf8_json_size():
    dlq, sqs, _ = make()
    dlq.send({"reason": "r", "source": "s", "record": {"data": "é" * (MAX_INLINE_BYTES // 2 + 10)}})
    assert is_reference(json.loads(sqs.queue[0][1]))  # fewer characters than the limit, more bytes


def test_reasons_are_short_and_on_one_line():
    assert short_reason("a\n  b") == "a b"
    assert len(short_reason("z" * 10_000)) == MAX_REASON_CHARS
    assert short_reason("z" * 10_000).endswith("...")
    dlq, sqs, _ = make()
    dlq.send({"reason": "could not be applied: " + "q" * 1000, "record": record(10)})
    assert len(json.loads(sqs.queue[0][1])["reason"]) == MAX_REASON_CHARS


@pytest.mark.parametrize("fails", ["s3", "sqs"])
def test_a_failed_write_of_either_is_a_dependency_error(fails):
    dlq, sqs, s3 = make(FakeSqs(failures=1 if fails == "sqs" else 0), FakeS3(failures=1 if fails == "s3" else 0))
    with pytest.raises(DependencyError):
        dlq.send({"reason": "r", "source": "s", "record": record(400_000)})
    assert sqs.queue == []
    dlq.send({"reason": "r", "source": "s", "record": record(400_000)})  # retried: it goes through
    assert len(sqs.queue) == 1
    assert len(s3.objects) == 1 + (fails == "sqs")


def test_without_a_bucket_an_oversized_letter_is_refused_as_a_dependency_error():
    dlq, sqs, _ = make(bucket=None)
    with pytest.raises(DependencyError, match="no dead-letter bucket"):
        dlq.send({"reason": "r", "record": record(400_000)})
    assert sqs.queue == []


def test_for_names_uses_the_deployments_dead_letter_bucket():
    dlq = SqsDeadLetterQueue.for_names(
        ResourceNames(prefix="p", bucket_suffix="123-eu-west-1"), client=FakeSqs(), s3_client=FakeS3()
    )
    assert dlq.queue_name == "p-events-dlq"
    assert dlq.bucket == "p-dead-letters-123-eu-west-1"
