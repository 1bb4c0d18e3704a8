from __future__ import annotations

from dataclasses import replace

import pytest

from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.data.movielens import load_movielens, movielens_digest
from rtrec.domain.models import PROFILE_HISTORY_LIMIT, UserProfile
from rtrec.services.seed import POPULAR_SNAPSHOT_SIZE, completed_seed, seed_catalog, seed_source


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
    assert popular is not None
    assert report.popular_items == len(popular.items) == POPULAR_SNAPSHOT_SIZE
    scores = [i.score for i in popular.items]
    assert scores == sorted(scores, reverse=True)
    best = features.items[popular.items[0].item_id]
    assert best.popularity == pytest.approx(popular.items[0].score)
    assert max(i.popularity for i in features.items.values()) == pytest.approx(best.popularity)
    assert popular.source.startswith("ml-100k@")


def test_a_second_seed_keeps_what_the_stream_wrote_and_writes_nothing(data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features, popularity = InMemoryFeatureStore(), InMemoryPopularityStore()
    seed_catalog(dataset, features, popularity)
    user_id = dataset.users.iloc[0]["user_id"]
    learned = replace(features.users[user_id], history=("1", "2"), interaction_count=2)
    features.users[user_id] = learned
    again = seed_catalog(dataset, features, popularity)
    assert again.already_seeded
    assert again.users_written == again.items_written == 0
    assert features.users[user_id] == learned


def test_a_seed_is_recognised_from_the_wheels_digest_without_parsing_the_data_set(data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    source = seed_source("ml-100k", movielens_digest("ml-100k", data_cache_dir, allow_download=False))
    assert source == seed_source(dataset.name, dataset.source_sha256)
    popularity = InMemoryPopularityStore()
    assert completed_seed(popularity, source) is None
    seed_catalog(dataset, InMemoryFeatureStore(), popularity)
    assert completed_seed(popularity, source) == popularity.popular
    assert completed_seed(popularity, seed_source("ml-100k", "0" * 64)) is None  # another release of the data set
    assert completed_seed(popularity, seed_source("ml-1m", dataset.source_sha256)) is None


def test_an_interrupted_seed_writes_only_what_is_missing(data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features, popularity = InMemoryFeatureStore(), InMemoryPopularityStore()
    user_id = dataset.users.iloc[0]["user_id"]
    new_user = UserProfile(user_id, history=("42",), interaction_count=1)  # the stream wrote it before any seed
    features.users[user_id] = new_user
    report = seed_catalog(dataset, features, popularity)
    assert not report.already_seeded
    assert report.users_kept == 1
    assert report.users_written == dataset.n_users - 1
    assert features.users[user_id] == new_user
    assert len(features.users) == dataset.n_users


def test_overwrite_replaces_on_purpose(data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features, popularity = InMemoryFeatureStore(), InMemoryPopularityStore()
    seed_catalog(dataset, features, popularity)
    user_id = dataset.users.iloc[0]["user_id"]
    features.users[user_id] = UserProfile(user_id)
    report = seed_catalog(dataset, features, popularity, overwrite=True)
    assert report.users_written == dataset.n_users
    assert not report.already_seeded
    assert features.users[user_id].history
