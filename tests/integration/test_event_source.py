"""KinesisEventSourceMapping against the embedded cloud: delivery, checkpoints, partial failures, DLQ, injected errors."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import KinesisStreamEvent
from botocore.exceptions import ClientError

from rtrec.resources import EVENTS_DLQ, STREAM_CHECKPOINTS
from rtrec_local.event_source import PARTIAL_FAILURE_REASON, KinesisEventSourceMapping

pytestmark = pytest.mark.integration

POLL_S = 0.05


@pytest.fixture
def kinesis(client):
    return client("kinesis")


@pytest.fixture
def stream(kinesis):
    """A fresh 2-shard stream per test: the project's events stream may be shared with other test modules."""
    name = f"itest-esm-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def consumer() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def dlq_url(client, names) -> str:
    return client("sqs").get_queue_url(QueueName=names.queue(EVENTS_DLQ))["QueueUrl"]


def put(kinesis, stream: str, count: int, *, keys: int = 20, start: int = 0) -> list[dict[str, Any]]:
    """Put `count` JSON records {"i": n}; returns what each got: i, partition key, shard, sequence number."""
    out = []
    numbers = list(range(start, start + count))
    for offset in range(0, count, 500):
        chunk = numbers[offset : offset + 500]
        entries = [{"Data": json.dumps({"i": i}).encode(), "PartitionKey": f"user-{i % keys}"} for i in chunk]
        response = kinesis.put_records(StreamName=stream, Records=entries)
        assert response.get("FailedRecordCount", 0) == 0
        for i, entry, result in zip(chunk, entries, response["Records"]):
            out.append({"i": i, "key": entry["PartitionKey"], "shard": result["ShardId"], "seq": result["SequenceNumber"]})
    return out


def mapping(cloud, names, stream: str, consumer: str, handler, **kwargs) -> KinesisEventSourceMapping:
    kwargs.setdefault("dlq_url", None)
    return KinesisEventSourceMapping(
        stream,
        handler,
        checkpoint_table=names.table(STREAM_CHECKPOINTS),
        consumer_name=consumer,
        poll_interval_s=POLL_S,
        endpoint_url=cloud.endpoint_url,
        region=cloud.region,
        **kwargs,
    )


def decode(record: dict[str, Any]) -> int:
    return json.loads(base64.b64decode(record["kinesis"]["data"]))["i"]


def checkpoints(client, names, consumer: str) -> dict[str, str]:
    response = client("dynamodb").query(
        TableName=names.table(STREAM_CHECKPOINTS),
        KeyConditionExpression="#c = :c",
        ExpressionAttributeNames={"#c": "consumer"},
        ExpressionAttributeValues={":c": {"S": consumer}},
        ConsistentRead=True,
    )
    return {item["shard_id"]["S"]: item["sequence_number"]["S"] for item in response["Items"]}


def last_seq_per_shard(put_results: list[dict[str, Any]]) -> dict[str, str]:
    last: dict[str, str] = {}
    for r in put_results:
        if r["shard"] not in last or int(r["seq"]) > int(last[r["shard"]]):
            last[r["shard"]] = r["seq"]
    return last


def dead_letters(client, dlq_url: str, stream: str, *, expected: int) -> list[dict[str, Any]]:
    """This stream's messages from the shared DLQ (deleted once read); others' stay visible (VisibilityTimeout=0)."""
    sqs = client("sqs")
    found: dict[str, dict[str, Any]] = {}
    for _ in range(20):
        response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0)
        for message in response.get("Messages", []):
            body = json.loads(message["Body"])
            if body.get("stream") == stream:
                found[message["MessageId"]] = body
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        if len(found) >= expected and not response.get("Messages"):
            break
    return list(found.values())


class Recorder:
    """A handler that remembers every delivery and the records it processed successfully."""

    def __init__(self) -> None:
        self.deliveries: list[list[dict[str, Any]]] = []
        self.processed: list[tuple[str, str]] = []  # (shard, sequence number)
        self.contexts: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, event: dict, context: Any) -> dict | None:
        with self.lock:
            self.deliveries.append(event["Records"])
            self.contexts.append(context)
            failures = self.handle(event["Records"])
            failed_from = min((int(f["itemIdentifier"]) for f in failures), default=None)
            for record in event["Records"]:
                seq = record["kinesis"]["sequenceNumber"]
                if failed_from is not None and int(seq) >= failed_from:
                    break
                self.processed.append((record["eventID"].split(":")[0], seq))
        return {"batchItemFailures": failures}

    def handle(self, records: list[dict[str, Any]]) -> list[dict[str, str]]:
        return []

    def delivered_count(self) -> Counter:
        return Counter(r["kinesis"]["sequenceNumber"] + "@" + r["eventID"].split(":")[0] for d in self.deliveries for r in d)


