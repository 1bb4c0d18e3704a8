"""The ranking layer: from scored candidates to the slate a user sees, with exact propensities.

Steps, all vectorised over the candidates:

1. **Eligibility.** Drop what the user interacted with, explicitly excluded ids and genre filters.
2. **Blend.** final = relevance + popularity_weight * log-popularity (0..1)
   + freshness_weight * 0.5 ** (age / freshness_half_life)
   + new_item_boost * exp(-impressions / new_item_impressions_scale) * 0.5 ** (age / new_item_half_life)
   The last term only for items added after the model was trained: they have no interactions yet, so
   they get shown (explored) until their impressions say enough, then compete on relevance alone.
   These terms are the first columns of the candidate's feature vector (`ranking_features`, logged with
   each impression); once the online ranker (an FTRL logistic regression the stream consumer learns from
   the rewards of logged slates) has seen `online_min_examples`, `online_weight` times its logit is added.
3. **Slate.** Slot by slot: a slot reserved for promoted items (`promoted_share` of the k slots, evenly
   spread, like Amazon Personalize's `percentPromotedItems`) draws from the promoted candidates; every
   slot skips items whose genres already fill `max_genre_share` of the slate (a genre cap for diversity,
   relaxed for a slot only when nothing else is left). The policy then picks one eligible item:
   - `plackett_luce`: sample with probability softmax(final / temperature) over the eligible items;
   - `epsilon_greedy`: the best with probability 1 - epsilon, else uniformly among the eligible;
   - `greedy`: the best (propensity 1).
   The propensity of each pick is the policy's probability of that pick given the slots before it,
   which is exactly what off-policy estimators need (the slate's probability is their product).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.online import RANKER_FEATURES

Policy = Literal["plackett_luce", "epsilon_greedy", "greedy"]
POLICIES: tuple[str, ...] = ("plackett_luce", "epsilon_greedy", "greedy")
SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class RankingConfig:
    policy: Policy = "plackett_luce"
    temperature: float = 0.02
    epsilon: float = 0.1
    popularity_weight: float = 0.05
    freshness_weight: float = 0.02
    freshness_half_life_days: float = 30.0
    new_item_boost: float = 0.5
    new_item_impressions_scale: float = 200.0
    new_item_half_life_days: float = 14.0
    promoted_share: float = 0.0
    max_genre_share: float = 0.6
    online_weight: float = 0.05
    online_min_examples: int = 500

    def __post_init__(self) -> None:
        problems = []
        if self.policy not in POLICIES:
            problems.append(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if not self.temperature > 0:
            problems.append("temperature must be positive")
        if not 0 <= self.epsilon <= 1:
            problems.append("epsilon must be within [0, 1]")
        if not 0 <= self.promoted_share <= 1:
            problems.append("promoted_share must be within [0, 1]")
        if not 0 < self.max_genre_share <= 1:
            problems.append("max_genre_share must be within (0, 1]")
        if self.online_min_examples < 0:
            problems.append("online_min_examples must not be negative")
        for name in ("popularity_weight", "freshness_weight", "new_item_boost", "online_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative")
        for name in ("freshness_half_life_days", "new_item_impressions_scale", "new_item_half_life_days"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class Filters:
    """Per-request filters; genre names are validated against the catalog."""

    include_genres: tuple[str, ...] = ()  # keep items with at least one of these
    exclude_genres: tuple[str, ...] = ()  # drop items with any of these
    exclude_items: frozenset[str] = field(default_factory=frozenset)

    @property
    def filters_genres(self) -> bool:
        return bool(self.include_genres or self.exclude_genres)


@dataclass(frozen=True)
class RankedItem:
    row: int
    score: float
    propensity: float
    position: int  # in the candidate arrays handed to select_slate


def promoted_slots(k: int, share: float) -> frozenset[int]:
    """floor(k * share) slot positions, spread evenly (k=10, share 0.2 -> slots 2 and 7)."""
    count = int(math.floor(k * share + 1e-9))
    return frozenset(int((i + 0.5) * k / count) for i in range(count)) if count else frozenset()


def eligible(rows: np.ndarray, catalog: ItemCatalog, filters: Filters, seen_rows: np.ndarray) -> np.ndarray:
    """Boolean mask over `rows`: not seen, not excluded, passes the genre filters. Genre names are checked."""
    include = catalog.genre_mask(filters.include_genres)
    exclude = catalog.genre_mask(filters.exclude_genres)
    keep = ~np.isin(rows, seen_rows)
    if filters.exclude_items:
        keep &= ~np.isin(rows, catalog.rows(filters.exclude_items))
    masks = catalog.columns.genre_mask[rows]
    if include:
        keep &= (masks & include) != 0
    if exclude:
        keep &= (masks & exclude) == 0
    return keep


def ranking_features(
    rows: np.ndarray,
    relevance: np.ndarray,
    catalog: ItemCatalog,
    config: RankingConfig,
    now: float,
    signals: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """[n, len(RANKER_FEATURES)]: bias, relevance, log-popularity (0..1), freshness, the new-item exploration
    term, and the stream's signals per catalog row (ctr_lift, trend; zeros without an online ranker)."""
    cols = catalog.columns
    features = np.zeros((len(rows), len(RANKER_FEATURES)), dtype=np.float64)
    features[:, 0] = 1.0
    features[:, 1] = relevance
    top = float(np.log1p(catalog.max_popularity))
    if top > 0:
        features[:, 2] = np.log1p(cols.popularity[rows]) / top
    age_days = np.clip(now - cols.created_at[rows], 0.0, None) / SECONDS_PER_DAY  # NaN when unknown
    features[:, 3] = np.nan_to_num(0.5 ** (age_days / config.freshness_half_life_days))
    new = catalog.is_new(rows)
    if new.any():
        decay = np.exp(-cols.impressions[rows] / config.new_item_impressions_scale)
        decay *= np.nan_to_num(0.5 ** (age_days / config.new_item_half_life_days), nan=1.0)
        features[:, 4] = np.where(new, decay, 0.0)
    if signals is not None:
        ctr_lift, trend = signals
        features[:, 5] = ctr_lift[rows]
        features[:, 6] = trend[rows]
    return features


