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


def test_a_busy_port_is_a_clear_error(cloud):
    from rtrec.errors import DependencyError

    with pytest.raises(DependencyError, match="already in use"):
        EmbeddedCloud(port=cloud.port).start()
