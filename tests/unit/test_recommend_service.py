from __future__ import annotations

import pytest

from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.domain.models import PopularItems, ScoredItem, UserProfile
from rtrec.errors import InvalidInputError, ModelNotReadyError
from rtrec.services.recommend import STRATEGY_POPULAR, STRATEGY_POPULAR_FALLBACK, Recommender


def snapshot(*ids: str) -> PopularItems:
    return PopularItems(tuple(ScoredItem(i, float(10 - n)) for n, i in enumerate(ids)), generated_at=0,
                        half_life_days=30)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stores():
    features = InMemoryFeatureStore()
    features.put_users([UserProfile("u1", age=25, history=("a", "c"), interaction_count=2)])
    return features, InMemoryPopularityStore(snapshot("a", "b", "c", "d", "e"))


def test_unknown_user_gets_popular_fallback(stores):
    result = Recommender(*stores).recommend("stranger", k=3)
    assert result.cold_start is True
    assert result.strategy == STRATEGY_POPULAR_FALLBACK
    assert [i.item_id for i in result.items] == ["a", "b", "c"]
    assert all(i.propensity == 1.0 for i in result.items)


def test_known_user_never_sees_items_from_their_history(stores):
    result = Recommender(*stores).recommend("u1", k=3)
    assert result.cold_start is False
    assert result.strategy == STRATEGY_POPULAR
    assert [i.item_id for i in result.items] == ["b", "d", "e"]


def test_profile_without_interactions_is_a_cold_start(stores):
    features, popularity = stores
    features.put_users([UserProfile("new", gender="F")])
    assert Recommender(features, popularity).recommend("new", k=2).cold_start is True


@pytest.mark.parametrize("k", [0, -1, 101])
def test_k_out_of_range_is_invalid_input(stores, k):
    with pytest.raises(InvalidInputError, match="k must be between 1 and 100"):
        Recommender(*stores).recommend("u1", k=k)


def test_no_snapshot_means_model_not_ready():
    with pytest.raises(ModelNotReadyError, match="seed"):
        Recommender(InMemoryFeatureStore(), InMemoryPopularityStore()).recommend("u1", k=3)


def test_snapshot_is_cached_then_refreshed(stores):
    features, popularity = stores
    clock = Clock()
    recommender = Recommender(features, popularity, refresh_seconds=60, clock=clock)
    recommender.recommend("x", k=1)
    recommender.recommend("x", k=1)
    assert popularity.loads == 1
    popularity.save(snapshot("z"))
    clock.now = 61
    assert [i.item_id for i in recommender.recommend("x", k=1).items] == ["z"]
    assert popularity.loads == 2


def test_a_vanished_snapshot_keeps_serving_the_last_one(stores):
    features, popularity = stores
    clock = Clock()
    recommender = Recommender(features, popularity, refresh_seconds=1, clock=clock)
    recommender.recommend("x", k=1)
    popularity.popular = None
    clock.now = 5
    assert [i.item_id for i in recommender.recommend("x", k=1).items] == ["a"]
