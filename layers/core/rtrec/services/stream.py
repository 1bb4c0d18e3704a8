"""The event loop's services: ingestion (events onto the stream) and the consumer (the stream into
features, item statistics and the counterfactual log)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from rtrec.domain.events import Impression, StreamMessage, UserEvent
from rtrec.domain.models import PROFILE_HISTORY_LIMIT, ItemStatsDelta, Recommendation, UserProfile
from rtrec.domain.online import LabeledImpression
from rtrec.domain.popularity import decay_mass
from rtrec.errors import InvalidInputError
from rtrec.ports import CounterfactualLog, EventStream, FeatureStore, ItemStatsStore

MAX_EVENTS_PER_REQUEST = 500
RECENT_EVENT_IDS = 32
EARLY_REWARDS = 8


class IngestService:
    """Accepts batches of user events and the impressions serving logs, and puts them on the stream."""

    def __init__(self, stream: EventStream, *, clock: Callable[[], float]) -> None:
        self._stream = stream
        self._clock = clock

    def ingest(self, events: Sequence[UserEvent]) -> int:
        if not events:
            raise InvalidInputError("no events in the batch")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise InvalidInputError(f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(events)}")
        duplicates = len(events) - len({e.event_id for e in events})
        if duplicates:
            raise InvalidInputError(f"{duplicates} event_id(s) appear more than once in the batch")
        latest = self._clock() + 86_400
        late = [e.event_id for e in events if e.timestamp > latest]
        if late:
            raise InvalidInputError(f"timestamps more than a day in the future: {', '.join(late[:5])}")
        return self._stream.put(events)

    def log_impression(self, result: Recommendation) -> None:
        if not result.items:
            return
        self._stream.put([Impression(
            request_id=result.request_id, user_id=result.user_id, model_version=result.model_version,
            strategy=result.strategy, items=tuple(i.item_id for i in result.items),
            propensities=tuple(i.propensity for i in result.items), scores=tuple(i.score for i in result.items),
            timestamp=self._clock(), features=result.features,
        )])


@dataclass(frozen=True)
class Applied:
    """What applying one message did, as the online learner needs it: the slates it resolved (joined with
    their rewards) and the positive event it counted. Serialisable, because the idempotency guard stores it
    and hands it back when a record is delivered again."""

    kind: str  # "event" | "impression"
    user_id: str
    items: int
    resolved: tuple[LabeledImpression, ...] = ()
    positive: tuple[str, float] | None = None  # (item_id, timestamp) of a positive event

    def to_dict(self) -> dict:
        return {"kind": self.kind, "user_id": self.user_id, "items": self.items,
                "resolved": [r.to_dict() for r in self.resolved],
                "positive": list(self.positive) if self.positive else None}

    @classmethod
    def from_dict(cls, body: dict) -> Applied:
        positive = body.get("positive")
        return cls(str(body["kind"]), str(body["user_id"]), int(body["items"]),
                   tuple(LabeledImpression.from_dict(r) for r in body.get("resolved", ())),
                   (str(positive[0]), float(positive[1])) if positive else None)


class StreamConsumer:
    """Applies one stream message to the online features and item statistics.

    The stream's partition key is the user id, so one consumer is the only writer of a user's profile
    and reads it, changes it and writes it back without a race. Item statistics are ADDed
    (commutative) because items are shared across shards. Exactly-once is the caller's job (the
    handler wraps `apply` in an idempotency guard keyed by event_id)."""

    def __init__(self, features: FeatureStore, item_stats: ItemStatsStore, log: CounterfactualLog, *,
                 half_life_days: float = 90.0, reward_window_seconds: float = 1800.0) -> None:
        self._features = features
        self._item_stats = item_stats
        self._log = log
        self._half_life_days = half_life_days
        self._reward_window = reward_window_seconds

    def log_batch(self, batch_id: str, messages: Sequence[StreamMessage]) -> None:
        """Write the batch's raw messages to the counterfactual log (idempotent per batch_id)."""
        if messages:
            self._log.write_batch(batch_id, messages)

    def apply(self, message: StreamMessage) -> Applied:
        # The profile first: its update is idempotent (it remembers recent event ids), so when the stats
        # ADD below fails and the message is retried, the profile is not changed twice.
        profile = self._features.get_user(message.user_id) or UserProfile(message.user_id)
        resolved: tuple[LabeledImpression, ...] = ()
        if message.event_id not in profile.recent_event_ids:
            profile, resolved = joined(profile, message, self._reward_window)
            self._features.put_users([profile])
        if isinstance(message, Impression):
            self._item_stats.add_item_stats({item: ItemStatsDelta(impressions=1) for item in set(message.items)})
            return Applied("impression", message.user_id, len(message.items), resolved)
        self._item_stats.add_item_stats({message.item_id: ItemStatsDelta(
            clicks=int(message.type == "click"),
            interactions=int(message.is_positive),
            popularity_mass=decay_mass(message.timestamp, self._half_life_days) if message.is_positive else 0.0,
        )})
        positive = (message.item_id, message.timestamp) if message.is_positive else None
        return Applied("event", message.user_id, 1, resolved, positive)


