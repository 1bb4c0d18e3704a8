"""DynamoFeatureStore: user and item features in two DynamoDB tables.

The stream consumer's exactly-once marks live in the profile item: `applied_through` (a JSON map of shard to
sequence number, as strings: Kinesis sequence numbers have up to 56 digits, more than a DynamoDB number holds),
`seen_events` (binary, 16 bytes per client event, at most SEEN_EVENTS_LIMIT) and `recent_slates`. A profile
written before them has `recent_event_ids` instead: read, its marks become `seen_events` entries.

`recent_slates` and `early_rewards` are stored as JSON lists of strings, "request_id fingerprint-in-hex" and
"request_id item_id": the profile's typed entries (RecentSlate, EarlyReward) are encoded here, and only here."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import orjson
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.domain.events import Impression, decode_record, encode_record
from rtrec.domain.models import (
    RECENT_SLATES,
    EarlyReward,
    ItemFeatures,
    RecentSlate,
    SeenEvents,
    UserProfile,
    record_fingerprint,
)
from rtrec.errors import DependencyError

_BATCH_WRITE_LIMIT = 25
_BATCH_GET_LIMIT = 100
_MAX_UNPROCESSED_ROUNDS = 8

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def _to_attribute_map(record: dict[str, Any]) -> dict[str, Any]:
    """Serialize, dropping None and empty collections (DynamoDB rejects empty sets and nulls are noise). Strings and
    integers, most of a profile, are written directly, as the SDK's serializer writes them; the rest goes through it."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        kind = type(value)
        if kind is str:
            out[key] = {"S": value}
            continue
        if kind is int:
            out[key] = {"N": str(value)}
            continue
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        if isinstance(value, float):
            value = Decimal(repr(value))
        if isinstance(value, tuple):
            value = list(value)
        out[key] = _serializer.serialize(value)
    return out


def _from_attribute_map(item: dict[str, Any]) -> dict[str, Any]:
    """Deserialize as the SDK does (numbers as Decimal); strings, the most common, without its dispatch."""
    out = {}
    for key, value in item.items():
        text = value.get("S")
        out[key] = text if text is not None and len(value) == 1 else _deserializer.deserialize(value)
    return out


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def user_to_record(user: UserProfile) -> dict[str, Any]:
    return {
        "user_id": user.user_id,
        "age": user.age,
        "gender": user.gender,
        "occupation": user.occupation,
        "zip_prefix": user.zip_prefix,
        # Lists of ids as JSON strings: a DynamoDB list of 5,000 strings costs the SDK's type (de)serialiser
        # 5,000 calls each way, most of the stream consumer's own time; one string costs one json call.
        "history": _id_list(user.history),
        "interaction_count": user.interaction_count,
        "last_seen": user.last_seen,
        "applied_through": (
            orjson.dumps({shard: str(seq) for shard, seq in user.applied_through}).decode() if user.applied_through else None
        ),
        "seen_events": user.seen_events or None,
        "recent_slates": _id_list([f"{s.request_id} {s.fingerprint:08x}" for s in user.recent_slates]),
        # A JSON string: a map of float lists would cost a Decimal per feature both ways.
        "pending_impression": encode_record(user.pending_impression).decode() if user.pending_impression else None,
        "early_rewards": _id_list([f"{r.request_id} {r.item_id}" for r in user.early_rewards]),
    }


def user_from_record(record: dict[str, Any]) -> UserProfile:
    return UserProfile(
        user_id=str(record["user_id"]),
        age=int(record["age"]) if "age" in record else None,
        gender=record.get("gender"),
        occupation=record.get("occupation"),
        zip_prefix=record.get("zip_prefix"),
        history=_ids(record.get("history")),
        interaction_count=int(record.get("interaction_count", 0)),
        last_seen=int(record["last_seen"]) if "last_seen" in record else None,
        applied_through=tuple((str(k), int(v)) for k, v in orjson.loads(record["applied_through"]).items())
        if record.get("applied_through")
        else (),
        seen_events=_seen(record),
        recent_slates=_recent_slates(record.get("recent_slates")) or _legacy_slates(record),
        pending_impression=_impression(record.get("pending_impression")),
        early_rewards=_early_rewards(record.get("early_rewards")),
    )


def _recent_slates(stored: Any) -> tuple[RecentSlate, ...]:
    """The stored "request_id fingerprint" entries (the request id may hold spaces, the hex fingerprint not)."""
    return tuple(
        [
            RecentSlate(request_id, int(fingerprint, 16))
            for request_id, _, fingerprint in [entry.rpartition(" ") for entry in _ids(stored)]
        ]
    )


def _early_rewards(stored: Any) -> tuple[EarlyReward, ...]:
    """The stored "request_id item_id" entries (the item id may hold spaces, the request id not)."""
    return tuple(
        [EarlyReward(request_id, item_id) for request_id, _, item_id in [entry.partition(" ") for entry in _ids(stored)]]
    )


def _seen(record: dict[str, Any]) -> bytes:
    """The packed dedup set; from a profile of the old format, its `recent_event_ids` marks converted."""
    raw = record.get("seen_events")
    if raw is not None:
        return bytes(raw.value if hasattr(raw, "value") else raw)  # boto3 reads a B attribute as Binary
    legacy = [m for m in _ids(record.get("recent_event_ids")) if not m.startswith("impression:")]
    return SeenEvents.from_legacy_marks(legacy) if legacy else b""


def _legacy_slates(record: dict[str, Any]) -> tuple[RecentSlate, ...]:
    """The old format's impression marks (`impression:<request_id>@<seq>`) as recent_slates entries."""
    slates = []
    for mark in _ids(record.get("recent_event_ids")):
        if mark.startswith("impression:"):
            request_id, _, seq = mark[len("impression:") :].rpartition("@")
            if request_id and seq.isdigit():
                slates.append(RecentSlate(request_id, record_fingerprint(int(seq))))
    return tuple(slates[-RECENT_SLATES:])


