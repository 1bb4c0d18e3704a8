"""The stream_consumer Lambda against the embedded cloud: events through Kinesis into DynamoDB, once."""

from __future__ import annotations

import base64
import uuid

import pytest
from botocore.exceptions import ClientError

from functions.stream_consumer.app import build_handler
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.kinesis import KinesisEventStream
from rtrec.adapters.aws.s3 import S3CounterfactualLog, S3RankerStateStore
from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
from rtrec.adapters.memory import InMemoryDeadLetterQueue
from rtrec.domain.events import Impression, UserEvent
from rtrec.domain.models import ItemStatsDelta, UserProfile
from rtrec.domain.online import RANKER_FEATURES
from rtrec.errors import DependencyError
from rtrec.resources import COUNTERFACTUAL_BUCKET, EVENTS_DLQ, EVENTS_STREAM, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
from rtrec.services.online import ItemStatsReader
from rtrec.settings import ConsumerSettings

pytestmark = pytest.mark.integration

NOW = 1_700_000_000.0


class Context:
    function_name = "rtrec-stream-consumer"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-stream-consumer"
    aws_request_id = "itest"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 60_000


def kinesis_event(records: list[tuple[str, bytes]], shard: str | None = None) -> dict:
    """The event Lambda gets from a Kinesis event source mapping (sequence numbers made up, increasing).

    Each call without `shard` gets a shard of its own: the shard state counts a record only above the sequence
    number it learned through, and these made-up numbers start again at every call."""
    shard = shard or f"shardId-{uuid.uuid4().hex[:12]}"
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": f"{49_000_000 + n:056d}",
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": NOW,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{shard}:{49_000_000 + n:056d}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/itest-events",
            }
            for n, (key, data) in enumerate(records)
        ]
    }


def encoded(*messages) -> list[tuple[str, bytes]]:
    from rtrec.domain.events import encode_record

    return [(m.user_id, encode_record(m)) for m in messages]


@pytest.fixture
def consumer(cloud, names):
    settings = ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix)
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    return build_handler(settings), features


def item_stats(cloud, names, item: str) -> ItemStatsDelta:
    """The item's statistics summed over every shard's state (what serving and the online ranker read)."""
    return ItemStatsReader(S3RankerStateStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)).get(item)


def user_event(user: str, n: int, item: str, type_: str = "click") -> UserEvent:
    return UserEvent(f"{user}-{n}", user, item, type_, NOW + n)


def test_events_update_profile_and_item_stats_exactly_once(consumer, cloud, names):
    handler, features = consumer
    user = f"u-{uuid.uuid4().hex[:8]}"
    item = f"i-{uuid.uuid4().hex[:8]}"
    features.put_users([UserProfile(user, age=30, history=("1",), interaction_count=1)])
    batch = kinesis_event(
        encoded(
            user_event(user, 1, item),
            user_event(user, 2, "2", "view"),
            Impression(f"r-{user}", user, "1", "two_tower", (item, "2"), (0.5, 0.5), (1, 1), NOW),
        )
    )
    assert handler(batch, Context()) == {"batchItemFailures": []}
    assert handler(batch, Context()) == {"batchItemFailures": []}  # re-delivered: no effect the second time
    profile = features.get_user(user)
    assert profile.history == ("1", item)
    assert profile.interaction_count == 2
    assert profile.age == 30
    stats = item_stats(cloud, names, item)
    assert stats.clicks == 1
    assert stats.impressions == 1
    assert stats.interactions == 1


def test_a_malformed_record_goes_to_the_dlq_and_the_rest_is_processed(consumer, names, cloud):
    handler, features = consumer
    user = f"u-{uuid.uuid4().hex[:8]}"
    records = [*encoded(user_event(user, 1, "5")), (user, b'{"kind": "event", "type": "like"}')]
    assert handler(kinesis_event(records), Context()) == {"batchItemFailures": []}
    assert features.get_user(user).history == ("5",)
    dlq = SqsDeadLetterQueue(names.queue(EVENTS_DLQ), endpoint_url=cloud.endpoint_url)
    reasons = [m["reason"] for m in dlq.receive(10)]
    assert any("type must be one of" in r for r in reasons)


