"""The feature encoder that training and serving share.

It turns user profiles (demographics + recent-items history) and item features (genres, year,
popularity) into the integer arrays the two towers take, in training, as the ONNX graphs' inputs,
and at request time. Index 0 of every vocabulary means "unknown / padding", so an unseen user,
occupation, item or genre encodes to 0 and the towers fall back on the remaining features.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from rtrec.domain.models import HISTORY_LENGTH, ItemFeatures, UserProfile

USER_INPUTS = ("user_hash", "age", "gender", "occupation", "zip", "history")
ITEM_INPUTS = ("item", "genres", "year", "popularity")

AGE_BOUNDS = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups; raw ages bucket the same way
YEAR_BOUNDS = (1930, 1950, 1960, 1970, 1980, 1985, 1990, 1993, 1995, 1996, 1997, 1998, 1999, 2000)
GENDERS = ("F", "M")
MAX_GENRES = 6
# log2(1 + interaction count) bucket edges: 0, 1, 2-3, 4-7, ... items with no interactions are bucket 1.
POPULARITY_BOUNDS = tuple(float(b) for b in range(1, 14))


def stable_hash(text: str, buckets: int) -> int:
    """A hash that is the same in every process (Python's hash() is salted), in 1..buckets."""
    return zlib.crc32(text.encode("utf-8")) % buckets + 1


def _bucket(value: float | None, bounds: Sequence[float]) -> int:
    """1 + the number of bounds <= value; 0 when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 0
    return 1 + int(np.searchsorted(np.asarray(bounds), value, side="right"))


@dataclass(frozen=True)
class FeatureEncoder:
    item_ids: tuple[str, ...]  # row i = the item with index i; its embedding row is i + 1
    genres: tuple[str, ...]
    occupations: tuple[str, ...]
    zip_prefixes: tuple[str, ...]
    user_hash_buckets: int = 50_000
    history_length: int = HISTORY_LENGTH
    max_genres: int = MAX_GENRES
    age_bounds: tuple[float, ...] = AGE_BOUNDS
    year_bounds: tuple[float, ...] = YEAR_BOUNDS
    popularity_bounds: tuple[float, ...] = POPULARITY_BOUNDS
    # Lookups derived from the vocabularies above (item id -> row; genre, occupation, zip prefix -> 1-based row):
    # built once in __post_init__, neither compared nor written by to_json.
    _item_row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _genre_row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _occupation_row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _zip_row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_item_row", {item_id: i for i, item_id in enumerate(self.item_ids)})
        object.__setattr__(self, "_genre_row", {g: i + 1 for i, g in enumerate(self.genres)})
        object.__setattr__(self, "_occupation_row", {o: i + 1 for i, o in enumerate(self.occupations)})
        object.__setattr__(self, "_zip_row", {z: i + 1 for i, z in enumerate(self.zip_prefixes)})

    # Vocabulary sizes, counting the 0 row, for the towers' embedding tables.
    @property
    def cardinalities(self) -> dict[str, int]:
        return {
            "user_hash": self.user_hash_buckets + 1,
            "age": len(self.age_bounds) + 2,
            "gender": len(GENDERS) + 1,
            "occupation": len(self.occupations) + 1,
            "zip": len(self.zip_prefixes) + 1,
            "item": len(self.item_ids) + 1,
            "genre": len(self.genres) + 1,
            "year": len(self.year_bounds) + 2,
            "popularity": len(self.popularity_bounds) + 2,
        }

    def item_row(self, item_id: str) -> int | None:
        """The item's index (0-based) or None for an item the model was not trained on."""
        return self._item_row.get(item_id)

    def encode_history(self, history: Iterable[str]) -> np.ndarray:
        """Most recent `history_length` known items as embedding rows (index + 1), 0-padded at the end."""
        rows = [r + 1 for r in (self._item_row.get(i) for i in history) if r is not None][-self.history_length :]
        out = np.zeros(self.history_length, dtype=np.int64)
        out[: len(rows)] = rows
        return out

    def encode_users(self, users: Sequence[UserProfile], *, with_id: bool = True) -> dict[str, np.ndarray]:
        """Batch of user-tower inputs. `with_id=False` leaves the id out (0), as for a brand-new user."""
        n = len(users)
        out = {name: np.zeros(n, dtype=np.int64) for name in USER_INPUTS if name != "history"}
        out["history"] = np.zeros((n, self.history_length), dtype=np.int64)
        for row, user in enumerate(users):
            out["user_hash"][row] = stable_hash(user.user_id, self.user_hash_buckets) if with_id else 0
            out["age"][row] = _bucket(user.age, self.age_bounds)
            out["gender"][row] = GENDERS.index(user.gender) + 1 if user.gender in GENDERS else 0
            out["occupation"][row] = self._occupation_row.get(user.occupation or "", 0)
            out["zip"][row] = self._zip_row.get(user.zip_prefix or "", 0)
            out["history"][row] = self.encode_history(user.history)
        return out

    def encode_items(self, items: Sequence[ItemFeatures], *, with_id: bool = True) -> dict[str, np.ndarray]:
        """Batch of item-tower inputs. An item unknown to the model (or `with_id=False`) gets id 0."""
        n = len(items)
        out = {
            "item": np.zeros(n, dtype=np.int64),
            "genres": np.zeros((n, self.max_genres), dtype=np.int64),
            "year": np.zeros(n, dtype=np.int64),
            "popularity": np.zeros(n, dtype=np.int64),
        }
        for row, item in enumerate(items):
            known = self._item_row.get(item.item_id)
            out["item"][row] = known + 1 if (with_id and known is not None) else 0
            genre_rows = [self._genre_row.get(g, 0) for g in item.genres]
            genre_rows = [g for g in genre_rows if g][: self.max_genres]
            out["genres"][row, : len(genre_rows)] = genre_rows
            out["year"][row] = _bucket(item.year, self.year_bounds)
            out["popularity"][row] = _bucket(math.log2(1 + max(item.interaction_count, 0)), self.popularity_bounds)
        return out

    def to_json(self) -> str:
        data = asdict(self)
        for derived in (f.name for f in fields(self) if not f.init):
            del data[derived]
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> FeatureEncoder:
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(text).items()}
        return cls(**fields)
