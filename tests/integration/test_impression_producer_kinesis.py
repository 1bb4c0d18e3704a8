"""The impression producer against the embedded cloud's Kinesis: the unit contract tests again (the same functions,
with the `kinesis` fixture giving a real stream), and the real Lambda module flushing a request's impression onto
the stream before the invocation returns."""

from __future__ import annotations

import json
import threading
import uuid

import pytest

from rtrec.adapters.aws.clients import aws_client
from rtrec.domain.events import Impression, decode_record
from rtrec.resources import EVENTS_STREAM
from tests.integration import test_api_lambda as api_lambda
from tests.unit.test_impression_producer import (  # noqa: F401 - collected here too, against the embedded cloud
    KinesisUnderTest,
    test_contract_a_byte_bound_drops_too,
    test_contract_a_call_never_exceeds_five_mib,
    test_contract_a_full_buffer_drops_and_counts_and_never_blocks,
    test_contract_an_outage_keeps_records_buffered_and_retried_until_the_flush_times_out,
    test_contract_n_impressions_take_ceil_n_over_500_put_records_calls,
    test_contract_only_the_refused_records_are_sent_again,
    test_contract_shutdown_sends_everything_buffered,
    test_contract_the_background_sender_sends_a_full_call_at_once,
    test_contract_the_background_sender_sends_what_lingered,
)

pytestmark = pytest.mark.integration

seeded = api_lambda.seeded  # the Lambda module's fixtures: seeded features, the module imported against the cloud
handler_module = api_lambda.handler_module


def read_stream(client, stream_name: str) -> list[bytes]:
    """Every record of every shard, from the start."""
    out: list[bytes] = []
    for shard in client.list_shards(StreamName=stream_name)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10_000)
            out.extend(r["Data"] for r in page["Records"])
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
    return out


@pytest.fixture
def kinesis(cloud) -> KinesisUnderTest:
    """A fresh 2-shard stream per test, written through a real boto3 client."""
    client = aws_client("kinesis", cloud.endpoint_url, cloud.region)
    name = f"itest-impressions-{uuid.uuid4().hex[:8]}"
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
    return KinesisUnderTest(name, client, lambda: read_stream(client, name))


def test_the_lambda_handler_puts_the_impression_on_the_stream_before_it_returns(handler_module, lambda_event, cloud, names):
    response = handler_module.handler(lambda_event("api_recommend_user_1.json"), api_lambda.LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    request_id = json.loads(response["body"])["request_id"]
    # no background sender in Lambda (the runtime freezes it): the impression is there because the entry flushed
    assert "impression-producer" not in {t.name for t in threading.enumerate()}
    client = aws_client("kinesis", cloud.endpoint_url, cloud.region)
    logged = [
        m
        for m in map(decode_record, read_stream(client, names.stream(EVENTS_STREAM)))
        if isinstance(m, Impression) and m.request_id == request_id
    ]
    assert len(logged) == 1
    assert logged[0].user_id == "1"
    assert len(logged[0].items) == 5
