"""Poison of any size with no collateral, systemic failures retried, and a shard split mid-stream: the local event
source mapping driving the real stream consumer handler against the embedded cloud."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from functions.stream_consumer.app import build_handler
from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.sqs import SqsDeadLetterQueue, is_reference
from rtrec.domain.events import UserEvent, encode_record
from rtrec.errors import DependencyError
from rtrec.resources import DEAD_LETTER_BUCKET, ITEM_FEATURES, STREAM_CHECKPOINTS, USER_FEATURES
from rtrec.settings import ConsumerSettings
from rtrec_local.event_source import KinesisEventSourceMapping

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0
SIZES = (300_000, 900_000, 1_000_000)  # Kinesis caps a record (data + key) at 1 MiB: 1 MB is the largest here


@pytest.fixture
def kinesis(cloud):
    return aws_client("kinesis", cloud.endpoint_url, cloud.region)


def new_stream(kinesis, shards: int) -> str:
    name = f"itest-poison-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    return name


@pytest.fixture
def dlq(cloud, names) -> SqsDeadLetterQueue:
    return SqsDeadLetterQueue.for_names(names, endpoint_url=cloud.endpoint_url, region=cloud.region)


@pytest.fixture
def features(cloud, names) -> DynamoFeatureStore:
    return DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)


class Tracking:
    """The real consumer handler (its DLQ by reference), recording which deliveries it took and which succeeded."""

    def __init__(self, cloud, names, dlq: SqsDeadLetterQueue, *, raise_first: int = 0) -> None:
        settings = ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix)
        self.inner = build_handler(settings)
        if getattr(self.inner.dlq, "bucket", "set") is None:  # until the handler is built with for_names itself
            self.inner.dlq = dlq
        self.raise_first = raise_first
        self.esm: KinesisEventSourceMapping | None = None
        self.calls: list[dict[str, Any]] = []  # shard, time, event ids, ok
        self.stats_seen: list[dict[str, Any]] = []

    def __call__(self, event: dict, context: Any) -> dict:
        records = event["Records"]
        call = {
            "shard": records[0]["eventID"].split(":")[0],
            "at": time.monotonic(),
            "ids": [r["eventID"] for r in records],
            "ok": False,
        }
        self.calls.append(call)
        if self.esm is not None:
            self.stats_seen.append(self.esm.stats())
        if len(self.calls) <= self.raise_first:
            raise DependencyError("updating item stats failed: ThrottlingException (injected)")
        response = self.inner(event, context)
        call["ok"] = not (response or {}).get("batchItemFailures")
        return response

    def succeeded(self) -> Counter:
        return Counter(i for c in self.calls if c["ok"] for i in c["ids"])


def mapping(cloud, names, stream: str, handler: Tracking, **kwargs: Any) -> KinesisEventSourceMapping:
    kwargs.setdefault("dlq_url", handler.inner.dlq.url)
    esm = KinesisEventSourceMapping(
        stream,
        handler,
        checkpoint_table=names.table(STREAM_CHECKPOINTS),
        consumer_name=f"itest-{uuid.uuid4().hex[:8]}",
        dead_letter_bucket=names.bucket(DEAD_LETTER_BUCKET),
        poll_interval_s=0.05,
        endpoint_url=cloud.endpoint_url,
        region=cloud.region,
        **kwargs,
    )
    handler.esm = esm
    return esm


def click(run: str, user: str, n: int) -> UserEvent:
    return UserEvent(f"{run}-e{n}", user, f"{run}-i{n}", "click", NOW + n)


def put_one(kinesis, stream: str, key: str, data: bytes) -> dict[str, str]:
    response = kinesis.put_record(StreamName=stream, PartitionKey=key, Data=data)
    return {"shard": response["ShardId"], "seq": response["SequenceNumber"]}


def take_letters(dlq: SqsDeadLetterQueue, wanted: set[str], *, expected: int) -> list[dict[str, Any]]:
    """This test's letters (by event id) from the shared DLQ, deleted once read (S3 objects too); others stay."""
    found: dict[str, dict[str, Any]] = {}
    for _ in range(40):
        messages = dlq.receive_with_handles(10, visibility_timeout=0)
        for body, handle in messages:
            event_id = body.get("event_id") or body.get("record", {}).get("eventID")
            if event_id in wanted:
                found[event_id] = {"message": body, "whole": dlq.resolve(body)}
                dlq.delete(handle, body)
        if len(found) >= expected and not messages:
            break
    return list(found.values())


