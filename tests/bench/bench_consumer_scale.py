"""The stream consumer at scale (issue 15): a committed consumer ("before": git HEAD, or `--before-ref`) beside
the working tree's ("after"), in one run, on impression-heavy traffic.

Traffic (the same records for both arms, from one seed): 6,040 users, 3,706 items (ML-1M's counts, synthetic
ids), slates of 10 items with their 7 ranking features, propensities and scores, as serving logs them, and one
click per 10 slates (on an item of one of the last 10 slates, naming its request_id, so the consumer joins it).
Each slate is one recommendation served and one Kinesis record; a click is one more record (1.1 records per
recommendation). Kinesis Lambda events are built as the event source mapping builds them (one shard).

Each arm runs in a subprocess whose sys.path puts its tree's `layers/core` and the tree's root first, so it imports
that tree's `rtrec` and `functions.stream_consumer.app` (the before tree is `git worktree add --detach` of HEAD
or `--before-ref`, made here when missing; `--before-tree`; an existing tree is used as it is, its commit
printed). Per arm:

1. Store calls: `build_handler` as the tree wires it, against the embedded cloud (moto server, in a child process
   so its work is off the handler's CPU; `--durable` adds the working tree's durable backend as a third arm),
   6,040 profiles (20-400 item histories) and 3,706 items seeded first. `--records` records per batch size
   (`--before-records` for the before arm, whose ~10 calls a slate make it slow against moto; `--batch-sizes`,
   100: the local mapping's default; 500: the deployed mapping's BatchSize) after `--warmup` batches.
   Every botocore call in the handler's process is counted by wrapping `BaseClient._make_api_call`, and
   its DynamoDB request units are computed from the request (and response): each item of a BatchGetItem /
   BatchWriteItem counts, sizes by DynamoDB's item-size rules, an UpdateItem by the larger of the item before and
   after (a shadow copy of every item the process wrote or read keeps the sizes). Also timed: records/s end to
   end (handler + SDK + emulator), the handler process's CPU seconds (handler + SDK + HTTP client) and the
   emulator's.
2. The consumer's own CPU (no AWS calls): the same records through the tree's ConsumerHandler (a) with in-memory
   ports as bench_consumer_cpu.py builds them (profiles kept as DynamoDB attribute maps, the ranker state as its
   dict) and (b) wired by the tree's `build_handler` with its real adapters over stub boto3 clients that keep
   the data in dicts (the adapters' own request building and (de)serialisation counted, botocore and the network
   not). Records per CPU second (process time: one core), median of `--cpu-rounds`, arms alternating.

Then the monthly bill at 100 recommendations/s from the measured request units and S3 requests, at list prices.
Nothing asserts; pytest does not collect this file.

    .venv/bin/python tests/bench/bench_consumer_scale.py                        # about 5 minutes on 2 busy cores
    .venv/bin/python tests/bench/bench_consumer_scale.py --records 1100 --batch-sizes 100 --cpu-rounds 1
    .venv/bin/python tests/bench/bench_consumer_scale.py --durable              # + the durable backend (after)
    .venv/bin/python tests/bench/bench_consumer_scale.py --before-ref 40cfc82 --before-tree /tmp/rtrec-40cfc82
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import math
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchkit import (
    ROOT,
    ConsumerLambdaContext,
    child_cloud,
    load_average,
    machine,
    progress,
    table,
    tree_cpu_seconds,
    tree_env,
    tree_paths,
)

DEFAULT_BEFORE = Path("/tmp/rtrec-before")
PREFIX = "scale"
USERS, ITEMS, SLATE, SLATES_PER_CLICK = 6040, 3706, 10, 10
STREAM_ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/bench-scale"
SHARD = "shardId-000000000000"

# Prices (us-east-1 list prices, on-demand): DynamoDB per million request units, S3 per 1,000 requests, SQS per
# million requests (standard queue, beyond the free tier).
WRU_PER_MILLION, RRU_PER_MILLION = 0.625, 0.125
S3_PUT_PER_1000, S3_GET_PER_1000 = 0.005, 0.0004
SQS_PER_MILLION = 0.40
RECS_PER_SECOND = 100
RECS_PER_MONTH = RECS_PER_SECOND * 86_400 * 30  # 259.2M
S3_PUT_CLASS = {
    "PutObject",
    "CopyObject",
    "PostObject",
    "ListObjects",
    "ListObjectsV2",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListBuckets",
}
TARGET_CALLS_PER_RECORD = 0.05
TARGET_RECORDS_PER_S = 5_000


# ==============================================================================================================
# DynamoDB item sizes and request units (pure Python, shared by the meter and the stub client)
# ==============================================================================================================


def _number_size(text: str) -> int:
    digits = text.lstrip("-").replace(".", "").split("E")[0].split("e")[0].strip("0") or "0"
    return min(21, 1 + (len(digits) + 1) // 2)


def value_size(value: dict[str, Any]) -> int:
    """An attribute value's size by DynamoDB's rules (strings and binaries: their bytes; numbers: about one byte per
    two significant digits plus one; lists and maps: 3 bytes plus 1 per element plus the elements)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode())
    if kind == "N":
        return _number_size(raw)
    if kind == "B":
        return len(raw if isinstance(raw, (bytes, bytearray)) else bytes(raw.value if hasattr(raw, "value") else raw))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in raw)
    if kind == "NS":
        return sum(_number_size(s) for s in raw)
    if kind == "BS":
        return sum(len(b) for b in raw)
    if kind == "L":
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    return 8


def item_size(item: dict[str, dict[str, Any]]) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def key_of(key: dict[str, dict[str, Any]]) -> str:
    return json.dumps({k: next(iter(v.items()))[1] for k, v in sorted(key.items())}, default=str)


