"""What must survive a restart of the embedded cloud does: persistent buckets go to disk and come back."""

from __future__ import annotations

import pytest

from rtrec.local.cloud import EmbeddedCloud
from rtrec.local.state import LocalState
from rtrec.resources import MODELS_BUCKET, OFFLINE_STORE_BUCKET, ResourceNames

pytestmark = pytest.mark.integration


def test_objects_survive_a_restart_and_deletions_stick(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    names = ResourceNames(prefix="restart")
    with EmbeddedCloud(port=0, names=names, state=state) as first:
        s3 = first.client("s3")
        s3.put_object(Bucket=names.bucket(MODELS_BUCKET), Key="production/pointer.json", Body=b'{"version": "3"}')
        s3.put_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="events/2026/11/25/a.jsonl", Body=b"{}\n")
        s3.put_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="tmp/drop.txt", Body=b"x")
    assert (state.s3_dir / "models" / "production" / "pointer.json").read_bytes() == b'{"version": "3"}'

    with EmbeddedCloud(port=0, names=names, state=state) as second:
        s3 = second.client("s3")
        body = s3.get_object(Bucket=names.bucket(MODELS_BUCKET), Key="production/pointer.json")["Body"].read()
        assert body == b'{"version": "3"}'
        s3.delete_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="tmp/drop.txt")

    assert not (state.s3_dir / "offline-store" / "tmp" / "drop.txt").exists()
    assert (state.s3_dir / "offline-store" / "events" / "2026" / "11" / "25" / "a.jsonl").exists()


def test_saving_downloads_only_what_changed(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    names = ResourceNames(prefix="resave")
    with EmbeddedCloud(port=0, names=names, state=state) as cloud:
        s3, bucket = cloud.client("s3"), names.bucket(MODELS_BUCKET)
        s3.put_object(Bucket=bucket, Key="a.json", Body=b"1")
        s3.put_object(Bucket=bucket, Key="b.json", Body=b"2")
        assert state.save_buckets(s3, names) == 2
        assert state.save_buckets(s3, names) == 0
        s3.put_object(Bucket=bucket, Key="b.json", Body=b"3")
        assert state.save_buckets(s3, names) == 1
    assert (state.s3_dir / "models" / "b.json").read_bytes() == b"3"


def test_the_online_ranker_keeps_what_it_learned_but_not_its_stream_positions_across_a_restart(tmp_path):
    from rtrec.adapters.aws.s3 import S3RankerStateStore
    from rtrec.domain.online import RankerShardState

    state = LocalState(tmp_path / "state").ensure()
    names = ResourceNames(prefix="ranker")
    with EmbeddedCloud(port=0, names=names, state=state) as first:
        ranker = RankerShardState("shardId-000000000000", learned_through=5000)
        ranker.observe_positive("7", 1_000.0)
        S3RankerStateStore(names.bucket(MODELS_BUCKET), client=first.client("s3")).save(ranker)
    with EmbeddedCloud(port=0, names=names, state=state) as second:  # a new stream numbers records from 1 again
        again = S3RankerStateStore(names.bucket(MODELS_BUCKET), client=second.client("s3")).load("shardId-000000000000")
        assert again.learned_through == -1 and again.trend == {"7": 1.0}


def test_a_busy_port_is_a_clear_error(cloud):
    from rtrec.errors import DependencyError

    with pytest.raises(DependencyError, match="already in use"):
        EmbeddedCloud(port=cloud.port).start()