def blend_weights(config: RankingConfig) -> np.ndarray:
    """The business blend as weights over RANKER_FEATURES (the stream's signals enter through the ranker)."""
    return np.array([0.0, 1.0, config.popularity_weight, config.freshness_weight, config.new_item_boost, 0.0, 0.0])


def blend(rows: np.ndarray, relevance: np.ndarray, catalog: ItemCatalog, config: RankingConfig, now: float) -> np.ndarray:
    """Relevance plus the business and exploration terms (see the module docstring)."""
    return ranking_features(rows, relevance, catalog, config, now) @ blend_weights(config)


def _pick(scores: np.ndarray, mask: np.ndarray, config: RankingConfig, rng: np.random.Generator) -> tuple[int, float]:
    """One pick among `mask` by the policy; returns (candidate position, its probability)."""
    positions = np.flatnonzero(mask)
    values = scores[positions]
    best = int(np.argmax(values))
    if config.policy == "greedy" or len(positions) == 1:
        return int(positions[best]), 1.0
    if config.policy == "epsilon_greedy":
        if rng.random() < config.epsilon:
            chosen = int(rng.integers(len(positions)))
        else:
            chosen = best
        probability = config.epsilon / len(positions) + (1.0 - config.epsilon) * (chosen == best)
        return int(positions[chosen]), float(probability)
    weights = np.exp((values - values[best]) / config.temperature)
    probabilities = weights / weights.sum()
    chosen = int(rng.choice(len(positions), p=probabilities))
    return int(positions[chosen]), float(probabilities[chosen])


def select_slate(
    rows: np.ndarray,
    scores: np.ndarray,
    catalog: ItemCatalog,
    k: int,
    config: RankingConfig,
    rng: np.random.Generator,
) -> list[RankedItem]:
    """Up to k items from the (already eligible) candidates, slot by slot, with per-slot propensities."""
    remaining = np.ones(len(rows), dtype=bool)
    cols = catalog.columns
    genre_masks = cols.genre_mask[rows]
    promoted = cols.promoted[rows]
    promoted_at = promoted_slots(k, config.promoted_share) if promoted.any() else frozenset()
    cap = max(1, math.ceil(config.max_genre_share * k)) if config.max_genre_share < 1 else k
    genre_counts: dict[int, int] = {}
    full_genres = 0  # bit mask of the genres that have reached the cap
    slate: list[RankedItem] = []
    for slot in range(min(k, len(rows))):
        pool = remaining
        if slot in promoted_at and (remaining & promoted).any():
            pool = remaining & promoted
        diverse = pool & ((genre_masks & full_genres) == 0)
        if diverse.any():
            pool = diverse
        position, probability = _pick(scores, pool, config, rng)
        remaining[position] = False
        slate.append(RankedItem(int(rows[position]), float(scores[position]), probability, position))
        mask = int(genre_masks[position])
        while mask:
            bit = mask & -mask
            mask ^= bit
            genre_counts[bit] = genre_counts.get(bit, 0) + 1
            if genre_counts[bit] >= cap:
                full_genres |= bit
    return slate