def test_oversized_records_are_dead_lettered_by_reference_and_the_good_ones_around_them_applied(
    cloud, names, kinesis, dlq, features
):
    stream = new_stream(kinesis, 1)
    run = uuid.uuid4().hex[:8]
    user = f"{run}-u"
    good: list[UserEvent] = []
    n = 0
    for size in (None, *SIZES):
        if size is not None:  # valid JSON with a huge event id: its rejection reason would repeat the payload
            body = {"kind": "event", "event_id": "", "user_id": user, "item_id": "1", "type": "click", "timestamp": NOW}
            body["event_id"] = "x" * (size - len(json.dumps(body).encode()))
            data = json.dumps(body).encode()
            assert len(data) == size
            put_one(kinesis, stream, user, data)
        for _ in range(5):
            event = click(run, user, n)
            n += 1
            good.append(event)
            put_one(kinesis, stream, user, encode_record(event))
    handler = Tracking(cloud, names, dlq)
    esm = mapping(cloud, names, stream, handler, batch_size=100, max_attempts=3)
    assert esm.run_until_idle(timeout_s=60)

    profile = features.get_user(user)
    assert profile is not None
    assert profile.interaction_count == len(good) == 20
    assert profile.history[-20:] == tuple(e.item_id for e in good)  # in order, each once
    records = kinesis.get_records(
        ShardIterator=kinesis.get_shard_iterator(
            StreamName=stream, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"],
        Limit=100,
    )["Records"]
    oversized = {f"shardId-000000000000:{r['SequenceNumber']}": r["Data"] for r in records if len(r["Data"]) > 100_000}
    assert sorted(len(d) for d in oversized.values()) == list(SIZES)
    letters = take_letters(dlq, set(oversized), expected=3)
    assert len(letters) == 3
    for letter in letters:
        message, whole = letter["message"], letter["whole"]
        assert is_reference(message)
        assert message["size"] > 300_000
        assert len(message["reason"]) <= 300
        assert message["s3_bucket"] == names.bucket(DEAD_LETTER_BUCKET)
        assert base64.b64decode(whole["record"]["kinesis"]["data"]) == oversized[message["event_id"]]
    stats = esm.stats()
    assert stats["stalled_shards"] == {}
    assert stats["shards"]["shardId-000000000000"]["state"] == "reading"
    assert stats["records"] == 23  # the 20 applied, the 3 dead-lettered by the handler: the shard moved on


def test_the_mapping_dead_letters_an_oversized_poison_record_by_reference(cloud, names, kinesis, dlq):
    stream = new_stream(kinesis, 1)
    data = b"\x00" * 900_000
    poison = put_one(kinesis, stream, "k", data)
    for i in range(4):
        put_one(kinesis, stream, "k", json.dumps({"i": i}).encode())
    applied: list[int] = []

    def handler(event: dict, context: Any) -> dict:
        for record in event["Records"]:
            if len(record["kinesis"]["data"]) > 1000:
                raise ValueError(f"cannot apply {record['kinesis']['data']}")  # a reason that repeats the payload
        applied.extend(json.loads(base64.b64decode(r["kinesis"]["data"]))["i"] for r in event["Records"])
        return {"batchItemFailures": []}

    esm = KinesisEventSourceMapping(
        stream,
        handler,
        checkpoint_table=names.table(STREAM_CHECKPOINTS),
        consumer_name=f"itest-{uuid.uuid4().hex[:8]}",
        dlq_url=dlq.url,
        dead_letter_bucket=names.bucket(DEAD_LETTER_BUCKET),
        max_attempts=2,
        poll_interval_s=0.05,
        endpoint_url=cloud.endpoint_url,
        region=cloud.region,
    )
    assert esm.run_until_idle(timeout_s=60)
    assert applied == [0, 1, 2, 3]
    event_id = f"{poison['shard']}:{poison['seq']}"
    [letter] = take_letters(dlq, {event_id}, expected=1)
    assert is_reference(letter["message"])
    assert letter["message"]["source"] == "event_source_mapping"
    assert len(letter["message"]["reason"]) <= 300
    assert letter["message"]["attempts"] == 2
    assert base64.b64decode(letter["whole"]["record"]["kinesis"]["data"]) == data
    assert esm.stats()["dead_lettered"] == 1


def test_a_systemic_failure_is_retried_not_dead_lettered_and_the_shard_shows_stalled(cloud, names, kinesis, dlq, features):
    stream = new_stream(kinesis, 1)
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-u{k}" for k in range(5)]
    events = [click(run, users[i % 5], i) for i in range(60)]
    kinesis.put_records(StreamName=stream, Records=[{"Data": encode_record(e), "PartitionKey": e.user_id} for e in events])
    handler = Tracking(cloud, names, dlq, raise_first=5)
    esm = mapping(cloud, names, stream, handler, batch_size=100, max_attempts=1, max_backoff_s=0.2)
    assert esm.run_until_idle(timeout_s=60)

    assert [len(c["ids"]) for c in handler.calls[:6]] == [60] * 6  # the same batch, never split
    assert all(count == 1 for count in handler.succeeded().values())
    assert len(handler.succeeded()) == 60
    for user in users:
        assert features.get_user(user).interaction_count == 12
    during = [s["shards"]["shardId-000000000000"] for s in handler.stats_seen[1:6]]
    assert all(s["state"] == "stalled" and "ThrottlingException" in s["last_error"] for s in during)
    stats = esm.stats()
    assert stats["dead_lettered"] == 0
    assert stats["bisections"] == 0
    assert stats["systemic_failures"] == 5
    assert stats["stalled_shards"] == {}


def test_a_shard_split_while_records_flow_reads_children_after_the_parent_and_applies_each_once(
    cloud, names, kinesis, dlq, features
):
    stream = new_stream(kinesis, 1)
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-u{k}" for k in range(30)]
    events = [click(run, users[i % 30], i) for i in range(900)]
    handler = Tracking(cloud, names, dlq)
    esm = mapping(cloud, names, stream, handler, batch_size=50, shard_refresh_s=0.3)
    split_done = threading.Event()
    landed: list[str] = []  # the shard of each put after the split

    def produce() -> None:
        for start in range(0, len(events), 100):
            chunk = events[start : start + 100]
            response = kinesis.put_records(
                StreamName=stream, Records=[{"Data": encode_record(e), "PartitionKey": e.user_id} for e in chunk]
            )
            if split_done.is_set():
                landed.extend(r["ShardId"] for r in response["Records"])
            if start == 300:  # mid-stream: the parent closes, new records go to its two children
                while not handler.calls:
                    time.sleep(0.01)
                kinesis.split_shard(StreamName=stream, ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2**127))
                split_done.set()
            time.sleep(0.05)

    with esm:
        producer = threading.Thread(target=produce)
        producer.start()
        producer.join(60)
        assert split_done.is_set()
        deadline = time.monotonic() + 60
        while len(handler.succeeded()) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert esm.run_until_idle(timeout_s=30)

    if set(landed) == {"shardId-000000000000"}:
        pytest.skip("this Kinesis emulator (moto) keeps writing to a split parent; kinesalite and AWS do not")
    succeeded = handler.succeeded()
    assert len(succeeded) == 900
    assert set(succeeded.values()) == {1}
    assert set(landed) == {"shardId-000000000001", "shardId-000000000002"}
    shards = {c["shard"] for c in handler.calls}
    assert "shardId-000000000000" in shards
    assert len(shards) == 3
    parent_last = max(c["at"] for c in handler.calls if c["shard"] == "shardId-000000000000")
    child_first = min(c["at"] for c in handler.calls if c["shard"] != "shardId-000000000000")
    assert parent_last < child_first  # children read only after the parent is drained
    for user in users:
        assert features.get_user(user).interaction_count == 30
    stats = esm.stats()
    assert stats["shards"]["shardId-000000000000"]["state"] == "finished"
    assert stats["records"] == 900


