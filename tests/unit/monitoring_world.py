"""A small, real run of the loop over in-memory ports, for the monitoring tests.

Users ask the API (FastAPI over HTTP, TestClient) for recommendations over two hours of simulated time, the model
version changes half-way, each user acts on an item (often one of the slate, naming it), serving logs impressions to
the stream, and the real stream consumer (with the online learner) reads the stream in Kinesis batches: the
counterfactual log, the joined slates and every metric come from that run, not from made-up numbers.
"""

from __future__ import annotations

import base64
import random
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from functions.api.observability import request_id
from functions.stream_consumer.app import ConsumerHandler
from rtrec.adapters.memory import (
    InMemoryCounterfactualLog,
    InMemoryDeadLetterQueue,
    InMemoryEventStream,
    InMemoryRankerStateStore,
)
from rtrec.domain.events import StreamMessage, encode_record
from rtrec.domain.models import UserProfile
from rtrec.domain.ranking import RankingConfig
from rtrec.monitoring.telemetry import Telemetry
from rtrec.services.online import OnlineLearner
from rtrec.services.recommend import Recommender
from rtrec.services.stream import IngestService, StreamConsumer
from tests.unit.serving_world import NOW, catalog_items, make_model, make_world

STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/rtrec-events"


class RecordingMetrics:
    """The Metrics port as a list of what was put."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, float, str, dict[str, str]]] = []

    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None:
        self.puts.append((name, value, unit, dict(dimensions or {})))

    def total(self, name: str) -> float:
        return sum(value for n, value, _, _ in self.puts if n == name)


class LogReader:
    """`read(kind)` over the in-memory log's raw batches, as S3CounterfactualLog reads its objects."""

    def __init__(self, log: InMemoryCounterfactualLog) -> None:
        self.log = log

    def read(self, kind: str) -> list[StreamMessage]:
        wanted = "impression" if kind == "impressions" else "event"
        seen: dict[str, StreamMessage] = {}
        for messages in self.log.batches.values():
            for message in messages:
                if (type(message).__name__ == "Impression") == (wanted == "impression"):
                    seen.setdefault(message.event_id, message)
        return list(seen.values())

    def read_joined(self):
        return self.log.read_joined()


def kinesis_event(messages: list[StreamMessage], first_sequence: int, arrived: float) -> dict[str, Any]:
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": m.user_id,
                    "sequenceNumber": str(first_sequence + n),
                    "data": base64.b64encode(encode_record(m)).decode(),
                    "approximateArrivalTimestamp": arrived,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{first_sequence + n}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": STREAM_ARN,
            }
            for n, m in enumerate(messages)
        ]
    }


@dataclass
class MonitoringRun:
    client: TestClient
    log: InMemoryCounterfactualLog
    api_metrics: Any
    consumer_metrics: RecordingMetrics
    responses: list[dict[str, Any]] = field(default_factory=list)
    request_id_headers: list[str] = field(default_factory=list)


def run_loop(api_sink: Any, requests: int = 120, seed: int = 3) -> MonitoringRun:
    """`requests` recommendations one simulated minute apart, each followed by the user's event; then the consumer
    reads the stream in batches of 25 records."""
    world = make_world()
    world.features.put_users(
        [
            UserProfile(f"u{n}", age=20 + n % 40, gender="FM"[n % 2], history=(str(1 + n % 20),), interaction_count=1)
            for n in range(2, 40)
        ]
    )
    clock = [NOW]
    stream = InMemoryEventStream()
    recommender = Recommender(
        world.features,
        world.popularity,
        lambda: world.model,
        ranking=RankingConfig(policy="plackett_luce", freshness_weight=0.0),
        wall_clock=lambda: clock[0],
        request_ids=request_id,
    )
    services = Services(
        recommender=recommender,
        catalog=None,  # type: ignore[arg-type]
        ingest=IngestService(stream, clock=lambda: clock[0]),
    )
    client = TestClient(create_app(services, telemetry=Telemetry(api_sink)))
    run = MonitoringRun(client, InMemoryCounterfactualLog(), api_sink, RecordingMetrics())
    rng = random.Random(seed)
    users = [f"u{n}" for n in range(1, 40)]
    for n in range(requests):
        clock[0] = NOW + 60 * n
        if n == requests // 2:
            world.model = make_model(catalog_items(), version="2")
        user = rng.choice(users) if rng.random() < 0.85 else f"stranger-{n}"  # some users are cold starts
        response = client.get(f"/recommend/{user}")
        assert response.status_code == 200, response.text
        body = response.json()
        run.responses.append(body)
        run.request_id_headers.append(response.headers["x-request-id"])
        shown = [r["item_id"] for r in body["recommendations"]]
        item = rng.choice(shown[:3]) if rng.random() < 0.4 else str(rng.randint(1, 40))
        posted = client.post(
            "/events",
            json={
                "events": [
                    {
                        "event_id": f"e{n}",
                        "user_id": user,
                        "item_id": item,
                        "type": "click",
                        "timestamp": clock[0] + 5,
                        "request_id": body["request_id"],
                    }
                ]
            },
        )
        assert posted.status_code == 202, posted.text
    assert client.get("/recommend/u1", params={"k": 0}).status_code == 422  # a client error, counted as one

    consumer = ConsumerHandler(
        StreamConsumer(world.features, run.log),
        InMemoryDeadLetterQueue(),
        OnlineLearner(InMemoryRankerStateStore(), run.log),
        Telemetry(run.consumer_metrics),
    )
    messages = list(stream.messages)
    for start in range(0, len(messages), 25):
        event = kinesis_event(messages[start : start + 25], 1000 + start, arrived=time.time() - 2.0)
        assert consumer(event, None) == {"batchItemFailures": []}
    return run
