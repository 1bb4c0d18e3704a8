"""The durable embedded cloud (dynalite, kinesalite, s3rver, moto with SQS on disk, behind the router): what was
written survives a stop and start, a SIGKILL of every emulator, and a SIGKILL of the process that supervises them
(which leaves no emulator behind); a crashed emulator is reported and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rtrec.resources import EVENTS_DLQ, EVENTS_STREAM, MODELS_BUCKET, USER_FEATURES, ResourceNames
from rtrec_local.cloud import EMULATORS_DIR, EmbeddedCloud, _port_in_use
from rtrec_local.state import LocalState

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not (EMULATORS_DIR / "node_modules" / "dynalite").is_dir(),
        reason="the emulators are not installed: `make emulators` (make test does it)",
    ),
]

NAMES = ResourceNames(prefix="durable")


def _write(cloud: EmbeddedCloud) -> dict[str, str]:
    """One DynamoDB item, one Kinesis record, one S3 object, one SQS message; returns the record's position."""
    cloud.client("dynamodb").put_item(TableName=NAMES.table(USER_FEATURES), Item={"user_id": {"S": "u1"}, "clicks": {"N": "3"}})
    cloud.client("dynamodb").update_item(
        TableName=NAMES.table(USER_FEATURES),
        Key={"user_id": {"S": "u1"}},
        UpdateExpression="ADD clicks :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )
    put = cloud.client("kinesis").put_record(StreamName=NAMES.stream(EVENTS_STREAM), Data=b'{"event": 1}', PartitionKey="u1")
    cloud.client("s3").put_object(Bucket=NAMES.bucket(MODELS_BUCKET), Key="production/pointer.json", Body=b'{"v": 3}')
    sqs = cloud.client("sqs")
    url = sqs.get_queue_url(QueueName=NAMES.queue(EVENTS_DLQ))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="failed record 42")
    return {"shard": put["ShardId"], "sequence": put["SequenceNumber"]}


