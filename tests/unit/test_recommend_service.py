"""The recommend service over in-memory ports, fake towers and a real FAISS index."""

from __future__ import annotations

import numpy as np
import pytest

from rtrec.domain.models import ItemFeatures, UserProfile
from rtrec.domain.ranking import Filters, RankingConfig
from rtrec.errors import InvalidInputError, ModelNotReadyError, NotFoundError
from rtrec.services.recommend import (
    STRATEGY_COLD_USER_FEATURES,
    STRATEGY_POPULAR,
    STRATEGY_POPULAR_FALLBACK,
    STRATEGY_TWO_TOWER,
    Recommender,
)
from tests.unit.serving_world import NOW, make_world


@pytest.fixture
def world():
    return make_world()


def ids(result) -> list[str]:
    return [i.item_id for i in result.items]


def test_user_with_history_gets_two_tower_recommendations_without_their_history(world):
    result = world.recommender().recommend("u1", k=5)
    assert result.strategy == STRATEGY_TWO_TOWER
    assert result.cold_start is False
    assert result.model_version == "1"
    assert len(result.items) == 5
    assert not {"1", "2", "3"} & set(ids(result))
    scores = [i.score for i in result.items]
    assert scores == sorted(scores, reverse=True)  # greedy policy in this fixture


def test_user_with_demographics_only_is_embedded_from_features(world):
    result = world.recommender().recommend("cold", k=5)
    assert result.strategy == STRATEGY_COLD_USER_FEATURES
    assert result.cold_start is True
    assert len(result.items) == 5


@pytest.mark.parametrize("user_id", ["nobody", "empty"])
def test_user_with_nothing_known_gets_popular_items(world, user_id):
    result = world.recommender().recommend(user_id, k=3)
    assert result.strategy == STRATEGY_POPULAR_FALLBACK
    assert result.cold_start is True
    assert ids(result) == ["1", "2", "3"]  # most popular first


def test_personalised_results_differ_from_popularity(world):
    recommender = world.recommender()
    assert ids(recommender.recommend("u1", k=5)) != ids(recommender.recommend("nobody", k=5))


def test_one_feature_read_per_request(world):
    before = world.features.user_reads
    world.recommender().recommend("u1", k=5)
    assert world.features.user_reads == before + 1


def test_genre_filters_and_excluded_items_are_honoured(world):
    recommender = world.recommender()
    result = recommender.recommend("u1", k=5, filters=Filters(include_genres=("Comedy",), exclude_items=frozenset({"5"})))
    assert len(result.items) == 5
    assert "5" not in ids(result)
    assert all(int(i) % 4 == 1 for i in ids(result))  # genre of item i is GENRES[i % 4]; Comedy is 1
    dropped = recommender.recommend("nobody", k=10, filters=Filters(exclude_genres=("Action", "Comedy")))
    assert all(int(i) % 4 in (2, 3) for i in ids(dropped))


def test_a_narrow_filter_widens_retrieval_until_it_has_k_items(world):
    recommender = world.recommender()
    recommender.retrieval = type(recommender.retrieval)(candidates=10, max_candidates=40)
    result = recommender.recommend("u1", k=8, filters=Filters(include_genres=("Horror",)))
    assert len(result.items) == 8
    assert all(int(i) % 4 == 3 for i in ids(result))


def test_a_genre_no_item_has_matches_nothing(world):
    recommender = world.recommender()
    assert recommender.recommend("u1", k=5, filters=Filters(include_genres=("Western",))).items == ()
    assert len(recommender.recommend("u1", k=5, filters=Filters(exclude_genres=("Western",))).items) == 5
    horror = recommender.recommend("u1", k=5, filters=Filters(include_genres=("Western", "Horror")))
    assert len(horror.items) == 5
    assert all(int(i) % 4 == 3 for i in ids(horror))


@pytest.mark.parametrize("k", [0, 101])
def test_k_out_of_range_is_invalid_input(world, k):
    with pytest.raises(InvalidInputError, match="k must be between 1 and 100"):
        world.recommender().recommend("u1", k=k)


def test_without_a_model_known_users_get_popular_items_minus_their_history():
    world = make_world(with_model=False)
    result = world.recommender().recommend("u1", k=3)
    assert result.strategy == STRATEGY_POPULAR
    assert result.model_version is None
    assert ids(result) == ["4", "5", "6"]
    assert world.recommender().recommend("cold", k=2).strategy == STRATEGY_POPULAR_FALLBACK


def test_without_a_model_genre_filters_are_503_with_a_reason():
    with pytest.raises(ModelNotReadyError, match="no model has been promoted yet"):
        make_world(with_model=False).recommender().recommend("u1", k=3, filters=Filters(include_genres=("Drama",)))


def test_without_model_or_snapshot_it_is_model_not_ready():
    world = make_world(with_model=False)
    world.popularity.popular = None
    with pytest.raises(ModelNotReadyError, match="seed the catalog"):
        world.recommender().recommend("nobody", k=3)


def test_a_new_item_is_recommended_at_once_with_an_exploration_boost(world):
    model = world.model
    new = ItemFeatures("new-1", "Brand new", year=2026, genres=("Drama",))
    added = world.catalog_service.add_item(new, model)
    assert added.created
    assert added.new_to_model
    assert added.model_version == "1"
    assert model.index.search(model.catalog.columns.vectors[model.catalog.row("new-1")], 1)[0][0] == "new-1"
    config = RankingConfig(policy="greedy", new_item_boost=5.0, freshness_weight=0.0)
    assert ids(world.recommender(config).recommend("u1", k=3))[0] == "new-1"
    assert ids(world.recommender(config).recommend("nobody", k=3))[0] == "new-1"


