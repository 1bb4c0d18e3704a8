"""The in-memory moto backend (backend="moto"): persistent buckets go to disk at stop and come back at start.

The durable backend keeps them in s3rver instead (tests/integration/test_durable_cloud.py)."""

from __future__ import annotations

import pytest

from rtrec.resources import MODELS_BUCKET, OFFLINE_STORE_BUCKET, ResourceNames
from rtrec_local.cloud import EmbeddedCloud
from rtrec_local.state import LocalState

pytestmark = pytest.mark.integration


def test_objects_survive_a_restart_and_deletions_stick(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    names = ResourceNames(prefix="restart")
    with EmbeddedCloud(port=0, backend="moto", names=names, state=state) as first:
        s3 = first.client("s3")
        s3.put_object(Bucket=names.bucket(MODELS_BUCKET), Key="production/pointer.json", Body=b'{"version": "3"}')
        s3.put_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="events/2026/11/25/a.jsonl", Body=b"{}\n")
        s3.put_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="tmp/drop.txt", Body=b"x")
    assert (state.s3_dir / "models" / "production" / "pointer.json").read_bytes() == b'{"version": "3"}'

    with EmbeddedCloud(port=0, backend="moto", names=names, state=state) as second:
        s3 = second.client("s3")
        body = s3.get_object(Bucket=names.bucket(MODELS_BUCKET), Key="production/pointer.json")["Body"].read()
        assert body == b'{"version": "3"}'
        s3.delete_object(Bucket=names.bucket(OFFLINE_STORE_BUCKET), Key="tmp/drop.txt")

    assert not (state.s3_dir / "offline-store" / "tmp" / "drop.txt").exists()
    assert (state.s3_dir / "offline-store" / "events" / "2026" / "11" / "25" / "a.jsonl").exists()


def test_saving_downloads_only_what_changed(tmp_path):
    state = LocalState(tmp_path / "state").ensure()
    names = ResourceNames(prefix="resave")
    with EmbeddedCloud(port=0, backend="moto", names=names, state=state) as cloud:
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
    with EmbeddedCloud(port=0, backend="moto", names=names, state=state) as first:
        ranker = RankerShardState("shardId-000000000000", learned_through=5000)
        ranker.observe_positive("7", 1_000.0)
        S3RankerStateStore(names.bucket(MODELS_BUCKET), client=first.client("s3")).save(ranker)
    with EmbeddedCloud(port=0, backend="moto", names=names, state=state) as second:  # a new stream numbers records from 1 again
        again = S3RankerStateStore(names.bucket(MODELS_BUCKET), client=second.client("s3")).load("shardId-000000000000")
        assert again.learned_through == -1
        assert again.trend == {"7": 1.0}


def test_the_counterfactual_log_comes_back_as_one_object_per_partition_with_every_line_once(tmp_path):
    from rtrec.adapters.aws.s3 import list_objects
    from rtrec.resources import COUNTERFACTUAL_BUCKET

    state = LocalState(tmp_path / "state").ensure()

    def lines(s3, bucket: str) -> list[bytes]:
        out = []
        for obj in list_objects(s3, bucket, ""):
            out += s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read().splitlines()
        return sorted(out)

    # moto's backend is shared within a process: each start gets buckets of its own (the state folder is per
    # logical bucket name), as a new process would
    names = [ResourceNames(prefix=f"compact{n}") for n in range(3)]
    buckets = [n.bucket(COUNTERFACTUAL_BUCKET) for n in names]
    with EmbeddedCloud(port=0, backend="moto", names=names[0], state=state) as first:
        s3 = first.client("s3")
        for n in range(3):
            s3.put_object(Bucket=buckets[0], Key=f"events/dt=2026-11-26/batch-{n}.jsonl", Body=f'{{"n": {n}}}\n'.encode())
        s3.put_object(Bucket=buckets[0], Key="events/dt=2026-11-27/batch-9.jsonl", Body=b'{"n": 9}')  # no newline
    with EmbeddedCloud(port=0, backend="moto", names=names[1], state=state) as second:
        s3 = second.client("s3")
        keys = [o["Key"] for o in list_objects(s3, buckets[1], "")]
        assert len(keys) == 2
        assert any(k.startswith("events/dt=2026-11-26/compacted-") for k in keys)
        assert lines(s3, buckets[1]) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}', b'{"n": 9}']
        s3.put_object(Bucket=buckets[1], Key="events/dt=2026-11-26/batch-3.jsonl", Body=b'{"n": 3}\n')
    assert len(list((state.s3_dir / "counterfactual-logs" / "events" / "dt=2026-11-26").iterdir())) == 2
    with EmbeddedCloud(port=0, backend="moto", names=names[2], state=state) as third:
        s3 = third.client("s3")
        assert lines(s3, buckets[2]) == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}', b'{"n": 3}', b'{"n": 9}']
    assert len(list((state.s3_dir / "counterfactual-logs" / "events" / "dt=2026-11-26").iterdir())) == 1


def test_a_busy_port_is_a_clear_error(cloud):
    from rtrec.errors import DependencyError

    with pytest.raises(DependencyError, match="already in use"):
        EmbeddedCloud(port=cloud.port).start()
