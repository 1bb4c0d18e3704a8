"""The online ranker: the reward join, learning exactly once per record, merging shards, and serving with it."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from rtrec.adapters.memory import InMemoryCounterfactualLog, InMemoryFeatureStore, InMemoryRankerStateStore
from rtrec.domain.events import Impression, UserEvent
from rtrec.domain.models import EarlyReward, UserProfile
from rtrec.domain.online import RANKER_FEATURES, LabeledImpression, OnlineRanker, RankerShardState
from rtrec.domain.ranking import RankingConfig, blend, blend_weights, ranking_features
from rtrec.services.online import OnlineLearner, OnlineRankerSource
from rtrec.services.stream import Applied, StreamConsumer, joined
from tests.unit.serving_world import make_world

NOW = 1_700_000_000.0
F = len(RANKER_FEATURES)


def slate(request: str, items=("a", "b", "c"), user: str = "u1", at: float = NOW) -> Impression:
    features = tuple(tuple(float(i == j) for j in range(F)) for i in range(len(items)))
    return Impression(request, user, "1", "two_tower", tuple(items), (0.5,) * len(items), (1.0,) * len(items), at, features)


def click(n: int, item: str, request: str | None, user: str = "u1", at: float = NOW + 5, type_: str = "click"):
    return UserEvent(f"e{n}", user, item, type_, at, request_id=request, value=4.0 if type_ == "rating" else None)


# -- the reward join ------------------------------------------------------------------------------------------


def test_a_click_naming_the_slate_resolves_it_with_the_chosen_item():
    profile, resolved = joined(UserProfile("u1"), slate("r1"), 1800)
    assert resolved == ()
    assert profile.pending_impression.request_id == "r1"
    profile, resolved = joined(profile, click(1, "b", "r1"), 1800)
    assert [r.rewards for r in resolved] == [(0, 1, 0)]
    assert profile.pending_impression is None
    assert resolved[0].slate == slate("r1")
    assert profile.history == ("b",)


def test_the_next_slate_resolves_the_last_one_unchosen():
    profile, _ = joined(UserProfile("u1"), slate("r1"), 1800)
    profile, resolved = joined(profile, slate("r2", at=NOW + 60), 1800)
    assert [(r.slate.request_id, r.rewards, r.resolved_at) for r in resolved] == [("r1", (0, 0, 0), NOW + 60)]
    assert profile.pending_impression.request_id == "r2"


def test_a_reward_that_arrives_before_its_slate_is_joined_when_the_slate_comes():
    profile, resolved = joined(UserProfile("u1"), click(1, "c", "r1"), 1800)
    assert resolved == ()
    assert profile.early_rewards == (EarlyReward("r1", "c"),)
    profile, resolved = joined(profile, slate("r1"), 1800)
    assert [r.rewards for r in resolved] == [(0, 0, 1)]
    assert profile.pending_impression is None
    assert profile.early_rewards == ()


def test_a_click_naming_no_slate_counts_within_the_window_only():
    profile, _ = joined(UserProfile("u1"), slate("r1"), 1800)
    _, late = joined(profile, click(1, "a", None, at=NOW + 1801), 1800)
    _, in_time = joined(profile, click(1, "a", None, at=NOW + 1799), 1800)
    assert late == ()
    assert [r.rewards for r in in_time] == [(1, 0, 0)]


def test_a_weak_or_unrelated_event_leaves_the_slate_waiting():
    profile, _ = joined(UserProfile("u1"), slate("r1"), 1800)
    for n, event in enumerate([click(1, "a", "r1", type_="view"), click(2, "zz", "r1")]):
        profile, resolved = joined(profile, event, 1800)
        assert resolved == (), n
        assert profile.pending_impression.request_id == "r1", n


def test_the_consumer_resolves_a_slate_once_even_when_its_batch_comes_again():
    features = InMemoryFeatureStore()
    consumer = StreamConsumer(features, InMemoryCounterfactualLog())
    batch = [(1, slate("r1")), (2, click(1, "a", "r1"))]
    plan = consumer.apply_batch("s0", batch)
    assert next(a.resolved for _, a in plan.applied) == ()
    applied = plan.applied[1][1]
    assert [r.rewards for r in applied.resolved] == [(1, 0, 0)]
    assert applied.positive == ("a", NOW + 5)
    again = consumer.apply_batch("s0", batch)
    assert all(a.resolved == () for _, a in again.applied)  # the profile remembers both records


# -- learning -------------------------------------------------------------------------------------------------


def labeled(request: str, chosen: int | None, items=("a", "b", "c")) -> LabeledImpression:
    s = slate(request, items)
    return LabeledImpression(s, tuple(int(i == chosen) for i in range(len(items))), NOW + 1)


def applied_with(*slates: LabeledImpression, positive: tuple[str, float] | None = None) -> Applied:
    return Applied("event", "u1", 1, tuple(slates), positive)


def test_the_learner_learns_each_record_once_and_logs_the_joined_slates():
    states, log = InMemoryRankerStateStore(), InMemoryCounterfactualLog()
    learner = OnlineLearner(states, log)
    batch = [(10, applied_with(labeled("r1", 0), positive=("a", NOW))), (11, applied_with(labeled("r2", None)))]
    learned = learner.learn_batch("shard-0", "b1", batch)
    assert (learned.records, learned.slates, learned.examples, learned.total_examples) == (2, 2, 6, 6)
    assert [s.slate.request_id for s in log.joined["b1"]] == ["r1", "r2"]
    assert LabeledImpression.from_dict(log.joined["b1"][0].to_dict()) == log.joined["b1"][0]
    again = learner.learn_batch("shard-0", "b2", [*batch, (12, applied_with(labeled("r3", 1)))])
    assert (again.records, again.examples, again.total_examples) == (1, 3, 9)  # 10 and 11 were learned before
    state = states.load("shard-0")
    assert state.learned_through == 12
    assert state.impressions == {"a": 3, "b": 3, "c": 3}
    assert state.clicks == {"a": 1, "b": 1}
    assert state.trend == {"a": 1.0}


def test_shard_state_survives_its_json_round_trip():
    state = RankerShardState("s")
    state.learn([labeled("r1", 1)])
    state.observe_positive("b", NOW)
    again = RankerShardState.from_dict(orjson.loads(orjson.dumps(state.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)))
    assert np.allclose(again.learner.weights, state.learner.weights)
    assert again.learner.examples == 3
    assert (again.impressions, again.clicks, again.trend) == (state.impressions, state.clicks, state.trend)
    assert again.trend_counts() == state.trend_counts() == {"b": 1.0}


def test_the_trend_halves_per_half_life():
    state = RankerShardState("s", trend_half_life_days=1.0)
    state.observe_positive("a", NOW)
    state.observe_positive("b", NOW + 86_400)
    assert state.trend_counts() == pytest.approx({"a": 0.5, "b": 1.0})
    state.observe_positive("a", NOW)  # late: counted as decayed to the newest event
    assert state.trend_counts()["a"] == pytest.approx(1.0)
    assert state.trend_counts(at=NOW + 3 * 86_400) == pytest.approx({"a": 0.25, "b": 0.25})
    state.observe_positive("c", NOW + 600 * 86_400)  # 600 half-lives on: re-anchored, no overflow
    assert state.trend_counts() == pytest.approx({"c": 1.0})
    assert state.trend_anchor == NOW + 600 * 86_400


def test_the_learner_finds_the_feature_that_predicts_clicks():
    """Clicks go to the item whose trend feature is high: FTRL gives that feature the largest weight."""
    rng = np.random.default_rng(0)
    state = RankerShardState("s")
    for n in range(400):
        features = rng.random((5, F))
        features[:, 0] = 1.0
        clicked = int(np.argmax(features[:, 6])) if rng.random() < 0.5 else None
        rewards = tuple(int(i == clicked) for i in range(5))
        shown = Impression(
            f"r{n}", "u", "1", "two_tower", tuple("abcde"), (1.0,) * 5, (1.0,) * 5, NOW, tuple(map(tuple, features))
        )
        state.learn([LabeledImpression(shown, rewards, NOW)])
    weights = state.learner.weights
    assert int(np.argmax(weights[1:])) + 1 == RANKER_FEATURES.index("trend")


def test_a_feature_positive_for_every_shown_item_is_not_learned_as_a_negative_bias():
    """Rare clicks on the most relevant item of slates whose relevance is high overall: the weight must come out
    positive (uncentred, relevance stood in for the bias and went negative)."""
    rng = np.random.default_rng(1)
    state = RankerShardState("s")
    relevance = RANKER_FEATURES.index("relevance")
    for n in range(1500):
        features = np.zeros((10, F))
        features[:, 0] = 1.0
        features[:, relevance] = rng.uniform(0.4, 0.8) + rng.normal(0, 0.05, 10)
        chosen = int(np.argmax(features[:, relevance])) if rng.random() < 0.1 else None
        shown = Impression(
            f"r{n}", "u", "1", "two_tower", tuple("abcdefghij"), (1.0,) * 10, (1.0,) * 10, NOW, tuple(map(tuple, features))
        )
        state.learn([LabeledImpression(shown, tuple(int(i == chosen) for i in range(10)), NOW)])
    weights = state.learner.weights
    assert weights[relevance] > 0.3
    assert weights[0] < -2.0


def test_merging_shards_averages_weights_by_examples_and_sums_counts():
    one, two = RankerShardState("1"), RankerShardState("2")
    one.learn([labeled("r1", 0)] * 3)
    two.learn([labeled("r2", None)])
    one.observe_positive("a", NOW)
    two.observe_positive("a", NOW + 7 * 86_400)
    merged = OnlineRanker.merge([one, two])
    expected = (one.learner.weights * 9 + two.learner.weights * 3) / 12
    assert np.allclose(merged.weights, expected)
    assert merged.examples == 12
    assert merged.shards == 2
    assert merged.posteriors.impressions == {"a": 4, "b": 4, "c": 4}
    assert merged.posteriors.clicks == {"a": 3}
    assert merged.trend == pytest.approx({"a": 1.5})  # one's count decayed by one half-life to two's reference
    ctr_lift, trend = merged.item_signals(["a", "b", "zz"])
    assert ctr_lift[0] > 0 > ctr_lift[1]
    assert ctr_lift[2] == pytest.approx(0.0)
    assert trend.tolist() == [1.0, 0.0, 0.0]
    known, known_lift, _known_trend = merged.stream_signals()
    assert known == ["a", "b", "c"]
    assert np.allclose(known_lift, merged.item_signals(["a", "b", "c"])[0])
    assert OnlineRanker.merge([]) is None


def test_a_state_over_other_features_is_refused():
    body = RankerShardState("s").to_dict()
    body["features"] = ["bias", "something else"]
    with pytest.raises(ValueError, match="features"):
        RankerShardState.from_dict(body)


# -- serving with it ------------------------------------------------------------------------------------------


def test_the_blend_is_the_first_features_weighted():
    world = make_world()
    catalog = world.model.catalog
    rows = np.arange(10)
    relevance = np.linspace(0, 1, 10)
    config = RankingConfig()
    features = ranking_features(rows, relevance, catalog, config, NOW)
    assert features.shape == (10, F)
    assert np.all(features[:, 0] == 1)
    assert np.allclose(features[:, 1], relevance)
    assert np.allclose(features @ blend_weights(config), blend(rows, relevance, catalog, config, NOW))


def ranker_with(weights: dict[str, float], examples: int, trend: dict[str, float] | None = None) -> OnlineRanker:
    state = RankerShardState("s")
    for name, value in weights.items():  # z such that the FTRL weight is `value` (l1 0.01, n 0)
        w = state.learner.beta / state.learner.alpha + state.learner.l2
        state.learner.z[RANKER_FEATURES.index(name)] = -(value * w + np.sign(value) * state.learner.l1)
    state.learner.examples = examples
    state.trend = trend or {}
    state.trend_anchor = state.trend_reference = NOW if trend else None
    return OnlineRanker.merge([state])


def test_serving_logs_features_and_uses_the_ranker_once_it_has_learned_enough():
    world = make_world()
    world.features.put_users([UserProfile("u1", history=("1", "2"), interaction_count=2)])
    config = RankingConfig(policy="greedy", freshness_weight=0.0, online_weight=1.0, online_min_examples=100)
    without = world.recommender(config).recommend("u1", 5)
    assert not without.online_ranker
    assert len(without.features) == 5
    assert all(len(f) == F for f in without.features)
    assert [f[1] for f in without.features] == pytest.approx(
        [i.score - f[2] * config.popularity_weight for i, f in zip(without.items, without.features)]
    )
    last = without.items[-1].item_id  # the ranker is told that this one is trending
    trending = ranker_with({"trend": 50.0}, examples=100, trend={last: 10.0})
    served = world.recommender(config, ranker=lambda: trending).recommend("u1", 5)
    assert served.online_ranker
    assert served.items[0].item_id == last
    assert served.features[0][RANKER_FEATURES.index("trend")] == 1.0
    switched_off = world.recommender(config, ranker=lambda: trending).recommend("u1", 5, online_ranker=False)
    assert not switched_off.online_ranker
    assert switched_off.items == without.items
    untrained = ranker_with({"trend": 50.0}, examples=99, trend={last: 10.0})
    assert not world.recommender(config, ranker=lambda: untrained).recommend("u1", 5).online_ranker


def test_the_global_impressions_feed_the_new_item_exploration_term():
    world = make_world()
    catalog = world.model.catalog
    ranker = OnlineRanker.merge([RankerShardState("s", impressions={"3": 500})])
    world.recommender(ranker=lambda: ranker).recommend("anyone", 5)
    assert catalog.columns.impressions[catalog.row("3")] >= 500


def test_the_source_reloads_after_its_interval_and_keeps_the_last_on_failure():
    states = InMemoryRankerStateStore()
    now = [0.0]
    source = OnlineRankerSource(states, poll_seconds=2.0, clock=lambda: now[0], reload_with=lambda work: work())
    assert source() is None
    state = RankerShardState("s")
    state.learn([labeled("r1", 0)])
    states.save(state)
    assert source() is None  # within the interval
    now[0] = 2.0
    loaded = source()
    assert loaded.examples == 3
    now[0] = 4.0
    assert source() is loaded  # unchanged: the same object, so serving's per-catalog signals stay cached

    def broken():
        raise ValueError("corrupt state")

    states.load_all = broken  # type: ignore[method-assign]
    now[0] = 6.0
    assert source().examples == 3


def test_the_source_reloads_in_the_background_and_serves_the_last_ranker_meanwhile():
    states = InMemoryRankerStateStore()
    first = RankerShardState("s")
    first.learn([labeled("r1", 0)])
    states.save(first)
    now = [0.0]
    pending: list = []
    source = OnlineRankerSource(states, poll_seconds=2.0, clock=lambda: now[0], reload_with=pending.append)
    loaded = source()  # the first call loads before it answers
    assert loaded.examples == 3
    assert not pending
    second = states.load("s")
    second.learn([labeled("r2", 1)])
    states.save(second)
    now[0] = 2.0
    assert source() is loaded
    assert len(pending) == 1
    assert source() is loaded
    assert len(pending) == 1
    pending.pop()()
    assert source().examples == 6
    now[0] = 4.0
    source()
    pending.pop()()  # nothing changed: the same object, so serving's per-catalog signals stay cached
    assert source().examples == 6


def test_item_stats_live_in_the_shard_state_and_merge_by_summing():
    from rtrec.domain.models import ItemStatsDelta
    from rtrec.domain.online import merged_item_stats
    from rtrec.services.online import ItemStatsReader

    parent, child = RankerShardState("s-0"), RankerShardState("s-0-child")
    parent.count("a", ItemStatsDelta(impressions=3, clicks=1, interactions=1, popularity_mass=0.5))
    child.count("a", ItemStatsDelta(impressions=2, popularity_mass=0.25))
    child.count("b", ItemStatsDelta(impressions=1))
    states = InMemoryRankerStateStore()
    for state in (parent, child):
        states.save(state)
    assert RankerShardState.from_dict(parent.to_dict()).item_stats == parent.item_stats
    assert merged_item_stats([parent, child])["a"] == ItemStatsDelta(5, 1, 1, 0.75)
    assert ItemStatsReader(states).get("a") == ItemStatsDelta(5, 1, 1, 0.75)
    assert ItemStatsReader(states).many(["b", "zz"]) == {"b": ItemStatsDelta(impressions=1)}
    old = parent.to_dict()
    del old["item_stats"]  # a state saved before the item statistics moved here
    assert RankerShardState.from_dict(old).item_stats == {}
