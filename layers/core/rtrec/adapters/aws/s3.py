"""S3 adapters: the popular-items snapshot, and plain JSON objects."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from botocore.exceptions import ClientError

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.dynamo import item_from_record, item_to_record
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.domain.events import Impression, StreamMessage, UserEvent, decode_record, encode_record
from rtrec.domain.models import ItemFeatures, PopularItems, ScoredItem
from rtrec.domain.online import LabeledImpression, RankerShardState
from rtrec.errors import DependencyError

POPULARITY_KEY = "popularity/current.json"
T = TypeVar("T")


def list_objects(client: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under `prefix` (all pages), without the "folder/" markers consoles create."""
    with translate_aws_errors(f"listing s3://{bucket}/{prefix}"):
        pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
    return [obj for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]


def _no_such_key(exc: ClientError) -> bool:
    """The object is not there (GetObject says NoSuchKey; HeadObject, having no body, 404 or NotFound)."""
    return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")


def read_object(client: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key (any other failure is a DependencyError)."""
    with translate_aws_errors(f"reading s3://{bucket}/{key}"):
        try:
            body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            return body
        except ClientError as exc:
            if _no_such_key(exc):
                return None
            raise


def read_json_as(
    client: Any, bucket: str, key: str, parse: Callable[[Any], T], what: str, *, loads: Callable[[bytes], Any] = json.loads
) -> T | None:
    """The object's JSON through `parse`, or None when there is no such key; a body that is not JSON, or that
    `parse` refuses (ValueError, KeyError, TypeError), is a DependencyError naming it as `what`."""
    raw = read_object(client, bucket, key)
    if raw is None:
        return None
    try:
        return parse(loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        raise DependencyError(f"s3://{bucket}/{key} is not a valid {what}: {exc}") from exc


def _popular_items(body: Any) -> PopularItems:
    return PopularItems(
        items=tuple(ScoredItem(str(i["item_id"]), float(i["score"])) for i in body["items"]),
        generated_at=int(body["generated_at"]),
        half_life_days=float(body["half_life_days"]),
        source=str(body.get("source", "")),
    )


class S3PopularityStore:
    """PopularityStore as one JSON object in the models bucket."""

    def __init__(
        self,
        bucket: str,
        key: str = POPULARITY_KEY,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.key = key
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def load(self) -> PopularItems | None:
        return read_json_as(self._client, self.bucket, self.key, _popular_items, "popularity snapshot")

    def save(self, popular: PopularItems) -> None:
        body = {
            "generated_at": popular.generated_at,
            "half_life_days": popular.half_life_days,
            "source": popular.source,
            "items": [{"item_id": i.item_id, "score": i.score} for i in popular.items],
        }
        with translate_aws_errors(f"writing s3://{self.bucket}/{self.key}"):
            self._client.put_object(
                Bucket=self.bucket, Key=self.key, Body=json.dumps(body).encode(), ContentType="application/json"
            )


CATALOG_ADDITIONS_PREFIX = "catalog/additions/"


class S3CatalogAdditions:
    """CatalogAdditions as one JSON object per item in the models bucket (a persistent bucket, so added
    items survive a restart of the embedded cloud); the object's ETag is the item's version tag."""

    def __init__(
        self,
        bucket: str,
        prefix: str = CATALOG_ADDITIONS_PREFIX,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def save(self, item: ItemFeatures) -> str:
        key = self.prefix + item.item_id + ".json"
        record = {k: v for k, v in item_to_record(item).items() if v is not None}
        body = json.dumps(record, sort_keys=True).encode()
        with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
            response = self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return str(response["ETag"]).strip('"')

    def changed(self, known: dict[str, str]) -> list[tuple[ItemFeatures, str]]:
        out: list[tuple[ItemFeatures, str]] = []
        for obj in list_objects(self._client, self.bucket, self.prefix):
            key, tag = obj["Key"], str(obj["ETag"]).strip('"')
            item_id = key[len(self.prefix) :].removesuffix(".json")
            if not key.endswith(".json") or known.get(item_id) == tag:
                continue
            with translate_aws_errors(f"reading s3://{self.bucket}/{key}"):
                raw = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            try:
                out.append((item_from_record(json.loads(raw)), tag))
            except (ValueError, KeyError, TypeError) as exc:
                raise DependencyError(f"s3://{self.bucket}/{key} is not a valid catalog item: {exc}") from exc
        return out


class S3CounterfactualLog:
    """CounterfactualLog as JSON lines in the counterfactual-logs bucket, Hive-style partitions:
    `<kind>/dt=YYYY-MM-DD/<batch_id>.jsonl` with kind `impressions` or `events` (the raw messages), or
    `joined` (the slates joined with their rewards, partitioned by the day they were served). A re-delivered
    batch has the same id and overwrites its object; readers de-duplicate by event_id (request_id for
    joined slates) across objects."""

    def __init__(self, bucket: str, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def write_batch(self, batch_id: str, messages: Sequence[StreamMessage]) -> None:
        groups: dict[str, list[str]] = {}
        for message in messages:
            kind = "impressions" if isinstance(message, Impression) else "events"
            day = time.strftime("%Y-%m-%d", time.gmtime(message.timestamp))
            groups.setdefault(f"{kind}/dt={day}/{batch_id}.jsonl", []).append(encode_record(message).decode())
        for key, lines in groups.items():
            with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=("\n".join(lines) + "\n").encode(), ContentType="application/x-ndjson"
                )

    def write_joined(self, batch_id: str, slates: Sequence[LabeledImpression]) -> None:
        groups: dict[str, list[str]] = {}
        for labeled in slates:
            day = time.strftime("%Y-%m-%d", time.gmtime(labeled.slate.timestamp))
            groups.setdefault(f"joined/dt={day}/{batch_id}.jsonl", []).append(orjson.dumps(labeled.to_dict()).decode())
        for key, lines in groups.items():
            with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
                self._client.put_object(
                    Bucket=self.bucket, Key=key, Body=("\n".join(lines) + "\n").encode(), ContentType="application/x-ndjson"
                )

    def read_joined(self) -> list[LabeledImpression]:
        """Every logged slate with its rewards, de-duplicated by request_id, oldest first."""
        seen: dict[str, LabeledImpression] = {}
        for obj in list_objects(self._client, self.bucket, "joined/"):
            with translate_aws_errors(f"reading s3://{self.bucket}/{obj['Key']}"):
                body = self._client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
            for line in body.decode().splitlines():
                if line.strip():
                    labeled = LabeledImpression.from_dict(json.loads(line))
                    seen.setdefault(labeled.slate.request_id, labeled)
        return sorted(seen.values(), key=lambda s: s.slate.timestamp)

    def read(self, kind: str) -> list[StreamMessage]:
        """Every logged message of `kind` ("impressions" or "events"), de-duplicated by event_id."""
        seen: dict[str, StreamMessage] = {}
        for obj in list_objects(self._client, self.bucket, f"{kind}/"):
            with translate_aws_errors(f"reading s3://{self.bucket}/{obj['Key']}"):
                body = self._client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
            for line in body.decode().splitlines():
                if line.strip():
                    message = decode_record(line.encode())
                    seen.setdefault(message.event_id, message)
        return list(seen.values())


RANKER_STATE_PREFIX = "online/ranker/"


class S3RankerStateStore:
    """RankerStateStore as one JSON object per shard in the models bucket.

    A state is 200 KB at ML-1M, read and written once per consumer batch and read by every serving instance every
    few seconds; parsing it cost more than the rest of a small batch. So the store keeps the states it saved and
    read with their ETags, and reads an object again only when its ETag changed (a HEAD per `load`, nothing more
    per `load_all`, whose listing carries the ETags). `load` hands its caller the state to change and save (it is
    not kept meanwhile: a batch that fails between the two reads it again); `load_all`'s states are shared, to read."""

    def __init__(
        self,
        bucket: str,
        prefix: str = RANKER_STATE_PREFIX,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)
        self._lock = threading.Lock()
        self._saved: dict[str, tuple[str, RankerShardState]] = {}  # key -> (ETag, the state load hands out)
        self._listed: dict[str, tuple[str, RankerShardState]] = {}  # key -> (ETag, the state load_all shares)

    def _read(self, key: str) -> RankerShardState | None:
        return read_json_as(
            self._client, self.bucket, key, RankerShardState.from_dict, "online-ranker state", loads=orjson.loads
        )

    def _etag(self, key: str) -> str | None:
        with translate_aws_errors(f"reading s3://{self.bucket}/{key}"):
            try:
                return str(self._client.head_object(Bucket=self.bucket, Key=key)["ETag"])
            except ClientError as exc:
                if _no_such_key(exc):
                    return None
                raise

    def load(self, shard_id: str) -> RankerShardState | None:
        key = f"{self.prefix}{shard_id}.json"
        with self._lock:
            kept = self._saved.pop(key, None)
        if kept is not None and self._etag(key) == kept[0]:
            return kept[1]
        return self._read(key)

    def save(self, state: RankerShardState) -> None:
        key = f"{self.prefix}{state.shard_id}.json"
        with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
            # orjson: the state is read and written once per consumer batch (200 KB at ML-1M: 9 ms with json)
            response = self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=orjson.dumps(state.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY),
                ContentType="application/json",
            )
        etag = response.get("ETag")
        with self._lock:
            if etag:
                self._saved[key] = (str(etag), state)
            else:
                self._saved.pop(key, None)

    def _listed_states(self) -> list[dict[str, Any]]:
        """The listing of every shard's state object (key, ETag, ...)."""
        return [obj for obj in list_objects(self._client, self.bucket, self.prefix) if obj["Key"].endswith(".json")]

    def load_all(self) -> list[RankerShardState]:
        states = []
        listed = self._listed_states()
        for obj in listed:
            key, etag = obj["Key"], str(obj.get("ETag", ""))
            with self._lock:
                kept = self._listed.get(key)
            if kept is not None and etag and kept[0] == etag:
                states.append(kept[1])
                continue
            state = self._read(key)
            if state is not None:
                states.append(state)
                with self._lock:
                    self._listed[key] = (etag, state)
        with self._lock:
            for key in self._listed.keys() - {obj["Key"] for obj in listed}:
                del self._listed[key]
        return states

    def restart_positions(self) -> int:
        """Keep what every shard learned but forget the last sequence number it learned: for a stream that
        was created again and numbers its records from the start (the embedded cloud's, after a restart)."""
        keys = [obj["Key"] for obj in self._listed_states()]
        states = [state for state in map(self._read, keys) if state is not None]  # not load_all's shared objects
        for state in states:
            state.learned_through = -1
            self.save(state)
        return len(states)

    def clear(self) -> int:
        keys = [obj["Key"] for obj in list_objects(self._client, self.bucket, self.prefix)]
        with self._lock:
            self._saved.clear()
            self._listed.clear()
        for key in keys:
            with translate_aws_errors(f"deleting s3://{self.bucket}/{key}"):
                self._client.delete_object(Bucket=self.bucket, Key=key)
        return len(keys)


