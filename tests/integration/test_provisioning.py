from __future__ import annotations

import pytest

from rtrec.adapters.aws.provision import Provisioner
from rtrec.resources import BUCKETS, QUEUES, STREAMS, TABLES

pytestmark = pytest.mark.integration


def test_every_table_exists_with_the_key_schema_from_resources(cloud, client, names):
    dynamodb = client("dynamodb")
    for spec in TABLES:
        table = dynamodb.describe_table(TableName=names.table(spec))["Table"]
        keys = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
        assert keys["HASH"] == spec.partition_key.name
        assert keys.get("RANGE") == (spec.sort_key.name if spec.sort_key else None)
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        if spec.ttl_attribute:
            ttl = dynamodb.describe_time_to_live(TableName=names.table(spec))["TimeToLiveDescription"]
            if getattr(cloud, "backend", None) == "durable":  # dynalite has no UpdateTimeToLive (provisioning logs it)
                assert ttl["TimeToLiveStatus"] == "DISABLED"
                continue
            assert ttl["AttributeName"] == spec.ttl_attribute


def test_stream_buckets_and_queue_exist(client, names):
    for spec in STREAMS:
        summary = client("kinesis").describe_stream_summary(StreamName=names.stream(spec))["StreamDescriptionSummary"]
        assert summary["StreamStatus"] == "ACTIVE"
        assert summary["OpenShardCount"] == spec.shard_count
    buckets = {b["Name"] for b in client("s3").list_buckets()["Buckets"]}
    assert {names.bucket(spec) for spec in BUCKETS} <= buckets
    for spec in QUEUES:
        assert client("sqs").get_queue_url(QueueName=names.queue(spec))["QueueUrl"]


def test_provisioning_again_changes_nothing(cloud, names):
    report = Provisioner(names, endpoint_url=cloud.endpoint_url).provision()
    assert report.created == []
    assert len(report.existing) == len(TABLES) + len(STREAMS) + len(BUCKETS) + len(QUEUES)


def test_the_stream_takes_records(client, names):
    kinesis = client("kinesis")
    response = kinesis.put_records(
        StreamName=names.stream(STREAMS[0]),
        Records=[{"Data": b'{"event_id": "e1"}', "PartitionKey": "user-1"}],
    )
    assert response["FailedRecordCount"] == 0
