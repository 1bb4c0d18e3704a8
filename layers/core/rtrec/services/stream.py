"""The event loop's services: ingestion (events onto the stream) and the consumer (the stream into user
profiles, the shard state's item statistics and online learner, and the counterfactual log)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from rtrec.domain.events import Impression, StreamMessage, UserEvent
from rtrec.domain.models import (
    MAX_SHARD_WATERMARKS,
    PROFILE_HISTORY_LIMIT,
    RECENT_SLATES,
    SEEN_EVENTS_LIMIT,
    EarlyReward,
    ItemStatsDelta,
    RecentSlate,
    Recommendation,
    SeenEvents,
    UserProfile,
    record_fingerprint,
)
from rtrec.domain.online import LabeledImpression
from rtrec.domain.popularity import decay_mass
from rtrec.errors import DependencyError, InvalidInputError
from rtrec.ports import CounterfactualLog, EventStream, FeatureStore, ImpressionQueue

if TYPE_CHECKING:
    from rtrec.services.online import Learned

MAX_EVENTS_PER_REQUEST = 500
MAX_CLOCK_SKEW_S = 86_400.0  # an event timestamped further ahead of the server is taken as happening now
EARLY_REWARDS = 8


class IngestService:
    """Accepts batches of user events and the impressions serving logs, and puts them on the stream.

    Events go on the stream synchronously (POST /events answers 202 once the stream holds them all). Impressions
    go to `impressions` when given (a producer that batches them off the request path), else straight on the
    stream, one PutRecords per slate."""

    def __init__(self, stream: EventStream, *, clock: Callable[[], float], impressions: ImpressionQueue | None = None) -> None:
        self._stream = stream
        self._clock = clock
        self._impressions = impressions

    def ingest(self, events: Sequence[UserEvent]) -> int:
        if not events:
            raise InvalidInputError("no events in the batch")
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise InvalidInputError(f"at most {MAX_EVENTS_PER_REQUEST} events per request, got {len(events)}")
        # An event_id repeated within the batch is a retry like any other: the consumer applies the first once.
        # A timestamp more than a day ahead of this clock is a client's skewed clock: the event is taken as happening
        # now, so it cannot push the trend's decay or the dedup horizon into the future.
        now = self._clock()
        events = [replace(e, timestamp=now) if e.timestamp > now + MAX_CLOCK_SKEW_S else e for e in events]
        return self._stream.put(events)

    def log_impression(self, result: Recommendation, caller: str | None = None) -> bool:
        """Log the slate served, attributed to `caller` (the API key that asked); False when the producer's full
        buffer dropped a record for it (counted)."""
        if not result.items:
            return True
        impression = Impression(
            request_id=result.request_id,
            user_id=result.user_id,
            model_version=result.model_version,
            strategy=result.strategy,
            items=tuple(i.item_id for i in result.items),
            propensities=tuple(i.propensity for i in result.items),
            scores=tuple(i.score for i in result.items),
            timestamp=self._clock(),
            features=result.features,
            q_hat=result.q_hat,
            shadow_version=result.shadow.version if result.shadow else None,
            shadow_propensities=result.shadow.propensities if result.shadow else (),
            shadow_expected_q=result.shadow.expected_q if result.shadow else (),
            caller=caller,
        )
        if self._impressions is not None:
            return self._impressions.offer(impression)
        self._stream.put([impression])
        return True

    def flush_impressions(self, timeout_s: float) -> int:
        """Send the producer's buffered impressions now (the end of a Lambda invocation); how many are left."""
        return self._impressions.flush(timeout_s) if self._impressions is not None else 0

    def close(self, timeout_s: float) -> int:
        """Flush and stop the impression producer (the app's shutdown); how many impressions it had to drop."""
        return self._impressions.close(timeout_s) if self._impressions is not None else 0


@dataclass(frozen=True)
class StreamRecord:
    """One record of a shard's batch as the consumer takes it: its sequence number, the message it decoded to
    (None: it did not decode, `error` says why) and its approximate arrival time on the stream (unix seconds;
    what the dedup set's retention is measured in, so a re-delivery expires exactly what the first one did)."""

    seq: int
    message: StreamMessage | None
    arrived_at: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Applied:
    """What applying one record does, as the shard state needs it: the slates it resolves (joined with their
    rewards), the positive event it counts in the trend, and its item statistics."""

    kind: str  # "event" | "impression" | "duplicate" (a client or producer retry) | "redelivered" (already applied)
    user_id: str
    items: int
    resolved: tuple[LabeledImpression, ...] = ()
    positive: tuple[str, float] | None = None  # (item_id, timestamp) of a positive event
    stats: tuple[tuple[str, ItemStatsDelta], ...] = ()


