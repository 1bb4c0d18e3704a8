"""Value objects shared by services, adapters and entry points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rtrec.domain.events import Impression

# How many of a user's most recent items the user tower pools.
HISTORY_LENGTH = 200
# How many the profile keeps: the tower reads the last HISTORY_LENGTH, and serving never recommends
# any of them again (keeping only 200 cost 24% of Recall@10 on ML-1M, whose heavy users rated 2,000+
# films). 5,000 short ids stay far below DynamoDB's 400 KB item limit.
PROFILE_HISTORY_LIMIT = 5_000


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
    # The last events applied to this profile: a re-delivered event is recognised and not applied twice.
    recent_event_ids: tuple[str, ...] = ()
    # The last slate served to the user, until a positive event rewards one of its items or the next
    # slate replaces it (then none was chosen): the consumer joins impressions with rewards here.
    pending_impression: Impression | None = None
    # Rewards ("request_id item_id") that named a slate the consumer had not seen yet: serving logs the
    # impression after answering, so the user's click can reach the stream before it.
    early_rewards: tuple[str, ...] = ()

    @property
    def has_demographics(self) -> bool:
        return any(v is not None for v in (self.age, self.gender, self.occupation, self.zip_prefix))


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
        return ItemStatsDelta(self.impressions + other.impressions, self.clicks + other.clicks,
                              self.interactions + other.interactions, self.popularity_mass + other.popularity_mass)
