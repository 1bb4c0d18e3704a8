"""Time-decayed popularity: what an unknown user is shown and what cold start falls back to."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rtrec.domain.models import PopularItems, ScoredItem

SECONDS_PER_DAY = 86_400.0


def decayed_popularity(
    item_indices: np.ndarray,
    timestamps: np.ndarray,
    n_items: int,
    half_life_days: float,
    now: float | None = None,
) -> np.ndarray:
    """Sum over each item's interactions of 0.5 ** (age / half_life); `now` defaults to the newest event.

    Events from the future (clock skew) count as fresh rather than more than fresh.
    """
    if half_life_days <= 0:
        raise ValueError("half_life_days must be positive")
    item_indices = np.asarray(item_indices, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if item_indices.shape != timestamps.shape:
        raise ValueError("item_indices and timestamps must have the same shape")
    if item_indices.size == 0:
        return np.zeros(n_items, dtype=np.float64)
    if item_indices.min() < 0 or item_indices.max() >= n_items:
        raise ValueError("item index out of range")
    reference = float(timestamps.max()) if now is None else float(now)
    age_days = np.clip(reference - timestamps, 0.0, None) / SECONDS_PER_DAY
    weights = np.exp(-math.log(2.0) * age_days / half_life_days)
    return np.bincount(item_indices, weights=weights, minlength=n_items)


def top_popular(
    scores: np.ndarray,
    item_ids: Sequence[str],
    limit: int,
    generated_at: int,
    half_life_days: float,
    source: str = "",
) -> PopularItems:
    """The `limit` best items by score (ties broken by id order), dropping items never seen."""
    if len(scores) != len(item_ids):
        raise ValueError("scores and item_ids differ in length")
    order = np.lexsort((np.arange(len(scores)), -scores))
    ranked = [ScoredItem(item_ids[i], float(scores[i])) for i in order[:limit] if scores[i] > 0]
    return PopularItems(tuple(ranked), generated_at=generated_at, half_life_days=half_life_days, source=source)


# Online popularity with commutative updates: each event adds 2 ** ((t - DECAY_EPOCH) / half_life) to
# an item's mass, so concurrent consumers can ADD in any order, and the time-decayed count at `now` is
# mass * 2 ** (-(now - DECAY_EPOCH) / half_life).
DECAY_EPOCH = 1_577_836_800.0  # 2020-01-01T00:00:00Z


def decay_mass(timestamp: float, half_life_days: float) -> float:
    mass: float = 2.0 ** ((timestamp - DECAY_EPOCH) / (half_life_days * SECONDS_PER_DAY))  # float ** float: Any
    return mass


def popularity_at(mass: float, now: float, half_life_days: float) -> float:
    decay: float = 2.0 ** (-(now - DECAY_EPOCH) / (half_life_days * SECONDS_PER_DAY))  # float ** float: Any
    return mass * decay