class S3DriftSources:
    """DriftSources over the counterfactual-logs bucket: the objects that arrived since a cursor.

    The cursor is an arrival time (S3 LastModified) plus the keys read at exactly that time, so an object written in
    the same second as the last one read is neither missed nor read twice. Partitions are by event time, which a
    replay sets in the past, so arrival time is what says "new"."""

    def __init__(self, bucket: str, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def _since(self, prefix: str, cursor: Any) -> tuple[list[bytes], dict[str, Any]]:
        cursor = cursor if isinstance(cursor, dict) else {"t": float(cursor or 0.0), "keys": []}
        since, seen = float(cursor.get("t", 0.0)), set(cursor.get("keys", []))
        fresh = [(obj["LastModified"].timestamp(), obj["Key"]) for obj in list_objects(self._client, self.bucket, prefix)]
        fresh = sorted((t, k) for t, k in fresh if t > since or (t == since and k not in seen))
        bodies = []
        for _, key in fresh:
            body = read_object(self._client, self.bucket, key)
            if body is not None:
                bodies.append(body)
        if not fresh:
            return bodies, {"t": since, "keys": sorted(seen)}
        newest = fresh[-1][0]
        keys = [k for t, k in fresh if t == newest] + (sorted(seen) if newest == since else [])
        return bodies, {"t": newest, "keys": sorted(set(keys))}

    def events_since(self, cursor: Any) -> tuple[list[UserEvent], dict[str, Any]]:
        bodies, cursor = self._since("events/", cursor)
        events = []
        for body in bodies:
            for line in body.decode().splitlines():
                if line.strip():
                    message = decode_record(line.encode())
                    if isinstance(message, UserEvent):
                        events.append(message)
        return events, cursor

    def slates_since(self, cursor: Any) -> tuple[list[LabeledImpression], dict[str, Any]]:
        bodies, cursor = self._since("joined/", cursor)
        slates = [
            LabeledImpression.from_dict(json.loads(line))
            for body in bodies
            for line in body.decode().splitlines()
            if line.strip()
        ]
        return slates, cursor


DRIFT_STATE_KEY = "drift/state.json"
DRIFT_REPORTS_PREFIX = "drift/reports/"


class S3DriftStore:
    """The drift check's state and reports in the models bucket: `drift/state.json`, `drift/reports/<UTC>.json`."""

    def __init__(self, bucket: str, client: Any = None, *, endpoint_url: str | None = None, region: str = "us-east-1") -> None:
        self.bucket = bucket
        self._client = client if client is not None else aws_client("s3", endpoint_url, region)

    def load_state(self) -> dict[str, Any] | None:
        return read_json_as(self._client, self.bucket, DRIFT_STATE_KEY, dict, "drift check state")

    def save_state(self, state: dict[str, Any]) -> None:
        with translate_aws_errors(f"writing s3://{self.bucket}/{DRIFT_STATE_KEY}"):
            self._client.put_object(
                Bucket=self.bucket, Key=DRIFT_STATE_KEY, Body=json.dumps(state).encode(), ContentType="application/json"
            )

    def write_report(self, report: dict[str, Any], key: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H-%M-%S", time.gmtime(float(report.get("generated_at", time.time()))))
        key = key or f"{DRIFT_REPORTS_PREFIX}{stamp}-{int(report.get('run', 0)):06d}.json"
        with translate_aws_errors(f"writing s3://{self.bucket}/{key}"):
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=json.dumps(report, indent=1).encode(), ContentType="application/json"
            )
        return key

    def report(self, key: str) -> bytes | None:
        """One stored report's JSON (None when there is no such key)."""
        return read_object(self._client, self.bucket, key)

    def reports(self) -> list[dict[str, Any]]:
        """Every stored report, oldest first."""
        out = []
        for obj in sorted(list_objects(self._client, self.bucket, DRIFT_REPORTS_PREFIX), key=lambda o: o["Key"]):
            raw = read_object(self._client, self.bucket, obj["Key"])
            if raw is not None:
                out.append(json.loads(raw))
        return out

    def clear(self) -> int:
        """Forget the state and the reports (a demo or replay starting over). Reports are read by
        S3JsonReports (rtrec.adapters.aws.json_reports), the reader `rtrec report` uses too."""
        keys = [o["Key"] for o in list_objects(self._client, self.bucket, "drift/")]
        for key in keys:
            with translate_aws_errors(f"deleting s3://{self.bucket}/{key}"):
                self._client.delete_object(Bucket=self.bucket, Key=key)
        return len(keys)