def test_a_dynamodb_throttle_is_raised_for_the_whole_batch_then_it_applies_once(cloud, names):
    from rtrec.adapters.aws.clients import aws_client

    class Flaky:
        """A DynamoDB client whose profile write fails twice (throttling), then works."""

        def __init__(self) -> None:
            self._client = aws_client("dynamodb", cloud.endpoint_url)
            self.failures = 2

        def batch_write_item(self, **kwargs):
            if self.failures:
                self.failures -= 1
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "BatchWriteItem"
                )
            return self._client.batch_write_item(**kwargs)

        def __getattr__(self, name):
            return getattr(self._client, name)

    settings = ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix)
    handler = build_handler(settings, dynamodb_client=Flaky())
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    user, item = f"u-{uuid.uuid4().hex[:8]}", f"i-{uuid.uuid4().hex[:8]}"
    batch = kinesis_event(encoded(user_event(user, 1, item)))
    # systemic: raised, so the event source mapping retries the whole batch with backoff (nothing dead-lettered)
    with pytest.raises(DependencyError):
        handler(batch, Context())
    with pytest.raises(DependencyError):  # still failing: raised again, not dropped
        handler(batch, Context())
    assert handler(batch, Context()) == {"batchItemFailures": []}
    assert item_stats(cloud, names, item).clicks == 1
    profile = features.get_user(user)
    assert profile.history == (item,)
    assert profile.interaction_count == 1


def test_the_batch_is_kept_in_the_counterfactual_log(consumer, names, cloud):
    handler, _ = consumer
    user = f"u-{uuid.uuid4().hex[:8]}"
    impression = Impression(f"r-{user}", user, "1", "two_tower", ("3", "4"), (0.25, 0.5), (0.9, 0.8), NOW)
    handler(kinesis_event(encoded(impression, user_event(user, 1, "3"))), Context())
    log = S3CounterfactualLog(names.bucket(COUNTERFACTUAL_BUCKET), endpoint_url=cloud.endpoint_url)
    assert impression in log.read("impressions")
    assert any(m.event_id == f"{user}-1" for m in log.read("events"))


def featured_slate(request_id: str, user: str, items: tuple[str, ...]) -> Impression:
    features = tuple(tuple([1.0, 0.5 - 0.1 * n] + [0.0] * (len(RANKER_FEATURES) - 2)) for n in range(len(items)))
    return Impression(request_id, user, "1", "two_tower", items, (0.5,) * len(items), (1.0,) * len(items), NOW, features)


def test_rewards_are_joined_logged_and_learned_once_per_record(consumer, names, cloud):
    handler, _ = consumer
    shard = f"shardId-{uuid.uuid4().hex[:12]}"  # a shard of its own: the state is per shard
    user = f"u-{uuid.uuid4().hex[:8]}"
    batch = kinesis_event(
        encoded(
            featured_slate(f"r-{user}", user, ("a", "b")),
            UserEvent(f"{user}-1", user, "b", "click", NOW + 1, request_id=f"r-{user}"),
        ),
        shard,
    )
    assert handler(batch, Context()) == {"batchItemFailures": []}
    assert handler(batch, Context()) == {"batchItemFailures": []}  # re-delivered: learned once
    state = S3RankerStateStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url).load(f"itest-events-{shard}")
    assert state.learner.examples == 2
    assert state.impressions == {"a": 1, "b": 1}
    assert state.clicks == {"b": 1}
    assert state.trend_counts() == {"b": 1.0}
    joined = S3CounterfactualLog(names.bucket(COUNTERFACTUAL_BUCKET), endpoint_url=cloud.endpoint_url).read_joined()
    assert [(s.slate.items, s.rewards) for s in joined if s.slate.request_id == f"r-{user}"] == [(("a", "b"), (0, 1))]


