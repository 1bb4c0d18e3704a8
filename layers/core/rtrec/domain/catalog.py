"""ItemCatalog: the serving model's items as columns, for the ranking layer to read per candidate.

One row per item: its vector (from the item tower), a genre bit mask, popularity, when it entered the
catalog, impressions served, the promoted flag, and whether it may be served (an administrator can deactivate or
delete an item; its row stays, masked, so ids and rows never move). Rows are append-only and the columns are numpy
arrays, so ranking 200 candidates is a handful of vectorised reads instead of 200 object lookups, and a
1M-item catalog costs ~300 MB (the vectors) rather than a million Python objects.

Concurrency. Writers (an admin adding an item, a catalog sync) are serialised by a lock. Readers never
lock: a write either changes a cell in place or, when the columns must grow, builds bigger copies and
publishes them by one reference assignment; a reader that took the old columns still sees every row
it was given.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from rtrec.domain.models import ItemFeatures

MAX_GENRES = 63  # one bit each in an int64 mask


@dataclass(frozen=True)
class _Columns:
    vectors: np.ndarray  # float32 [capacity, dim], L2-normalised
    genre_mask: np.ndarray  # int64
    popularity: np.ndarray  # float64, time-decayed interaction count
    created_at: np.ndarray  # float64 unix seconds, NaN when unknown
    impressions: np.ndarray  # int64, slots served since the model loaded (plus stats fed in)
    promoted: np.ndarray  # bool
    active: np.ndarray  # bool: False for a deactivated or deleted item, which is never served


def _empty(capacity: int, dim: int) -> _Columns:
    created = np.empty(capacity, dtype=np.float64)
    created.fill(np.nan)
    return _Columns(
        vectors=np.zeros((capacity, dim), dtype=np.float32),
        genre_mask=np.zeros(capacity, dtype=np.int64),
        popularity=np.zeros(capacity, dtype=np.float64),
        created_at=created,
        impressions=np.zeros(capacity, dtype=np.int64),
        promoted=np.zeros(capacity, dtype=bool),
        active=np.ones(capacity, dtype=bool),
    )


def catalog_columns(items: Sequence[ItemFeatures], genres: Sequence[str]) -> dict[str, np.ndarray]:
    """The columns `ItemCatalog.bulk` takes (vectors aside), for a model folder's ITEM_CATALOG file."""
    bit = {g: 1 << i for i, g in enumerate(genres)}
    return {
        "item_ids": np.array([i.item_id for i in items], dtype=np.str_),
        "titles": np.array([i.title for i in items], dtype=np.str_),
        "genre_mask": np.array([sum(bit.get(g, 0) for g in set(i.genres)) for i in items], dtype=np.int64),
        "popularity": np.array([i.popularity for i in items], dtype=np.float64),
        "created_at": np.array([np.nan if i.created_at is None else i.created_at for i in items], dtype=np.float64),
        "promoted": np.array([i.promoted for i in items], dtype=bool),
    }


