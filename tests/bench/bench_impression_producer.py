"""Impression producer micro-benchmark (issue 15, item 5): what `IngestService.log_impression` costs the request path,
before (one PutRecords per slate, `KinesisEventStream.put`) and after (`KinesisImpressionProducer.offer`, a
background sender batching with a 50 ms linger), and how many PutRecords calls 1,000 impressions take.

Backends (`--backend`, default both): `fake`, an in-memory Kinesis client that sleeps `--latency-ms` (3 ms, the
embedded cloud's measured `put_record` p50) per call; `cloud`, the embedded cloud (moto server) in a child process
(`benchkit.child_cloud`), through boto3. Each arm logs `--impressions` 10-item slates with 7 ranking features per
item (about 1.5 KB a record) in two traffic shapes: `burst` (back to back, the most a sender can batch) and `paced`
(`--rate` slates/s, as requests arrive). Arms:
- `direct`: the code before this change, one synchronous PutRecords per slate;
- `producer`: the uvicorn wiring, offer on the request path, the background thread sends;
- `lambda`: the Lambda wiring, no thread, offer then the end-of-invocation flush (one call per invocation).
Reported per arm: the request-path time per slate (p50 / p99 / mean, in ms), PutRecords calls per 1,000 impressions,
and whether every impression reached the stream after close. Nothing asserts; pytest does not collect this file.

    .venv/bin/python tests/bench/bench_impression_producer.py
    .venv/bin/python tests/bench/bench_impression_producer.py --backend fake --impressions 5000 --rate 200
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchkit import child_cloud, machine, percentiles, show, table

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.kinesis import KinesisEventStream
from rtrec.adapters.aws.kinesis_producer import KinesisImpressionProducer
from rtrec.domain.models import Recommendation, ScoredItem
from rtrec.services.stream import IngestService
from tests.unit.test_impression_producer import FakeKinesis, Faults


def slate(n: int, run: str) -> Recommendation:
    items = tuple(ScoredItem(f"item{(n * 7 + k) % 3706}", 0.9 - k * 0.01, 0.1 + k * 0.01) for k in range(10))
    features = tuple(tuple(0.1 * j + k * 0.001 + n * 1e-6 for j in range(7)) for k in range(10))
    return Recommendation(
        f"{run}-{n}", f"user{n % 6040}", "3", False, "two_tower", items, features, q_hat=tuple(0.05 for _ in range(10))
    )


def run_arm(
    arm: str, shape: str, client_for: Callable[[], tuple[Any, str, Callable[[], int]]], n: int, rate: float
) -> dict[str, Any]:
    """One arm: `n` slates logged (`shape`), timed on the request path; then closed and counted on the stream."""
    client, stream_name, count = client_for()
    faults = Faults(client)  # counts PutRecords calls
    stream = KinesisEventStream(stream_name, faults)
    producer = None
    if arm != "direct":
        producer = KinesisImpressionProducer(stream, linger_s=0.05, background=arm == "producer")
    service = IngestService(stream, clock=time.time, impressions=producer)
    run = uuid.uuid4().hex[:8]
    slates = [slate(k, run) for k in range(n)]
    costs: list[float] = []
    start = time.perf_counter()
    for k, result in enumerate(slates):
        if shape == "paced":
            wait = start + k / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        began = time.perf_counter()
        service.log_impression(result)
        if arm == "lambda":
            service.flush_impressions(2.0)  # lambda_entry's flush: inside the invocation's duration
        costs.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    dropped = service.close(30.0)
    on_stream = count()
    seconds = percentiles(costs)
    return {
        "arm": arm,
        "shape": shape,
        "n": n,
        "p50_ms": seconds["p50"] * 1e3,
        "p99_ms": seconds["p99"] * 1e3,
        "mean_ms": seconds["mean"] * 1e3,
        "calls_per_1000": len(faults.calls) * 1000 / n,
        "seconds": elapsed,
        "dropped": dropped,
        "on_stream": on_stream,
    }


def fake_backend(latency_ms: float) -> Callable[[], tuple[Any, str, Callable[[], int]]]:
    def make() -> tuple[Any, str, Callable[[], int]]:
        fake = FakeKinesis(latency_s=latency_ms / 1000.0)
        return fake, "bench", lambda: len(fake.records)

    return make


def cloud_backend(endpoint_url: str) -> Callable[[], tuple[Any, str, Callable[[], int]]]:
    def make() -> tuple[Any, str, Callable[[], int]]:
        client = aws_client("kinesis", endpoint_url)
        name = f"bench-impressions-{uuid.uuid4().hex[:8]}"
        client.create_stream(StreamName=name, ShardCount=2)
        client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})

        def count() -> int:
            total = 0
            for shard in client.list_shards(StreamName=name)["Shards"]:
                iterator = client.get_shard_iterator(
                    StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
                while iterator:
                    page = client.get_records(ShardIterator=iterator, Limit=10_000)
                    total += len(page["Records"])
                    if not page["Records"]:
                        break
                    iterator = page.get("NextShardIterator")
            return total

        return client, name, count

    return make


def report(backend: str, rows: list[dict[str, Any]]) -> None:
    show(
        f"backend: {backend}",
        table(
            ["shape", "arm", "request path p50 ms", "p99 ms", "mean ms", "PutRecords per 1,000", "on the stream", "dropped"],
            [
                [
                    r["shape"],
                    r["arm"],
                    f"{r['p50_ms']:.3f}",
                    f"{r['p99_ms']:.3f}",
                    f"{r['mean_ms']:.3f}",
                    f"{r['calls_per_1000']:.1f}",
                    f"{r['on_stream']:,} / {r['n']:,}",
                    r["dropped"],
                ]
                for r in rows
            ],
            "llrrrrrr",
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["fake", "cloud", "both"], default="both")
    parser.add_argument("--impressions", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="slates/s in the paced shape")
    parser.add_argument("--latency-ms", type=float, default=3.0, help="the fake's latency per PutRecords call")
    args = parser.parse_args()
    print(f"machine: {machine(with_load=True)}")
    print(f"impressions per arm: {args.impressions:,}; paced at {args.rate:g}/s; linger 50 ms")
    backends: list[tuple[str, Callable[[], Any]]] = []
    if args.backend in ("fake", "both"):
        backends.append((f"fake Kinesis, {args.latency_ms:g} ms per call", lambda: fake_backend(args.latency_ms)))
    for name, make in backends:
        report(
            name,
            [
                run_arm(arm, shape, make(), args.impressions, args.rate)
                for shape in ("burst", "paced")
                for arm in ("direct", "producer", "lambda")
            ],
        )
    if args.backend in ("cloud", "both"):
        with child_cloud("bench") as (url, _proc):
            report(
                "embedded cloud (moto server, child process)",
                [
                    run_arm(arm, shape, cloud_backend(url), args.impressions, args.rate)
                    for shape in ("burst", "paced")
                    for arm in ("direct", "producer", "lambda")
                ],
            )


if __name__ == "__main__":
    main()