def guess_key(item: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The key attributes of an item written without its key schema at hand (this project's tables)."""
    for name in ("user_id", "item_id", "pk", "id"):
        if name in item:
            return {name: item[name]}
    name = next(iter(item))
    return {name: item[name]}


_CLAUSE = re.compile(r"\b(SET|ADD|REMOVE|DELETE)\b", re.IGNORECASE)


def apply_update(item: dict[str, dict[str, Any]], params: dict[str, Any]) -> None:
    """UpdateItem's SET / ADD / REMOVE on an attribute-value map (top-level attributes, plain values: what this
    project's updates use)."""
    names = params.get("ExpressionAttributeNames") or {}
    values = params.get("ExpressionAttributeValues") or {}
    parts = _CLAUSE.split(params.get("UpdateExpression") or "")
    for keyword, body in zip(parts[1::2], parts[2::2]):
        for clause in (c.strip() for c in body.split(",")):
            if not clause:
                continue
            keyword = keyword.upper()
            if keyword == "SET" and "=" in clause:
                lhs, rhs = (s.strip() for s in clause.split("=", 1))
                name = names.get(lhs, lhs)
                item[name] = values.get(rhs, {"S": rhs})
            elif keyword == "ADD":
                lhs, _, rhs = clause.partition(" ")
                name, add = names.get(lhs, lhs), values.get(rhs.strip(), {"N": "0"})
                old = item.get(name)
                if "N" in add:
                    base = Decimal(old["N"]) if old and "N" in old else Decimal(0)
                    item[name] = {"N": str(base + Decimal(add["N"]))}
                else:
                    item[name] = add
            elif keyword in ("REMOVE", "DELETE"):
                item.pop(names.get(clause.split()[0], clause.split()[0]), None)


def projected(item: dict[str, dict[str, Any]], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    expression = options.get("ProjectionExpression")
    if not expression:
        return item
    names = options.get("ExpressionAttributeNames") or {}
    wanted = {names.get(p.strip(), p.strip()) for p in expression.split(",")}
    return {k: v for k, v in item.items() if k in wanted}


class Tables:
    """Items as attribute-value maps, per table: the meter's shadow copy, and the stub client's store."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(dict)

    def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.items[table].get(key_of(key))

    def put(self, table: str, item: dict[str, Any]) -> None:
        self.items[table][key_of(guess_key(item))] = dict(item)

    def update(self, table: str, params: dict[str, Any]) -> tuple[int, int]:
        """Apply an UpdateItem; the item's size before and after."""
        key = params["Key"]
        old = self.items[table].get(key_of(key))
        new = dict(old) if old is not None else dict(key)
        apply_update(new, params)
        self.items[table][key_of(key)] = new
        return (item_size(old) if old is not None else 0), item_size(new)


# ==============================================================================================================
# Counting every botocore call, with DynamoDB request units (in the arm's process)
# ==============================================================================================================


def _units(size: int, unit: int) -> int:
    return max(1, math.ceil(size / unit))


class Meter:
    """Wraps `BaseClient._make_api_call`: calls per (service, operation), DynamoDB WRUs and RRUs (eventually
    consistent as sent, and if strongly consistent), S3 bytes; counting only while `counting` is set (the shadow
    copy of the items is kept up to date all along, so seeding gives it the items' sizes)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shadow = Tables()
        self.counting = False
        self.reset()

    def reset(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.wru = 0.0
        self.rru = 0.0  # as sent (ConsistentRead as the adapter asks)
        self.rru_strong = 0.0  # the same reads, strongly consistent
        self.bytes_put: dict[str, list[int]] = defaultdict(list)  # S3 key prefix -> body sizes
        self.unprocessed = 0
        self.profile_writes = 0
        self.profile_attrs: dict[str, int] = defaultdict(int)  # attribute -> bytes summed over the profiles written

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": dict(self.calls),
                "errors": dict(self.errors),
                "wru": self.wru,
                "rru": self.rru,
                "rru_strong": self.rru_strong,
                "unprocessed": self.unprocessed,
                "profile_writes": self.profile_writes,
                "profile_attrs": dict(self.profile_attrs),
                "s3_put_bytes": {k: [len(v), sum(v) / max(len(v), 1), max(v)] for k, v in self.bytes_put.items()},
            }

    def install(self) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        meter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            sent = dict(params)  # as sent: botocore's handlers may rewrite some (an S3 Body into a stream)
            body = params.get("Body")
            body_bytes = len(body) if isinstance(body, (bytes, bytearray, str)) else 0
            response, failed = None, False
            try:
                response = original(client, operation, params)
                return response
            except Exception:
                failed = True
                raise
            finally:
                with meter.lock:
                    meter._account(service, operation, sent, response, failed, body_bytes)

        BaseClient._make_api_call = counted  # type: ignore[method-assign]

    def _account(
        self, service: str, operation: str, params: dict[str, Any], response: Any, failed: bool, body_bytes: int
    ) -> None:
        name = f"{service} {operation}"
        counting = self.counting
        if counting:
            self.calls[name] += 1
            if failed:
                self.errors[name] += 1
        if service == "dynamodb":
            wru, rru, strong = self._dynamo_units(operation, params, response or {})
            if counting:
                self.wru += wru
                self.rru += rru
                self.rru_strong += strong
        elif service == "s3" and operation == "PutObject" and counting:
            size = body_bytes
            prefix = "/".join(str(params.get("Key", "")).split("/")[:2])
            prefix = re.sub(r"dt=[0-9-]+", "dt=…", prefix)
            self.bytes_put[prefix].append(size)

    def _dynamo_units(self, operation: str, params: dict[str, Any], response: dict[str, Any]) -> tuple[float, float, float]:
        shadow = self.shadow
        wru = rru = strong = 0.0
        if operation == "BatchWriteItem":
            unprocessed = response.get("UnprocessedItems") or {}
            for table, requests in params.get("RequestItems", {}).items():
                left = len(unprocessed.get(table, []))
                self.unprocessed += left
                for request in requests[: len(requests) - left] if left else requests:
                    if "PutRequest" in request:
                        item = request["PutRequest"]["Item"]
                        if self.counting and "user_id" in item:
                            self.profile_writes += 1
                            for name, value in item.items():
                                self.profile_attrs[name] += len(name.encode()) + value_size(value)
                        old = shadow.get(table, guess_key(item))
                        wru += _units(max(item_size(item), item_size(old) if old else 0), 1024)
                        shadow.put(table, item)
                    else:
                        key = request["DeleteRequest"]["Key"]
                        old = shadow.get(table, key)
                        wru += _units(item_size(old) if old else 0, 1024)
        elif operation == "PutItem":
            item = params["Item"]
            old = shadow.get(params["TableName"], guess_key(item))
            wru += _units(max(item_size(item), item_size(old) if old else 0), 1024)
            shadow.put(params["TableName"], item)
        elif operation == "UpdateItem":
            before, after = shadow.update(params["TableName"], params)
            wru += _units(max(before, after), 1024)
        elif operation == "DeleteItem":
            old = shadow.get(params["TableName"], params["Key"])
            wru += _units(item_size(old) if old else 0, 1024)
        elif operation == "GetItem":
            table = params["TableName"]
            found = response.get("Item")
            if found is not None and not params.get("ProjectionExpression"):
                shadow.put(table, found)
            full = shadow.get(table, params["Key"]) or found
            units = _units(item_size(full) if full else 0, 4096)
            rru += units * (1.0 if params.get("ConsistentRead") else 0.5)
            strong += units
        elif operation == "BatchGetItem":
            unprocessed = response.get("UnprocessedKeys") or {}
            for table, request in params.get("RequestItems", {}).items():
                returned = {key_of(guess_key(i)): i for i in (response.get("Responses") or {}).get(table, [])}
                skipped = {key_of(k) for k in unprocessed.get(table, {}).get("Keys", [])}
                self.unprocessed += len(skipped)
                for key in request.get("Keys", []):
                    k = key_of(key)
                    if k in skipped:
                        continue
                    found = returned.get(k)
                    if found is not None and not request.get("ProjectionExpression"):
                        shadow.put(table, found)
                    full = shadow.get(table, key) or found  # a projection is billed by the whole item
                    units = _units(item_size(full) if full else 0, 4096)
                    rru += units * (1.0 if request.get("ConsistentRead") else 0.5)
                    strong += units
        elif operation in ("Query", "Scan"):
            size = sum(item_size(i) for i in response.get("Items", []))
            units = _units(size, 4096)
            rru += units * (1.0 if params.get("ConsistentRead") else 0.5)
            strong += units
        elif operation == "TransactWriteItems":
            wru += 2 * len(params.get("TransactItems", []))
        return wru, rru, strong


# ==============================================================================================================
# The traffic (in the arm's process, from its tree's event classes)
# ==============================================================================================================


class Traffic:
    """Slates of SLATE items for random users, one click per SLATES_PER_CLICK slates; Kinesis events of them."""

    def __init__(self, seed: int = 2020) -> None:
        from rtrec.domain.events import Impression, UserEvent, encode_record

        self.Impression, self.UserEvent, self.encode = Impression, UserEvent, encode_record
        self.rng = random.Random(seed)
        self.users = [str(u) for u in range(1, USERS + 1)]
        self.items = [str(i) for i in range(1, ITEMS + 1)]
        self.sequence = 49_000_000_000
        self.serial = 0
        self.recent: list[Any] = []
        self.since_click = 0
        self.impressions = 0
        self.clicks = 0

    def message(self, now: float) -> Any:
        rng = self.rng
        self.serial += 1
        if self.since_click >= SLATES_PER_CLICK:
            self.since_click = 0
            self.clicks += 1
            slate = rng.choice(self.recent)
            return self.UserEvent(
                f"click-{self.serial}", slate.user_id, rng.choice(slate.items), "click", now, None, slate.request_id
            )
        self.since_click += 1
        self.impressions += 1
        propensities = tuple(rng.uniform(0.05, 1.0) for _ in range(SLATE))
        slate = self.Impression(
            request_id=f"req-{self.serial}",
            user_id=rng.choice(self.users),
            model_version="1",
            strategy="two_tower",
            items=tuple(rng.sample(self.items, SLATE)),
            propensities=propensities,
            scores=tuple(sorted((rng.random() for _ in range(SLATE)), reverse=True)),
            timestamp=now,
            features=tuple(tuple([1.0] + [rng.random() for _ in range(6)]) for _ in range(SLATE)),
        )
        self.recent = ([*self.recent, slate])[-SLATES_PER_CLICK:]
        return slate

    def event(self, size: int) -> dict[str, Any]:
        import base64

        now = time.time()
        records = []
        for _ in range(size):
            message = self.message(now)
            self.sequence += 1
            seq = f"{self.sequence:056d}"
            records.append(
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": message.user_id,
                        "sequenceNumber": seq,
                        "data": base64.b64encode(self.encode(message)).decode("ascii"),
                        "approximateArrivalTimestamp": now,
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{SHARD}:{seq}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": "arn:aws:iam::123456789012:role/rtrec-local",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": STREAM_ARN,
                }
            )
        return {"Records": records}

    def batches(self, records: int, size: int) -> list[dict[str, Any]]:
        return [self.event(min(size, records - start)) for start in range(0, records, size)]

    def counted_batches(self, records: int, size: int) -> tuple[list[dict[str, Any]], int, int]:
        """`batches`, and how many of their records are slates and clicks."""
        impressions, clicks = self.impressions, self.clicks
        batches = self.batches(records, size)
        return batches, self.impressions - impressions, self.clicks - clicks


def seed_profiles(seed: int = 7) -> tuple[list[Any], list[Any]]:
    """6,040 profiles with 20-400 item histories, 3,706 items with titles, years and genres."""
    from rtrec.domain.models import ItemFeatures, UserProfile

    rng = random.Random(seed)
    items = [str(i) for i in range(1, ITEMS + 1)]
    genres = (
        "Action",
        "Adventure",
        "Animation",
        "Children's",
        "Comedy",
        "Crime",
        "Documentary",
        "Drama",
        "Fantasy",
        "Film-Noir",
        "Horror",
        "Musical",
        "Mystery",
        "Romance",
        "Sci-Fi",
        "Thriller",
        "War",
        "Western",
    )
    users = [
        UserProfile(
            str(u),
            age=rng.choice((1, 18, 25, 35, 45, 50, 56)),
            gender=rng.choice("MF"),
            occupation=str(rng.randrange(21)),
            zip_prefix=f"{rng.randrange(100):02d}",
            history=tuple(rng.sample(items, rng.randrange(20, 400))),
            interaction_count=rng.randrange(20, 400),
            last_seen=int(time.time()) - rng.randrange(86_400 * 30),
        )
        for u in range(1, USERS + 1)
    ]
    catalog = [
        ItemFeatures(
            i,
            title=f"Movie number {i} ({1919 + int(i) % 82})",
            year=1919 + int(i) % 82,
            genres=tuple(rng.sample(genres, rng.randrange(1, 4))),
            interaction_count=rng.randrange(1000),
            popularity=rng.random() * 100,
        )
        for i in items
    ]
    return users, catalog


def call_handler(handler: Any, event: dict[str, Any]) -> int:
    """Records the handler reported (or raised) as failed: 0 when the batch went through."""
    try:
        response = handler(event, ConsumerLambdaContext())
    except Exception as exc:
        print(f"  !! handler raised {type(exc).__name__}: {str(exc)[:300]}", file=sys.stderr, flush=True)
        return len(event["Records"])
    return len((response or {}).get("batchItemFailures") or [])


# ==============================================================================================================
# Worker, phase "store": the real handler against the embedded cloud
# ==============================================================================================================


def phase_store(config: dict[str, Any]) -> dict[str, Any]:
    tree = Path(config["tree"])
    meter = Meter()
    meter.install()
    from functions.stream_consumer.app import build_handler
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.resources import ITEM_FEATURES, USER_FEATURES, ResourceNames
    from rtrec.settings import ConsumerSettings

    names = ResourceNames(prefix=PREFIX)
    out: dict[str, Any] = {"segments": []}
    started = time.perf_counter()
    with child_cloud(PREFIX, Path(config["log"]), tree=tree, backend=config["backend"]) as (url, proc):
        out["cloud_start_s"] = time.perf_counter() - started
        users, catalog = seed_profiles()
        store = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=url)
        t0 = time.perf_counter()
        store.put_users(users)
        store.put_items(catalog)
        out["seed_s"] = time.perf_counter() - t0
        handler = build_handler(ConsumerSettings(endpoint_url=url, resource_prefix=PREFIX))
        traffic = Traffic()
        for event in traffic.batches(config["warmup"] * config["batch_sizes"][0], config["batch_sizes"][0]):
            call_handler(handler, event)
        for size in config["batch_sizes"]:
            records = math.ceil(config["records"] / size) * size
            batches, impressions, clicks = traffic.counted_batches(records, size)
            meter.reset()
            meter.counting = True
            cloud0, cpu0, wall0 = tree_cpu_seconds(proc.pid), time.process_time(), time.perf_counter()
            failed = 0
            report = wall0 + 10
            for i, event in enumerate(batches):
                failed += call_handler(handler, event)
                if time.perf_counter() > report:
                    report += 10
                    progress(
                        f"{config['arm']}: batch size {size}, {i + 1}/{len(batches)} batches, "
                        f"{sum(len(b['Records']) for b in batches[: i + 1]) / (time.perf_counter() - wall0):,.0f} "
                        "records/s"
                    )
            wall = time.perf_counter() - wall0
            cpu = time.process_time() - cpu0
            cloud_cpu = tree_cpu_seconds(proc.pid) - cloud0
            meter.counting = False
            out["segments"].append(
                {
                    "batch_size": size,
                    "records": impressions + clicks,
                    "impressions": impressions,
                    "clicks": clicks,
                    "batches": len(batches),
                    "failed": failed,
                    "wall_s": wall,
                    "cpu_s": cpu,
                    "cloud_cpu_s": cloud_cpu,
                    **meter.snapshot(),
                }
            )
            progress(
                f"{config['arm']}: batch size {size}: {impressions + clicks:,} records in {wall:.1f} s, "
                f"{sum(meter.calls.values()):,} calls"
            )
    return out


# ==============================================================================================================
# Worker, phase "cpu": the consumer's own CPU, no AWS calls
# ==============================================================================================================


class StubDynamo:
    """The DynamoDB calls the feature store makes, on dicts (no botocore, no network)."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.calls: dict[str, int] = defaultdict(int)

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["BatchGetItem"] += 1
        responses = {}
        for table_name, request in RequestItems.items():
            found = (self.tables.get(table_name, k) for k in request["Keys"])
            responses[table_name] = [projected(i, request) for i in found if i is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls["BatchWriteItem"] += 1
        for table_name, requests in RequestItems.items():
            for request in requests:
                if "PutRequest" in request:
                    self.tables.put(table_name, request["PutRequest"]["Item"])
        return {"UnprocessedItems": {}}

    def update_item(self, **params: Any) -> dict[str, Any]:
        self.calls["UpdateItem"] += 1
        self.tables.update(params["TableName"], params)
        return {}

    def get_item(self, TableName: str, Key: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls["GetItem"] += 1
        item = self.tables.get(TableName, Key)
        return {"Item": item} if item is not None else {}

    def describe_table(self, **_: Any) -> dict[str, Any]:
        return {"Table": {}}


class StubS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.calls: dict[str, int] = defaultdict(int)

    """S3 as the adapters use it: PUT, GET and HEAD, with an ETag that changes with the content (the ranker state
    store caches by it)."""

    def put_object(self, Bucket: str, Key: str, Body: Any, **_: Any) -> dict[str, Any]:
        self.calls["PutObject"] += 1
        self.objects[(Bucket, Key)] = Body if isinstance(Body, bytes) else bytes(Body)
        return {"ETag": self._etag(Bucket, Key)}

    def get_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.calls["GetObject"] += 1
        self._exists(Bucket, Key, "NoSuchKey", "GetObject")
        return {"Body": io.BytesIO(self.objects[(Bucket, Key)]), "ETag": self._etag(Bucket, Key)}

    def head_object(self, Bucket: str, Key: str, **_: Any) -> dict[str, Any]:
        self.calls["HeadObject"] += 1
        self._exists(Bucket, Key, "404", "HeadObject")
        return {"ETag": self._etag(Bucket, Key), "ContentLength": len(self.objects[(Bucket, Key)])}

    def _exists(self, bucket: str, key: str, code: str, operation: str) -> None:
        from botocore.exceptions import ClientError

        if (bucket, key) not in self.objects:
            raise ClientError({"Error": {"Code": code, "Message": "no such key"}}, operation)

    def _etag(self, bucket: str, key: str) -> str:
        return '"' + hashlib.md5(self.objects[(bucket, key)], usedforsecurity=False).hexdigest() + '"'


class StubSqs:
    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"http://stub/{QueueName}"}

    def send_message(self, **_: Any) -> dict[str, Any]:
        self.calls["SendMessage"] += 1
        return {"MessageId": "stub"}


def _memory_handler() -> tuple[Any, Any]:
    """bench_consumer_cpu.py's handler: in-memory ports, profiles kept as DynamoDB attribute maps."""
    from functions.stream_consumer.app import ConsumerHandler
    from rtrec.adapters.aws.dynamo import _from_attribute_map, _to_attribute_map, user_from_record, user_to_record
    from rtrec.adapters.memory import (
        InMemoryCounterfactualLog,
        InMemoryDeadLetterQueue,
        InMemoryFeatureStore,
        InMemoryRankerStateStore,
    )
    from rtrec.services.online import OnlineLearner
    from rtrec.services.stream import StreamConsumer

    class AttributeMapFeatureStore(InMemoryFeatureStore):
        def __init__(self) -> None:
            super().__init__()
            self.stored: dict[str, dict] = {}

        def put_users(self, users: Any) -> int:
            count = 0
            for user in users:
                self.stored[user.user_id] = _to_attribute_map(user_to_record(user))
                count += 1
            return count

        def get_users(self, user_ids: Any) -> dict[str, Any]:
            return {u: user_from_record(_from_attribute_map(self.stored[u])) for u in user_ids if u in self.stored}

    store = AttributeMapFeatureStore()
    log = InMemoryCounterfactualLog()
    # The before tree's StreamConsumer(features, item_stats, log) wrote item statistics to a store of their own;
    # the after tree's StreamConsumer(features, log) keeps them in the shard state. ConsumerHandler(consumer, dlq,
    # learner) in both.
    stores = (store, store) if "item_stats" in inspect.signature(StreamConsumer).parameters else (store,)
    handler = ConsumerHandler(
        StreamConsumer(*stores, log), InMemoryDeadLetterQueue(), OnlineLearner(InMemoryRankerStateStore(), log)
    )
    return handler, store


def _stub_handler() -> tuple[Any, Any]:
    """The tree's build_handler, its real adapters over stub clients."""
    import rtrec.adapters.aws.clients as clients
    import rtrec.adapters.aws.dynamo
    import rtrec.adapters.aws.s3
    import rtrec.adapters.aws.sqs  # noqa: F401
    from functions.stream_consumer.app import build_handler
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.resources import ITEM_FEATURES, USER_FEATURES, ResourceNames
    from rtrec.settings import ConsumerSettings

    stubs = {"dynamodb": StubDynamo(), "s3": StubS3(), "sqs": StubSqs()}

    def stub_client(service: str, *_: Any, **__: Any) -> Any:
        return stubs[service]

    for name, module in list(sys.modules.items()):
        if (name == clients.__name__ or name.startswith("rtrec.adapters.aws.")) and hasattr(module, "aws_client"):
            module.aws_client = stub_client  # type: ignore[attr-defined]
    handler = build_handler(ConsumerSettings(endpoint_url="http://stub:1", resource_prefix=PREFIX))
    names = ResourceNames(prefix=PREFIX)
    store = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), client=stubs["dynamodb"])
    return handler, (store, stubs)


def phase_cpu(config: dict[str, Any]) -> dict[str, Any]:
    users, catalog = seed_profiles()
    out: dict[str, Any] = {}
    for variant, build in (("memory", _memory_handler), ("stub", _stub_handler)):
        handler, store = build()
        if variant == "memory":
            store.put_users(users)
        else:
            store[0].put_users(users)
            store[0].put_items(catalog)
        traffic = Traffic(seed=11)
        size = config["cpu_batch_size"]
        for event in traffic.batches(3 * size, size):  # warm-up
            call_handler(handler, event)
        rates, walls, failed = [], [], 0
        for _ in range(config["cpu_rounds"]):
            batches = traffic.batches(config["cpu_records"], size)
            n = sum(len(b["Records"]) for b in batches)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for event in batches:
                failed += call_handler(handler, event)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            rates.append(n / cpu)
            walls.append(n / wall)
        calls = {}
        if variant == "stub":
            calls = {f"{s} {op}": c for s, stub in store[1].items() for op, c in stub.calls.items()}
        out[variant] = {"per_cpu_s": rates, "per_wall_s": walls, "failed": failed, "stub_calls": calls}
    return out


def worker(config: dict[str, Any]) -> None:
    tree = Path(config["tree"])
    sys.path[:0] = tree_paths(tree)  # PYTHONPATH has them already (run_worker); checked below
    import functions.stream_consumer.app as app
    import rtrec

    for module in (rtrec, app):
        if not Path(module.__file__).resolve().is_relative_to(tree.resolve()):
            raise SystemExit(f"{module.__name__} came from {module.__file__}, not from {tree}")
    result = phase_store(config) if config["phase"] == "store" else phase_cpu(config)
    result["modules"] = {"rtrec": rtrec.__file__, "app": app.__file__}
    Path(config["out"]).write_text(json.dumps(result))


# ==============================================================================================================
# The parent: the before tree, the arms, the printout
# ==============================================================================================================


def ensure_before_tree(path: Path, ref: str) -> str:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not (path / "functions" / "stream_consumer" / "app.py").exists():
        progress(f"making the before tree: git worktree add --detach {path} {ref} ({head[:10]})")
        made = subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), head], capture_output=True, text=True
        )
        if made.returncode != 0:  # e.g. a stale worktree entry: an archive of the commit instead
            progress(f"git worktree add failed ({made.stderr.strip()[:200]}); git archive {head[:10]} instead")
            path.mkdir(parents=True, exist_ok=True)
            archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", head], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-C", str(path)], stdin=archive.stdout, check=True)
            archive.wait()
            (path / ".archived-from").write_text(head + "\n")
    tree_head = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    if tree_head.returncode == 0 and tree_head.stdout.strip() and (path / ".git").exists():
        commit = tree_head.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        note = "" if not dirty else " (MODIFIED)"
    else:
        marker = path / ".archived-from"
        commit = marker.read_text().strip() if marker.exists() else "unknown"
        note = " (git archive)"
    if commit != head:
        note += f" (NOT {ref} = {head[:10]}: the tree was there already; remove it or pass --before-tree)"
    return f"{commit[:10]}{note}"