def test_a_batch_that_fails_after_learning_is_learned_once_and_its_stats_added_once(cloud, names):
    from rtrec.adapters.aws.clients import aws_client

    class FailsOnce:
        """A DynamoDB client whose first profile write is throttled (the last step of a batch: the shard state,
        with its item statistics and learner, was saved before it)."""

        def __init__(self) -> None:
            self._client = aws_client("dynamodb", cloud.endpoint_url)
            self.failed = False

        def batch_write_item(self, **kwargs):
            if not self.failed:
                self.failed = True
                raise ClientError(
                    {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"}}, "BatchWriteItem"
                )
            return self._client.batch_write_item(**kwargs)

        def __getattr__(self, name):
            return getattr(self._client, name)

    handler = build_handler(
        ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix), dynamodb_client=FailsOnce()
    )
    shard = f"shardId-{uuid.uuid4().hex[:12]}"
    a, b = f"ua-{uuid.uuid4().hex[:8]}", f"ub-{uuid.uuid4().hex[:8]}"
    x, y = f"x-{a}", f"y-{a}"
    batch = kinesis_event(
        encoded(
            featured_slate(f"r-{a}", a, (x, y)),
            UserEvent(f"{a}-1", a, y, "click", NOW + 1, request_id=f"r-{a}"),
            featured_slate(f"r-{b}", b, (x, y)),
            UserEvent(f"{b}-1", b, x, "click", NOW + 2, request_id=f"r-{b}"),
        ),
        shard,
    )
    states = S3RankerStateStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    with pytest.raises(DependencyError):
        handler(batch, Context())
    assert states.load(f"itest-events-{shard}").learner.examples == 4  # learned before the writes
    assert features.get_user(a) is None  # the profiles are the batch's last write
    assert item_stats(cloud, names, x).impressions == item_stats(cloud, names, y).impressions == 2
    assert handler(batch, Context()) == {"batchItemFailures": []}  # the whole batch again
    assert handler(batch, Context()) == {"batchItemFailures": []}  # and once more, after it worked
    state = states.load(f"itest-events-{shard}")
    assert state.learner.examples == 4
    assert state.clicks == {x: 1, y: 1}
    assert state.learned_through == int(batch["Records"][3]["kinesis"]["sequenceNumber"])
    stats_x, stats_y = item_stats(cloud, names, x), item_stats(cloud, names, y)
    assert (stats_x.impressions, stats_x.clicks, stats_x.interactions) == (2, 1, 1)
    assert stats_x.popularity_mass > 0
    assert (stats_y.impressions, stats_y.clicks, stats_y.interactions) == (2, 1, 1)
    assert features.get_user(a).interaction_count == 1
    assert features.get_user(b).history == (x,)


def test_the_sample_kinesis_event_resolves_its_slate_and_dead_letters_its_poison_record(cloud, names):
    import json
    from pathlib import Path

    event = json.loads((Path(__file__).parents[1] / "events" / "kinesis_impression_click_poison.json").read_text())
    shard = f"shardId-{uuid.uuid4().hex[:12]}"  # the file's shard and users are shared by every run of this test
    user = f"sample-{uuid.uuid4().hex[:8]}"
    for record in event["Records"]:
        record["eventID"] = f"{shard}:{record['kinesis']['sequenceNumber']}"
        data = base64.b64decode(record["kinesis"]["data"])
        record["kinesis"]["data"] = base64.b64encode(data.replace(b"sample-user-1", user.encode())).decode()
    handler = build_handler(ConsumerSettings(endpoint_url=cloud.endpoint_url, resource_prefix=names.prefix))
    handler.dlq = InMemoryDeadLetterQueue()  # the shared queue's messages hide from each other's receives
    assert handler(event, Context()) == {"batchItemFailures": []}  # the poison record is dead-lettered, not failed
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    assert features.get_user(user).history == ("260",)
    state = S3RankerStateStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url).load(f"rtrec-events-{shard}")
    assert state.learner.examples == 3
    assert state.clicks == {"260": 1}
    [dead] = handler.dlq.messages
    assert dead["event_id"] == event["Records"][2]["eventID"]
    assert "not JSON" in dead["reason"]


