"""The impression producer (KinesisImpressionProducer): batched PutRecords off the request path, refused records sent
again, nothing lost on flush or shutdown, a bounded buffer that drops and counts rather than blocks.

The contract tests (`test_contract_*`) take a `kinesis` fixture: here an in-memory Kinesis client (`FakeKinesis`,
which enforces PutRecords' limits), in tests/integration/test_impression_producer_kinesis.py the embedded cloud's. Faults
(refusals, outages, a hung call) wrap either client, so the same tests hold the fake to the real API.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from mangum import Mangum

from functions.api.app import Services, create_app, lambda_entry
from rtrec.adapters.aws.kinesis import (
    PUT_RECORDS_BYTES,
    PUT_RECORDS_LIMIT,
    KinesisEventStream,
    entry_bytes,
    record_entry,
)
from rtrec.adapters.aws.kinesis_producer import KinesisImpressionProducer
from rtrec.adapters.memory import InMemoryEventStream
from rtrec.domain.access import AccessPolicy, gateway_keys
from rtrec.domain.events import Impression, UserEvent, decode_record
from rtrec.monitoring.telemetry import Telemetry
from rtrec.services.stream import IngestService
from tests.conftest import SAMPLE_API_KEY_ROLES
from tests.unit.monitoring_world import RecordingMetrics
from tests.unit.test_api import LambdaContext, make_recommender

NOW = 1_700_000_000.0


def impression(n: int, *, run: str = "r", features: int = 0) -> Impression:
    """A 10-item slate; `features` rows of padding per item make it bigger (the byte limits)."""
    items = tuple(f"i{(n + k) % 50}" for k in range(10))
    row = tuple(0.123456789 for _ in range(features))
    return Impression(
        f"{run}-req{n}",
        f"{run}-u{n % 97}",
        "3",
        "two_tower",
        items,
        (0.1,) * 10,
        (0.5,) * 10,
        NOW + n,
        features=(row,) * 10 if features else (),
    )


# -- Kinesis clients: in memory, and faults around any client ------------------------------------------------------


class FakeKinesis:
    """PutRecords in memory, with Kinesis' limits (500 records, 5 MiB a call) and an optional latency per call."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.records: list[bytes] = []
        self.calls: list[int] = []  # records per call
        self._lock = threading.Lock()

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        size = sum(len(r["Data"]) + len(r["PartitionKey"].encode()) for r in Records)
        if not 1 <= len(Records) <= PUT_RECORDS_LIMIT or size > PUT_RECORDS_BYTES:
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "limits"}}, "PutRecords")
        if self.latency_s:
            time.sleep(self.latency_s)
        with self._lock:
            self.calls.append(len(Records))
            self.records.extend(r["Data"] for r in Records)
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1", "ShardId": "shardId-0"} for _ in Records]}


class Faults:
    """Around a Kinesis client: counts calls, refuses the records `refuse(call, index)` names (as a hot shard
    throttles), fails whole calls while `down`, and holds calls while `hold` is clear."""

    def __init__(self, inner: Any, refuse: Callable[[int, int], bool] = lambda call, index: False) -> None:
        self.inner = inner
        self.refuse = refuse
        self.down = False
        self.hold = threading.Event()
        self.hold.set()
        self.calls: list[int] = []
        self.failed_calls = 0

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.hold.wait(30)
        call = len(self.calls)
        self.calls.append(len(Records))
        if self.down:
            self.failed_calls += 1
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}}, "PutRecords")
        refused = [self.refuse(call, n) for n in range(len(Records))]
        sent = [r for r, no in zip(Records, refused, strict=True) if not no]
        accepted = iter(self.inner.put_records(StreamName=StreamName, Records=sent)["Records"] if sent else [])
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"} if no else next(accepted)
            for no in refused
        ]
        return {"FailedRecordCount": sum(refused), "Records": results}


@dataclass
class KinesisUnderTest:
    """A stream to write to, the client that writes it, and how to read back what it holds."""

    stream_name: str
    client: Any
    read: Callable[[], list[bytes]]


