"""In-memory fakes of the ports, for unit tests only (never the local default)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from rtrec.domain.encoder import FeatureEncoder
from rtrec.domain.events import StreamMessage
from rtrec.domain.models import ItemFeatures, PopularItems, UserProfile
from rtrec.domain.online import LabeledImpression, RankerShardState


class InMemoryFeatureStore:
    def __init__(self) -> None:
        self.users: dict[str, UserProfile] = {}
        self.items: dict[str, ItemFeatures] = {}
        self.user_reads = 0

    def get_user(self, user_id: str) -> UserProfile | None:
        self.user_reads += 1
        return self.users.get(user_id)

    def get_users(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        self.user_reads += 1
        return {u: self.users[u] for u in user_ids if u in self.users}

    def put_users(self, users: Iterable[UserProfile]) -> int:
        count = 0
        for user in users:
            self.users[user.user_id] = user
            count += 1
        return count

    def get_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]:
        return {i: self.items[i] for i in item_ids if i in self.items}

    def put_items(self, items: Iterable[ItemFeatures]) -> int:
        count = 0
        for item in items:
            self.items[item.item_id] = item
            count += 1
        return count

    def put_item(self, item: ItemFeatures) -> None:
        self.items[item.item_id] = item

    def ping(self) -> None:
        return None


class InMemoryPopularityStore:
    def __init__(self, popular: PopularItems | None = None) -> None:
        self.popular = popular
        self.loads = 0

    def load(self) -> PopularItems | None:
        self.loads += 1
        return self.popular

    def save(self, popular: PopularItems) -> None:
        self.popular = popular


class InMemoryCatalogAdditions:
    def __init__(self) -> None:
        self.items: dict[str, tuple[ItemFeatures, str]] = {}
        self._saves = 0

    def save(self, item: ItemFeatures) -> str:
        self._saves += 1
        tag = f"v{self._saves}"
        self.items[item.item_id] = (item, tag)
        return tag

    def changed(self, known: dict[str, str]) -> list[tuple[ItemFeatures, str]]:
        return [(item, tag) for item_id, (item, tag) in self.items.items() if known.get(item_id) != tag]


class FakeTowers:
    """Deterministic towers for unit tests: an item's vector comes from its genres (plus its id when the
    encoder knows it), a user's from the mean of their history or, without history, from their gender."""

    def __init__(self, encoder: FeatureEncoder, dimension: int = 8) -> None:
        self.encoder = encoder
        self.dimension = dimension
        self.user_calls = 0

    def _unit(self, seed: str) -> np.ndarray:
        vector = np.random.default_rng(zlib.crc32(seed.encode())).standard_normal(self.dimension)
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    def item_vectors(self, items: Sequence[ItemFeatures], *, with_id: bool = True) -> np.ndarray:
        out = []
        for item in items:
            vector = sum((self._unit("genre:" + g) for g in item.genres), np.zeros(self.dimension, dtype=np.float32))
            if with_id and self.encoder.item_row(item.item_id) is not None:
                vector = vector + 2 * self._unit("item:" + item.item_id)
            out.append(vector if np.linalg.norm(vector) else self._unit("empty"))
        return np.stack([v / np.linalg.norm(v) for v in out]).astype(np.float32)

    def user_vectors(self, users: Sequence[UserProfile], *, with_id: bool = True) -> np.ndarray:
        self.user_calls += 1
        out = []
        for user in users:
            known = [i for i in user.history if self.encoder.item_row(i) is not None]
            if known:
                vector = sum(self._unit("item:" + i) for i in known) / len(known)
            else:
                vector = self._unit(f"gender:{user.gender}:{user.age}")
            out.append(vector / np.linalg.norm(vector))
        return np.stack(out).astype(np.float32)


class InMemoryEventStream:
    def __init__(self) -> None:
        self.messages: list[StreamMessage] = []

    def put(self, messages: Sequence[StreamMessage]) -> int:
        self.messages.extend(messages)
        return len(messages)


class InMemoryCounterfactualLog:
    def __init__(self) -> None:
        self.batches: dict[str, list[StreamMessage]] = {}
        self.joined: dict[str, list[LabeledImpression]] = {}

    def write_batch(self, batch_id: str, messages: Sequence[StreamMessage]) -> None:
        self.batches[batch_id] = list(messages)

    def write_joined(self, batch_id: str, slates: Sequence[LabeledImpression]) -> None:
        self.joined[batch_id] = list(slates)

    def read_joined(self) -> list[LabeledImpression]:
        seen: dict[str, LabeledImpression] = {}
        for slates in self.joined.values():
            for labeled in slates:
                seen.setdefault(labeled.slate.request_id, labeled)
        return sorted(seen.values(), key=lambda s: s.slate.timestamp)


class InMemoryRankerStateStore:
    """Keeps states as their JSON bytes, as the S3 store does, so a test sees what a round trip through the store
    keeps (and a benchmark of the consumer pays what the real store costs, not a deep copy)."""

    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.loads = 0

    def load(self, shard_id: str) -> RankerShardState | None:
        body = self.states.get(shard_id)
        return RankerShardState.from_dict(orjson.loads(body)) if body is not None else None

    def save(self, state: RankerShardState) -> None:
        self.states[state.shard_id] = orjson.dumps(state.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)

    def load_all(self) -> list[RankerShardState]:
        self.loads += 1
        return [RankerShardState.from_dict(orjson.loads(b)) for b in self.states.values()]

    def clear(self) -> int:
        count = len(self.states)
        self.states.clear()
        return count


class InMemoryDeadLetterQueue:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def send(self, body: dict[str, Any]) -> None:
        self.messages.append(body)
