"""The local cloud's emulators side by side, in one run: moto server (its own process, over HTTP) vs the durable
emulators (dynalite, kinesalite, s3rver; rtrec_local.cloud), called directly and through the router on one port.

    .venv/bin/python tests/bench/bench_emulators.py [--calls 300] [--seconds 5]

Per call, one client thread, the targets' calls interleaved: GetItem, BatchGetItem (100 keys), UpdateItem (ADD),
PutRecords (50 records of ~100 bytes), GetRecords (Limit 100, from a fixed iterator over 2,000 records),
PutObject (1 KiB): p50/p99 in ms. Throughput: GetItem calls/s from 4 client threads. Memory: RSS of each server
process after the run. Start: from spawning to resources provisioned (moto: the process and Provisioner; durable:
EmbeddedCloud.start(), empty state, then again with the state of the first start). Not collected by pytest (no
test_ prefix); prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchkit import machine, percentiles, show, table

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.provision import Provisioner
from rtrec.resources import EVENTS_STREAM, MODELS_BUCKET, USER_FEATURES, ResourceNames
from rtrec_local.cloud import EmbeddedCloud, free_port, port_in_use
from rtrec_local.state import LocalState

NAMES = ResourceNames(prefix="bench")
ITEMS = 2000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Target:
    """One way to reach the services: an endpoint per service."""

    def __init__(self, label: str, endpoints: dict[str, str]) -> None:
        self.label = label
        self.endpoints = endpoints
        self.results: dict[str, tuple[float, float]] = {}
        self.throughput: float = 0.0

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoints[service])


def prepare(target: Target) -> str:
    """Items in the user table, 2,000 records in the stream; returns an iterator at the start of shard 0."""
    dynamodb, kinesis = target.client("dynamodb"), target.client("kinesis")
    table = NAMES.table(USER_FEATURES)
    for start in range(0, ITEMS, 25):
        dynamodb.batch_write_item(
            RequestItems={
                table: [
                    {
                        "PutRequest": {
                            "Item": {"user_id": {"S": f"u{i}"}, "clicks": {"N": "0"}, "history": {"S": "1,2,3,4,5" * 10}}
                        }
                    }
                    for i in range(start, start + 25)
                ]
            }
        )
    stream = NAMES.stream(EVENTS_STREAM)
    for _ in range(ITEMS // 500):
        kinesis.put_records(
            StreamName=stream,
            Records=[
                {
                    "Data": b'{"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1764806400.0}' + b" " * 30,
                    "PartitionKey": "u1",
                }
                for _ in range(500)
            ],
        )
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    for attempt in range(2):
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        if kinesis.get_records(ShardIterator=iterator, Limit=100)["Records"] or attempt:
            return iterator
    return iterator


def operations(target: Target, iterator: str) -> dict[str, Callable[[], Any]]:
    dynamodb, kinesis, s3 = target.client("dynamodb"), target.client("kinesis"), target.client("s3")
    table, stream, bucket = NAMES.table(USER_FEATURES), NAMES.stream(EVENTS_STREAM), NAMES.bucket(MODELS_BUCKET)
    rng = random.Random(7)
    body = os.urandom(1024)
    records = [
        {"Data": b'{"user_id": "u%d", "item_id": "i1", "type": "click"}' % i + b" " * 50, "PartitionKey": f"u{i}"}
        for i in range(50)
    ]
    counter = iter(range(10**9))

    def key() -> dict[str, Any]:
        return {"user_id": {"S": f"u{rng.randrange(ITEMS)}"}}

    return {
        "GetItem": lambda: dynamodb.get_item(TableName=table, Key=key()),
        "BatchGetItem (100 keys)": lambda: dynamodb.batch_get_item(
            RequestItems={table: {"Keys": [{"user_id": {"S": f"u{i}"}} for i in rng.sample(range(ITEMS), 100)]}}
        ),
        "UpdateItem (ADD)": lambda: dynamodb.update_item(
            TableName=table, Key=key(), UpdateExpression="ADD clicks :one", ExpressionAttributeValues={":one": {"N": "1"}}
        ),
        "PutRecords (50)": lambda: kinesis.put_records(StreamName=stream, Records=records),
        "GetRecords (100)": lambda: kinesis.get_records(ShardIterator=iterator, Limit=100),
        "PutObject (1 KiB)": lambda: s3.put_object(Bucket=bucket, Key=f"bench/{next(counter)}.bin", Body=body),
    }


def measure_latency(targets: list[Target], calls: int) -> None:
    """Each operation's calls interleaved across the targets (one call each in turn), so warm-up, data growth and
    load from elsewhere on the machine fall on all of them alike."""
    ops = [operations(target, prepare(target)) for target in targets]
    for name in ops[0]:
        n = calls if "Batch" not in name and "Records" not in name else max(100, calls // 2)
        for target_ops in ops:
            for _ in range(10):
                target_ops[name]()  # warm-up: connections, caches
        samples: list[list[float]] = [[] for _ in targets]
        for _ in range(n):
            for index, target_ops in enumerate(ops):
                started = time.perf_counter()
                target_ops[name]()
                samples[index].append(time.perf_counter() - started)
        for target, taken in zip(targets, samples):
            seconds = percentiles(taken)
            target.results[name] = (seconds["p50"] * 1000, seconds["p99"] * 1000)


def measure_throughput(target: Target, seconds: float) -> None:
    """GetItem from 4 threads, each its own client."""
    done = [0] * 4
    stop = threading.Event()

    def worker(index: int) -> None:
        client = target.client("dynamodb")
        table = NAMES.table(USER_FEATURES)
        rng = random.Random(index)
        while not stop.is_set():
            client.get_item(TableName=table, Key={"user_id": {"S": f"u{rng.randrange(ITEMS)}"}})
            done[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # warm-up
    before, started = sum(done), time.perf_counter()
    time.sleep(seconds)
    target.throughput = (sum(done) - before) / (time.perf_counter() - started)
    stop.set()
    for thread in threads:
        thread.join()


def start_moto(port: int) -> tuple[subprocess.Popen[bytes], float]:
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while not port_in_use("127.0.0.1", port):
        time.sleep(0.02)
    Provisioner(NAMES, endpoint_url=f"http://localhost:{port}").provision()
    return proc, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description="moto server vs the durable emulators, direct and via the router")
    parser.add_argument("--calls", type=int, default=300, help="calls per operation (batch/stream ops: half)")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput window")
    args = parser.parse_args()
    import logging

    logging.getLogger("rtrec").setLevel(logging.ERROR)
    print(f"machine: {machine(with_load=True)}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")

    port = free_port()
    moto, moto_start = start_moto(port)
    moto_target = Target("moto server (own process)", {s: f"http://localhost:{port}" for s in ("dynamodb", "kinesis", "s3")})
    with tempfile.TemporaryDirectory(prefix="bench-emulators-") as tmp:
        state = LocalState(Path(tmp) / "state").ensure()
        first = EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable", log_line=lambda _: None)
        first.start()
        durable_start = first.start_seconds or 0.0
        first.stop()
        cloud = EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable", log_line=lambda _: None)
        cloud.start()
        durable_restart = cloud.start_seconds or 0.0
        try:
            direct = Target("emulators, direct", {s: cloud.service_endpoints[s] for s in ("dynamodb", "kinesis", "s3")})
            routed = Target("emulators, via router", {s: cloud.endpoint_url for s in ("dynamodb", "kinesis", "s3")})
            targets = [moto_target, direct, routed]
            measure_latency(targets, args.calls)
            for target in targets:
                measure_throughput(target, args.seconds)
            memory = {"moto server": rss_mib(moto.pid)}
            memory.update({name: rss_mib(pid) for name, pid in cloud.pids().items() if pid is not None})
        finally:
            cloud.stop()
            moto.terminate()
            moto.wait(timeout=10)

    rows = [
        [
            name,
            *(f"{t.results[name][0]:.2f} / {t.results[name][1]:.2f}" for t in targets),
            f"{routed.results[name][0] - direct.results[name][0]:+.2f}",
        ]
        for name in targets[0].results
    ]
    rows.append(
        [
            "GetItem throughput, 4 threads (calls/s)",
            *(f"{t.throughput:,.0f}" for t in targets),
            f"{routed.throughput / direct.throughput - 1:+.0%}",
        ]
    )
    show(
        "Call latency, one client thread (ms, p50 / p99)",
        table(["call", *(t.label for t in targets), "router overhead p50"], rows),
    )
    durable_total = sum(v for k, v in memory.items() if k != "moto server")
    memory_rows = [[name, f"{value:.0f}"] for name, value in memory.items()]
    memory_rows.append(["durable total (5 processes)", f"{durable_total:.0f}"])
    start_rows = [
        ["moto server process + Provisioner", f"{moto_start:.2f}"],
        ["durable EmbeddedCloud.start(), empty state", f"{durable_start:.2f}"],
        ["durable EmbeddedCloud.start(), state of the first start", f"{durable_restart:.2f}"],
    ]
    show(
        "Memory (RSS after the run, MiB) and start time",
        table(["process", "RSS MiB"], memory_rows) + "\n\n" + table(["start (to provisioned)", "s"], start_rows),
    )


if __name__ == "__main__":
    main()