@pytest.fixture
def kinesis() -> KinesisUnderTest:
    fake = FakeKinesis()
    return KinesisUnderTest("unit-events", fake, lambda: list(fake.records))


def producer_over(client: Any, stream_name: str, **options: Any) -> KinesisImpressionProducer:
    options.setdefault("background", False)
    options.setdefault("backoff_s", 0.01)
    return KinesisImpressionProducer(KinesisEventStream(stream_name, client), **options)


def request_ids(records: list[bytes], run: str) -> list[str]:
    return [
        m.request_id for m in map(decode_record, records) if isinstance(m, Impression) and m.request_id.startswith(f"{run}-")
    ]


# -- contract: the same tests against the fake and the embedded cloud ---------------------------------------------


def test_contract_n_impressions_take_ceil_n_over_500_put_records_calls(kinesis):
    run, n = uuid.uuid4().hex[:8], 1234
    faults = Faults(kinesis.client)
    producer = producer_over(faults, kinesis.stream_name)
    for k in range(n):
        assert producer.offer(impression(k, run=run))
    assert faults.calls == []  # nothing on the request path
    assert producer.flush(10) == 0
    assert faults.calls == [500, 500, 234]  # ceil(1234 / 500) calls, not 1234
    assert sorted(request_ids(kinesis.read(), run)) == sorted(f"{run}-req{k}" for k in range(n))


def test_contract_a_call_never_exceeds_five_mib(kinesis):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client)
    producer = producer_over(faults, kinesis.stream_name)
    big = [impression(k, run=run, features=2_000) for k in range(60)]  # ~200 KB each: ~12 MB in all
    for message in big:
        producer.offer(message)
    assert producer.flush(20) == 0
    assert len(faults.calls) == 3
    assert sum(faults.calls) == 60
    assert len(request_ids(kinesis.read(), run)) == 60


def test_contract_only_the_refused_records_are_sent_again(kinesis):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client, refuse=lambda call, index: call == 0 and index % 2 == 1)
    producer = producer_over(faults, kinesis.stream_name)
    for k in range(300):
        producer.offer(impression(k, run=run))
    assert producer.flush(10) == 0
    assert faults.calls == [300, 150]  # the second call carries the refused half only
    ids = request_ids(kinesis.read(), run)
    assert sorted(ids) == sorted(f"{run}-req{k}" for k in range(300))  # each exactly once
    assert producer.stats().resent == 150
    assert producer.stats().dropped == 0


def test_contract_shutdown_sends_everything_buffered(kinesis):
    run, n = uuid.uuid4().hex[:8], 777
    faults = Faults(kinesis.client)
    producer = producer_over(faults, kinesis.stream_name, background=True, linger_s=60.0)  # never lingers out
    for k in range(n):
        producer.offer(impression(k, run=run))
    assert producer.close(10) == 0
    assert len(request_ids(kinesis.read(), run)) == n
    assert producer.stats().dropped == 0
    assert producer.depth == 0
    assert not producer.offer(impression(n, run=run))  # closed: dropped and counted, never blocked
    assert producer.stats().dropped == 1


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_contract_the_background_sender_sends_a_full_call_at_once(kinesis):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client)
    producer = producer_over(faults, kinesis.stream_name, background=True, linger_s=60.0)  # only size can trigger
    for k in range(1000):
        producer.offer(impression(k, run=run))
    assert wait_for(lambda: len(request_ids(kinesis.read(), run)) == 1000)  # no flush, no 60 s linger
    assert faults.calls == [500, 500]
    assert producer.close(5) == 0


def test_contract_the_background_sender_sends_what_lingered(kinesis):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client)
    producer = producer_over(faults, kinesis.stream_name, background=True, linger_s=0.05)
    for wave in range(3):  # each wave after the sender went idle
        for k in range(10):
            producer.offer(impression(wave * 10 + k, run=run))
        expected = 10 * (wave + 1)
        assert wait_for(lambda n=expected: len(request_ids(kinesis.read(), run)) == n, 10), wave
        time.sleep(0.1)
    assert len(faults.calls) <= 6, faults.calls  # a call per wave (or two), not one per impression
    assert producer.close(5) == 0


