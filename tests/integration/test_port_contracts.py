"""One suite per port, run against the in-memory fake that unit tests use and against the real adapter on the
embedded cloud: a fake that drifts from its adapter fails here, not in production.

Each case gets fresh ids, keys or prefixes, so the session's shared cloud needs no cleaning between them.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.s3 import S3CatalogAdditions, S3PopularityStore, S3RankerStateStore
from rtrec.adapters.memory import (
    InMemoryCatalogAdditions,
    InMemoryFeatureStore,
    InMemoryPopularityStore,
    InMemoryRankerStateStore,
)
from rtrec.domain.events import Impression
from rtrec.domain.models import EarlyReward, ItemFeatures, PopularItems, RecentSlate, ScoredItem, UserProfile
from rtrec.domain.online import RANKER_FEATURES, RankerShardState
from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

pytestmark = pytest.mark.integration

BACKENDS = ["memory", "aws"]


def fresh(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=BACKENDS)
def features(request, cloud, names):
    if request.param == "memory":
        return InMemoryFeatureStore()
    return DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)


@pytest.fixture(params=BACKENDS)
def popularity(request, cloud, names):
    if request.param == "memory":
        return InMemoryPopularityStore()
    return S3PopularityStore(
        names.bucket(MODELS_BUCKET), key=f"contracts/{fresh('popular')}.json", endpoint_url=cloud.endpoint_url
    )


@pytest.fixture(params=BACKENDS)
def additions(request, cloud, names):
    if request.param == "memory":
        return InMemoryCatalogAdditions()
    return S3CatalogAdditions(
        names.bucket(MODELS_BUCKET), prefix=f"contracts/{fresh('additions')}/", endpoint_url=cloud.endpoint_url
    )


@pytest.fixture(params=BACKENDS)
def ranker_states(request, cloud, names):
    if request.param == "memory":
        return InMemoryRankerStateStore()
    return S3RankerStateStore(
        names.bucket(MODELS_BUCKET), prefix=f"contracts/{fresh('ranker')}/", endpoint_url=cloud.endpoint_url
    )


def a_profile(user_id: str) -> UserProfile:
    """Every field set, the consumer's bookkeeping included."""
    slate = Impression(
        request_id=fresh("req"),
        user_id=user_id,
        model_version="3",
        strategy="two_tower",
        items=("10", "20"),
        propensities=(0.5, 0.25),
        scores=(1.5, -0.25),
        timestamp=1_764_806_400.5,
        features=(tuple(0.125 * i for i in range(len(RANKER_FEATURES))),) * 2,
        q_hat=(0.1, 0.2),
        caller="events",
    )
    return UserProfile(
        user_id,
        age=35,
        gender="M",
        occupation="writer",
        zip_prefix="02",
        history=("3", "1", "2"),
        interaction_count=41,
        last_seen=1_764_806_400,
        applied_through=(("rtrec-events-shardId-000000000001", 10**20 + 7),),
        recent_slates=(RecentSlate(slate.request_id, 0x0BADC0DE),),
        pending_impression=slate,
        early_rewards=(EarlyReward("r-1", "10"),),
    )


# -- FeatureStore ---------------------------------------------------------------------------------------------


def test_feature_store_an_unknown_user_is_none_and_absent_from_batch_reads(features):
    assert features.get_user(fresh("nobody")) is None
    assert features.get_users([fresh("nobody"), fresh("nobody")]) == {}


def test_feature_store_a_profile_round_trips_with_every_field(features):
    user = a_profile(fresh("u"))
    assert features.put_users([user]) == 1
    assert features.get_user(user.user_id) == user
    assert features.get_users([user.user_id]) == {user.user_id: user}


def test_feature_store_the_last_write_of_a_profile_wins(features):
    user = a_profile(fresh("u"))
    features.put_users([user])
    later = replace(
        user,
        history=(*user.history, "99"),
        interaction_count=user.interaction_count + 1,
        pending_impression=None,
        early_rewards=(),
    )
    assert features.put_users([later]) == 1
    assert features.get_user(user.user_id) == later


