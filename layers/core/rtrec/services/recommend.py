"""The recommend service: who is asking, what do we know about them, what do we show."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from rtrec.domain.models import PopularItems, Recommendation, ScoredItem
from rtrec.errors import InvalidInputError, ModelNotReadyError
from rtrec.ports import FeatureStore, PopularityStore

MAX_K = 100

STRATEGY_POPULAR = "popular"  # a known user, served popular items they have not interacted with
STRATEGY_POPULAR_FALLBACK = "popular_fallback"  # nothing known about the user


class Recommender:
    """Serves popular items, minus what a known user already saw.

    The popular-items snapshot is cached and re-read at most every `refresh_seconds`, so a new
    snapshot published by the pipeline is picked up without a restart.
    """

    def __init__(
        self,
        features: FeatureStore,
        popularity: PopularityStore,
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        request_ids: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._features = features
        self._popularity = popularity
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._request_ids = request_ids
        self._lock = threading.Lock()
        self._popular: PopularItems | None = None
        self._loaded_at: float | None = None

    def ping(self) -> None:
        """Raise DependencyError when the feature store cannot be reached."""
        self._features.ping()

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

    def recommend(self, user_id: str, k: int) -> Recommendation:
        if not user_id or len(user_id) > 128:
            raise InvalidInputError("user_id must be 1 to 128 characters")
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be between 1 and {MAX_K}, got {k}")
        profile = self._features.get_user(user_id)
        seen = set(profile.history) if profile is not None else set()
        cold_start = profile is None or profile.interaction_count == 0
        picked: list[ScoredItem] = [item for item in self.popular().items if item.item_id not in seen][:k]
        return Recommendation(
            request_id=self._request_ids(),
            user_id=user_id,
            model_version=None,
            cold_start=cold_start,
            strategy=STRATEGY_POPULAR_FALLBACK if cold_start else STRATEGY_POPULAR,
            items=tuple(picked),
        )