def _labeled(slate: Impression, chosen: str | None, resolved_at: float) -> LabeledImpression:
    return LabeledImpression(
        request_id=slate.request_id, user_id=slate.user_id, model_version=slate.model_version,
        strategy=slate.strategy, items=slate.items, propensities=slate.propensities, scores=slate.scores,
        features=slate.features, rewards=tuple(int(i == chosen) for i in slate.items), timestamp=slate.timestamp,
        resolved_at=resolved_at)


def joined(
    profile: UserProfile, message: StreamMessage, window_seconds: float
) -> tuple[UserProfile, tuple[LabeledImpression, ...]]:
    """The profile after `message`, and the slates it resolves (the reward join).

    A slate waits in the profile until a positive event chooses one of its items (the event names the
    slate's request_id, or, naming none, falls within `window_seconds` of it), or until the next slate
    replaces it unchosen. A reward naming a slate not seen yet is kept, and joined when the slate arrives."""
    resolved: list[LabeledImpression] = []
    pending, early = profile.pending_impression, profile.early_rewards
    if isinstance(message, Impression):
        if pending is not None:
            resolved.append(_labeled(pending, None, message.timestamp))
        chosen = next((r.split(" ", 1)[1] for r in early if r.split(" ", 1)[0] == message.request_id), None)
        if chosen is not None and chosen in message.items:
            resolved.append(_labeled(message, chosen, message.timestamp))
            pending = None
        else:
            pending = message
        early = tuple(r for r in early if r.split(" ", 1)[0] != message.request_id)
        profile = replace(profile, pending_impression=pending, early_rewards=early)
    else:
        if message.is_positive:
            if pending is not None and message.item_id in pending.items and (
                message.request_id == pending.request_id
                or (message.request_id is None and 0 <= message.timestamp - pending.timestamp <= window_seconds)
            ):
                resolved.append(_labeled(pending, message.item_id, message.timestamp))
                profile = replace(profile, pending_impression=None)
            elif message.request_id is not None and (pending is None or pending.request_id != message.request_id):
                early = (*early, f"{message.request_id} {message.item_id}")[-EARLY_REWARDS:]
                profile = replace(profile, early_rewards=early)
        profile = updated_profile(profile, message)
    profile = replace(profile, recent_event_ids=(*profile.recent_event_ids, message.event_id)[-RECENT_EVENT_IDS:])
    return profile, tuple(resolved)


def updated_profile(profile: UserProfile, event: UserEvent) -> UserProfile:
    """The profile after `event`: a positive event moves the item to the end of the history (most recent
    last, at most PROFILE_HISTORY_LIMIT), every event counts and advances last_seen."""
    history = profile.history
    if event.is_positive:
        history = tuple(i for i in history if i != event.item_id)[-(PROFILE_HISTORY_LIMIT - 1):] + (event.item_id,)
    last_seen = int(event.timestamp) if profile.last_seen is None else max(profile.last_seen, int(event.timestamp))
    return replace(profile, history=history, interaction_count=profile.interaction_count + int(event.is_positive),
                   last_seen=last_seen)