def test_contract_an_outage_keeps_records_buffered_and_retried_until_the_flush_times_out(kinesis):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client)
    faults.down = True
    metrics = RecordingMetrics()
    producer = producer_over(faults, kinesis.stream_name, telemetry=Telemetry(metrics), backoff_s=0.02, max_backoff_s=0.1)
    for k in range(120):
        producer.offer(impression(k, run=run))
    started = time.monotonic()
    assert producer.flush(0.5) == 120  # nothing could be sent: all still buffered, none dropped
    assert time.monotonic() - started < 1.5
    assert 3 <= len(faults.calls) <= 15, faults.calls  # retried, with backoff (not a busy loop)
    assert producer.stats().dropped == 0
    assert metrics.total("ImpressionsDropped") == 0
    faults.down = False  # it comes back: the next flush sends them all, once
    assert producer.flush(10) == 0
    assert sorted(request_ids(kinesis.read(), run)) == sorted(f"{run}-req{k}" for k in range(120))

    faults.down = True  # down at shutdown: what is left is dropped, and counted
    for k in range(120, 150):
        producer.offer(impression(k, run=run))
    assert producer.close(0.3) == 30
    assert producer.stats().dropped == 30
    assert metrics.total("ImpressionsDropped") == 30
    assert len(request_ids(kinesis.read(), run)) == 120


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
def test_contract_a_full_buffer_drops_and_counts_and_never_blocks(kinesis, overflow):
    run = uuid.uuid4().hex[:8]
    faults = Faults(kinesis.client)
    faults.hold.clear()  # the first PutRecords hangs (a stuck connection): the buffer fills behind it
    metrics = RecordingMetrics()
    producer = producer_over(
        faults,
        kinesis.stream_name,
        background=True,
        linger_s=0.0,
        max_records=100,
        overflow=overflow,
        telemetry=Telemetry(metrics),
    )
    producer.offer(impression(0, run=run))
    deadline = time.monotonic() + 5
    while producer.stats().in_flight == 0 and time.monotonic() < deadline:  # the sender took it: its call hangs
        time.sleep(0.005)
    slowest = 0.0
    for k in range(1, 1001):
        started = time.perf_counter()
        producer.offer(impression(k, run=run))
        slowest = max(slowest, time.perf_counter() - started)
    stats = producer.stats()
    assert slowest < 0.05  # each offer returns at once, however stuck the stream is
    assert stats.queued == 100
    assert stats.in_flight == 1
    assert stats.dropped == 900
    assert metrics.total("ImpressionsDropped") == 900
    faults.hold.set()
    assert producer.close(10) == 0
    ids = request_ids(kinesis.read(), run)
    kept = range(901, 1001) if overflow == "drop_oldest" else range(1, 101)
    assert sorted(ids) == sorted([f"{run}-req0", *(f"{run}-req{k}" for k in kept)])


def test_contract_a_byte_bound_drops_too(kinesis):
    run = uuid.uuid4().hex[:8]
    producer = producer_over(kinesis.client, kinesis.stream_name, max_bytes=1024 * 1024)
    size = entry_bytes(record_entry(impression(0, run=run, features=2_000)))  # ~200 KB, the same for k < 10
    for k in range(10):
        producer.offer(impression(k, run=run, features=2_000))
    stats = producer.stats()
    assert stats.queued == (1024 * 1024) // size
    assert stats.queued_bytes <= 1024 * 1024
    assert stats.dropped == 10 - stats.queued
    assert producer.flush(10) == 0
    assert sorted(request_ids(kinesis.read(), run)) == sorted(f"{run}-req{k}" for k in range(10 - stats.queued, 10))


# -- the services and the app ----------------------------------------------------------------------------------


def test_log_impression_queues_without_touching_the_stream_and_events_stay_synchronous():
    stream = InMemoryEventStream()
    fake = FakeKinesis()
    producer = producer_over(fake, "s")
    service = IngestService(stream, clock=lambda: NOW, impressions=producer)
    result = make_recommender().recommend("1", 5)
    assert service.log_impression(result)
    assert stream.messages == []
    assert fake.calls == []
    assert producer.depth == 1
    assert service.ingest([UserEvent("e1", "1", "11", "click", NOW)]) == 1
    assert len(stream.messages) == 1  # POST /events: on the stream before it answers
    assert service.flush_impressions(5) == 0
    assert [decode_record(r).request_id for r in fake.records] == [result.request_id]


