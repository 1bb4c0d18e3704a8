"""Value objects shared by services, adapters and entry points."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from rtrec.domain.events import Impression

# How many of a user's most recent items the user tower pools.
HISTORY_LENGTH = 200
# How many the profile keeps: the tower reads the last HISTORY_LENGTH, and serving never recommends
# any of them again (keeping only 200 cost 24% of Recall@10 on ML-1M, whose heavy users rated 2,000+
# films). 5,000 short ids stay far below DynamoDB's 400 KB item limit.
PROFILE_HISTORY_LIMIT = 5_000


class RecentSlate(NamedTuple):
    """A slate applied to a profile: its request id, and the fingerprint (record_fingerprint) of the stream record
    that applied it, which tells that record delivered again from another record carrying the same slate."""

    request_id: str
    fingerprint: int


class EarlyReward(NamedTuple):
    """A positive event that named a slate (request id) the consumer had not seen yet, and the item it chose."""

    request_id: str
    item_id: str


@dataclass(frozen=True)
class UserProfile:
    user_id: str
    age: int | None = None
    gender: str | None = None
    occupation: str | None = None
    zip_prefix: str | None = None
    # Most recent last, at most PROFILE_HISTORY_LIMIT item ids.
    history: tuple[str, ...] = ()
    interaction_count: int = 0
    last_seen: int | None = None  # unix seconds
    # Per shard ("<stream>-<shardId>"), the last sequence number of that shard applied to this profile: a record
    # delivered again is recognised without its event id. Most recently advanced last, at most MAX_SHARD_WATERMARKS.
    applied_through: tuple[tuple[str, int], ...] = ()
    # The client events applied, packed (see SeenEvents): a client re-sending an event within the retention is a
    # no-op however many messages came between. Impressions never enter it (see recent_slates).
    seen_events: bytes = b""
    # The last RECENT_SLATES slates applied: an impression re-sent (the producer retrying) is a no-op without
    # using the user's event budget.
    recent_slates: tuple[RecentSlate, ...] = ()
    # The last slate served to the user, until a positive event rewards one of its items or the next
    # slate replaces it (then none was chosen): the consumer joins impressions with rewards here.
    pending_impression: Impression | None = None
    # Rewards that named a slate the consumer had not seen yet: serving logs the impression after answering,
    # so the user's click can reach the stream before it.
    early_rewards: tuple[EarlyReward, ...] = ()

    @property
    def has_demographics(self) -> bool:
        return any(v is not None for v in (self.age, self.gender, self.occupation, self.zip_prefix))

    def applied_on(self, shard_id: str) -> int:
        """The last sequence number of `shard_id` applied to this profile (-1: none)."""
        for shard, seq in self.applied_through:
            if shard == shard_id:
                return seq
        return -1


# -- exactly once without a window ------------------------------------------------------------------------------

MAX_SHARD_WATERMARKS = 8  # a user's records move to a child shard on a split: the parent's watermark ages out
RECENT_SLATES = 8
SEEN_EVENTS_LIMIT = 4096  # x 16 bytes = 64 KiB of a profile's 400 KB DynamoDB item at most
LEGACY_ARRIVAL = 0xFFFFFFFF  # an entry converted from the old `recent_event_ids`: stamped by its first use
_ENTRY = struct.Struct(">QII")  # event-id fingerprint, record fingerprint, arrival (unix seconds)


def event_fingerprint(event_id: str) -> int:
    """64 bits of BLAKE2b of the event id: among a user's <= SEEN_EVENTS_LIMIT ids two collide with
    probability < 4096**2 / 2**65 (~5e-13); a collision would make a new event look like a duplicate."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


def record_fingerprint(sequence_number: int) -> int:
    """32 bits of BLAKE2b of a record's sequence number: enough to tell the record that first applied an event
    (the original, delivered again) from another record carrying it (a client retry)."""
    return int.from_bytes(hashlib.blake2b(str(sequence_number).encode(), digest_size=4).digest(), "big")