@dataclass
class BatchPlan:
    """What a batch will change, computed from one read of its users' profiles, before anything is written."""

    shard_id: str
    applied: list[tuple[int, Applied]]  # (sequence number, what applying the record does), in order
    profiles: dict[str, UserProfile]  # the profiles to write back
    failed: list[tuple[int, str]]  # records whose message could not be applied (a bug), with the reason
    evicted: int = 0  # dedup entries dropped by the size bound before their retention ended

    @property
    def deltas(self) -> dict[str, list[tuple[int, ItemStatsDelta]]]:
        """Per item, its records' statistics tagged with their sequence numbers (what the shard state adds)."""
        out: dict[str, list[tuple[int, ItemStatsDelta]]] = {}
        for seq, applied in self.applied:
            for item, delta in applied.stats:
                out.setdefault(item, []).append((seq, delta))
        return out


@dataclass(frozen=True)
class BatchOutcome:
    """What `process_batch` did: the plan it committed, what the learner learned, the records it dead-lettered,
    and, when a record could not be dead-lettered, the sequence number delivery must resume from."""

    plan: BatchPlan
    learned: Learned | None
    dead_lettered: int
    retry_from: int | None = None


DeadLetter = Callable[[int, str], None]  # (sequence number, short reason): send that record to the DLQ


class ShardLearner(Protocol):
    """The online learner's side of a batch (OnlineLearner): the shard state's one GET and one PUT."""

    def learn_batch(self, shard_id: str, batch_id: str, applied: Sequence[tuple[int, Applied]]) -> Learned: ...