def test_log_impression_without_a_producer_puts_directly():
    stream = InMemoryEventStream()
    service = IngestService(stream, clock=lambda: NOW)
    assert service.log_impression(make_recommender().recommend("1", 5))
    assert len(stream.messages) == 1
    assert service.flush_impressions(1) == 0
    assert service.close(1) == 0


def app_over(fake: Any, *, background: bool) -> tuple[Services, KinesisImpressionProducer]:
    producer = producer_over(fake, "s", background=background, linger_s=60.0)
    services = Services(
        make_recommender(),
        catalog=None,  # type: ignore[arg-type]
        ingest=IngestService(InMemoryEventStream(), clock=lambda: NOW, impressions=producer),
        access=AccessPolicy(gateway_keys(SAMPLE_API_KEY_ROLES), require_keys=False),
    )
    return services, producer


def test_the_apps_shutdown_flushes_every_impression():
    fake = FakeKinesis()
    services, producer = app_over(fake, background=True)
    with TestClient(create_app(services)) as client:  # the context runs the lifespan, as uvicorn does
        served = [client.get("/recommend/1", params={"k": 5}).json()["request_id"] for _ in range(40)]
        assert len(fake.records) < 40  # lingering in the buffer (60 s), not sent per request
    assert sorted(decode_record(r).request_id for r in fake.records) == sorted(served)
    assert len(fake.calls) <= 2
    assert producer.stats().dropped == 0


def test_the_lambda_entry_flushes_the_invocations_impressions_before_it_returns(lambda_event):
    fake = FakeKinesis()
    services, producer = app_over(fake, background=False)
    mangum = Mangum(create_app(services), lifespan="off")
    event = lambda_event("api_recommend_user_1.json")

    response = mangum(event, LambdaContext())  # without the wrapper: the impression stays buffered
    assert response["statusCode"] == 200
    assert fake.records == []
    assert producer.depth == 1

    response = lambda_entry(mangum, services)(event, LambdaContext())
    assert response["statusCode"] == 200
    ids = [decode_record(r).request_id for r in fake.records]
    assert json.loads(response["body"])["request_id"] in ids
    assert len(ids) == 2
    assert fake.calls == [2]
    assert producer.depth == 0


def test_the_lambda_flush_never_outlasts_the_invocation():
    class Ending(LambdaContext):
        def get_remaining_time_in_millis(self) -> int:
            return 300  # less than the margin left for the response

    fake = Faults(FakeKinesis())
    services, producer = app_over(fake, background=False)
    producer.offer(impression(1))
    entry = lambda_entry(lambda event, context: {"statusCode": 200}, services)
    assert entry({}, Ending())["statusCode"] == 200
    assert fake.calls == []
    assert producer.depth == 1
    assert entry({}, LambdaContext())["statusCode"] == 200
    assert fake.calls == [1]


def test_drops_and_depth_are_catalog_metrics():
    from rtrec.monitoring.catalog import metric

    metrics = RecordingMetrics()
    Telemetry(metrics).impressions_dropped(3)
    Telemetry(metrics).impression_queue(7)
    assert metrics.puts == [("ImpressionsDropped", 3, "Count", {}), ("ImpressionQueueDepth", 7, "Count", {})]
    assert metric("ImpressionsDropped").kind == "counter"
    assert metric("ImpressionQueueDepth").kind == "gauge"


def test_settings_reach_the_producer(monkeypatch):
    from rtrec.settings import ApiSettings

    monkeypatch.setenv("RTREC_IMPRESSION_LINGER_MS", "20")
    monkeypatch.setenv("RTREC_IMPRESSION_OVERFLOW", "drop_newest")
    settings = ApiSettings()
    assert settings.impression_linger_ms == 20
    assert settings.impression_overflow == "drop_newest"
    assert settings.impression_buffer_records == 10_000
    assert settings.impression_flush_seconds == 2.0
