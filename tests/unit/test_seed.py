from __future__ import annotations

import pytest

from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.data.movielens import load_movielens
from rtrec.domain.models import PROFILE_HISTORY_LIMIT
from rtrec.services.seed import POPULAR_SNAPSHOT_SIZE, seed_catalog


@pytest.fixture(scope="module")
def seeded(data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features, popularity = InMemoryFeatureStore(), InMemoryPopularityStore()
    report = seed_catalog(dataset, features, popularity)
    return dataset, features, popularity, report


def test_every_user_and_item_is_written(seeded):
    dataset, features, _, report = seeded
    assert report.users_written == len(features.users) == dataset.n_users
    assert report.items_written == len(features.items) == dataset.n_items


def test_history_holds_the_most_recent_items_oldest_first(seeded):
    dataset, features, _, _ = seeded
    inter = dataset.interactions
    user = dataset.users.iloc[0]
    own = inter[inter["user_index"] == user["user_index"]]
    expected = tuple(dataset.items["item_id"].to_numpy()[own["item_index"].to_numpy()[-PROFILE_HISTORY_LIMIT:]])
    profile = features.users[user["user_id"]]
    assert profile.history == expected
    assert profile.interaction_count == len(own)
    assert profile.last_seen == int(own["timestamp"].max())
    assert (profile.age, profile.gender, profile.occupation) == (24, "M", "technician")


def test_popular_snapshot_matches_item_popularity(seeded):
    _, features, popularity, report = seeded
    popular = popularity.popular
    assert popular is not None and report.popular_items == len(popular.items) == POPULAR_SNAPSHOT_SIZE
    scores = [i.score for i in popular.items]
    assert scores == sorted(scores, reverse=True)
    best = features.items[popular.items[0].item_id]
    assert best.popularity == pytest.approx(popular.items[0].score)
    assert max(i.popularity for i in features.items.values()) == pytest.approx(best.popularity)
    assert popular.source.startswith("ml-100k@")
