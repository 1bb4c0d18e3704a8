"""Reliability of the event loop in the embedded cloud: the consumer stopped and restarted in the middle
of a stream loses no event and counts none twice; injected Kinesis errors on ingestion lead to retries."""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.exceptions import ClientError

from functions.stream_consumer.app import build_handler
from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.kinesis import KinesisEventStream
from rtrec.adapters.aws.s3 import S3RankerStateStore
from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
from rtrec.domain.events import UserEvent
from rtrec.resources import EVENTS_DLQ, ITEM_FEATURES, MODELS_BUCKET, STREAM_CHECKPOINTS, USER_FEATURES
from rtrec.services.online import ItemStatsReader
from rtrec.settings import ConsumerSettings
from rtrec_local.event_source import KinesisEventSourceMapping

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0


@pytest.fixture
def stream(cloud):
    """A fresh 2-shard stream per test, so other tests' records do not mix in."""
    kinesis = aws_client("kinesis", cloud.endpoint_url)
    name = f"itest-reliability-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return name


def mapping_for(stream: str, cloud, names, consumer: str) -> KinesisEventSourceMapping:
    settings = ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix)
    return KinesisEventSourceMapping(
        stream,
        build_handler(settings),
        checkpoint_table=names.table(STREAM_CHECKPOINTS),
        dlq_url=SqsDeadLetterQueue(names.queue(EVENTS_DLQ), endpoint_url=cloud.endpoint_url).url,
        consumer_name=consumer,
        endpoint_url=cloud.endpoint_url,
        batch_size=25,
        poll_interval_s=0.05,
    )


def test_stopping_and_restarting_the_consumer_loses_nothing_and_doubles_nothing(cloud, names, stream):
    run = uuid.uuid4().hex[:8]
    users = [f"{run}-u{n}" for n in range(20)]
    items = [f"{run}-i{n}" for n in range(7)]
    events = [UserEvent(f"{run}-e{n}", users[n % 20], items[n % 7], "click", NOW + n) for n in range(400)]
    KinesisEventStream(stream, endpoint_url=cloud.endpoint_url).put(events)
    consumer = f"itest-{run}"

    first = mapping_for(stream, cloud, names, consumer)
    first.start()
    deadline = time.monotonic() + 60
    while first.stats()["records_processed"] < 100 and time.monotonic() < deadline:  # stop it in the middle
        time.sleep(0.01)
    assert first.stop(timeout_s=30)
    processed_first = first.stats()["records_processed"]
    assert 0 < processed_first < len(events)

    second = mapping_for(stream, cloud, names, consumer)
    assert second.run_until_idle(timeout_s=120)

    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    stats = ItemStatsReader(S3RankerStateStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url))
    for item in items:
        expected = sum(1 for e in events if e.item_id == item)
        assert stats.get(item).clicks == expected, item
    for user in users:
        profile = features.get_user(user)
        assert profile.interaction_count == sum(1 for e in events if e.user_id == user)
        assert profile.last_seen == int(max(e.timestamp for e in events if e.user_id == user))


def test_ingestion_retries_the_records_kinesis_refused(cloud, stream):
    class Throttling:
        """put_records refuses every other record on the first call (as a hot shard does)."""

        def __init__(self) -> None:
            self._client = aws_client("kinesis", cloud.endpoint_url)
            self.calls = 0

        def put_records(self, StreamName, Records):
            self.calls += 1
            if self.calls > 1:
                return self._client.put_records(StreamName=StreamName, Records=Records)
            accepted = self._client.put_records(StreamName=StreamName, Records=Records[::2])["Records"]
            results = []
            for n in range(len(Records)):
                results.append(
                    accepted[n // 2]
                    if n % 2 == 0
                    else {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
                )
            return {"FailedRecordCount": len(Records) // 2, "Records": results}

    client = Throttling()
    events = [UserEvent(f"t{n}", f"user{n}", "i", "view", NOW) for n in range(10)]
    assert KinesisEventStream(stream, client, sleep=lambda _s: None).put(events) == 10
    assert client.calls == 2
    kinesis = aws_client("kinesis", cloud.endpoint_url)
    found = 0
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        found += len(kinesis.get_records(ShardIterator=iterator)["Records"])
    assert found == 10  # each event once: the accepted half was not sent again


def test_ingestion_gives_up_with_a_clear_error_when_kinesis_keeps_failing(cloud, stream):
    from rtrec.errors import DependencyError

    class Down:
        def put_records(self, **_kwargs):
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "PutRecords")

    with pytest.raises(DependencyError, match="ServiceUnavailable"):
        KinesisEventStream(stream, Down()).put([UserEvent("x", "u", "i", "view", NOW)])