class StreamConsumer:
    """Applies a batch of one shard's records to the user profiles and the shard's state, exactly once.

    The stream's partition key is the user id, so one consumer is the only writer of a user's profile: it reads
    the batch's profiles at once, applies the records in order in memory and writes the changed profiles back.
    The item statistics (impressions, clicks, interactions, popularity mass, trend) live in the shard's
    online-ranker state, which the learner loads and saves once per batch (`process_batch`): no store call per
    item shown. Exactly once, without a per-event idempotency record or a window of recent ids:
    - a profile keeps, per shard, the last sequence number applied to it (`UserProfile.applied_through`): a
      record delivered again is recognised by its sequence number alone;
    - a profile keeps the client events it applied for `dedup_retention_seconds` of arrival time
      (`SeenEvents`, with the record that first applied each): the same event id in another record (a client
      retrying POST /events) has no effect, however many messages came between;
    - impressions never enter that set: a slate whose request_id is among the profile's last RECENT_SLATES
      slates is a no-op;
    - the shard state counts a record only when its sequence number is above the state's `learned_through`,
      and it is saved before the profiles, so it is always at least as far as any profile of its shard."""

    def __init__(
        self,
        features: FeatureStore,
        log: CounterfactualLog,
        *,
        half_life_days: float = 90.0,
        reward_window_seconds: float = 1800.0,
        dedup_retention_seconds: float = 86_400.0,
        dedup_limit: int = SEEN_EVENTS_LIMIT,
        learner: ShardLearner | None = None,
    ) -> None:
        self._features = features
        self._log = log
        self._half_life_days = half_life_days
        self._reward_window = reward_window_seconds
        self._retention = dedup_retention_seconds
        self._dedup_limit = dedup_limit
        self.learner = learner

    # -- the batch, step by step -----------------------------------------------------------------------------

    def process_batch(self, shard_id: str, records: Sequence[StreamRecord], dead_letter: DeadLetter) -> BatchOutcome:
        """One shard's batch, in order: plan (one read per 100 users), dead-letter the poison records, log the raw
        messages (one PUT), learn (the shard state's GET and PUT, and the joined slates' PUT), write the changed
        profiles (one write per 25 users).

        Every step is safe to repeat, so a DependencyError from any store (or from `dead_letter`) propagates:
        the whole batch comes again and changes nothing twice. A poison record (it did not decode, or applying it
        raised) goes to `dead_letter` and counts as processed; one that `dead_letter` cannot take (it raises
        anything but DependencyError) ends the batch there: the records before it are committed and
        `retry_from` names it (the caller reports it in batchItemFailures)."""
        records = sorted(records, key=lambda r: r.seq)
        if not records:
            return BatchOutcome(BatchPlan(shard_id, [], {}, []), None, 0)
        read = self._features.get_users({r.message.user_id for r in records if r.message is not None})
        plan = self._plan(shard_id, records, dict(read))
        poison = sorted(
            [(r.seq, f"malformed record: {r.error}") for r in records if r.message is None]
            + [(seq, f"could not be applied: {reason}") for seq, reason in plan.failed]
        )
        dead_lettered, retry_from = 0, None
        for seq, reason in poison:
            try:
                dead_letter(seq, reason)
            except DependencyError:
                raise
            except Exception:  # any error: this record cannot be dead-lettered here: the mapping isolates it
                retry_from = seq
                break
            dead_lettered += 1
        if retry_from is not None:
            records = [r for r in records if r.seq < retry_from]
            plan = self._plan(shard_id, records, dict(read))
        messages = [r.message for r in records if r.message is not None]
        if messages:
            self.log_batch(f"{shard_id}-{records[0].seq}-{records[-1].seq}", messages)
        learned = None
        if self.learner is not None and plan.applied:
            learned = self.learner.learn_batch(shard_id, f"{shard_id}-{records[0].seq}-{records[-1].seq}", plan.applied)
        self.commit(plan)
        return BatchOutcome(plan, learned, dead_lettered, retry_from)

    def log_batch(self, batch_id: str, messages: Sequence[StreamMessage]) -> None:
        """Write the batch's raw messages to the counterfactual log (idempotent per batch_id)."""
        if messages:
            self._log.write_batch(batch_id, messages)

    def commit(self, plan: BatchPlan) -> None:
        """Write the changed profiles (after the shard state: see the class docstring)."""
        if plan.profiles:
            self._features.put_users(plan.profiles.values())

    def apply_batch(self, shard_id: str, messages: Sequence[tuple[int, StreamMessage] | StreamRecord]) -> BatchPlan:
        """`process_batch` without a dead-letter queue (tests, tools): failures are left in `BatchPlan.failed`."""
        records = [m if isinstance(m, StreamRecord) else StreamRecord(m[0], m[1]) for m in messages]
        return self.process_batch(shard_id, records, _ignore).plan

    # -- planning ----------------------------------------------------------------------------------------------

    def _plan(self, shard_id: str, records: Sequence[StreamRecord], profiles: dict[str, UserProfile]) -> BatchPlan:
        plan = BatchPlan(shard_id, [], {}, [])
        work: dict[str, _Working] = {}
        for record in records:
            if record.message is None:
                continue
            try:
                self._plan_one(plan, profiles, work, shard_id, record)
            except Exception as exc:  # any error: one message must not block its shard; it is dead-lettered
                plan.failed.append((record.seq, f"{type(exc).__name__}: {exc}"))
        for user_id, w in work.items():  # the working state back into the profiles to write
            if w.changed:
                plan.profiles[user_id] = replace(profiles[user_id], seen_events=w.seen.pack(), applied_through=w.watermarks())
            plan.evicted += w.seen.evicted
        return plan

    def _plan_one(
        self, plan: BatchPlan, profiles: dict[str, UserProfile], work: dict[str, _Working], shard_id: str, record: StreamRecord
    ) -> None:
        """Work out the record's effects first and record them last, so one that raises leaves nothing behind."""
        seq, message = record.seq, record.message
        assert message is not None
        arrived = record.arrived_at if record.arrived_at is not None else message.timestamp
        user_id = message.user_id
        before = profiles.get(user_id) or UserProfile(user_id)
        w = work.get(user_id)
        if w is None:
            w = work[user_id] = _Working(before, self._retention, self._dedup_limit)
        if seq <= w.applied.get(shard_id, -1):
            # Delivered again: the profile has it. What it counted (for a state that had not: never, as the state
            # is saved first) follows from whether this record was the original or a retry.
            if isinstance(message, Impression):
                original = RecentSlate(message.request_id, record_fingerprint(seq)) in before.recent_slates
            else:
                original = w.seen.first_applied_by(message.event_id, arrived) == record_fingerprint(seq)
            stats, positive = self._effects(message) if original else ((), None)
            plan.applied.append((seq, Applied("redelivered", user_id, 0, (), positive, stats)))
            return
        if isinstance(message, Impression):
            if any(slate.request_id == message.request_id for slate in before.recent_slates):
                plan.applied.append((seq, Applied("duplicate", user_id, 0)))  # the producer sent the slate again
                return
        else:
            first = w.seen.first_applied_by(message.event_id, arrived)
            if first is not None:
                if first == record_fingerprint(seq):  # the original, in a profile written without a watermark
                    stats, positive = self._effects(message)
                    plan.applied.append((seq, Applied("redelivered", user_id, 0, (), positive, stats)))
                else:
                    plan.applied.append((seq, Applied("duplicate", user_id, 0)))  # a client retry
                return
        after, resolved = joined(before, message, self._reward_window)
        stats, positive = self._effects(message)
        if isinstance(message, Impression):
            slate = RecentSlate(message.request_id, record_fingerprint(seq))
            after = replace(after, recent_slates=(*after.recent_slates, slate)[-RECENT_SLATES:])
            applied = Applied("impression", user_id, len(message.items), resolved, None, stats)
        else:
            applied = Applied("event", user_id, 1, resolved, positive, stats)
        # recorded last: nothing above raised
        if not isinstance(message, Impression):
            w.seen.add(message.event_id, seq, arrived)
        w.advance(shard_id, seq)
        profiles[user_id] = after
        plan.applied.append((seq, applied))

    def _effects(self, message: StreamMessage) -> tuple[tuple[tuple[str, ItemStatsDelta], ...], tuple[str, float] | None]:
        """A record's item statistics, and the positive event it counts in the trend."""
        if isinstance(message, Impression):
            return tuple((item, _SHOWN) for item in dict.fromkeys(message.items)), None
        if not message.is_positive:  # a view or a low rating: only the profile's counters
            return (), None
        return (
            (
                message.item_id,
                ItemStatsDelta(
                    clicks=int(message.type == "click"),
                    interactions=1,
                    popularity_mass=decay_mass(message.timestamp, self._half_life_days),
                ),
            ),
        ), (message.item_id, message.timestamp)


