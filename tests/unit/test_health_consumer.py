"""/health reports the stream consumer's lag: from the local event source mapping when the app is given its stats
(`rtrec run`), else where to read it (the IteratorAge metric); lag degrades, never fails, health."""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from rtrec.errors import DependencyError
from tests.unit.test_api import make_recommender
from tests.unit.test_kinesis_event_source import SHARD, FakeKinesis, make


def health(consumer_status: Any = None) -> tuple[int, dict[str, Any]]:
    response = TestClient(create_app(Services(make_recommender()), consumer_status=consumer_status)).get("/health")
    return response.status_code, response.json()


def test_without_a_consumer_in_process_health_points_at_the_iterator_age_metric():
    status, body = health()
    assert status == 200
    assert body["consumer"]["source"] == "cloudwatch"
    assert "IteratorAge" in body["consumer"]["detail"]


def test_a_stalled_shard_is_reported_with_its_lag_and_health_stays_200():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    for i in range(5):
        kinesis.put(SHARD, i)
    for record in kinesis.shards[SHARD]["records"]:
        record["ApproximateArrivalTimestamp"] = time.time() - 90.0

    def handler(event: dict, context: Any) -> None:
        raise DependencyError("reading users from rtrec-user-features failed: ServiceUnavailable")

    esm = make(kinesis, handler, max_backoff_s=0.05)
    assert not esm.run_until_idle(timeout_s=0.3)
    status, body = health(esm.stats)
    consumer = body["consumer"]
    assert status == 200
    assert consumer["source"] == "local"
    assert consumer["status"] == "stalled"
    assert consumer["lag_seconds"] >= 90
    assert consumer["stalled_shards"][SHARD].startswith("stalled since 20")
    assert "rtrec-user-features" not in json.dumps(body)  # the error's text is in the consumer's log, not /health


def test_a_caught_up_consumer_is_ok_and_a_broken_status_callable_does_not_break_health():
    kinesis = FakeKinesis()
    kinesis.add_shard(SHARD)
    kinesis.put(SHARD, 1)
    esm = make(kinesis, lambda event, context: None)
    assert esm.run_until_idle(timeout_s=5)
    status, body = health(esm.stats)
    assert status == 200
    assert body["consumer"]["status"] == "ok"
    assert body["consumer"]["lag_seconds"] == 0

    def broken() -> dict:
        raise RuntimeError("boom")

    status, body = health(broken)
    assert status == 200
    assert body["consumer"]["source"] == "unavailable"