def _id_list(ids: Sequence[str]) -> str | None:
    return orjson.dumps(list(ids)).decode() if ids else None


def _ids(stored: Any) -> tuple[str, ...]:
    """A JSON string of ids, or (as profiles written before it) a DynamoDB list of them."""
    if not stored:
        return ()
    if isinstance(stored, str):
        return tuple(orjson.loads(stored))
    return tuple(str(i) for i in stored)


def _impression(raw: str | None) -> Impression | None:
    if not raw:
        return None
    message = decode_record(raw.encode())
    return message if isinstance(message, Impression) else None


def item_to_record(item: ItemFeatures) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "title": item.title,
        "year": item.year,
        "genres": list(item.genres),
        "interaction_count": item.interaction_count,
        "popularity": float(item.popularity),
        "original_id": item.original_id,
        "created_at": item.created_at,
        "promoted": item.promoted or None,
        "active": None if item.active else False,
        "deleted_at": item.deleted_at,
    }


def item_from_record(record: dict[str, Any]) -> ItemFeatures:
    return ItemFeatures(
        item_id=str(record["item_id"]),
        title=str(record.get("title", "")),
        year=int(record["year"]) if "year" in record else None,
        genres=tuple(record.get("genres", ())),
        interaction_count=int(record.get("interaction_count", 0)),
        popularity=float(record.get("popularity", 0.0)),
        original_id=record.get("original_id"),
        created_at=int(record["created_at"]) if "created_at" in record else None,
        promoted=bool(record.get("promoted", False)),
        active=bool(record.get("active", True)),
        deleted_at=int(record["deleted_at"]) if record.get("deleted_at") is not None else None,
    )


class DynamoFeatureStore:
    """FeatureStore over DynamoDB: one get_item per user lookup, batched writes with retry of unprocessed items."""

    def __init__(
        self,
        user_table: str,
        item_table: str,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        consistent_profile_reads: bool = False,
    ) -> None:
        """`consistent_profile_reads`: read profiles strongly consistent (twice the read units). The stream
        consumer needs it: it reads, changes and writes back the profiles batch after batch, and an eventually
        consistent read could miss the previous batch's write (its watermarks and dedup set included)."""
        self.user_table = user_table
        self.item_table = item_table
        self._client = client if client is not None else aws_client("dynamodb", endpoint_url, region)
        self._profile_read: dict[str, Any] = {"ConsistentRead": True} if consistent_profile_reads else {}

    def get_user(self, user_id: str) -> UserProfile | None:
        with translate_aws_errors(f"reading user {user_id!r} from {self.user_table}"):
            response = self._client.get_item(TableName=self.user_table, Key={"user_id": {"S": user_id}}, **self._profile_read)
        item = response.get("Item")
        return user_from_record(_from_attribute_map(item)) if item else None

    def put_users(self, users: Iterable[UserProfile]) -> int:
        return self._batch_write(self.user_table, (user_to_record(u) for u in users))

    def get_users(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        """BatchGetItem, 100 keys a call, unprocessed keys retried."""
        return {
            str(r["user_id"]): user_from_record(r)
            for r in self._batch_get(self.user_table, "user_id", user_ids, **self._profile_read)
        }

    def get_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]:
        return {str(r["item_id"]): item_from_record(r) for r in self._batch_get(self.item_table, "item_id", item_ids)}

    def _batch_get(self, table: str, key: str, ids: Iterable[str], **options: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for chunk in _chunks(list(dict.fromkeys(ids)), _BATCH_GET_LIMIT):
            request = {table: {"Keys": [{key: {"S": i}} for i in chunk], **options}}
            for attempt in range(_MAX_UNPROCESSED_ROUNDS):
                with translate_aws_errors(f"reading from {table}"):
                    response = self._client.batch_get_item(RequestItems=request)
                found.extend(_from_attribute_map(raw) for raw in response.get("Responses", {}).get(table, []))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(min(0.05 * 2**attempt, 1.0))
            else:
                raise DependencyError(f"reading from {table}: keys left unprocessed after retries")
        return found

    def put_items(self, items: Iterable[ItemFeatures]) -> int:
        return self._batch_write(self.item_table, (item_to_record(i) for i in items))

    def put_item(self, item: ItemFeatures) -> None:
        with translate_aws_errors(f"writing to {self.item_table}"):
            self._client.put_item(TableName=self.item_table, Item=_to_attribute_map(item_to_record(item)))

    def ping(self) -> None:
        with translate_aws_errors(f"describing {self.user_table}"):
            self._client.describe_table(TableName=self.user_table)

    def _batch_write(self, table: str, records: Iterable[dict[str, Any]]) -> int:
        written = 0
        batch: list[dict[str, Any]] = []
        for record in records:
            batch.append({"PutRequest": {"Item": _to_attribute_map(record)}})
            if len(batch) == _BATCH_WRITE_LIMIT:
                written += self._write_batch(table, batch)
                batch = []
        if batch:
            written += self._write_batch(table, batch)
        return written

    def _write_batch(self, table: str, batch: list[dict[str, Any]]) -> int:
        pending: dict[str, Any] = {table: batch}
        for attempt in range(_MAX_UNPROCESSED_ROUNDS):
            with translate_aws_errors(f"writing to {table}"):
                response = self._client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return len(batch)
            time.sleep(min(0.05 * 2**attempt, 1.0))
        raise DependencyError(f"writing to {table}: {len(pending.get(table, []))} items left unprocessed after retries")