class SeenEvents:
    """A user's client-event dedup set, mutable while a batch is planned: event-id fingerprint ->
    (fingerprint of the record that first applied it, that record's approximate arrival second).

    Entries expire `retention_seconds` after their arrival, measured against the arrival of the record being
    applied (never the wall clock), so a re-delivered batch expires exactly what it expired the first time.
    At most `limit` entries: beyond (a user sending more than `limit` distinct events within the retention)
    the oldest are dropped early and a client retry of one of those is applied again (`evicted` counts them).
    Packed as 16 bytes an entry, oldest first, so a full set is 64 KiB of the profile's item."""

    def __init__(self, packed: bytes = b"", *, retention_seconds: float = 86_400.0, limit: int = SEEN_EVENTS_LIMIT) -> None:
        self.entries: dict[int, tuple[int, int]] = {
            event: (record, arrived) for event, record, arrived in _ENTRY.iter_unpack(packed)
        }
        self.retention = int(retention_seconds)
        self.limit = limit
        self.evicted = 0
        self._legacy = any(a == LEGACY_ARRIVAL for _, a in self.entries.values())

    def first_applied_by(self, event_id: str, arrived: float) -> int | None:
        """The fingerprint of the record that first applied `event_id`, if that is within the retention."""
        entry = self.entries.get(event_fingerprint(event_id))
        if entry is None or (entry[1] != LEGACY_ARRIVAL and entry[1] < int(arrived) - self.retention):
            return None
        return entry[0]

    def add(self, event_id: str, sequence_number: int, arrived: float) -> None:
        """Remember `event_id` as first applied by this record; expire and bound the set (oldest first)."""
        now = int(arrived)
        if self._legacy:
            self.entries = {e: (r, now if a == LEGACY_ARRIVAL else a) for e, (r, a) in self.entries.items()}
            self._legacy = False
        key = event_fingerprint(event_id)
        self.entries.pop(key, None)  # an expired entry of the same id: to the end, as the newest
        self.entries[key] = (record_fingerprint(sequence_number), now)
        oldest = now - self.retention
        while self.entries:  # insertion order is arrival order (a shard's arrival times do not go back)
            first = next(iter(self.entries))
            if self.entries[first][1] >= oldest and len(self.entries) <= self.limit:
                break
            if self.entries[first][1] >= oldest:
                self.evicted += 1
            del self.entries[first]

    def pack(self) -> bytes:
        return b"".join(_ENTRY.pack(e, r, a) for e, (r, a) in self.entries.items())

    @staticmethod
    def from_legacy_marks(marks: Iterable[str]) -> bytes:
        """The old format's `event_id@sequence_number` marks (or bare event ids) as packed entries whose
        arrival is stamped by the next record applied (so they live a whole retention from then on)."""
        packed = []
        for mark in marks:
            event_id, _, seq = mark.rpartition("@") if "@" in mark else (mark, "", "")
            record = record_fingerprint(int(seq)) if seq.isdigit() else 0
            packed.append(_ENTRY.pack(event_fingerprint(event_id), record, LEGACY_ARRIVAL))
        return b"".join(packed)


@dataclass(frozen=True)
class ItemFeatures:
    item_id: str
    title: str
    year: int | None = None
    genres: tuple[str, ...] = ()
    interaction_count: int = 0
    popularity: float = 0.0  # time-decayed interaction count
    original_id: str | None = None
    created_at: int | None = None  # unix seconds the item entered the catalog (first interaction for seeded items)
    promoted: bool = False  # eligible for the promoted slots of a slate (a business rule, not a model signal)
    active: bool = True  # False: deactivated by an administrator, never served until activated again
    deleted_at: int | None = None  # unix seconds an administrator deleted it (a tombstone: never served, 404)

    @property
    def servable(self) -> bool:
        return self.active and self.deleted_at is None


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    # Probability that the serving policy showed this item in this slot; 1.0 for a deterministic policy.
    propensity: float = 1.0


@dataclass(frozen=True)
class PopularItems:
    """A ranked snapshot of popular items, published by whoever last computed it."""

    items: tuple[ScoredItem, ...]
    generated_at: int  # unix seconds
    half_life_days: float
    source: str = ""


@dataclass(frozen=True)
class ShadowScores:
    """How a candidate model's policy would have ranked a served slate (see Impression's shadow fields)."""

    version: str
    propensities: tuple[float, ...]  # per slot: P(candidate picks the shown item | the items shown above it)
    expected_q: tuple[float, ...]  # per slot: the reward model's expectation under the candidate's distribution


@dataclass(frozen=True)
class Recommendation:
    request_id: str
    user_id: str
    model_version: str | None
    cold_start: bool
    strategy: str
    items: tuple[ScoredItem, ...] = field(default_factory=tuple)
    # Each item's ranking features (RANKER_FEATURES), logged with the impression for the online ranker.
    features: tuple[tuple[float, ...], ...] = ()
    online_ranker: bool = False  # whether the online ranker's score was part of the ranking
    q_hat: tuple[float, ...] = ()  # per item, the reward model's click probability (empty: no model yet)
    shadow: ShadowScores | None = None


@dataclass(frozen=True)
class ItemStatsDelta:
    """Increments to an item's online statistics (commutative, so shards may apply them in any order)."""

    impressions: int = 0
    clicks: int = 0
    interactions: int = 0
    popularity_mass: float = 0.0  # see rtrec.domain.popularity.decay_mass

    def __add__(self, other: ItemStatsDelta) -> ItemStatsDelta:
        return ItemStatsDelta(
            self.impressions + other.impressions,
            self.clicks + other.clicks,
            self.interactions + other.interactions,
            self.popularity_mass + other.popularity_mass,
        )