def run_worker(arm: str, tree: Path, config: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rtrec-scale-") as tmp:
        config = {**config, "arm": arm, "tree": str(tree), "out": f"{tmp}/out.json", "log": f"{tmp}/cloud.log"}
        env = {**tree_env(tree), "POWERTOOLS_LOG_LEVEL": "ERROR", "PYTHONHASHSEED": "0"}
        for name in ("AWS_ENDPOINT_URL", "RTREC_PREFIX", "RTREC_CLOUD_BACKEND"):
            env.pop(name, None)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(config)],
            cwd=tree,
            env=env,
            timeout=timeout,
            stdout=subprocess.DEVNULL,
        )
        if proc.returncode != 0 or not Path(config["out"]).exists():
            log = Path(config["log"])
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise SystemExit(f"the {arm} arm ({config['phase']}) failed with exit code {proc.returncode}\n{tail}")
        result = json.loads(Path(config["out"]).read_text())
        result["elapsed_s"] = time.perf_counter() - started
        return result


def fmt(value: float, digits: int = 2) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def ratio(after: float, before: float) -> str:
    if not before or before != before or after != after:
        return "n/a"
    r = after / before
    return f"{r:.3f}x" if r < 0.1 else f"{r:.2f}x"


def service_calls(segment: dict[str, Any], service: str) -> int:
    return sum(c for name, c in segment["calls"].items() if name.split(" ", 1)[0] == service)


