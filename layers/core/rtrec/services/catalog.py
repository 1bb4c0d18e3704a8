"""The serving model and the live catalog: what a request reads, and how new items get into it.

`ServingModel` is one promoted model loaded whole (towers, vector index, item catalog). `CatalogService`
adds or updates items without retraining: the item tower embeds the item from its features, the vector
goes into the index and the catalog at once, and the item is recorded in the shared additions store so
every other instance (and the next model, re-embedding it with its own tower) picks it up.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.models import ItemFeatures
from rtrec.errors import InvalidInputError, NotFoundError
from rtrec.ports import CatalogAdditions, FeatureStore, Towers, VectorIndex

ITEM_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


@dataclass
class ServingModel:
    """One production model, loaded whole; a request takes it once and uses it to the end."""

    version: str
    towers: Towers
    index: VectorIndex
    catalog: ItemCatalog
    # item_id -> version tag of each catalog addition applied to this model
    applied_additions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def embed(self, items: Sequence[ItemFeatures]) -> None:
        """Embed items with this model's item tower and make them searchable and rankable at once.

        An item the model was trained on keeps its id embedding; a new one is embedded from its
        features alone (its id encodes to 0)."""
        if not items:
            return
        vectors = self.towers.item_vectors(items)
        with self.lock:
            self.catalog.upsert(items, vectors)
            self.index.upsert([i.item_id for i in items], vectors)


@dataclass(frozen=True)
class AddedItem:
    item_id: str
    created: bool  # False when an existing item was updated
    model_version: str | None  # the model that embedded it now; None when no model is loaded yet
    new_to_model: bool  # True when the model was not trained on it (embedded from features only)


def check_item(item: ItemFeatures) -> ItemFeatures:
    """Validate an item from a client; InvalidInputError says what is wrong."""
    problems = []
    if not ITEM_ID_PATTERN.match(item.item_id):
        problems.append("item_id must be 1-128 characters of letters, digits and ._:- starting with a letter or digit")
    if not item.title.strip() or len(item.title) > 500:
        problems.append("title must be 1-500 characters")
    if item.year is not None and not 1800 <= item.year <= 2100:
        problems.append("year must be between 1800 and 2100")
    if len(item.genres) > 20:
        problems.append("at most 20 genres")
    if item.popularity < 0 or item.interaction_count < 0:
        problems.append("popularity and interaction_count must not be negative")
    if problems:
        raise InvalidInputError("; ".join(problems))
    return item


class CatalogService:
    """Adds, updates, deactivates and deletes items in the feature store, the additions record and the model being
    served."""

    def __init__(
        self,
        features: FeatureStore,
        additions: CatalogAdditions,
        *,
        sync_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._features = features
        self._additions = additions
        self._sync_seconds = sync_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._synced_at: dict[int, float] = {}  # id(model) -> when it was last synced
        self._sync_lock = threading.Lock()

    def add_item(self, item: ItemFeatures, model: ServingModel | None) -> AddedItem:
        item = check_item(item)
        existing = self._features.get_items([item.item_id]).get(item.item_id)
        if item.created_at is None:
            created_at = existing.created_at if existing and existing.created_at else int(self._wall_clock())
            item = replace(item, created_at=created_at)
        if existing is not None and item.interaction_count == 0 and item.popularity == 0:
            # An admin update describes the item; its stats belong to the event pipeline.
            item = replace(item, interaction_count=existing.interaction_count, popularity=existing.popularity)
        created = existing is None or existing.deleted_at is not None
        if not created and existing is not None:
            item = replace(item, active=existing.active)  # an update describes the item; PATCH (de)activates it
        self._record(item, model)
        new_to_model = model is None or model.towers.encoder.item_row(item.item_id) is None
        return AddedItem(item.item_id, created, model.version if model else None, new_to_model)

    def set_active(self, item_id: str, active: bool, model: ServingModel | None) -> ItemFeatures:
        """Activate or deactivate an item: a deactivated one stays in the catalog but is never served. This
        instance stops serving it at once, the others within `sync_seconds`."""
        item = replace(self._live_item(item_id), active=active)
        self._record(item, model)
        return item

    def delete_item(self, item_id: str, model: ServingModel | None) -> ItemFeatures:
        """Delete an item: a tombstone (deleted_at), never served, 404 to the admin routes; its id and its past
        events stay valid. Adding the id again brings it back as a new item."""
        item = replace(self._live_item(item_id), active=False, deleted_at=int(self._wall_clock()))
        self._record(item, model)
        return item

    def _live_item(self, item_id: str) -> ItemFeatures:
        item = self._features.get_items([item_id]).get(item_id)
        if item is None or item.deleted_at is not None:
            raise NotFoundError(f"item {item_id!r} is not in the catalog")
        return item

    def _record(self, item: ItemFeatures, model: ServingModel | None) -> None:
        """The item into the feature store, the shared additions record (every instance applies it) and, at once,
        the model this instance serves."""
        self._features.put_item(item)
        tag = self._additions.save(item)
        if model is not None:
            model.embed([item])
            model.applied_additions[item.item_id] = tag

    def prepare(self, model: ServingModel) -> ServingModel:
        """Apply every recorded addition to a freshly loaded model (before it serves)."""
        self._apply(model)
        self._synced_at[id(model)] = self._clock()
        return model

    def maybe_sync(self, model: ServingModel) -> None:
        """Apply additions made on other instances, at most every `sync_seconds` (never blocks a request
        behind another thread's sync)."""
        now = self._clock()
        last = self._synced_at.get(id(model))
        if last is not None and now - last < self._sync_seconds:
            return
        if not self._sync_lock.acquire(blocking=False):
            return
        try:
            self._synced_at = {id(model): now}  # one model is served at a time; forget older ones
            self._apply(model)
        finally:
            self._sync_lock.release()

    def _apply(self, model: ServingModel) -> int:
        changed = self._additions.changed(model.applied_additions)
        if changed:
            model.embed([item for item, _ in changed])
            model.applied_additions.update({item.item_id: tag for item, tag in changed})
        return len(changed)