def test_watermarks_of_two_streams_with_the_same_shard_ids_do_not_shadow_each_other(consumer, cloud, names):
    handler, _ = consumer
    item, shard = f"i-{uuid.uuid4().hex[:8]}", f"shardId-{uuid.uuid4().hex[:12]}"
    first = kinesis_event(encoded(user_event(f"u-{uuid.uuid4().hex[:8]}", 1, item)), shard)
    second = kinesis_event(encoded(user_event(f"u-{uuid.uuid4().hex[:8]}", 1, item)), shard)
    for record in second["Records"]:  # another stream, the same shard id and the same sequence number
        record["eventSourceARN"] = record["eventSourceARN"].replace("itest-events", "itest-other-events")
    assert handler(first, Context()) == {"batchItemFailures": []}
    assert handler(second, Context()) == {"batchItemFailures": []}
    assert item_stats(cloud, names, item).clicks == 2


def test_put_records_then_the_stream_holds_them(cloud, names):
    from rtrec.adapters.aws.clients import aws_client

    stream = KinesisEventStream(names.stream(EVENTS_STREAM), endpoint_url=cloud.endpoint_url)
    user = f"u-{uuid.uuid4().hex[:8]}"
    assert stream.put([user_event(user, n, str(n)) for n in range(600)]) == 600  # two PutRecords calls
    kinesis = aws_client("kinesis", cloud.endpoint_url)
    shards = kinesis.list_shards(StreamName=names.stream(EVENTS_STREAM))["Shards"]
    found = 0
    for shard in shards:
        iterator = kinesis.get_shard_iterator(
            StreamName=names.stream(EVENTS_STREAM), ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"]
        found += sum(r["PartitionKey"] == user for r in records)
    assert found == 600


def test_dlq_redrive_puts_dead_lettered_records_back_on_the_stream(cloud, names, monkeypatch):
    from typer.testing import CliRunner

    from rtrec.adapters.aws.clients import aws_client
    from rtrec_local.cli import app

    dlq = SqsDeadLetterQueue(names.queue(EVENTS_DLQ), endpoint_url=cloud.endpoint_url)
    sqs = aws_client("sqs", cloud.endpoint_url)
    sqs.purge_queue(QueueUrl=dlq.url)
    marker = uuid.uuid4().hex
    poison = kinesis_event([(f"user-{marker}", f'{{"kind": "event", "marker": "{marker}"}}'.encode())])["Records"][0]
    dlq.send({"reason": "malformed record: test", "record": poison})
    monkeypatch.setenv("RTREC_PREFIX", names.prefix)
    shown = CliRunner().invoke(app, ["dlq", "show", "--endpoint-url", cloud.endpoint_url])
    assert shown.exit_code == 0
    assert "malformed record: test" in shown.output
    result = CliRunner().invoke(app, ["dlq", "redrive", "--endpoint-url", cloud.endpoint_url])
    assert result.exit_code == 0, result.output
    assert "1 record(s) sent back" in result.output
    assert dlq.receive(10) == []
    kinesis = aws_client("kinesis", cloud.endpoint_url)
    found = []
    for shard in kinesis.list_shards(StreamName=names.stream(EVENTS_STREAM))["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=names.stream(EVENTS_STREAM), ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        found += [
            r for r in kinesis.get_records(ShardIterator=iterator, Limit=10_000)["Records"] if marker.encode() in r["Data"]
        ]
    assert len(found) == 1
    assert found[0]["PartitionKey"] == f"user-{marker}"