def s3_requests(segment: dict[str, Any]) -> tuple[int, int]:
    put = sum(c for name, c in segment["calls"].items() if name.startswith("s3 ") and name[3:] in S3_PUT_CLASS)
    return put, service_calls(segment, "s3") - put


def figures(segment: dict[str, Any]) -> dict[str, float]:
    records, recs = segment["records"], segment["impressions"]
    dynamo, s3, sqs = (service_calls(segment, s) for s in ("dynamodb", "s3", "sqs"))
    total = sum(segment["calls"].values())
    put, get = s3_requests(segment)
    return {
        "dynamo": dynamo / records,
        "s3": s3 / records,
        "sqs": sqs / records,
        "other": (total - dynamo - s3 - sqs) / records,
        "total": total / records,
        "per_1000_recs": 1000 * total / recs,
        "wru_1000": 1000 * segment["wru"] / recs,
        "rru_1000": 1000 * segment["rru"] / recs,
        "rru_strong_1000": 1000 * segment["rru_strong"] / recs,
        "s3_put_1000": 1000 * put / recs,
        "s3_get_1000": 1000 * get / recs,
        "sqs_1000": 1000 * sqs / recs,
        "e2e": records / segment["wall_s"],
        "cpu_per_1000": 1000 * segment["cpu_s"] / records,
        "per_cpu_s": records / max(segment["cpu_s"], 1e-9),
        "cloud_cpu_per_1000": 1000 * segment["cloud_cpu_s"] / records,
        "failed": segment["failed"],
    }


