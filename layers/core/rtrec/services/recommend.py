"""The recommend service: who is asking, what do we know about them, what do we show.

The path: one feature-store read -> cold-start detection -> user tower -> ANN top-C candidates (plus
the new items, for exploration, and the promoted ones, for their slots) -> ranking layer -> top-k.

Strategies, in order:
- `two_tower`: a user with history; the user tower with their id and history.
- `cold_user_features`: a user with demographics but no history; the user tower from the features alone.
- `popular_fallback`: nothing known about the user, or no model yet; time-decayed popular items
  (through the same ranking layer when a model is loaded, so filters and exploration still apply).
- `popular`: a known user while no model is loaded yet; popular items minus their history.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.models import PopularItems, Recommendation, ScoredItem, ShadowScores, UserProfile
from rtrec.domain.online import OnlineRanker
from rtrec.domain.ranking import (
    Filters,
    RankingConfig,
    blend_weights,
    eligible,
    ranking_features,
    select_slate,
    slate_policy_terms,
)
from rtrec.errors import InvalidInputError, ModelNotReadyError, NotFoundError
from rtrec.ports import FeatureStore, PopularityStore
from rtrec.services.catalog import ServingModel

MAX_K = 100
MAX_EXCLUDED_ITEMS = 1000

STRATEGY_TWO_TOWER = "two_tower"
STRATEGY_COLD_USER_FEATURES = "cold_user_features"
STRATEGY_POPULAR = "popular"
STRATEGY_POPULAR_FALLBACK = "popular_fallback"


@dataclass(frozen=True)
class RetrievalConfig:
    candidates: int = 200  # ANN top-C handed to the ranking layer
    max_candidates: int = 3200  # widen up to this when filters leave fewer than k
    exploration_pool: int = 50  # most recent new items scored for every request

    def __post_init__(self) -> None:
        if not 1 <= self.candidates <= self.max_candidates:
            raise ValueError("candidates must be between 1 and max_candidates")
        if self.exploration_pool < 0:
            raise ValueError("exploration_pool must not be negative")


@dataclass(frozen=True)
class _Candidates:
    strategy: str
    rows: np.ndarray
    features: np.ndarray  # per candidate, RANKER_FEATURES
    scores: np.ndarray
    ranked_online: bool


@dataclass(frozen=True)
class SimilarItems:
    item_id: str
    model_version: str
    items: tuple[ScoredItem, ...]


class Recommender:
    """Serves the slate for one user; the model comes from `models()` (a ModelWatcher in production)."""

    def __init__(
        self,
        features: FeatureStore,
        popularity: PopularityStore,
        models: Callable[[], ServingModel | None] = lambda: None,
        *,
        ranking: RankingConfig | None = None,
        retrieval: RetrievalConfig | None = None,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: np.random.Generator | None = None,
        request_ids: Callable[[], str] = lambda: uuid.uuid4().hex,
        ranker: Callable[[], OnlineRanker | None] = lambda: None,
        shadow: Callable[[], ServingModel | None] = lambda: None,
        shadow_share: float = 1.0,
    ) -> None:
        if not 0.0 <= shadow_share <= 1.0:
            raise ValueError(f"shadow_share must lie in [0, 1], got {shadow_share}")
        self._features = features
        self._popularity = popularity
        self._models = models
        self.ranking = ranking or RankingConfig()
        self.retrieval = retrieval or RetrievalConfig()
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng if rng is not None else np.random.default_rng()
        self._request_ids = request_ids
        self._ranker = ranker
        self._shadow = shadow
        # The share of requests the shadow candidate is scored on: it doubles a request's model compute
        # (tests/bench/bench_shadow.py), and the gate needs enough scored slates, not all of them. Its own generator
        # leaves the policy's random draws as they are.
        self.shadow_share = shadow_share
        self._shadow_rng = np.random.default_rng()
        # Per catalog (the serving model's and the shadow's): the ranker state and catalog size they were built for.
        self._signals: dict[int, tuple[OnlineRanker, ItemCatalog, int, tuple[np.ndarray, np.ndarray]]] = {}
        self._lock = threading.Lock()
        self._popular: PopularItems | None = None
        self._loaded_at: float | None = None

    # -- dependencies -------------------------------------------------------------------------------

    def ping(self) -> None:
        """Raise DependencyError when the feature store cannot be reached."""
        self._features.ping()

    def model(self) -> ServingModel | None:
        return self._models()

    def popular(self) -> PopularItems:
        """The current snapshot; raises ModelNotReadyError when none was ever published."""
        now = self._clock()
        with self._lock:
            stale = self._loaded_at is None or now - self._loaded_at >= self._refresh_seconds
            if stale:
                loaded = self._popularity.load()
                if loaded is not None:
                    self._popular = loaded
                self._loaded_at = now
            popular = self._popular
        if popular is None or not popular.items:
            raise ModelNotReadyError("no popular-items snapshot has been published yet; seed the catalog first")
        return popular

    # -- recommend ----------------------------------------------------------------------------------

    def recommend(self, user_id: str, k: int, filters: Filters | None = None, *, online_ranker: bool = True) -> Recommendation:
        """Fetch the user's features (one read) and serve them; `online_ranker=False` ranks without the
        online ranker's score (its features are still logged, so it goes on learning)."""
        filters = filters or Filters()
        self._check(user_id, k, filters)  # before the read: bad input costs no DynamoDB call
        return self._serve(user_id, self._features.get_user(user_id), k, filters, online_ranker)

    def recommend_for(
        self,
        user_id: str,
        profile: UserProfile | None,
        k: int,
        filters: Filters | None = None,
        *,
        online_ranker: bool = True,
    ) -> Recommendation:
        """The compute path for an already fetched profile (None: the user is unknown)."""
        filters = filters or Filters()
        self._check(user_id, k, filters)
        return self._serve(user_id, profile, k, filters, online_ranker)

    def online_ranker(self) -> OnlineRanker | None:
        return self._ranker()

    def _serve(
        self, user_id: str, profile: UserProfile | None, k: int, filters: Filters, use_online_ranker: bool = True
    ) -> Recommendation:
        model = self._models()
        has_history = profile is not None and (bool(profile.history) or profile.interaction_count > 0)
        if model is None:
            return self._popular_without_model(user_id, profile, has_history, k, filters)
        ranker = self._ranker()
        policy = self._policy(model, profile, has_history, k, filters, ranker, use_online_ranker)
        slate = select_slate(policy.rows, policy.scores, model.catalog, k, self.ranking, self._rng)
        shown = np.fromiter((s.row for s in slate), dtype=np.int64, count=len(slate))
        model.catalog.record_impressions(shown)
        positions = [s.position for s in slate]
        q_hat = ranker.click_probabilities(policy.features[positions]) if ranker is not None else None
        shadow = self._shadow_scores(model, shown, profile, has_history, k, filters, ranker, use_online_ranker)
        return Recommendation(
            request_id=self._request_ids(),
            user_id=user_id,
            model_version=model.version,
            cold_start=policy.strategy != STRATEGY_TWO_TOWER,
            strategy=policy.strategy,
            items=tuple(ScoredItem(model.catalog.item_id(s.row), s.score, s.propensity) for s in slate),
            features=tuple(map(tuple, np.round(policy.features[positions], 6).tolist())),
            online_ranker=policy.ranked_online,
            q_hat=tuple(q_hat.tolist()) if q_hat is not None else (),
            shadow=shadow,
        )

    def _policy(
        self,
        model: ServingModel,
        profile: UserProfile | None,
        has_history: bool,
        k: int,
        filters: Filters,
        ranker: OnlineRanker | None,
        use_online_ranker: bool,
    ) -> _Candidates:
        """What the ranking policy of `model` chooses the slate from: its candidates, their features and scores."""
        if has_history and profile is not None:  # a history implies a profile
            strategy, vector = STRATEGY_TWO_TOWER, model.towers.user_vectors([profile])[0]
        elif profile is not None and profile.has_demographics:
            strategy, vector = STRATEGY_COLD_USER_FEATURES, model.towers.user_vectors([profile], with_id=False)[0]
        else:
            strategy, vector = STRATEGY_POPULAR_FALLBACK, None
        catalog = model.catalog
        seen = catalog.rows(profile.history) if profile is not None else np.empty(0, dtype=np.int64)
        if vector is None:
            rows, relevance = self._popular_candidates(model)
        else:
            rows, relevance = self._retrieve(model, vector, k, filters, seen)
        keep = eligible(rows, catalog, filters, seen)
        rows, relevance = rows[keep], relevance[keep]
        signals = self._item_signals(ranker, catalog) if ranker is not None else None
        features = ranking_features(rows, relevance, catalog, self.ranking, self._wall_clock(), signals)
        scores = features @ blend_weights(self.ranking)
        online = (
            ranker
            if (
                use_online_ranker
                and ranker is not None
                and self.ranking.online_weight > 0
                and ranker.examples >= self.ranking.online_min_examples
            )
            else None
        )
        if online is not None:
            scores += self.ranking.online_weight * (features @ online.weights)
        return _Candidates(strategy, rows, features, scores, online is not None)

    def _shadow_scores(
        self,
        model: ServingModel,
        shown: np.ndarray,
        profile: UserProfile | None,
        has_history: bool,
        k: int,
        filters: Filters,
        ranker: OnlineRanker | None,
        use_online_ranker: bool,
    ) -> ShadowScores | None:
        """The shadow model's policy terms for the slate the serving model chose (None without a shadow model).

        The shadow policy is the same ranking layer over the shadow model's own candidates, for the same
        user at the same moment: so an off-policy estimate of it on these impressions needs no replay."""
        if self.shadow_share < 1.0 and self._shadow_rng.random() >= self.shadow_share:
            return None
        shadow = self._shadow()
        if shadow is None or shadow.version == model.version:
            return None
        policy = self._policy(shadow, profile, has_history, k, filters, ranker, use_online_ranker)
        position_of = {int(row): position for position, row in enumerate(policy.rows.tolist())}
        chosen = []
        for row in shown.tolist():
            shadow_row = shadow.catalog.row(model.catalog.item_id(row))
            chosen.append(position_of.get(shadow_row, -1) if shadow_row is not None else -1)
        values = ranker.click_probabilities(policy.features) if ranker is not None else None
        probabilities, expected_q = slate_policy_terms(
            policy.rows, policy.scores, shadow.catalog, k, self.ranking, chosen, values
        )
        taken = [policy.rows[p] for p in chosen if p >= 0]
        shadow.catalog.record_impressions(np.asarray(taken, dtype=np.int64))
        return ShadowScores(shadow.version, tuple(probabilities.tolist()), tuple(expected_q.tolist()))

    def _item_signals(self, ranker: OnlineRanker, catalog: ItemCatalog) -> tuple[np.ndarray, np.ndarray]:
        """The stream's per-row signals for this catalog, computed once per ranker state and catalog size.
        The global impression counts also feed the new-item exploration term (each instance only sees its own)."""
        cached = self._signals.get(id(catalog))
        if cached is not None and cached[0] is ranker and cached[1] is catalog and cached[2] == len(catalog):
            return cached[3]
        known, known_lift, known_trend = ranker.stream_signals()  # sparse: never a pass over a 1M-item catalog
        ctr_lift, trend = np.zeros(len(catalog)), np.zeros(len(catalog))
        found = [catalog.row(item_id) for item_id in known]
        in_catalog = np.fromiter((row is not None for row in found), dtype=bool, count=len(found))
        rows = np.fromiter((row for row in found if row is not None), dtype=np.int64)
        ctr_lift[rows], trend[rows] = known_lift[in_catalog], known_trend[in_catalog]
        shown = ranker.posteriors.impressions
        counts = np.fromiter(
            (shown.get(item_id, 0) for item_id, row in zip(known, found) if row is not None),
            dtype=catalog.columns.impressions.dtype,
            count=len(rows),
        )
        catalog.columns.impressions[rows] = np.maximum(catalog.columns.impressions[rows], counts)
        if len(self._signals) >= 4:  # catalogs of models no longer served
            self._signals.clear()
        self._signals[id(catalog)] = (ranker, catalog, len(catalog), (ctr_lift, trend))
        return ctr_lift, trend

    def similar(self, item_id: str, k: int) -> SimilarItems:
        """The k items closest to `item_id` in the item tower's space (pure relevance, no exploration)."""
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        model = self._models()
        if model is None:
            raise ModelNotReadyError("no model has been promoted yet, so there are no item vectors to compare")
        row = model.catalog.row(item_id)
        if row is None or not model.catalog.is_active(row):
            raise NotFoundError(f"item {item_id!r} is not in the catalog of model {model.version}")
        vector = model.catalog.columns.vectors[row]
        found = model.index.search(vector, k, exclude={item_id} | model.catalog.inactive_ids)
        return SimilarItems(item_id, model.version, tuple(ScoredItem(i, s) for i, s in found))

    # -- internals ----------------------------------------------------------------------------------

    @staticmethod
    def _check(user_id: str, k: int, filters: Filters | None) -> None:
        if not user_id or len(user_id) > 128:
            raise InvalidInputError("user_id must be 1 to 128 characters")
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        if filters is not None and len(filters.exclude_items) > MAX_EXCLUDED_ITEMS:
            raise InvalidInputError(f"at most {MAX_EXCLUDED_ITEMS} excluded items")

    def _retrieve(
        self, model: ServingModel, vector: np.ndarray, k: int, filters: Filters, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """ANN top-C (widened while filters leave fewer than k), plus the exploration pool and promoted items."""
        catalog = model.catalog
        exclude = set(filters.exclude_items) | catalog.inactive_ids
        if len(seen):
            exclude.update(catalog.item_id(r) for r in seen.tolist())
        want = max(self.retrieval.candidates, 2 * k)
        while True:
            found = model.index.search(vector, want, exclude=exclude)
            rows = catalog.rows(i for i, _ in found)
            if len(rows) == len(found):
                relevance = np.fromiter((s for _, s in found), dtype=np.float64, count=len(found))
            else:  # an id the index has but this catalog lacks (cannot happen with one model object)
                scores = dict(found)
                relevance = np.fromiter((scores[catalog.item_id(r)] for r in rows.tolist()), dtype=np.float64)
            if not filters.filters_genres or want >= self.retrieval.max_candidates or len(found) < want:
                break
            if int(eligible(rows, catalog, filters, seen).sum()) >= k:
                break
            want = min(want * 4, self.retrieval.max_candidates)
        extra = [catalog.promoted_rows()]
        if self.retrieval.exploration_pool:
            extra.append(catalog.new_rows()[-self.retrieval.exploration_pool :])
        extra_rows = np.setdiff1d(np.concatenate(extra), rows)
        if len(extra_rows):
            extra_scores = catalog.columns.vectors[extra_rows] @ np.asarray(vector, dtype=np.float32)
            norm = float(np.linalg.norm(vector)) or 1.0
            rows = np.concatenate([rows, extra_rows])
            relevance = np.concatenate([relevance, extra_scores.astype(np.float64) / norm])
        return rows, relevance

    def _popular_candidates(self, model: ServingModel) -> tuple[np.ndarray, np.ndarray]:
        """Popular items scaled to 0..1 (a relevance stand-in), plus the exploration pool at 0."""
        popular = self.popular()
        catalog = model.catalog
        top = popular.items[0].score or 1.0
        pairs = [(catalog.row(i.item_id), i.score / top) for i in popular.items]
        rows = np.fromiter((r for r, _ in pairs if r is not None), dtype=np.int64)
        relevance = np.fromiter((s for r, s in pairs if r is not None), dtype=np.float64)
        new = np.setdiff1d(catalog.new_rows()[-self.retrieval.exploration_pool :], rows)
        return np.concatenate([rows, new]), np.concatenate([relevance, np.zeros(len(new))])

    def _popular_without_model(
        self, user_id: str, profile: UserProfile | None, has_history: bool, k: int, filters: Filters
    ) -> Recommendation:
        if filters.filters_genres:
            raise ModelNotReadyError(
                "genre filters need the item catalog of a model, and no model has been promoted yet; "
                "retry without genre filters for popular items"
            )
        skip = set(profile.history) if profile is not None else set()
        skip.update(filters.exclude_items)
        picked = [item for item in self.popular().items if item.item_id not in skip][:k]
        return Recommendation(
            request_id=self._request_ids(),
            user_id=user_id,
            model_version=None,
            cold_start=not has_history,
            strategy=STRATEGY_POPULAR if has_history else STRATEGY_POPULAR_FALLBACK,
            items=tuple(picked),
        )
