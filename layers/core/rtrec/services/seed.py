"""Seed the online feature store and the popularity snapshot from an offline data set."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from rtrec.domain.models import PROFILE_HISTORY_LIMIT, UserProfile
from rtrec.domain.popularity import top_popular
from rtrec.ports import FeatureStore, PopularityStore

if TYPE_CHECKING:
    from rtrec.data.movielens import MovieLens

POPULAR_SNAPSHOT_SIZE = 500


@dataclass(frozen=True)
class SeedReport:
    users_written: int
    items_written: int
    popular_items: int
    seconds: float


def user_profiles(dataset: MovieLens, until: float | None = None) -> Iterator[UserProfile]:
    """Each user's demographics and their PROFILE_HISTORY_LIMIT most recent items (oldest first),
    counting only interactions before `until` when given (the state at that moment, for replays)."""
    items = dataset.items["item_id"].to_numpy()
    inter = dataset.interactions  # sorted by timestamp
    if until is not None:
        inter = inter[inter["timestamp"] < until]
    recent = inter.groupby("user_index", sort=False).tail(PROFILE_HISTORY_LIMIT)
    histories = recent.groupby("user_index")["item_index"].apply(lambda s: tuple(items[s.to_numpy()]))
    counts = inter.groupby("user_index").size()
    last_seen = inter.groupby("user_index")["timestamp"].max()
    for index, profile in enumerate(dataset.user_profiles()):
        yield replace(
            profile,
            history=histories.get(index, ()),
            interaction_count=int(counts.get(index, 0)),
            last_seen=int(last_seen[index]) if index in last_seen.index else None,
        )


def seed_catalog(
    dataset: MovieLens,
    features: FeatureStore,
    popularity_store: PopularityStore,
    *,
    half_life_days: float = 90.0,
    progress: Callable[[str], None] = lambda _message: None,
) -> SeedReport:
    """Write every user and item to the feature store and publish the popular-items snapshot.

    Writes are upserts keyed by id, so seeding twice leaves the same state.
    """
    started = time.perf_counter()
    inter = dataset.interactions
    catalog = dataset.catalog(half_life_days)
    scores = np.array([item.popularity for item in catalog])
    progress(f"writing {dataset.n_items:,} items")
    items_written = features.put_items(catalog)
    progress(f"writing {dataset.n_users:,} users")
    users_written = features.put_users(user_profiles(dataset))
    popular = top_popular(
        scores,
        dataset.items["item_id"].tolist(),
        POPULAR_SNAPSHOT_SIZE,
        generated_at=int(inter["timestamp"].max()),
        half_life_days=half_life_days,
        source=f"{dataset.name}@{dataset.source_sha256[:12]}",
    )
    popularity_store.save(popular)
    return SeedReport(users_written, items_written, len(popular.items), time.perf_counter() - started)