def test_feature_store_batch_reads_return_each_known_user_once(features):
    users = [UserProfile(fresh("u"), history=(str(n),), interaction_count=n) for n in range(130)]  # > 100 keys a call
    assert features.put_users(users) == 130
    wanted = [u.user_id for u in users] + [users[0].user_id, fresh("nobody")]
    assert features.get_users(wanted) == {u.user_id: u for u in users}


def test_feature_store_items_round_trip_and_put_item_replaces_one(features):
    items = [
        ItemFeatures(
            fresh("i"),
            f"Title {n}",
            year=1990 + n,
            genres=("Drama", "War"),
            interaction_count=n,
            popularity=n / 3,
            original_id=f"orig {n}",
            promoted=n == 1,
        )
        for n in range(30)
    ]
    assert features.put_items(items) == 30
    assert features.get_items([i.item_id for i in items] + [fresh("missing")]) == {i.item_id: i for i in items}
    retired = replace(items[3], active=False, deleted_at=1_764_806_400)
    features.put_item(retired)
    assert features.get_items([retired.item_id]) == {retired.item_id: retired}
    assert not features.get_items([retired.item_id])[retired.item_id].servable


def test_feature_store_ping_answers(features):
    features.ping()


# -- PopularityStore ------------------------------------------------------------------------------------------


def test_popularity_store_holds_the_last_snapshot(popularity):
    assert popularity.load() is None
    first = PopularItems(
        (ScoredItem("a", 2.5), ScoredItem("b", 1.0)), generated_at=123, half_life_days=90, source="ml-1m@0123456789ab"
    )
    popularity.save(first)
    assert popularity.load() == first
    second = replace(first, items=(ScoredItem("c", 3.0),), generated_at=456)
    popularity.save(second)
    assert popularity.load() == second


# -- CatalogAdditions -----------------------------------------------------------------------------------------


def test_catalog_additions_list_what_changed_since_the_tags_a_reader_knows(additions):
    item = ItemFeatures(fresh("i"), "New", year=2026, genres=("Comedy",))
    tag = additions.save(item)
    assert additions.changed({}) == [(item, tag)]
    assert additions.changed({item.item_id: tag}) == []
    edited = replace(item, title="New, edited", active=False)
    new_tag = additions.save(edited)
    assert new_tag != tag
    assert additions.changed({item.item_id: tag}) == [(edited, new_tag)]


# -- RankerStateStore -----------------------------------------------------------------------------------------


def a_state(shard_id: str, seen: int) -> RankerShardState:
    state = RankerShardState(
        shard_id, learned_through=10**20 + seen, trend_anchor=1_764_806_400.0, trend_reference=1_764_806_500.0
    )
    state.impressions.update({"10": seen, "20": 1})
    state.clicks["10"] = 1
    state.trend["10"] = 0.75
    state.item_stats["10"] = [float(seen), 1.0, 2.0, 0.5]
    return state


def test_ranker_state_store_round_trips_each_shard_and_lists_them_all(ranker_states):
    assert ranker_states.load("shardId-000000000000") is None
    assert ranker_states.load_all() == []
    first, second = a_state("shardId-000000000000", 3), a_state("shardId-000000000001", 5)
    ranker_states.save(first)
    ranker_states.save(second)
    assert ranker_states.load(first.shard_id).to_dict() == first.to_dict()
    assert sorted(s.shard_id for s in ranker_states.load_all()) == [first.shard_id, second.shard_id]
    first.impressions["30"] = 1
    ranker_states.save(first)
    assert ranker_states.load(first.shard_id).to_dict() == first.to_dict()  # a save replaces, a cache follows
    assert ranker_states.clear() == 2
    assert ranker_states.load_all() == []
    assert ranker_states.load(first.shard_id) is None