class ItemCatalog:
    """The items one serving model can recommend; rows below `trained_items` are the ones it was trained on."""

    def __init__(self, dimension: int, genres: Sequence[str], *, capacity: int = 1024) -> None:
        if len(genres) > MAX_GENRES:
            raise ValueError(f"at most {MAX_GENRES} genres fit a genre mask, got {len(genres)}")
        self.dimension = dimension
        self.genres = tuple(genres)
        self._genre_bit = {g: 1 << i for i, g in enumerate(self.genres)}
        self._lock = threading.Lock()
        self._columns = _empty(max(capacity, 1), dimension)
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}
        self._titles: list[str] = []
        self.trained_items = 0
        self.max_popularity = 0.0
        self.inactive_ids: frozenset[str] = frozenset()  # deactivated or deleted: left out of searches

    @classmethod
    def bulk(
        cls,
        genres: Sequence[str],
        item_ids: Sequence[str],
        titles: Sequence[str],
        vectors: np.ndarray,
        genre_mask: np.ndarray,
        popularity: np.ndarray,
        created_at: np.ndarray,
        promoted: np.ndarray | None = None,
    ) -> ItemCatalog:
        """A catalog of trained items straight from columns (a 1M-item catalog loads without a Python loop)."""
        n, dim = vectors.shape
        if not len(item_ids) == len(titles) == len(genre_mask) == len(popularity) == len(created_at) == n:
            raise ValueError("every column must have one value per item")
        if len(set(item_ids)) != n:
            raise ValueError("item ids must be unique")
        catalog = cls(dim, genres, capacity=max(n, 1))
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        cols = catalog._columns
        cols.vectors[:n] = vectors / np.where(norms > 0, norms, 1.0)
        cols.genre_mask[:n] = genre_mask
        cols.popularity[:n] = np.clip(popularity, 0.0, None)
        cols.created_at[:n] = created_at
        if promoted is not None:
            cols.promoted[:n] = promoted
        catalog._ids = list(item_ids)
        catalog._titles = list(titles)
        catalog._row_of = {item_id: row for row, item_id in enumerate(catalog._ids)}
        catalog.trained_items = n
        catalog.max_popularity = float(cols.popularity[:n].max(initial=0.0))
        return catalog

    # -- reading -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def columns(self) -> _Columns:
        return self._columns

    def row(self, item_id: str) -> int | None:
        return self._row_of.get(item_id)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Rows of the known ids, in order, unknown ids dropped."""
        row_of = self._row_of
        return np.fromiter((r for r in map(row_of.get, item_ids) if r is not None), dtype=np.int64)

    def item_id(self, row: int) -> str:
        return self._ids[row]

    def title(self, row: int) -> str:
        return self._titles[row]

    def is_new(self, rows: np.ndarray) -> np.ndarray:
        """Items added after the model was trained (embedded from their features alone)."""
        return rows >= self.trained_items

    def new_rows(self) -> np.ndarray:
        return np.arange(self.trained_items, len(self._ids), dtype=np.int64)

    def promoted_rows(self) -> np.ndarray:
        n = len(self._ids)
        cols = self._columns
        return np.flatnonzero(cols.promoted[:n] & cols.active[:n])

    def is_active(self, row: int) -> bool:
        return bool(self._columns.active[row])

    def genre_mask(self, genres: Iterable[str]) -> int:
        """The bit mask of `genres`; a genre this catalog does not know has no bit (no item has it), as a filter
        on an attribute value nobody has matches nothing rather than failing the request."""
        mask = 0
        for genre in genres:
            mask |= self._genre_bit.get(genre, 0)
        return mask

    def genres_of(self, row: int) -> tuple[str, ...]:
        mask = int(self._columns.genre_mask[row])
        return tuple(g for g, bit in self._genre_bit.items() if mask & bit)

    # -- writing -----------------------------------------------------------------------------------

    def upsert(self, items: Sequence[ItemFeatures], vectors: np.ndarray) -> np.ndarray:
        """Add or update items with their vectors; returns their rows. Unknown genres are left out of the mask."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(items), self.dimension):
            raise ValueError(f"expected vectors of shape ({len(items)}, {self.dimension}), got {vectors.shape}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        with self._lock:
            new = sum(1 for item in dict.fromkeys(i.item_id for i in items) if item not in self._row_of)
            self._reserve(len(self._ids) + new)
            cols = self._columns
            rows = np.empty(len(items), dtype=np.int64)
            for n, item in enumerate(items):
                row = self._row_of.get(item.item_id)
                if row is None:
                    row = len(self._ids)
                    self._ids.append(item.item_id)
                    self._titles.append(item.title)
                else:
                    self._titles[row] = item.title
                rows[n] = row
                cols.vectors[row] = vectors[n]
                cols.genre_mask[row] = sum(self._genre_bit.get(g, 0) for g in set(item.genres))
                cols.popularity[row] = max(float(item.popularity), 0.0)
                self.max_popularity = max(self.max_popularity, float(cols.popularity[row]))
                cols.created_at[row] = np.nan if item.created_at is None else float(item.created_at)
                cols.promoted[row] = bool(item.promoted)
                cols.active[row] = item.servable
                # Publish the id only once its row is written: a reader that finds it sees the whole row.
                self._row_of[item.item_id] = row
            servable = {i.item_id: i.servable for i in items}  # the last write of an id wins, as in the columns
            self.inactive_ids = frozenset(
                {i for i in self.inactive_ids if servable.get(i) is not True} | {i for i, ok in servable.items() if not ok}
            )
            return rows

    def mark_trained(self) -> None:
        """Every item so far came with the model; later ones are new (exploration candidates)."""
        self.trained_items = len(self._ids)

    def record_impressions(self, rows: np.ndarray) -> None:
        np.add.at(self._columns.impressions, rows, 1)

    def _reserve(self, needed: int) -> None:
        old = self._columns
        capacity = len(old.popularity)
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        grown = _empty(capacity, self.dimension)
        n = len(self._ids)
        for name in _Columns.__dataclass_fields__:
            getattr(grown, name)[:n] = getattr(old, name)[:n]
        self._columns = grown