def _check(cloud: EmbeddedCloud, position: dict[str, str]) -> None:
    item = cloud.client("dynamodb").get_item(
        TableName=NAMES.table(USER_FEATURES), Key={"user_id": {"S": "u1"}}, ConsistentRead=True
    )["Item"]
    assert item["clicks"] == {"N": "4"}
    kinesis = cloud.client("kinesis")
    iterator = kinesis.get_shard_iterator(
        StreamName=NAMES.stream(EVENTS_STREAM),
        ShardId=position["shard"],
        ShardIteratorType="AT_SEQUENCE_NUMBER",
        StartingSequenceNumber=position["sequence"],
    )["ShardIterator"]
    records = kinesis.get_records(ShardIterator=iterator)["Records"]
    assert records
    assert records[0]["SequenceNumber"] == position["sequence"]
    assert records[0]["Data"] == b'{"event": 1}'
    later = kinesis.put_record(StreamName=NAMES.stream(EVENTS_STREAM), Data=b"{}", PartitionKey="u1")
    assert later["ShardId"] == position["shard"]  # same key, same shard; numbering goes on, it does not restart
    assert int(later["SequenceNumber"]) > int(position["sequence"])
    body = cloud.client("s3").get_object(Bucket=NAMES.bucket(MODELS_BUCKET), Key="production/pointer.json")["Body"]
    assert body.read() == b'{"v": 3}'
    sqs = cloud.client("sqs")
    url = sqs.get_queue_url(QueueName=NAMES.queue(EVENTS_DLQ))["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
    assert [m["Body"] for m in messages] == ["failed record 42"]


def test_everything_written_survives_a_stop_and_start(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    with EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable") as first:
        position = _write(first)
    assert (tmp_path / "state" / "cloud" / "sqs" / "sqs.pickle").is_file()
    assert not (state.s3_dir / "models").exists()  # the durable backend does not mirror buckets: s3rver keeps them
    with EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable") as second:
        assert second.start_seconds is not None
        _check(second, position)


def test_everything_written_survives_a_sigkill_of_every_emulator_and_they_are_restarted(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    lines: list[str] = []
    with EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable", log_line=lines.append) as cloud:
        position = _write(cloud)
        before = cloud.pids()
        for pid in before.values():
            os.kill(pid, signal.SIGKILL)  # the router too: it is restarted on the same port
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (
            len(cloud.crashes) >= len(before)
            and all(p is not None and p not in before.values() for p in cloud.pids().values())
            and _port_in_use("127.0.0.1", cloud.port)
        ):
            time.sleep(0.1)
        assert sorted(c.split()[0] for c in cloud.crashes) == sorted(before)
        assert any("exited with -9; restarting" in line for line in lines), lines
        _check(cloud, position)


def test_a_crashed_emulator_is_reported_and_restarted_and_serves_again(tmp_path):
    lines: list[str] = []
    with EmbeddedCloud(port=0, names=NAMES, backend="durable", log_line=lines.append) as cloud:
        dynamodb = cloud.client("dynamodb")
        dynamodb.put_item(TableName=NAMES.table(USER_FEATURES), Item={"user_id": {"S": "u9"}})
        old = cloud.pids()["dynamodb"]
        os.kill(old, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("dynamodb emulator is back" in line for line in lines):
            time.sleep(0.1)
        assert cloud.crashes == ["dynamodb exited with -9"]
        assert cloud.pids()["dynamodb"] not in (None, old)
        assert dynamodb.get_item(TableName=NAMES.table(USER_FEATURES), Key={"user_id": {"S": "u9"}})["Item"]


SUPERVISOR = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from rtrec_local.cloud import EmbeddedCloud
    from rtrec_local.state import LocalState
    from rtrec.resources import ResourceNames
    sys.path.insert(0, sys.argv[2])
    from test_durable_cloud import _write
    cloud = EmbeddedCloud(port=0, names=ResourceNames(prefix="durable"), state=LocalState(Path(sys.argv[1])).ensure(),
                          backend="durable")
    cloud.start()
    position = _write(cloud)
    print(json.dumps({"port": cloud.port, "pids": cloud.pids(), "position": position}), flush=True)
    time.sleep(600)
""")


def test_a_sigkill_of_the_supervisor_leaves_no_emulator_behind_and_loses_nothing(tmp_path):
    state_root = tmp_path / "state"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(state_root), str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True
    )
    try:
        started = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 10
    alive = list(started["pids"].values())
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _alive(pid)]
        time.sleep(0.1)
    assert alive == [], f"emulators outlived their supervisor: {alive}"
    assert not _port_in_use("127.0.0.1", started["port"])
    with EmbeddedCloud(port=0, names=NAMES, state=LocalState(state_root).ensure(), backend="durable") as again:
        _check(again, started["position"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its dead parent's reaper) holds no port
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_the_router_sends_each_service_to_its_emulator_and_answers_health(tmp_path):
    import urllib.request

    with EmbeddedCloud(port=0, names=NAMES, backend="durable") as cloud:
        health = json.loads(urllib.request.urlopen(f"{cloud.endpoint_url}/_localstack/health", timeout=5).read())
        assert set(health["services"]) >= {"dynamodb", "kinesis", "s3"}
        endpoints = cloud.service_endpoints
        assert set(endpoints) == {"dynamodb", "kinesis", "s3", "moto"}
        # each emulator answers on its own port too (AWS_ENDPOINT_URL_DYNAMODB and friends)
        from rtrec.adapters.aws.clients import aws_client

        direct = aws_client("dynamodb", endpoints["dynamodb"])
        assert NAMES.table(USER_FEATURES) in direct.list_tables()["TableNames"]
        # a presigned URL (no Authorization header, X-Amz-Credential in the query) reaches s3rver
        s3 = cloud.client("s3")
        s3.put_object(Bucket=NAMES.bucket(MODELS_BUCKET), Key="k.txt", Body=b"presigned")
        url = s3.generate_presigned_url("get_object", Params={"Bucket": NAMES.bucket(MODELS_BUCKET), "Key": "k.txt"})
        assert urllib.request.urlopen(url, timeout=5).read() == b"presigned"
        import boto3
        from botocore.config import Config

        v4 = boto3.client(
            "s3",
            endpoint_url=cloud.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(signature_version="s3v4"),
        )
        url = v4.generate_presigned_url("get_object", Params={"Bucket": NAMES.bucket(MODELS_BUCKET), "Key": "k.txt"})
        assert "X-Amz-Credential" in url
        assert urllib.request.urlopen(url, timeout=5).read() == b"presigned"
        # moto-only services answer behind the same port
        assert cloud.client("sts").get_caller_identity()["Account"]
        cloud.client("cloudwatch").put_metric_data(Namespace="durable", MetricData=[{"MetricName": "m", "Value": 1}])


def test_the_systems_own_clients_reach_every_emulator_past_the_router(tmp_path):
    from rtrec.adapters.aws.clients import route_services

    with EmbeddedCloud(port=0, names=NAMES, backend="durable") as cloud:
        routes = cloud.client_routes
        assert set(routes) == {"dynamodb", "kinesis", "s3", "sqs", "cloudwatch"}
        assert cloud.endpoint_url not in routes.values()
        route_services(cloud.endpoint_url, routes)
        try:
            assert cloud.client("dynamodb").meta.endpoint_url == routes["dynamodb"]
            assert cloud.client("sqs").meta.endpoint_url == cloud.service_endpoints["moto"]
            _check(cloud, _write(cloud))
            cloud.client("cloudwatch").put_metric_data(Namespace="durable", MetricData=[{"MetricName": "m", "Value": 1}])
        finally:
            route_services(cloud.endpoint_url, {})


def test_a_get_while_an_object_is_replaced_sees_the_old_or_the_new_object_never_part_of_one(tmp_path):
    """S3 replaces an object whole; s3rver wrote over the file in place (the consumer's shard state, read by serving
    while the consumer saved it, came back cut short)."""
    import threading

    versions = [bytes([65 + n]) * (3 * 1024 * 1024) for n in range(2)]  # 3 MiB of "A", then of "B"
    with EmbeddedCloud(port=0, names=NAMES, state=LocalState(tmp_path / "state").ensure(), backend="durable") as cloud:
        s3, bucket = cloud.client("s3"), NAMES.bucket(MODELS_BUCKET)
        s3.put_object(Bucket=bucket, Key="swap.bin", Body=versions[0])
        done, seen = threading.Event(), []

        def writer() -> None:
            for n in range(20):
                s3.put_object(Bucket=bucket, Key="swap.bin", Body=versions[(n + 1) % 2])
            done.set()

        thread = threading.Thread(target=writer)
        thread.start()
        reader = cloud.client("s3")
        while not done.is_set():
            body = reader.get_object(Bucket=bucket, Key="swap.bin")["Body"].read()
            seen.append(body in versions)
        thread.join()
        assert len(seen) >= 5, f"{seen.count(False)} of {len(seen)} reads saw part of an object"
        assert all(seen), f"{seen.count(False)} of {len(seen)} reads saw part of an object"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert keys == ["swap.bin"]
