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
# At least a batch's worth of one user's records (Lambda's default batch size is 100).
RECENT_EVENT_IDS = 128
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
            timestamp=self._clock(), features=result.features, q_hat=result.q_hat,
            shadow_version=result.shadow.version if result.shadow else None,
            shadow_propensities=result.shadow.propensities if result.shadow else (),
            shadow_expected_q=result.shadow.expected_q if result.shadow else (),
        )])


@dataclass(frozen=True)
class Applied:
    """What applying one message does, as the online learner needs it: the slates it resolves (joined with
    their rewards) and the positive event it counts."""

    kind: str  # "event" | "impression" | "duplicate"
    user_id: str
    items: int
    resolved: tuple[LabeledImpression, ...] = ()
    positive: tuple[str, float] | None = None  # (item_id, timestamp) of a positive event


@dataclass
class BatchPlan:
    """What a batch will change, computed from one read of its users' profiles, before anything is written."""

    shard_id: str
    applied: list[tuple[int, Applied]]  # (sequence number, what applying the record does), in order
    profiles: dict[str, UserProfile]  # the profiles to write back
    deltas: dict[str, list[tuple[int, ItemStatsDelta]]]  # per item, tagged with the record's sequence number
    failed: list[tuple[int, str]]  # records whose message could not be applied (a bug), with the reason


class StreamConsumer:
    """Applies a batch of one shard's messages to the online features and item statistics.

    The stream's partition key is the user id, so one consumer is the only writer of a user's profile: it
    reads the batch's profiles at once, applies the messages in order in memory and writes the changed
    profiles back. Exactly once, without a per-event idempotency record:
    - a profile remembers its last RECENT_EVENT_IDS messages as `event_id@sequence_number`: the same record
      delivered again changes nothing, and the same event_id in another record (a client retrying
      POST /events) is a duplicate and has no effect at all;
    - item statistics are ADDed with a per-item, per-shard watermark (`add_item_stats_once`), so a batch
      delivered again after a failed write adds nothing twice."""

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

    def plan(self, shard_id: str, messages: Sequence[tuple[int, StreamMessage]]) -> BatchPlan:
        profiles = self._features.get_users({m.user_id for _, m in messages})
        plan = BatchPlan(shard_id, [], {}, {}, [])
        for seq, message in messages:
            try:
                self._plan_one(plan, profiles, seq, message)
            except Exception as exc:  # noqa: BLE001 - one message must not block its shard; it is dead-lettered
                plan.failed.append((seq, f"{type(exc).__name__}: {exc}"))
        return plan

    def commit(self, plan: BatchPlan) -> None:
        """Profiles first, then item statistics; both are safe to repeat, so a failure retries the batch."""
        if plan.profiles:
            self._features.put_users(plan.profiles.values())
        if plan.deltas:
            self._item_stats.add_item_stats_once(plan.shard_id, plan.deltas)

    def apply_batch(self, shard_id: str, messages: Sequence[tuple[int, StreamMessage]]) -> BatchPlan:
        plan = self.plan(shard_id, messages)
        self.commit(plan)
        return plan

    def _plan_one(self, plan: BatchPlan, profiles: dict[str, UserProfile], seq: int, message: StreamMessage) -> None:
        """Work out the message's effects first and record them last, so one that raises leaves nothing behind."""
        user_id = message.user_id
        before = profiles.get(user_id) or UserProfile(user_id)
        mark = f"{message.event_id}@{seq}"
        after: UserProfile | None = None
        resolved: tuple[LabeledImpression, ...] = ()
        if mark not in before.recent_event_ids:
            if any(r.rsplit("@", 1)[0] == message.event_id for r in before.recent_event_ids):
                plan.applied.append((seq, Applied("duplicate", user_id, 0)))  # the same event in another record
                return
            after, resolved = joined(before, message, self._reward_window, mark)
        # else: delivered again: the profile has it; the statistics' watermark decides for them
        positive = None
        if isinstance(message, Impression):
            deltas = [(item, ItemStatsDelta(impressions=1)) for item in set(message.items)]
            applied = Applied("impression", user_id, len(message.items), resolved)
        else:
            deltas = [(message.item_id, ItemStatsDelta(
                clicks=int(message.type == "click"),
                interactions=int(message.is_positive),
                popularity_mass=decay_mass(message.timestamp, self._half_life_days) if message.is_positive else 0.0,
            ))]
            positive = (message.item_id, message.timestamp) if message.is_positive else None
            applied = Applied("event", user_id, 1, resolved, positive)
        if after is not None:
            profiles[user_id] = plan.profiles[user_id] = after
        for item, delta in deltas:
            plan.deltas.setdefault(item, []).append((seq, delta))
        plan.applied.append((seq, applied))


def _labeled(slate: Impression, chosen: str | None, resolved_at: float) -> LabeledImpression:
    return LabeledImpression(slate, tuple(int(i == chosen) for i in slate.items), resolved_at)


def joined(
    profile: UserProfile, message: StreamMessage, window_seconds: float, mark: str | None = None
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
    mark = mark or message.event_id
    profile = replace(profile, recent_event_ids=(*profile.recent_event_ids, mark)[-RECENT_EVENT_IDS:])
    return profile, tuple(resolved)


def updated_profile(profile: UserProfile, event: UserEvent) -> UserProfile:
    """The profile after `event`: a positive event moves the item to the end of the history (most recent
    last, at most PROFILE_HISTORY_LIMIT), every event counts and advances last_seen."""
    history = profile.history
    if event.is_positive:
        if event.item_id in history:  # a membership test in C; the rebuild only when the item moves
            history = tuple(i for i in history if i != event.item_id)
        history = history[-(PROFILE_HISTORY_LIMIT - 1):] + (event.item_id,)
    last_seen = int(event.timestamp) if profile.last_seen is None else max(profile.last_seen, int(event.timestamp))
    return replace(profile, history=history, interaction_count=profile.interaction_count + int(event.is_positive),
                   last_seen=last_seen)
