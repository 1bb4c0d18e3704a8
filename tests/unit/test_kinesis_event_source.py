"""KinesisEventSourceMapping against in-memory fakes: resharding, response edge cases, no-DLQ retries, robustness.

The fakes behave like real Kinesis where moto differs: sequence numbers are large and not consecutive, and a
drained closed shard answers with a null NextShardIterator.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from rtrec_local.event_source import KinesisEventSourceMapping

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
        records.append(
            {
                "SequenceNumber": seq,
                "PartitionKey": key,
                "Data": json.dumps({"i": i}).encode(),
                "ApproximateArrivalTimestamp": 1_700_000_000.5,
            }
        )
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

    def get_shard_iterator(
        self, StreamName: str, ShardId: str, ShardIteratorType: str, StartingSequenceNumber: str | None = None
    ) -> dict[str, str]:
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


def make(
    kinesis: FakeKinesis, handler, *, dynamo: FakeDynamo | None = None, sqs: FakeSqs | None = None, **kwargs: Any
) -> KinesisEventSourceMapping:
    kwargs.setdefault("dlq_url", "https://sqs.local/dlq" if sqs is not None else None)
    return KinesisEventSourceMapping(
        "fake",
        handler,
        checkpoint_table="checkpoints",
        consumer_name="c",
        poll_interval_s=0.01,
        kinesis_client=kinesis,
        dynamodb_client=dynamo or FakeDynamo(),
        sqs_client=sqs,
        **kwargs,
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
    assert seen[:10] == list(range(10))
    assert sorted(seen) == list(range(20))
    assert esm.stats()["shards"]["shardId-000000000000"]["state"] == "finished"

    # a merge after the split: the new shard waits for both open parents to close and drain
    kinesis.add_shard("shardId-000000000003", parents=("shardId-000000000001", "shardId-000000000002"))
    kinesis.put("shardId-000000000003", 99)
    assert esm.run_until_idle(timeout_s=5)
    assert 99 not in seen
    assert esm.stats()["shards"]["shardId-000000000003"]["state"] == "waiting_for_parent"
    kinesis.shards["shardId-000000000001"]["closed"] = True
    kinesis.shards["shardId-000000000002"]["closed"] = True
    assert esm.run_until_idle(timeout_s=5)
    assert seen[-1] == 99
    assert sorted(seen) == [*range(20), 99]


@pytest.mark.parametrize("response", [None, {}, {"batchItemFailures": []}, {"batchItemFailures": None}])
def test_empty_responses_mean_complete_success(response):
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    last = [kinesis.put("shardId-000000000000", i) for i in range(5)][-1]
    calls = []
    dynamo = FakeDynamo()
    esm = make(kinesis, lambda event, context: calls.append(event) or response, dynamo=dynamo)
    assert esm.run_until_idle(timeout_s=5)
    assert len(calls) == 1
    assert dynamo.checkpoint("shardId-000000000000") == last
    record = calls[0]["Records"][0]
    assert record["eventSourceARN"] == ARN
    assert record["kinesis"]["approximateArrivalTimestamp"] == 1_700_000_000.5


@pytest.mark.parametrize(
    "bad", [{"itemIdentifier": ""}, {"itemIdentifier": None}, {"itemIdentifier": "12"}, {"identifier": "x"}]
)
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
    assert stats["failed_deliveries"] > 2
    assert stats["records_to_dlq"] == 0
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
    assert sqs.messages[0]["reason"] == "RuntimeError: boom"
    assert sqs.messages[0]["attempts"] == 1
    assert dynamo.checkpoint("shardId-000000000000") == seqs[-1]
    assert esm.stats()["transient_errors"] == 2
    assert esm.stats()["records_processed"] == 3


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
    assert esm.stop(timeout_s=5)
    assert not esm.running
    assert seen
    assert seen == list(range(len(seen)))
    assert (
        dynamo.checkpoint("shardId-000000000000")
        == kinesis.shards["shardId-000000000000"]["records"][len(seen) - 1]["SequenceNumber"]
    )
    esm.start()
    assert esm.run_until_idle(timeout_s=5)
    esm.stop()
    assert seen == list(range(50))


def test_constructor_rejects_nonsense():
    with pytest.raises(ValueError, match="batch_size must be within"):
        make(FakeKinesis(), lambda e, c: None, batch_size=0)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        make(FakeKinesis(), lambda e, c: None, max_attempts=0)
    with pytest.raises(ValueError, match="starting_position must be TRIM_HORIZON or LATEST"):
        make(FakeKinesis(), lambda e, c: None, starting_position="AT_TIMESTAMP")
    with pytest.raises(ValueError, match="batching_window_s must not be negative"):
        make(FakeKinesis(), lambda e, c: None, batching_window_s=-1)


def test_a_stop_that_times_out_never_leaves_two_pollers():
    import threading as _threading
    import time as _time

    from rtrec_local.event_source import KinesisEventSourceMapping

    class SlowKinesis:
        def describe_stream_summary(self, **_kwargs):
            return {"StreamDescriptionSummary": {"StreamARN": "arn:aws:kinesis:us-east-1:1:stream/s"}}

        def list_shards(self, **_kwargs):
            _time.sleep(0.5)  # a slow round, so stop(0.05) times out
            return {"Shards": []}

    class NoTable:
        def get_item(self, **_kwargs):
            return {}

    mapping = KinesisEventSourceMapping(
        "s",
        lambda _event, _context: None,
        checkpoint_table="t",
        dlq_url=None,
        kinesis_client=SlowKinesis(),
        dynamodb_client=NoTable(),
        poll_interval_s=0.01,
    )
    mapping.start()
    _time.sleep(0.1)
    assert mapping.stop(timeout_s=0.05) is False
    mapping.start()
    pollers = [t for t in _threading.enumerate() if t.name.startswith("esm-") and t.is_alive()]
    assert len(pollers) == 1
    assert mapping.stop(timeout_s=5)


# -- poison isolation (BisectBatchOnFunctionError), systemic failures, visible lag -----------------------------------

from rtrec.adapters.memory import InMemoryDeadLetterQueue  # noqa: E402
from rtrec.errors import DependencyError  # noqa: E402

SHARD = "shardId-000000000000"
POISON = -1


class Applier:
    """A recording handler like the consumer's: a batch holding the poison record fails as a whole (reported from
    its first record, or raised), else every record is applied in order."""

    def __init__(self, mode: str = "report") -> None:
        self.mode = mode
        self.applied: list[int] = []
        self.deliveries: list[list[int]] = []

    def __call__(self, event: dict, context: Any) -> dict:
        values = [decode(r) for r in event["Records"]]
        self.deliveries.append(values)
        if POISON in values:
            if self.mode == "raise":
                raise ValueError("cannot apply the poison record " + "x" * 5000)
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]}
        self.applied.extend(values)
        return {"batchItemFailures": []}


@pytest.mark.parametrize("mode", ["report", "raise"])
def test_a_poison_record_among_20_is_isolated_by_bisection_and_dead_lettered_alone(mode):
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    goods = list(range(10)) + list(range(11, 21))
    for i in goods[:10]:
        kinesis.put(SHARD, i)
    poison_seq = kinesis.put(SHARD, POISON)
    for i in goods[10:]:
        kinesis.put(SHARD, i)
    dynamo, dlq = FakeDynamo(), InMemoryDeadLetterQueue()
    handler = Applier(mode)
    esm = make(kinesis, handler, dynamo=dynamo, dead_letter_queue=dlq, batch_size=100, max_attempts=3)

    assert esm.run_until_idle(timeout_s=10)

    assert handler.applied == goods  # the good ones, each once, in order
    assert len(dlq.messages) == 1
    letter = dlq.messages[0]
    assert letter["sequence_number"] == poison_seq
    assert decode(letter["record"]) == POISON
    assert letter["source"] == "event_source_mapping"
    assert letter["attempts"] == 3
    assert len(letter["reason"]) <= 300  # a reason that repeats a huge field is cut
    assert [d for d in handler.deliveries if d == [POISON]] == [[POISON]] * 3  # dead-lettered alone, after 3 tries
    assert all(POISON not in d or len(d) <= 21 for d in handler.deliveries)
    stats = esm.stats()
    assert stats["bisections"] >= 2
    assert stats["dead_lettered"] == 1
    assert stats["records"] == 20
    assert stats["shards"][SHARD]["state"] == "reading"
    assert stats["stalled_shards"] == {}

    # the shard moved on: the next 2,000 events are applied, in full batches again
    more = list(range(100, 2100))
    last = [kinesis.put(SHARD, i) for i in more][-1]
    before = len(handler.deliveries)
    assert esm.run_until_idle(timeout_s=20)
    assert handler.applied == goods + more
    assert len(handler.deliveries) - before == 20  # 2,000 in batches of 100: no bisection left behind
    assert dynamo.checkpoint(SHARD) == last
    assert len(dlq.messages) == 1


def test_a_poison_record_reported_exactly_is_isolated_without_losing_its_neighbours():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    for i in range(5):
        kinesis.put(SHARD, i)
    kinesis.put(SHARD, POISON)
    for i in range(6, 10):
        kinesis.put(SHARD, i)
    applied: list[int] = []

    def handler(event: dict, context: Any) -> dict:
        for record in event["Records"]:  # applies up to the bad record, reports it
            if decode(record) == POISON:
                return {"batchItemFailures": [{"itemIdentifier": record["kinesis"]["sequenceNumber"]}]}
            applied.append(decode(record))
        return {}

    dlq = InMemoryDeadLetterQueue()
    esm = make(kinesis, handler, dead_letter_queue=dlq, max_attempts=2)
    assert esm.run_until_idle(timeout_s=10)
    assert applied == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert [decode(m["record"]) for m in dlq.messages] == [POISON]


class StatsSpy:
    """Stats of the mapping as seen from inside each delivery."""

    def __init__(self) -> None:
        self.esm: KinesisEventSourceMapping | None = None
        self.seen: list[dict[str, Any]] = []

    def snapshot(self) -> None:
        assert self.esm is not None
        self.seen.append(self.esm.stats())


def test_a_dependency_error_is_retried_with_backoff_never_bisected_nor_dead_lettered():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    for i in range(50):
        kinesis.put(SHARD, i)
    spy = StatsSpy()
    applied: list[int] = []
    deliveries: list[tuple[float, list[int]]] = []

    def handler(event: dict, context: Any) -> dict:
        spy.snapshot()
        deliveries.append((time.monotonic(), [decode(r) for r in event["Records"]]))
        if len(deliveries) <= 5:
            raise DependencyError("updating item stats failed: ProvisionedThroughputExceededException")
        applied.extend(decode(r) for r in event["Records"])
        return {"batchItemFailures": []}

    dlq = InMemoryDeadLetterQueue()
    esm = make(kinesis, handler, dead_letter_queue=dlq, batch_size=20, max_attempts=1, max_backoff_s=0.05)
    spy.esm = esm
    assert esm.run_until_idle(timeout_s=10)

    assert applied == list(range(50))
    assert dlq.messages == []
    assert [d for _, d in deliveries[:6]] == [list(range(20))] * 6  # the same batch again, never split
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(deliveries)]
    assert sum(gaps) >= 0.9 * (0.01 + 0.02 + 0.04 + 0.05 + 0.05)  # exponential, capped at max_backoff_s
    during = [s["shards"][SHARD] for s in spy.seen[1:6]]
    assert all(s["state"] == "stalled" and s["stalled_since"] is not None for s in during)
    assert [s["consecutive_failures"] for s in during] == [1, 2, 3, 4, 5]
    assert all("ProvisionedThroughputExceeded" in s["last_error"] for s in during)
    assert all(set(seen["stalled_shards"]) == {SHARD} for seen in spy.seen[1:6])
    stats = esm.stats()
    assert stats["bisections"] == 0
    assert stats["dead_lettered"] == 0
    assert stats["failed_batches"] == 5
    assert stats["systemic_failures"] == 5
    assert stats["stalled_shards"] == {}
    assert stats["shards"][SHARD]["stalled_since"] is None
    assert stats["shards"][SHARD]["consecutive_failures"] == 0


class FakeSink:
    def __init__(self) -> None:
        self.puts: list[tuple[str, float]] = []
        self.gauges: dict[str, Any] = {}

    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
        self.puts.append((name, value))

    def watch(self, name: str, read: Any) -> None:
        self.gauges[name] = read


def test_a_stuck_shard_shows_growing_iterator_age_lag_and_failed_batches():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    for i in range(30):
        kinesis.put(SHARD, i)
    arrived = time.time() - 5.0
    for record in kinesis.shards[SHARD]["records"]:
        record["ApproximateArrivalTimestamp"] = arrived

    def handler(event: dict, context: Any) -> None:
        raise DependencyError("the feature store is down")

    sink = FakeSink()
    esm = make(kinesis, handler, sqs=FakeSqs(), batch_size=10, max_backoff_s=0.05, metrics=sink)
    assert not esm.run_until_idle(timeout_s=0.5)
    first = esm.stats()
    time.sleep(0.2)
    second = esm.stats()
    shard = second["shards"][SHARD]
    assert first["iterator_age_ms"] >= 5000
    assert second["iterator_age_ms"] >= first["iterator_age_ms"] + 150
    assert second["millis_behind_latest"] == 1000
    assert second["lag_seconds"] >= 5.0
    assert second["failed_batches"] >= 3
    assert shard["consecutive_failures"] >= 3
    assert shard["state"] == "stalled"
    assert second["records"] == 0
    assert second["dead_lettered"] == 0
    assert sink.puts.count(("MappingFailedBatches", 1)) == second["failed_batches"]
    assert sink.gauges["MappingIteratorAge"]() >= 5000
    assert sink.gauges["MappingStalledShards"]() == 1


def test_a_failing_dead_letter_send_stalls_the_shard_and_never_skips_the_record():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    kinesis.put(SHARD, POISON)
    last = kinesis.put(SHARD, 1)

    class DownDlq:
        def __init__(self) -> None:
            self.left, self.messages = 4, []

        def send(self, body: dict) -> None:
            if self.left:
                self.left -= 1
                raise DependencyError("sending to SQS queue failed: ServiceUnavailable")
            self.messages.append(body)

    dlq, dynamo, handler = DownDlq(), FakeDynamo(), Applier()
    esm = make(kinesis, handler, dynamo=dynamo, dead_letter_queue=dlq, max_attempts=1, max_backoff_s=0.02)
    assert not esm.run_until_idle(timeout_s=0.05) or dlq.left == 0
    assert esm.run_until_idle(timeout_s=10)
    assert [decode(m["record"]) for m in dlq.messages] == [POISON]
    assert handler.applied == [1]
    assert dynamo.checkpoint(SHARD) == last
    assert esm.stats()["transient_errors"] == 4


def test_the_local_metrics_export_the_stuck_shard_through_prometheus():
    pytest.importorskip("prometheus_client")
    from rtrec.adapters.prometheus import PrometheusMetrics

    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    kinesis.put(SHARD, 1)
    kinesis.shards[SHARD]["records"][0]["ApproximateArrivalTimestamp"] = time.time() - 30.0

    def handler(event: dict, context: Any) -> None:
        raise DependencyError("down")

    sink = PrometheusMetrics(process_metrics=False)
    esm = make(kinesis, handler, max_backoff_s=0.02, metrics=sink)
    assert not esm.run_until_idle(timeout_s=0.2)
    text = sink.exposition()[0].decode()
    values = {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert values["rtrec_mapping_iterator_age_seconds"] >= 30.0
    assert values["rtrec_mapping_stalled_shards"] == 1
    assert values["rtrec_mapping_failed_batches_total"] == esm.stats()["failed_batches"] >= 2


def test_the_lag_shows_a_backlog_when_the_emulator_reports_no_millis_behind_latest():
    """kinesalite answers MillisBehindLatest 0 on every read of an open shard: the lag (/health, /metrics, the drain
    line) comes from the iterator age then, the age of the oldest record of the batch being delivered."""

    class KinesaliteLike(FakeKinesis):
        def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
            return {**super().get_records(ShardIterator, Limit), "MillisBehindLatest": 0}

    kinesis = KinesaliteLike()
    kinesis.add_shard(SHARD)
    for i in range(30):
        kinesis.put(SHARD, i)
    for record in kinesis.shards[SHARD]["records"]:
        record["ApproximateArrivalTimestamp"] = time.time() - 8.0
    lags: list[float] = []

    def handler(event: dict, context: Any) -> None:
        lags.append(esm.stats()["lag_seconds"])

    esm = make(kinesis, handler, batch_size=10)
    assert esm.run_until_idle(timeout_s=5)
    assert len(lags) == 3
    assert min(lags) >= 8.0
    assert esm.stats()["millis_behind_latest"] == 0
    assert esm.stats()["lag_seconds"] == 0.0


def test_the_drain_line_says_how_far_behind_from_the_lag_not_behind_latest_alone():
    from rtrec_local.shutdown import Interrupts, drain

    class Backlog:
        def __init__(self) -> None:
            self.rounds = 0

        def stats(self) -> dict[str, Any]:
            return {"millis_behind_latest": 0, "lag_seconds": 12.5 if self.rounds < 2 else 0.0}

        def run_until_idle(self, timeout_s: float = 30.0) -> bool:
            self.rounds += 1
            return self.rounds >= 2

    lines: list[str] = []
    assert drain(Backlog(), Interrupts(lines.append), lines.append, timeout_s=5, line_every_s=0)
    assert lines[0].startswith("draining the stream (12.5 s behind")
    assert lines[-1].startswith("drained in")


def test_after_a_batch_that_was_not_full_the_shard_gathers_for_the_batching_window():
    kinesis = FakeKinesis()
    kinesis.add_shard("shardId-000000000000")
    batches: list[list[int]] = []

    def handler(event: dict, context: Any) -> None:
        batches.append([decode(r) for r in event["Records"]])

    esm = make(kinesis, handler, batch_size=5, batching_window_s=0.3)
    for i in range(12):
        kinesis.put("shardId-000000000000", i)
    assert esm.run_until_idle(timeout_s=5)
    assert [len(b) for b in batches] == [5, 5, 2]  # full batches follow each other at once
    kinesis.put("shardId-000000000000", 12)
    started = time.monotonic()
    assert esm.run_until_idle(timeout_s=5)
    assert batches[-1] == [12]
    assert time.monotonic() - started >= 0.29  # the read that found it caught up waited for the window after [12]
