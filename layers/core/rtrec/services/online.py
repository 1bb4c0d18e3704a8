"""The online ranker's two halves: the consumer learns per batch, serving reads what it learned.

`OnlineLearner` runs in each consumer batch (`StreamConsumer.process_batch`): it takes the slates the batch
resolved (joined with their rewards), its positive events and each record's item statistics, writes the joined
slates to the counterfactual log, updates the shard's FTRL learner, Beta counts, trend and item statistics, and
saves the shard's state: one GET and one PUT per batch, however many items the batch showed. Learning is exactly
once per record: the state remembers the last sequence number it learned. The consumer learns after planning a
batch and before writing its profiles, so when a write fails and the batch comes again, what was learned is
skipped (the profiles written before the failure no longer resolve their slates then, and need not).

`ItemStatsReader` gives an item's statistics merged over every shard's state (tests and operators).

`OnlineRankerSource` is serving's side: it reloads every shard's state every `poll_seconds` (in the background,
off the request path) and merges them into one `OnlineRanker`; a failed reload keeps the last one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rtrec.domain.models import ItemStatsDelta
from rtrec.domain.online import RANKER_FEATURES, FtrlProximal, OnlineRanker, RankerShardState, merged_item_stats
from rtrec.errors import RtrecError
from rtrec.ports import CounterfactualLog, RankerStateStore
from rtrec.services.stream import Applied

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnerConfig:
    alpha: float = 0.1
    beta: float = 1.0
    l1: float = 0.01
    l2: float = 1.0
    trend_half_life_days: float = 7.0


@dataclass(frozen=True)
class Learned:
    records: int  # records whose effects were learned now (not before)
    slates: int
    examples: int
    total_examples: int


class OnlineLearner:
    def __init__(self, states: RankerStateStore, log: CounterfactualLog, config: LearnerConfig | None = None) -> None:
        self._states = states
        self._log = log
        self.config = config or LearnerConfig()

    def new_state(self, shard_id: str) -> RankerShardState:
        c = self.config
        return RankerShardState(
            shard_id,
            FtrlProximal(len(RANKER_FEATURES), alpha=c.alpha, beta=c.beta, l1=c.l1, l2=c.l2),
            trend_half_life_days=c.trend_half_life_days,
        )

    def learn_batch(self, shard_id: str, batch_id: str, applied: Sequence[tuple[int, Applied]]) -> Learned:
        """Learn from `applied` (sequence number, what applying the record did), in sequence order."""
        state = self._states.load(shard_id) or self.new_state(shard_id)
        fresh = sorted(((seq, a) for seq, a in applied if seq > state.learned_through), key=lambda pair: pair[0])
        if not fresh:
            return Learned(0, 0, 0, state.learner.examples)
        slates = [slate for _, a in fresh for slate in a.resolved]
        if slates:  # before the state: a crash in between logs a slate twice (readers de-duplicate), never loses it
            self._log.write_joined(batch_id, slates)
        for _, a in fresh:
            if a.positive is not None:
                state.observe_positive(*a.positive)
            for item, delta in a.stats:
                state.count(item, delta)
        examples = state.learn(slates)
        state.learned_through = fresh[-1][0]
        self._states.save(state)
        return Learned(len(fresh), len(slates), examples, state.learner.examples)


class ItemStatsReader:
    """Item statistics (impressions, clicks, interactions, popularity mass) summed over every shard's state."""

    def __init__(self, states: RankerStateStore) -> None:
        self._states = states

    def get(self, item_id: str) -> ItemStatsDelta:
        return self.many([item_id]).get(item_id, ItemStatsDelta())

    def many(self, item_ids: Sequence[str] | None = None) -> dict[str, ItemStatsDelta]:
        """The items of `item_ids` that any shard counted (every counted item when None)."""
        return merged_item_stats(self._states.load_all(), item_ids)


class OnlineRankerSource:
    """The merged online ranker, reloaded every `poll_seconds`: the first call loads before it answers, later
    ones start a reload in the background (`reload_with`, a thread by default) and serve the last ranker
    meanwhile, so no request waits for the shard states (200 KB each at ML-1M) to be read and merged."""

    def __init__(
        self,
        states: RankerStateStore,
        *,
        poll_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        reload_with: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._states = states
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._reload_with = reload_with or _in_thread
        self._lock = threading.Lock()  # held from the start of a reload to its end
        self._ranker: OnlineRanker | None = None
        self._merged_from: list[RankerShardState] = []
        self._loaded_at: float | None = None

    def __call__(self) -> OnlineRanker | None:
        now = self._clock()
        if self._loaded_at is None:
            with self._lock:
                if self._loaded_at is None:
                    self._reload(now)
            return self._ranker
        if now - self._loaded_at >= self._poll_seconds and self._lock.acquire(blocking=False):
            self._loaded_at = now
            try:
                self._reload_with(self._reload_and_release)
            except BaseException:
                self._lock.release()
                raise
        return self._ranker

    def _reload_and_release(self) -> None:
        try:
            self._reload(self._clock())
        finally:
            self._lock.release()

    def _reload(self, now: float) -> None:
        self._loaded_at = now
        try:
            states = self._states.load_all()
            if len(states) == len(self._merged_from) and all(a is b for a, b in zip(states, self._merged_from)):
                return  # the store kept every state it read last time: nothing changed
            merged = OnlineRanker.merge(states)
            self._merged_from = states
            if not _same(merged, self._ranker):  # an unchanged state keeps its object (serving caches by it)
                if merged is not None:
                    merged.stream_signals()  # here, not in the first request that uses this ranker
                self._ranker = merged
        except (RtrecError, ValueError) as exc:
            logger.warning("online ranker state not reloaded, keeping the last one: %s", exc)


def _in_thread(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="online-ranker-reload", daemon=True).start()


def _same(a: OnlineRanker | None, b: OnlineRanker | None) -> bool:
    if a is None or b is None:
        return a is b
    return (
        a.examples == b.examples
        and a.shards == b.shards
        and bool(np.array_equal(a.weights, b.weights))
        and a.posteriors.impressions == b.posteriors.impressions
        and a.trend == b.trend
    )
