from __future__ import annotations

import re

from rtrec.resources import BUCKETS, QUEUES, STREAMS, TABLES, ResourceNames


def test_every_resource_has_a_unique_physical_name():
    names = ResourceNames()
    physical = (
        [names.table(t) for t in TABLES]
        + [names.stream(s) for s in STREAMS]
        + [names.bucket(b) for b in BUCKETS]
        + [names.queue(q) for q in QUEUES]
    )
    assert len(physical) == len(set(physical))
    assert names.table(TABLES[0]).startswith("rtrec-")


def test_bucket_names_are_valid_s3_names_with_a_suffix():
    names = ResourceNames(prefix="staging", bucket_suffix="123456789012-eu-west-1")
    for spec in BUCKETS:
        name = names.bucket(spec)
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
        assert name.endswith("-123456789012-eu-west-1")


def test_the_issue_names_every_resource_kind():
    logical = {t.logical_name for t in TABLES}
    assert {"user-features", "item-features", "locks", "stream-checkpoints"} <= logical
    assert {b.logical_name for b in BUCKETS} == {"models", "counterfactual-logs", "offline-store", "dead-letters"}
    assert all(b.persistent for b in BUCKETS)
    assert [s.logical_name for s in STREAMS] == ["events"]
    assert [q.logical_name for q in QUEUES] == ["events-dlq"]