def test_dlq_show_and_redrive_handle_by_reference_letters(cloud, names, dlq, monkeypatch):
    from typer.testing import CliRunner

    from rtrec.resources import EVENTS_STREAM
    from rtrec_local.cli import app

    marker = uuid.uuid4().hex
    data = json.dumps({"kind": "event", "marker": marker, "padding": "p" * 900_000}).encode()
    record = {
        "kinesis": {"partitionKey": f"user-{marker}", "sequenceNumber": "1", "data": base64.b64encode(data).decode()},
        "eventID": f"shardId-000000000000:{marker}",
    }
    dlq.send(
        {
            "reason": "malformed record: " + "p" * 5000,
            "source": "stream_consumer",
            "event_id": record["eventID"],
            "record": record,
        }
    )
    [(sent, _)] = [
        (b, h) for b, h in dlq.receive_with_handles(10, visibility_timeout=0) if b.get("event_id") == record["eventID"]
    ] or [(None, None)]
    assert sent is not None
    assert is_reference(sent)
    s3 = aws_client("s3", cloud.endpoint_url, cloud.region)
    assert s3.head_object(Bucket=sent["s3_bucket"], Key=sent["s3_key"])["ContentLength"] == sent["size"]

    monkeypatch.setenv("RTREC_PREFIX", names.prefix)
    shown = CliRunner().invoke(app, ["dlq", "show", "--endpoint-url", cloud.endpoint_url])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if marker in x)
    assert f"s3://{sent['s3_bucket']}/{sent['s3_key']}" in line
    assert f"{sent['size']:,} bytes" in line
    assert len(line) < 800  # the short reason, never the payload

    result = CliRunner().invoke(app, ["dlq", "redrive", "--endpoint-url", cloud.endpoint_url])
    assert result.exit_code == 0, result.output
    assert all(b.get("event_id") != record["eventID"] for b, _ in dlq.receive_with_handles(10, visibility_timeout=0))
    with pytest.raises(Exception, match=r"404|Not Found"):
        s3.head_object(Bucket=sent["s3_bucket"], Key=sent["s3_key"])  # deleted after its message
    kinesis = aws_client("kinesis", cloud.endpoint_url, cloud.region)
    found = []
    for shard in kinesis.list_shards(StreamName=names.stream(EVENTS_STREAM))["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=names.stream(EVENTS_STREAM), ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found += [r for r in page["Records"] if marker.encode() in r["Data"]]
            iterator = page.get("NextShardIterator") if page["Records"] else None
    assert len(found) == 1
    assert found[0]["Data"] == data
    assert found[0]["PartitionKey"] == f"user-{marker}"
