"""KinesisEventSourceMapping against in-memory fakes: resharding, response edge cases, no-DLQ retries, robustness.

The fakes behave like real Kinesis where moto differs: sequence numbers are large and not consecutive, and a
drained closed shard answers with a null NextShardIterator.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rtrec.local.event_source import KinesisEventSourceMapping

ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/fake"


def seq_of(shard_no: int, n: int) -> str:
    return str(49_590_338_271_490_256_608_559_692_538_361_571_095_921_575_989_136_588_898 + shard_no * 10**12 + n * 37)


class FakeKinesis:
    def __init__(self) -> None:
        self.shards: dict[str, dict[str, Any]] = {}
        self.get_records_calls = 0
        self.lock = threading.Lock()

    def add_shard(self, shard_id: str, *, parents: tuple[str, ...] = (), closed: bool = False) -> None:
        self.shards[shard_id] = {"parents": parents, "closed": closed, "records": []}

    def put(self, shard_id: str, i: int, key: str = "k") -> str:
        records = self.shards[shard_id]["records"]
        seq = seq_of(int(shard_id.rsplit("-", 1)[1]), len(records))
        records.append({"SequenceNumber": seq, "PartitionKey": key, "Data": json.dumps({"i": i}).encode(),
                        "ApproximateArrivalTimestamp": 1_700_000_000.5})
        return seq

    def describe_stream_summary(self, StreamName: str) -> dict[str, Any]:
        return {"StreamDescriptionSummary": {"StreamARN": ARN}}

    def list_shards(self, **kwargs: Any) -> dict[str, Any]:
        shards = []
        for shard_id, shard in sorted(self.shards.items()):
            raw: dict[str, Any] = {"ShardId": shard_id, "SequenceNumberRange": {"StartingSequenceNumber": "0"}}
            if shard["parents"]:
                raw["ParentShardId"] = shard["parents"][0]
            if len(shard["parents"]) > 1:
                raw["AdjacentParentShardId"] = shard["parents"][1]
            if shard["closed"]:
                raw["SequenceNumberRange"]["EndingSequenceNumber"] = seq_of(99, 0)
            shards.append(raw)
        return {"Shards": shards}

    def get_shard_iterator(self, StreamName: str, ShardId: str, ShardIteratorType: str,
                           StartingSequenceNumber: str | None = None) -> dict[str, str]:
        records = self.shards[ShardId]["records"]
        seqs = [int(r["SequenceNumber"]) for r in records]
        if ShardIteratorType == "TRIM_HORIZON":
            index = 0
        elif ShardIteratorType == "LATEST":
            index = len(records)
        elif ShardIteratorType == "AT_SEQUENCE_NUMBER":
            index = seqs.index(int(StartingSequenceNumber))
        else:
            index = seqs.index(int(StartingSequenceNumber)) + 1
        return {"ShardIterator": f"{ShardId}|{index}"}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        with self.lock:
            self.get_records_calls += 1
        shard_id, index = ShardIterator.split("|")
        shard = self.shards[shard_id]
        batch = shard["records"][int(index) : int(index) + Limit]
        end = int(index) + len(batch)
        at_end = end >= len(shard["records"])
        return {
            "Records": [dict(r) for r in batch],
            "NextShardIterator": None if shard["closed"] and at_end else f"{shard_id}|{end}",
            "MillisBehindLatest": 0 if at_end else 1000,
        }


class FakeDynamo:
    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def get_item(self, TableName: str, Key: dict[str, Any], ConsistentRead: bool = False) -> dict[str, Any]:
        item = self.items.get((Key["consumer"]["S"], Key["shard_id"]["S"]))
        return {"Item": item} if item else {}

    def put_item(self, TableName: str, Item: dict[str, Any]) -> dict[str, Any]:
        self.items[(Item["consumer"]["S"], Item["shard_id"]["S"])] = Item
        return {}

    def checkpoint(self, shard_id: str, consumer: str = "c") -> str | None:
        item = self.items.get((consumer, shard_id))
        return item["sequence_number"]["S"] if item else None


class FakeSqs:
    def __init__(self, failures: int = 0) -> None:
        self.messages: list[dict[str, Any]] = []
        self.failures = failures

    def send_message(self, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "injected"}}, "SendMessage")
        self.messages.append(json.loads(MessageBody))
        return {"MessageId": str(len(self.messages))}


def decode(record: dict[str, Any]) -> int:
    return json.loads(base64.b64decode(record["kinesis"]["data"]))["i"]


def make(kinesis: FakeKinesis, handler, *, dynamo: FakeDynamo | None = None, sqs: FakeSqs | None = None,
         **kwargs: Any) -> KinesisEventSourceMapping:
    kwargs.setdefault("dlq_url", "https://sqs.local/dlq" if sqs is not None else None)
    return KinesisEventSourceMapping(
        "fake", handler, checkpoint_table="checkpoints", consumer_name="c", poll_interval_s=0.01,
        kinesis_client=kinesis, dynamodb_client=dynamo or FakeDynamo(), sqs_client=sqs, **kwargs,
    )


def collector() -> tuple[list[int], Any]:
    seen: list[int] = []

    def handler(event: dict, context: Any) -> None:
        seen.extend(decode(r) for r in event["Records"])

    return seen, handler


def test_children_are_read_only_after_their_parent_is_drained_and_new_shards_are_picked_up():
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000", closed=True)
    kinesis.add_shard("shardId-000000000001", parents=("shardId-000000000000",))
    kinesis.add_shard("shardId-000000000002", parents=("shardId-000000000000",))
    for i in range(10):
        kinesis.put("shardId-000000000000", i)
    for i in range(10, 15):
        kinesis.put("shardId-000000000001", i)
    for i in range(15, 20):
        kinesis.put("shardId-000000000002", i)
    seen, handler = collector()
    esm = make(kinesis, handler, batch_size=3, shard_refresh_s=0.0)

    assert esm.run_until_idle(timeout_s=5)
    assert seen[:10] == list(range(10)) and sorted(seen) == list(range(20))
    assert esm.stats()["shards"]["shardId-000000000000"]["state"] == "finished"

    # a merge after the split: the new shard waits for both open parents to close and drain
    kinesis.add_shard("shardId-000000000003", parents=("shardId-000000000001", "shardId-000000000002"))
    kinesis.put("shardId-000000000003", 99)
    assert esm.run_until_idle(timeout_s=5)
    assert 99 not in seen and esm.stats()["shards"]["shardId-000000000003"]["state"] == "waiting_for_parent"
    kinesis.shards["shardId-000000000001"]["closed"] = True
    kinesis.shards["shardId-000000000002"]["closed"] = True
    assert esm.run_until_idle(timeout_s=5)
    assert seen[-1] == 99 and sorted(seen) == [*range(20), 99]


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}])
def test_empty_responses_mean_complete_success(response):
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    last = [kinesis.put("shardId-000000000000", i) for i in range(5)][-1]
    calls = []
    dynamo = FakeDynamo()
    esm = make(kinesis, lambda event, context: calls.append(event) or response, dynamo=dynamo)
    assert esm.run_until_idle(timeout_s=5)
    assert len(calls) == 1 and dynamo.checkpoint("shardId-000000000000") == last
    record = calls[0]["Records"][0]
    assert record["eventSourceARN"] == ARN and record["kinesis"]["approximateArrivalTimestamp"] == 1_700_000_000.5


@pytest.mark.parametrize("bad", [{"itemIdentifier": ""}, {"itemIdentifier": None}, {"itemIdentifier": "12"},
                                 {"identifier": "x"}])
def test_an_invalid_item_identifier_fails_the_whole_batch(bad):
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    for i in range(5):
        kinesis.put("shardId-000000000000", i)
    deliveries: list[list[int]] = []

    def handler(event: dict, context: Any) -> dict:
        deliveries.append([decode(r) for r in event["Records"]])
        return {"batchItemFailures": [bad] if len(deliveries) == 1 else []}

    esm = make(kinesis, handler)
    assert esm.run_until_idle(timeout_s=5)
    assert deliveries == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def test_without_a_dlq_a_poison_record_is_retried_and_never_skipped():
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    seqs = [kinesis.put("shardId-000000000000", i) for i in range(6)]
    dynamo = FakeDynamo()

    def handler(event: dict, context: Any) -> dict:
        bad = [r for r in event["Records"] if decode(r) == 3]
        return {"batchItemFailures": [{"itemIdentifier": bad[0]["kinesis"]["sequenceNumber"]}] if bad else []}

    esm = make(kinesis, handler, dynamo=dynamo, max_attempts=2)
    assert not esm.run_until_idle(timeout_s=0.5)
    stats = esm.stats()
    assert stats["failed_deliveries"] > 2 and stats["records_to_dlq"] == 0
    assert dynamo.checkpoint("shardId-000000000000") == seqs[2]


def test_a_failed_dlq_send_is_retried_before_the_shard_moves_past_the_record():
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    seqs = [kinesis.put("shardId-000000000000", i) for i in range(4)]
    dynamo, sqs = FakeDynamo(), FakeSqs(failures=2)

    def handler(event: dict, context: Any) -> None:
        if decode(event["Records"][0]) == 0:
            raise RuntimeError("boom")

    esm = make(kinesis, handler, dynamo=dynamo, sqs=sqs, batch_size=1, max_attempts=1)
    assert esm.run_until_idle(timeout_s=5)
    assert [m["sequence_number"] for m in sqs.messages] == [seqs[0]]
    assert sqs.messages[0]["reason"] == "RuntimeError: boom" and sqs.messages[0]["attempts"] == 1
    assert dynamo.checkpoint("shardId-000000000000") == seqs[-1]
    assert esm.stats()["transient_errors"] == 2 and esm.stats()["records_processed"] == 3


def test_a_bug_in_a_poll_does_not_kill_the_thread_and_stop_is_graceful():
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    for i in range(50):
        kinesis.put("shardId-000000000000", i)
    real_get_records = kinesis.get_records
    broken = {"left": 1}

    def get_records(**kwargs: Any) -> dict[str, Any]:
        if broken["left"]:
            broken["left"] -= 1
            return {"NoRecordsKey": True, "Records": [{"garbage": 1}]}
        return real_get_records(**kwargs)

    kinesis.get_records = get_records  # type: ignore[method-assign]
    seen: list[int] = []
    in_flight = threading.Event()

    def handler(event: dict, context: Any) -> None:
        in_flight.set()
        time.sleep(0.05)
        seen.extend(decode(r) for r in event["Records"])

    dynamo = FakeDynamo()
    esm = make(kinesis, handler, dynamo=dynamo, batch_size=5)
    esm.start()
    assert in_flight.wait(5)
    assert esm.stop(timeout_s=5) and not esm.running
    assert seen and seen == list(range(len(seen)))  # the batch in flight finished and was checkpointed
    assert dynamo.checkpoint("shardId-000000000000") == kinesis.shards["shardId-000000000000"]["records"][len(seen) - 1][
        "SequenceNumber"]
    esm.start()
    assert esm.run_until_idle(timeout_s=5)
    esm.stop()
    assert seen == list(range(50))


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError):
        make(FakeKinesis(), lambda e, c: None, batch_size=0)
    with pytest.raises(ValueError):
        make(FakeKinesis(), lambda e, c: None, max_attempts=0)
    with pytest.raises(ValueError):
        make(FakeKinesis(), lambda e, c: None, starting_position="AT_TIMESTAMP")


def test_a_stop_that_times_out_never_leaves_two_pollers():
    import threading as _threading
    import time as _time

    from rtrec.local.event_source import KinesisEventSourceMapping

    class SlowKinesis:
        def describe_stream_summary(self, **_kwargs):
            return {"StreamDescriptionSummary": {"StreamARN": "arn:aws:kinesis:us-east-1:1:stream/s"}}

        def list_shards(self, **_kwargs):
            _time.sleep(0.5)  # a slow round, so stop(0.05) times out
            return {"Shards": []}

    class NoTable:
        def get_item(self, **_kwargs):
            return {}

    mapping = KinesisEventSourceMapping("s", lambda _event, _context: None, checkpoint_table="t", dlq_url=None,
                                        kinesis_client=SlowKinesis(), dynamodb_client=NoTable(), poll_interval_s=0.01)
    mapping.start()
    _time.sleep(0.1)
    assert mapping.stop(timeout_s=0.05) is False
    mapping.start()
    pollers = [t for t in _threading.enumerate() if t.name.startswith("esm-") and t.is_alive()]
    assert len(pollers) == 1
    assert mapping.stop(timeout_s=5)