def monthly(f: dict[str, float], strong: bool = False) -> dict[str, float]:
    per_rec = 1.0 / 1000
    wru = f["wru_1000"] * per_rec * RECS_PER_MONTH
    rru = (f["rru_strong_1000"] if strong else f["rru_1000"]) * per_rec * RECS_PER_MONTH
    put = f["s3_put_1000"] * per_rec * RECS_PER_MONTH
    get = f["s3_get_1000"] * per_rec * RECS_PER_MONTH
    sqs = f["sqs_1000"] * per_rec * RECS_PER_MONTH
    cost = {
        "dynamodb writes": wru / 1e6 * WRU_PER_MILLION,
        "dynamodb reads": rru / 1e6 * RRU_PER_MILLION,
        "s3 PUT": put / 1000 * S3_PUT_PER_1000,
        "s3 GET": get / 1000 * S3_GET_PER_1000,
        "sqs": sqs / 1e6 * SQS_PER_MILLION,
    }
    return {"wru": wru, "rru": rru, "put": put, "get": get, "sqs": sqs, **cost, "total": sum(cost.values())}


def report_store(arms: list[str], results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    labels = {"before": "before", "after": "after (working tree)", "after-durable": "after, durable backend"}
    for index, size in enumerate(args.batch_sizes):
        segs = {arm: results[arm]["segments"][index] for arm in arms}
        fig = {arm: figures(seg) for arm, seg in segs.items()}
        counts = "; ".join(
            f"{labels[a]} {segs[a]['records']:,} ({segs[a]['impressions']:,} slates + "
            f"{segs[a]['clicks']:,} clicks, {segs[a]['batches']} batches)"
            for a in arms
        )
        print(f"\n### Store calls, batches of {size} records\n\nrecords timed: {counts}\n")
        header = ["figure", *(labels[a] for a in arms), "after / before"]
        rows_spec = [
            ("DynamoDB calls per record", "dynamo", 3),
            ("S3 calls per record", "s3", 3),
            ("SQS calls per record", "sqs", 3),
            ("other calls per record", "other", 3),
            ("**store calls per record** (target after <= 0.05)", "total", 3),
            ("store calls per 1,000 recommendations", "per_1000_recs", 1),
            ("DynamoDB WRU per 1,000 recommendations", "wru_1000", 1),
            ("DynamoDB RRU per 1,000 recommendations (as sent: eventually consistent)", "rru_1000", 1),
            ("  (the same reads strongly consistent)", "rru_strong_1000", 1),
            ("S3 PUT-class requests per 1,000 recommendations", "s3_put_1000", 1),
            ("S3 GET-class requests per 1,000 recommendations", "s3_get_1000", 1),
            ("records/s end to end (handler + SDK + emulator)", "e2e", 0),
            ("handler process CPU ms per 1,000 records (handler + SDK + HTTP client)", "cpu_per_1000", 0),
            ("  = records per CPU second, SDK included", "per_cpu_s", 0),
            ("emulator CPU ms per 1,000 records", "cloud_cpu_per_1000", 0),
            ("records reported failed / raised", "failed", 0),
        ]
        rows = []
        for label, key, digits in rows_spec:
            values = [fig[a][key] for a in arms]
            if key in ("cpu_per_1000", "cloud_cpu_per_1000"):
                values = [1000 * v for v in values]
            cells = [fmt(v, digits) if digits else f"{v:,.0f}" for v in values]
            cells.append(ratio(values[arms.index("after")], values[0]) if "after" in arms and key != "failed" else "")
            rows.append([label, *cells])
        print(table(header, rows))
        ops = sorted(
            {op for a in arms for op in segs[a]["calls"]}, key=lambda op: -max(segs[a]["calls"].get(op, 0) for a in arms)
        )
        op_rows = [[op, *(fmt(1000 * segs[a]["calls"].get(op, 0) / segs[a]["impressions"], 1) for a in arms)] for op in ops]
        errors = {a: segs[a]["errors"] for a in arms if segs[a]["errors"]}
        print(f"\nCalls per 1,000 recommendations, by operation (batches of {size}):\n")
        print(table(["operation", *(labels[a] for a in arms)], op_rows))
        if errors:
            print(f"\nfailed calls: {errors}")
        sizes = [
            f"{labels[a]}: "
            + ", ".join(
                f"{k} {v[1] / 1024:,.1f} KiB (max {v[2] / 1024:,.1f})" for k, v in sorted(segs[a]["s3_put_bytes"].items())
            )
            for a in arms
            if segs[a]["s3_put_bytes"]
        ]
        if sizes:
            print("\nS3 PutObject mean body size by key prefix: " + "; ".join(sizes))
        profile = []
        for a in arms:
            n = segs[a]["profile_writes"]
            if n:
                attrs = sorted(segs[a]["profile_attrs"].items(), key=lambda kv: -kv[1])
                profile.append(
                    f"{labels[a]}: {n:,} profiles written ({1000 * n / segs[a]['impressions']:,.0f} per 1,000 "
                    f"recommendations), mean {sum(v for _, v in attrs) / n / 1024:.2f} KB: "
                    + ", ".join(f"{k} {v / n:,.0f} B" for k, v in attrs[:5])
                )
        if profile:
            print("\nProfile items written (BatchWriteItem, billed per started KB): " + "; ".join(profile))
        unprocessed = {a: segs[a]["unprocessed"] for a in arms if segs[a]["unprocessed"]}
        if unprocessed:
            print(f"\nunprocessed batch keys/items (retried, each retry counted as a call): {unprocessed}")

    size = args.batch_sizes[-1]
    index = len(args.batch_sizes) - 1
    print(
        f"\n### The bill at {RECS_PER_SECOND} recommendations/s ({RECS_PER_MONTH / 1e6:.1f}M recommendations a "
        f"month), from the batches of {size}\n"
    )
    bills = {arm: monthly(figures(results[arm]["segments"][index])) for arm in arms}
    strong = {arm: monthly(figures(results[arm]["segments"][index]), strong=True) for arm in arms}
    rows = [
        ["DynamoDB write request units a month (M)", *(fmt(bills[a]["wru"] / 1e6, 1) for a in arms)],
        ["DynamoDB read request units a month (M)", *(fmt(bills[a]["rru"] / 1e6, 1) for a in arms)],
        ["S3 PUT-class requests a month (M)", *(fmt(bills[a]["put"] / 1e6, 2) for a in arms)],
        ["S3 GET-class requests a month (M)", *(fmt(bills[a]["get"] / 1e6, 2) for a in arms)],
        ["SQS requests a month (M)", *(fmt(bills[a]["sqs"] / 1e6, 2) for a in arms)],
        [f"DynamoDB writes, ${WRU_PER_MILLION}/M WRU", *(f"${bills[a]['dynamodb writes']:,.2f}" for a in arms)],
        [f"DynamoDB reads, ${RRU_PER_MILLION}/M RRU", *(f"${bills[a]['dynamodb reads']:,.2f}" for a in arms)],
        [f"S3 PUT, ${S3_PUT_PER_1000}/1,000", *(f"${bills[a]['s3 PUT']:,.2f}" for a in arms)],
        [f"S3 GET, ${S3_GET_PER_1000}/1,000", *(f"${bills[a]['s3 GET']:,.2f}" for a in arms)],
        [f"SQS, ${SQS_PER_MILLION}/M", *(f"${bills[a]['sqs']:,.2f}" for a in arms)],
        ["**total a month**", *(f"**${bills[a]['total']:,.2f}**" for a in arms)],
        ["  total with strongly consistent profile reads", *(f"${strong[a]['total']:,.2f}" for a in arms)],
    ]
    print(table(["request charges, a month", *(labels[a] for a in arms)], rows))
    print(f"""
Assumptions: us-east-1 on-demand list prices (DynamoDB ${WRU_PER_MILLION} per million write request units and
${RRU_PER_MILLION} per million read request units; S3 Standard ${S3_PUT_PER_1000} per 1,000 PUT/COPY/POST/LIST and
${S3_GET_PER_1000} per 1,000 GET and other requests; SQS ${SQS_PER_MILLION} per million, free tier ignored). Request
charges only: no storage, data transfer, Kinesis, Lambda duration, CloudWatch or free tier. Request units counted per
item, not per call: a BatchWriteItem costs ceil(item size / 1 KB) WRU for each item it writes, an UpdateItem or PutItem
ceil(larger of the item before and after / 1 KB), a BatchGetItem ceil(item size / 4 KB) RRU for each key (0.5 of that
eventually consistent, as the adapters read; a missing item 0.5), billed by the whole item even when projected; item
sizes by DynamoDB's rules (attribute names + values; numbers about 1 byte per 2 digits), taken from a copy of every item
the handler's process wrote or read (the 6,040 seeded profiles and 3,706 seeded items included). A conditional update
that fails is billed as one that succeeds. Each recommendation is one impression record (a slate of {SLATE}); a click
comes once every {SLATES_PER_CLICK} slates, so {1 + 1 / SLATES_PER_CLICK:.1f} records per recommendation. One shard;
a deployment's shard count changes only the per-shard calls (the ranker state's GET/PUT per batch).""")


def report_cpu(arms: list[str], cpu: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    labels = {"before": "before", "after": "after (working tree)"}
    print(
        f"\n### The consumer's own CPU, no AWS calls (batches of {args.cpu_batch_size}, {args.cpu_records:,} records "
        f"a round, {args.cpu_rounds} rounds per arm, {args.cpu_repeats} alternating runs per arm)\n"
    )
    rows = []
    for variant, label in (
        ("memory", "in-memory ports (as bench_consumer_cpu.py)"),
        ("stub", "real adapters over stub clients (build_handler)"),
    ):
        med = {a: statistics.median([r for run in cpu[a] for r in run[variant]["per_cpu_s"]]) for a in arms}
        wall = {a: statistics.median([r for run in cpu[a] for r in run[variant]["per_wall_s"]]) for a in arms}
        rows.append([f"records per CPU second, {label}", *(f"{med[a]:,.0f}" for a in arms), ratio(med["after"], med["before"])])
        rows.append([f"  records/s wall, {label}", *(f"{wall[a]:,.0f}" for a in arms), ratio(wall["after"], wall["before"])])
        rows.append(
            [
                f"  of the {TARGET_RECORDS_PER_S:,} records/s target",
                *(f"{med[a] / TARGET_RECORDS_PER_S:.2f}x" for a in arms),
                "",
            ]
        )
    print(table(["figure (median of rounds)", *(labels[a] for a in arms), "after / before"], rows))
    for arm in arms:
        calls = cpu[arm][0]["stub"]["stub_calls"]
        failed = sum(run[v]["failed"] for run in cpu[arm] for v in ("memory", "stub"))
        records = 3 * args.cpu_batch_size + args.cpu_rounds * args.cpu_records
        print(
            f"\n{labels[arm]}: stub-client calls in its first run ({records:,} records, warm-up included): "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(calls.items()))
            + f"; records failed: {failed}"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--before-tree",
        type=Path,
        default=DEFAULT_BEFORE,
        help="the before code (made with `git worktree add --detach PATH REF` when missing)",
    )
    parser.add_argument(
        "--before-ref",
        default="40cfc82",
        help="the commit the before tree is made from when missing (default: the last commit before "
        "issue 15's consumer, which wrote item statistics one UpdateItem per item shown)",
    )
    parser.add_argument("--records", type=int, default=2200, help="store calls: timed records per arm per batch size")
    parser.add_argument("--batch-sizes", default="100,500", help="store calls: records per Kinesis event, comma-separated")
    parser.add_argument(
        "--before-records",
        type=int,
        default=500,
        help="store calls: timed records per batch size for the before arm (about 10 calls a slate "
        "against moto: 10-20 records/s here); rounded up to whole batches",
    )
    parser.add_argument("--warmup", type=int, default=2, help="store calls: untimed batches first")
    parser.add_argument("--durable", action="store_true", help="store calls: also the after tree on its durable backend")
    parser.add_argument("--cpu-records", type=int, default=5500, help="own CPU: records per round")
    parser.add_argument("--cpu-rounds", type=int, default=3, help="own CPU: rounds per run")
    parser.add_argument("--cpu-repeats", type=int, default=1, help="own CPU: runs per arm (before, after alternating)")
    parser.add_argument("--cpu-batch-size", type=int, default=100, help="own CPU: records per Kinesis event")
    parser.add_argument("--skip", choices=["store", "cpu"], action="append", default=[], help="leave a part out")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up an arm's subprocess after this")
    args = parser.parse_args(argv)
    args.batch_sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
    if not args.batch_sizes or any(not 1 <= s <= 10_000 for s in args.batch_sizes):
        parser.error("--batch-sizes takes sizes within 1..10000")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(json.loads(argv[1]))
        return
    args = parse_args(argv)
    started = time.perf_counter()
    before_tree = args.before_tree.resolve()
    before_commit = ensure_before_tree(before_tree, args.before_ref)
    changed = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True
    ).stdout.splitlines()
    print("# Stream consumer at scale: before (a commit) and after (the working tree), side by side\n")
    print(f"command: {shlex.join(['.venv/bin/python', str(Path(__file__).resolve().relative_to(ROOT)), *argv])}")
    print(f"machine: {machine(with_load=True)}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"before: {before_tree} at {before_commit}; after: {ROOT} (its working tree: HEAD {head} + {len(changed)} "
        f"changed/new paths)"
    )
    print(
        f"traffic: {USERS:,} users, {ITEMS:,} items, slates of {SLATE}, one click per {SLATES_PER_CLICK} slates, one shard",
        flush=True,
    )
    trees = {"before": before_tree, "after": ROOT}
    arms = ["before", "after"]
    if "cpu" not in args.skip:
        cpu: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
        config = {
            "phase": "cpu",
            "cpu_records": args.cpu_records,
            "cpu_rounds": args.cpu_rounds,
            "cpu_batch_size": args.cpu_batch_size,
        }
        for repeat in range(args.cpu_repeats):
            for arm in arms:
                progress(f"own CPU: {arm}, run {repeat + 1}/{args.cpu_repeats}")
                cpu[arm].append(run_worker(arm, trees[arm], config, args.timeout))
        report_cpu(arms, cpu, args)
    if "store" not in args.skip:
        results: dict[str, dict[str, Any]] = {}
        store_arms = [("before", "before", "moto"), ("after", "after", "moto")]
        if args.durable:
            store_arms.append(("after-durable", "after", "durable"))
        config = {"phase": "store", "batch_sizes": args.batch_sizes, "warmup": args.warmup}
        for name, tree, backend in store_arms:
            progress(f"store calls: {name} ({backend})")
            records = args.before_records if name == "before" else args.records
            results[name] = run_worker(name, trees[tree], {**config, "backend": backend, "records": records}, args.timeout)
            done = results[name]
            progress(
                f"{name}: done in {done['elapsed_s']:.0f} s (cloud start {done['cloud_start_s']:.1f} s, "
                f"seeding {done['seed_s']:.1f} s)"
            )
        durable = "; the durable backend for the third" if args.durable else ""
        print(
            f"\nEmbedded cloud: moto server in a child process for both arms{durable}; the handler's process counts "
            f"its botocore calls. Modules: "
            + "; ".join(f"{a}: {Path(r['modules']['app']).parent.parent.parent}" for a, r in results.items())
        )
        report_store([a for a, _, _ in store_arms], results, args)
    print(f"\nload average at the end: {load_average()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