def test_every_record_is_delivered_once_in_order_with_the_aws_event_shape(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 500)
    assert len({r["shard"] for r in put_results}) == 2, "the records should spread over both shards"
    recorder = Recorder()
    esm = mapping(cloud, names, stream, consumer, recorder, batch_size=100)

    assert esm.run_until_idle(timeout_s=20)

    arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    records = [r for delivery in recorder.deliveries for r in delivery]
    assert sorted(decode(r) for r in records) == list(range(500))  # each once, none missing
    by_i = {p["i"]: p for p in put_results}
    for record in records:
        expected = by_i[decode(record)]
        kinesis_part = record["kinesis"]
        assert set(record) == {
            "kinesis",
            "eventSource",
            "eventVersion",
            "eventID",
            "eventName",
            "invokeIdentityArn",
            "awsRegion",
            "eventSourceARN",
        }
        assert set(kinesis_part) == {
            "kinesisSchemaVersion",
            "partitionKey",
            "sequenceNumber",
            "data",
            "approximateArrivalTimestamp",
        }
        assert kinesis_part["sequenceNumber"] == expected["seq"]
        assert kinesis_part["partitionKey"] == expected["key"]
        assert record["eventID"] == f"{expected['shard']}:{expected['seq']}"
        assert record["eventSourceARN"] == arn
        assert record["awsRegion"] == cloud.region
        assert record["eventSource"] == "aws:kinesis"
        assert record["eventName"] == "aws:kinesis:record"
        assert isinstance(kinesis_part["approximateArrivalTimestamp"], float)
        assert abs(kinesis_part["approximateArrivalTimestamp"] - time.time()) < 300
    # Powertools' data class reads the same event the consumer will get in AWS.
    parsed = KinesisStreamEvent({"Records": recorder.deliveries[0]})
    first = next(iter(parsed.records))
    assert first.kinesis.data_as_json() == {"i": decode(recorder.deliveries[0][0])}
    assert first.event_source_arn == arn
    # In order per shard and therefore per partition key; each batch holds one shard's records.
    per_shard: dict[str, list[int]] = defaultdict(list)
    per_key: dict[str, list[int]] = defaultdict(list)
    for delivery in recorder.deliveries:
        assert 0 < len(delivery) <= 100
        assert len({r["eventID"].split(":")[0] for r in delivery}) == 1
        for record in delivery:
            per_shard[record["eventID"].split(":")[0]].append(int(record["kinesis"]["sequenceNumber"]))
            per_key[record["kinesis"]["partitionKey"]].append(decode(record))
    assert all(seqs == sorted(seqs) for seqs in per_shard.values())
    assert all(values == sorted(values) for values in per_key.values())
    context = recorder.contexts[0]
    assert context.function_name == consumer
    assert context.get_remaining_time_in_millis() > 0
    assert context.invoked_function_arn.endswith(f":function:{consumer}")
    assert uuid.UUID(context.aws_request_id)
    assert len({c.aws_request_id for c in recorder.contexts}) == len(recorder.contexts)
    assert checkpoints(client, names, consumer) == last_seq_per_shard(put_results)
    stats = esm.stats()
    assert stats["records_delivered"] == stats["records_processed"] == 500
    assert stats["batches"] == len(recorder.deliveries)
    assert stats["failed_deliveries"] == 0
    assert {s: v["checkpoint"] for s, v in stats["shards"].items()} == last_seq_per_shard(put_results)


def test_a_new_mapping_resumes_from_the_checkpoint(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 300)
    enough = threading.Event()

    class Slow(Recorder):
        def handle(self, records):
            time.sleep(0.01)
            if len(self.processed) + len(records) >= 80:
                enough.set()
            return []

    first = Slow()
    esm = mapping(cloud, names, stream, consumer, first, batch_size=10)
    esm.start()
    assert enough.wait(20)
    assert esm.stop(timeout_s=10)
    stopped_at = len(first.processed)
    assert 80 <= stopped_at < 300, stopped_at
    assert checkpoints(client, names, consumer) == {s: v["checkpoint"] for s, v in esm.stats()["shards"].items()}

    put_results += put(kinesis, stream, 100, start=300)
    second = Recorder()
    resumed = mapping(cloud, names, stream, consumer, second, batch_size=50)
    assert resumed.run_until_idle(timeout_s=20)

    both = first.processed + second.processed
    assert len(both) == len(set(both)) == 400  # none twice, none lost
    assert set(both) == {(r["shard"], r["seq"]) for r in put_results}
    assert len(second.processed) == 400 - stopped_at
    assert checkpoints(client, names, consumer) == last_seq_per_shard(put_results)