_SHOWN = ItemStatsDelta(impressions=1)


def _ignore(_seq: int, _reason: str) -> None:
    """apply_batch's dead-letter queue: the failures stay in the plan (`BatchPlan.failed`)."""


class _Working:
    """A user's watermarks and dedup set while a batch is planned (mutable: one copy per user per batch)."""

    def __init__(self, profile: UserProfile, retention: float, limit: int) -> None:
        self.applied = dict(profile.applied_through)
        self.seen = SeenEvents(profile.seen_events, retention_seconds=retention, limit=limit)
        self.changed = False

    def advance(self, shard_id: str, seq: int) -> None:
        self.applied.pop(shard_id, None)
        self.applied[shard_id] = seq  # most recently advanced last
        self.changed = True

    def watermarks(self) -> tuple[tuple[str, int], ...]:
        return tuple(self.applied.items())[-MAX_SHARD_WATERMARKS:]


def _labeled(slate: Impression, chosen: str | None, resolved_at: float) -> LabeledImpression:
    return LabeledImpression(slate, tuple(int(i == chosen) for i in slate.items), resolved_at)


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
        chosen = next((r.item_id for r in early if r.request_id == message.request_id), None)
        if chosen is not None and chosen in message.items:
            resolved.append(_labeled(message, chosen, message.timestamp))
            pending = None
        else:
            pending = message
        early = tuple(r for r in early if r.request_id != message.request_id)
        profile = replace(profile, pending_impression=pending, early_rewards=early)
    else:
        if message.is_positive:
            if (
                pending is not None
                and message.item_id in pending.items
                and (
                    message.request_id == pending.request_id
                    or (message.request_id is None and 0 <= message.timestamp - pending.timestamp <= window_seconds)
                )
            ):
                resolved.append(_labeled(pending, message.item_id, message.timestamp))
                profile = replace(profile, pending_impression=None)
            elif message.request_id is not None and (pending is None or pending.request_id != message.request_id):
                early = (*early, EarlyReward(message.request_id, message.item_id))[-EARLY_REWARDS:]
                profile = replace(profile, early_rewards=early)
        profile = updated_profile(profile, message)
    return profile, tuple(resolved)


def updated_profile(profile: UserProfile, event: UserEvent) -> UserProfile:
    """The profile after `event`: a positive event moves the item to the end of the history (most recent
    last, at most PROFILE_HISTORY_LIMIT), every event counts and advances last_seen."""
    history = profile.history
    if event.is_positive:
        if event.item_id in history:  # a membership test in C; the rebuild only when the item moves
            history = tuple(i for i in history if i != event.item_id)
        history = (*history[-(PROFILE_HISTORY_LIMIT - 1) :], event.item_id)
    last_seen = int(event.timestamp) if profile.last_seen is None else max(profile.last_seen, int(event.timestamp))
    return replace(
        profile, history=history, interaction_count=profile.interaction_count + int(event.is_positive), last_seen=last_seen
    )