def test_the_boost_fades_as_the_new_item_collects_impressions(world):
    world.catalog_service.add_item(ItemFeatures("new-1", "Brand new", genres=("Drama",)), world.model)
    config = RankingConfig(policy="greedy", new_item_boost=1.0, new_item_impressions_scale=3, freshness_weight=0.0)
    recommender = world.recommender(config)
    shown = ["new-1" in ids(recommender.recommend("u1", k=3)) for _ in range(12)]
    assert shown[0] is True
    assert shown[-1] is False


def test_promoted_items_get_their_share_of_slots(world):
    world.catalog_service.add_item(ItemFeatures("promo", "Sponsored", genres=("Horror",), promoted=True), world.model)
    config = RankingConfig(policy="greedy", promoted_share=0.2, new_item_boost=0.0, freshness_weight=0.0)
    result = world.recommender(config).recommend("u1", k=10)
    assert ids(result)[2] == "promo"


def test_exploration_policy_logs_propensities_below_one(world):
    recommender = world.recommender(RankingConfig(policy="plackett_luce", temperature=0.5))
    result = recommender.recommend("u1", k=5)
    assert all(0 < i.propensity < 1 for i in result.items)


def test_similar_items(world):
    result = world.recommender().similar("1", k=3)
    assert result.model_version == "1"
    assert len(result.items) == 3
    assert "1" not in [i.item_id for i in result.items]
    with pytest.raises(NotFoundError):
        world.recommender().similar("missing", k=3)
    with pytest.raises(ModelNotReadyError):
        make_world(with_model=False).recommender().similar("1", k=3)


def test_recommend_for_serves_a_profile_in_hand_without_reading_the_store(world):
    before = world.features.user_reads
    profile = UserProfile("x", history=("7", "8"), interaction_count=2)
    result = world.recommender().recommend_for("x", profile, k=4)
    assert result.strategy == STRATEGY_TWO_TOWER
    assert world.features.user_reads == before


def test_popular_snapshot_is_cached_and_refreshed():
    world = make_world()
    clock = [0.0]
    recommender = Recommender(
        world.features,
        world.popularity,
        refresh_seconds=60,
        clock=lambda: clock[0],
        wall_clock=lambda: NOW,
        rng=np.random.default_rng(0),
    )
    recommender.popular()
    recommender.popular()
    assert world.popularity.loads == 1
    clock[0] = 61
    recommender.popular()
    assert world.popularity.loads == 2


# -- shadow scoring (the promotion gate's off-policy check) ----------------------------------------------------


def _ranker_with_clicks():
    from rtrec.domain.online import OnlineRanker, RankerShardState

    return OnlineRanker.merge(
        [RankerShardState("s", impressions={str(i): 50 for i in range(1, 30)}, clicks={str(i): i % 5 for i in range(1, 30)})]
    )


def test_an_identical_shadow_model_logs_exactly_the_serving_policys_propensities(world):
    from tests.unit.serving_world import catalog_items, make_model

    twin = make_model(catalog_items(), version="2")  # same towers and items, another version
    ranker = _ranker_with_clicks()
    config = RankingConfig(policy="plackett_luce", temperature=0.3, max_genre_share=0.4)
    for user in ("u1", "cold", "empty"):
        result = world.recommender(config, ranker=lambda: ranker, shadow=lambda: twin).recommend(user, k=6)
        assert result.shadow is not None
        assert result.shadow.version == "2"
        assert result.shadow.propensities == pytest.approx([i.propensity for i in result.items])
        assert len(result.q_hat) == 6
        assert all(0 < q < 1 for q in result.q_hat)
        assert all(0 < e < 1 for e in result.shadow.expected_q)


def test_a_shadow_model_that_ranks_otherwise_gives_other_probabilities_and_zero_for_items_it_lacks(world):
    from tests.unit.serving_world import catalog_items, make_model

    items = catalog_items()
    other = make_model(items[:20] + [ItemFeatures(item_id=f"x{i}", title="x") for i in range(20)], version="3")
    config = RankingConfig(policy="plackett_luce", temperature=0.3)
    result = world.recommender(config, shadow=lambda: other).recommend("u1", k=8)
    shadow = result.shadow
    assert shadow is not None
    assert shadow.propensities != pytest.approx([i.propensity for i in result.items])
    lacking = [slot for slot, item in enumerate(result.items) if int(item.item_id) > 20]
    assert lacking
    assert all(shadow.propensities[slot] == 0.0 for slot in lacking)
    assert result.q_hat == ()
    assert shadow.expected_q == (0.0,) * 8


def test_no_shadow_scores_without_a_shadow_or_when_it_is_the_serving_version(world):
    assert world.recommender().recommend("u1", k=3).shadow is None
    assert world.recommender(shadow=lambda: world.model).recommend("u1", k=3).shadow is None


def test_the_shadow_candidate_is_scored_on_the_configured_share_of_requests(world):
    from tests.unit.serving_world import catalog_items, make_model

    twin = make_model(catalog_items(), version="2")
    recommender = world.recommender(shadow=lambda: twin, shadow_share=0.25)
    scored = sum(recommender.recommend("u1", k=3).shadow is not None for _ in range(400))
    assert 60 < scored < 140
    assert all(world.recommender(shadow=lambda: twin, shadow_share=0.0).recommend("u1", k=3).shadow is None for _ in range(20))
    with pytest.raises(ValueError, match=r"shadow_share must lie in \[0, 1\]"):
        world.recommender(shadow_share=1.5)