def test_partial_batch_failure_redelivers_from_the_lowest_reported_record(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 50, keys=1)  # one partition key: one shard, one batch
    seqs = [r["seq"] for r in put_results]
    target = seqs[20]

    class FailOnce(Recorder):
        def handle(self, records):
            if len(self.deliveries) == 1:  # the lowest of the reported records counts, whatever their order
                return [{"itemIdentifier": seqs[30]}, {"itemIdentifier": target}, {"itemIdentifier": seqs[45]}]
            return []

    recorder = FailOnce()
    esm = mapping(cloud, names, stream, consumer, recorder, batch_size=100)
    assert esm.run_until_idle(timeout_s=20)

    delivered = [[r["kinesis"]["sequenceNumber"] for r in d] for d in recorder.deliveries]
    assert delivered == [seqs, seqs[20:]]
    assert [seq for _, seq in recorder.processed] == seqs  # each processed once, in order
    stats = esm.stats()
    assert stats["failed_deliveries"] == 1
    assert stats["records_to_dlq"] == 0
    assert stats["records_delivered"] == 80
    assert stats["records_processed"] == 50
    assert checkpoints(client, names, consumer) == {put_results[0]["shard"]: seqs[-1]}


@pytest.mark.parametrize("mode", ["report", "raise"])
def test_a_poison_record_goes_to_the_dlq_and_the_shard_moves_on(cloud, names, client, kinesis, stream, consumer, dlq_url, mode):
    put_results = put(kinesis, stream, 30, keys=1)
    poison = put_results[10]

    class Poisoned(Recorder):
        def handle(self, records):
            for record in records:
                if decode(record) == 10:
                    if mode == "raise":
                        raise ValueError("cannot parse event 10")
                    return [{"itemIdentifier": record["kinesis"]["sequenceNumber"]}]
            return []

    recorder = Poisoned()
    # A raising handler fails its whole batch: bisection isolates the record (the reported one is retried once
    # as it is, then split the same way until it is alone).
    esm = mapping(cloud, names, stream, consumer, recorder, batch_size=100, max_attempts=3, dlq_url=dlq_url)
    assert esm.run_until_idle(timeout_s=20)

    letters = dead_letters(client, dlq_url, stream, expected=1)
    assert len(letters) == 1
    letter = letters[0]
    assert letter["sequence_number"] == poison["seq"]
    assert letter["shard_id"] == poison["shard"]
    assert letter["attempts"] == 3
    assert letter["consumer"] == consumer
    assert letter["stream"] == stream
    assert letter["reason"] == (PARTIAL_FAILURE_REASON if mode == "report" else "ValueError: cannot parse event 10")
    assert decode(letter["record"]) == 10
    assert letter["record"]["eventID"] == f"{poison['shard']}:{poison['seq']}"
    with_poison = [d for d in recorder.deliveries if any(decode(r) == 10 for r in d)]
    assert [len(d) for d in with_poison[-3:]] == [1, 1, 1]  # dead-lettered after 3 deliveries of it alone
    assert sum(len(d) == 1 for d in with_poison) == 3
    assert len(with_poison) <= 3 + 2 + 5
    expected = [(r["shard"], r["seq"]) for r in put_results if r["i"] != 10]
    assert recorder.processed == expected  # the rest once each, in order
    stats = esm.stats()
    assert stats["records_to_dlq"] == 1
    assert stats["failed_deliveries"] == len(with_poison)
    assert stats["bisections"] >= 1
    assert checkpoints(client, names, consumer) == {poison["shard"]: put_results[-1]["seq"]}


def test_a_raising_handler_gets_the_batch_again(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 60)

    class Flaky(Recorder):
        def handle(self, records):
            if len(self.deliveries) <= 2:
                raise ConnectionError("downstream unavailable")
            return []

    recorder = Flaky()
    esm = mapping(cloud, names, stream, consumer, recorder, batch_size=100, max_attempts=3)
    assert esm.run_until_idle(timeout_s=20)

    assert sorted(recorder.processed) == sorted((r["shard"], r["seq"]) for r in put_results)
    assert len(recorder.processed) == len(set(recorder.processed))
    # the first delivery failed as a whole and came back whole
    first = [r["eventID"] for r in recorder.deliveries[0]]
    assert first in ([r["eventID"] for r in d] for d in recorder.deliveries[1:])
    stats = esm.stats()
    assert stats["handler_errors"] == 2
    assert stats["failed_deliveries"] == 2
    assert stats["records_to_dlq"] == 0
    assert checkpoints(client, names, consumer) == last_seq_per_shard(put_results)


