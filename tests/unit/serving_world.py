"""A small serving world for unit tests: 40 items, a few users, fake towers over a real FAISS index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rtrec.adapters.memory import FakeTowers, InMemoryCatalogAdditions, InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.adapters.search.faiss_index import FaissVectorIndex
from rtrec.domain.access import AccessPolicy, gateway_keys, local_keys
from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.encoder import FeatureEncoder
from rtrec.domain.models import ItemFeatures, PopularItems, ScoredItem, UserProfile
from rtrec.domain.ranking import RankingConfig
from rtrec.services.catalog import CatalogService, ServingModel
from rtrec.services.recommend import Recommender

if TYPE_CHECKING:
    from functions.api.app import Services

GENRES = ("Action", "Comedy", "Drama", "Horror")
NOW = 1_000_000_000.0
DIM = 8
API_KEYS = {"admin": "admin-key-for-tests", "events": "events-key-for-tests", "read": "read-key-for-tests"}
ADMIN = {"X-Api-Key": API_KEYS["admin"]}
EVENTS = {"X-Api-Key": API_KEYS["events"]}
READ = {"X-Api-Key": API_KEYS["read"]}


def keyed_access(*, require_keys: bool = False, **options) -> AccessPolicy:
    """The three local keys of API_KEYS; keyless reads and events unless `require_keys`."""
    return AccessPolicy(local_keys(API_KEYS), require_keys=require_keys, **options)


def behind_the_gateway(recommender: Recommender, catalog: CatalogService | None = None, **options) -> Services:
    """Services as the Lambda builds them: API Gateway's key ids of the sample events (tests/events), keys
    required."""
    from functions.api.app import Services
    from tests.conftest import SAMPLE_API_KEY_ROLES

    access = AccessPolicy(gateway_keys(SAMPLE_API_KEY_ROLES), require_keys=True)
    return Services(recommender=recommender, catalog=catalog, access=access, **options)  # type: ignore[arg-type]


def catalog_items(n: int = 40) -> list[ItemFeatures]:
    return [
        ItemFeatures(
            item_id=str(i),
            title=f"Item {i}",
            year=1990,
            genres=(GENRES[i % 4],),
            interaction_count=100 - i,
            popularity=float(100 - i),
            created_at=int(NOW - 400 * 86_400),
        )
        for i in range(1, n + 1)
    ]


def make_model(items: list[ItemFeatures], version: str = "1") -> ServingModel:
    encoder = FeatureEncoder(item_ids=tuple(i.item_id for i in items), genres=GENRES, occupations=(), zip_prefixes=())
    towers = FakeTowers(encoder, DIM)
    vectors = towers.item_vectors(items)
    catalog = ItemCatalog(DIM, GENRES)
    catalog.upsert(items, vectors)
    catalog.mark_trained()
    index = FaissVectorIndex(DIM)
    index.upsert([i.item_id for i in items], vectors)
    return ServingModel(version=version, towers=towers, index=index, catalog=catalog)


@dataclass
class World:
    features: InMemoryFeatureStore
    popularity: InMemoryPopularityStore
    additions: InMemoryCatalogAdditions
    model: ServingModel | None
    catalog_service: CatalogService

    def recommender(self, ranking: RankingConfig | None = None, seed: int = 7, **kwargs) -> Recommender:
        return Recommender(
            self.features,
            self.popularity,
            lambda: self.model,
            ranking=ranking or RankingConfig(policy="greedy", freshness_weight=0.0),
            wall_clock=lambda: NOW,
            rng=np.random.default_rng(seed),
            **kwargs,
        )


def make_world(with_model: bool = True) -> World:
    items = catalog_items()
    features = InMemoryFeatureStore()
    features.put_items(items)
    features.put_users(
        [
            UserProfile("u1", age=30, gender="F", history=("1", "2", "3"), interaction_count=3),
            UserProfile("cold", age=25, gender="M"),
            UserProfile("empty"),
        ]
    )
    popular = PopularItems(
        tuple(ScoredItem(i.item_id, i.popularity) for i in items[:30]), generated_at=int(NOW), half_life_days=90
    )
    additions = InMemoryCatalogAdditions()
    return World(
        features,
        InMemoryPopularityStore(popular),
        additions,
        make_model(items) if with_model else None,
        CatalogService(features, additions, clock=lambda: 0.0, wall_clock=lambda: NOW),
    )