class Flaky:
    """Wraps a boto3 client; the named operation raises a throttling ClientError its first `failures` calls."""

    def __init__(self, inner: Any, operation: str, failures: int, code: str) -> None:
        self.inner, self.operation, self.left, self.code = inner, operation, failures, code
        self.raised = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name != self.operation:
            return attribute

        def call(**kwargs: Any) -> Any:
            if self.left > 0:
                self.left -= 1
                self.raised += 1
                raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, self.operation)
            return attribute(**kwargs)

        return call


def test_transient_sdk_errors_are_retried_without_losing_records(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 120)
    flaky_kinesis = Flaky(kinesis, "get_records", 2, "ProvisionedThroughputExceededException")
    flaky_dynamodb = Flaky(client("dynamodb"), "put_item", 2, "InternalServerError")
    recorder = Recorder()
    esm = mapping(
        cloud, names, stream, consumer, recorder, batch_size=25, kinesis_client=flaky_kinesis, dynamodb_client=flaky_dynamodb
    )
    assert esm.run_until_idle(timeout_s=20)

    assert flaky_kinesis.raised == 2
    assert flaky_dynamodb.raised == 2
    assert len(recorder.processed) == len(set(recorder.processed)) == 120
    assert set(recorder.processed) == {(r["shard"], r["seq"]) for r in put_results}
    assert sum(recorder.delivered_count().values()) == 120  # a failed checkpoint write re-delivers nothing
    assert esm.stats()["transient_errors"] == 4
    assert checkpoints(client, names, consumer) == last_seq_per_shard(put_results)


def test_background_thread_picks_up_new_records_and_reports_progress(cloud, names, client, kinesis, stream, consumer):
    recorder = Recorder()
    lines: list[str] = []
    esm = mapping(cloud, names, stream, consumer, recorder, on_progress=lines.append, progress_interval_s=0.2)
    with esm:
        assert esm.run_until_idle(timeout_s=10)
        put_results = put(kinesis, stream, 40)
        assert esm.run_until_idle(timeout_s=10)
        time.sleep(0.3)
        put(kinesis, stream, 1, start=40)
        assert esm.run_until_idle(timeout_s=10)
    assert not esm.running
    assert len(recorder.processed) == 41
    assert len(put_results) == 40
    assert lines
    assert "records/s" in lines[0]


def test_a_checkpoint_outage_holds_the_shard_after_the_batch_in_flight(cloud, names, client, kinesis, stream, consumer):
    put_results = put(kinesis, stream, 100)
    down = Flaky(client("dynamodb"), "put_item", 10**9, "ServiceUnavailable")
    recorder = Recorder()
    esm = mapping(cloud, names, stream, consumer, recorder, batch_size=10, dynamodb_client=down)

    assert not esm.run_until_idle(timeout_s=1.0)
    # one batch per shard, then nothing more until its checkpoint is stored: a crash now re-delivers one batch at most
    assert len(recorder.deliveries) == 2
    assert down.raised >= 2
    assert checkpoints(client, names, consumer) == {}

    down.left = 0  # the table is back
    assert esm.run_until_idle(timeout_s=20)
    assert sorted(recorder.processed) == sorted((r["shard"], r["seq"]) for r in put_results)
    assert sum(recorder.delivered_count().values()) == 100
    assert checkpoints(client, names, consumer) == last_seq_per_shard(put_results)


def test_latest_skips_older_records_and_a_throttled_read_keeps_its_position(cloud, names, client, kinesis, stream, consumer):
    put(kinesis, stream, 30)  # before the mapping exists: LATEST never sees these
    flaky_kinesis = Flaky(kinesis, "get_records", 0, "ProvisionedThroughputExceededException")
    recorder = Recorder()
    esm = mapping(cloud, names, stream, consumer, recorder, starting_position="LATEST", kinesis_client=flaky_kinesis)
    assert esm.run_until_idle(timeout_s=10)  # iterators at the tip of both shards, nothing delivered
    assert recorder.deliveries == []

    fresh = put(kinesis, stream, 20, start=30)
    flaky_kinesis.left = 2  # a new LATEST iterator after these errors would skip the 20 new records
    assert esm.run_until_idle(timeout_s=10)
    assert flaky_kinesis.raised == 2
    assert sorted(recorder.processed) == sorted((r["shard"], r["seq"]) for r in fresh)
