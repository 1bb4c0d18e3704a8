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


# What serving ranks with unless its settings say otherwise: the defaults above, and a fifth of each slate for
# promoted items (a business rule of the product; offline evaluation and simulations default to none).
SERVING_RANKING = RankingConfig(promoted_share=0.2)


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
    count = math.floor(k * share + 1e-9)
    return frozenset(int((i + 0.5) * k / count) for i in range(count)) if count else frozenset()


def eligible(rows: np.ndarray, catalog: ItemCatalog, filters: Filters, seen_rows: np.ndarray) -> np.ndarray:
    """Boolean mask over `rows`: active, not seen, not excluded, passes the genre filters (a genre no item has
    excludes nothing, and as the only genre asked for includes nothing)."""
    include = catalog.genre_mask(filters.include_genres)
    exclude = catalog.genre_mask(filters.exclude_genres)
    keep = ~np.isin(rows, seen_rows)
    if catalog.inactive_ids:
        keep &= catalog.columns.active[rows]
    if filters.exclude_items:
        keep &= ~np.isin(rows, catalog.rows(filters.exclude_items))
    masks = catalog.columns.genre_mask[rows]
    if filters.include_genres:
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
    scores: np.ndarray = ranking_features(rows, relevance, catalog, config, now) @ blend_weights(config)
    return scores


def _distribution(values: np.ndarray, config: RankingConfig) -> np.ndarray:
    """The policy's probability of picking each of the slot's eligible candidates (their scores: `values`)."""
    best = int(np.argmax(values))
    if config.policy == "greedy" or len(values) == 1:
        probabilities = np.zeros(len(values))
        probabilities[best] = 1.0
    elif config.policy == "epsilon_greedy":
        probabilities = np.full(len(values), config.epsilon / len(values))
        probabilities[best] += 1.0 - config.epsilon
    else:
        weights = np.exp((values - values[best]) / config.temperature)
        probabilities = weights / weights.sum()
    return probabilities


def _pick(scores: np.ndarray, mask: np.ndarray, config: RankingConfig, rng: np.random.Generator) -> tuple[int, float]:
    """One pick among `mask` by the policy; returns (candidate position, its probability)."""
    positions = np.flatnonzero(mask)
    probabilities = _distribution(scores[positions], config)
    if config.policy == "greedy" or len(positions) == 1:
        chosen = int(np.argmax(probabilities))
    elif config.policy == "epsilon_greedy":
        best = int(np.argmax(probabilities))
        chosen = int(rng.integers(len(positions))) if rng.random() < config.epsilon else best
    else:  # rng.choice(len(positions), p=probabilities) draws the same, with twice the overhead of its checks
        cdf = np.cumsum(probabilities)
        chosen = min(int(cdf.searchsorted(rng.random() * cdf[-1], side="right")), len(positions) - 1)
    return int(positions[chosen]), float(probabilities[chosen])


class _SlotPools:
    """Which candidates each slot may take: the promoted ones in a promoted slot, and none of a genre that has
    reached the cap (each rule relaxed when it would leave the slot empty)."""

    def __init__(self, rows: np.ndarray, catalog: ItemCatalog, k: int, config: RankingConfig) -> None:
        cols = catalog.columns
        self.remaining = np.ones(len(rows), dtype=bool)
        self.genre_masks = cols.genre_mask[rows]
        self.promoted = cols.promoted[rows]
        self.promoted_at = promoted_slots(k, config.promoted_share) if self.promoted.any() else frozenset()
        self.cap = max(1, math.ceil(config.max_genre_share * k)) if config.max_genre_share < 1 else k
        self.genre_counts: dict[int, int] = {}
        self.full_genres = 0  # bit mask of the genres that have reached the cap

    def pool(self, slot: int) -> np.ndarray:
        pool = self.remaining
        if slot in self.promoted_at and (self.remaining & self.promoted).any():
            pool = self.remaining & self.promoted
        diverse = pool & ((self.genre_masks & self.full_genres) == 0)
        return diverse if diverse.any() else pool

    def take(self, position: int) -> None:
        self.remaining[position] = False
        mask = int(self.genre_masks[position])
        while mask:
            bit = mask & -mask
            mask ^= bit
            self.genre_counts[bit] = self.genre_counts.get(bit, 0) + 1
            if self.genre_counts[bit] >= self.cap:
                self.full_genres |= bit


def select_slate(
    rows: np.ndarray,
    scores: np.ndarray,
    catalog: ItemCatalog,
    k: int,
    config: RankingConfig,
    rng: np.random.Generator,
) -> list[RankedItem]:
    """Up to k items from the (already eligible) candidates, slot by slot, with per-slot propensities."""
    pools = _SlotPools(rows, catalog, k, config)
    slate: list[RankedItem] = []
    for slot in range(min(k, len(rows))):
        position, probability = _pick(scores, pools.pool(slot), config, rng)
        pools.take(position)
        slate.append(RankedItem(int(rows[position]), float(scores[position]), probability, position))
    return slate


def slate_probabilities(
    rows: np.ndarray,
    scores: np.ndarray,
    catalog: ItemCatalog,
    k: int,
    config: RankingConfig,
    chosen: list[int],
) -> np.ndarray:
    """Per slot, the probability that `select_slate` with `config` picks `chosen[slot]` (a candidate position)
    given the picks before it: the propensities a policy would have logged for a given slate. Off-policy
    evaluation needs them for a policy other than the one that served (0 where it could not have picked)."""
    return slate_policy_terms(rows, scores, catalog, k, config, chosen)[0]


def slate_policy_terms(
    rows: np.ndarray,
    scores: np.ndarray,
    catalog: ItemCatalog,
    k: int,
    config: RankingConfig,
    chosen: list[int],
    values: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """`slate_probabilities`, and per slot the expectation of `values` (a reward model's prediction per
    candidate) under the policy's distribution for that slot given the picks before it: the two terms a
    doubly robust estimate of the policy needs at every slot (zeros when `values` is None).

    A chosen position of -1 is an item outside this policy's candidates: its slot gets probability 0 and
    the picks after it are conditioned on the other picks only."""
    pools = _SlotPools(rows, catalog, k, config)
    probabilities, expected = np.zeros(len(chosen)), np.zeros(len(chosen))
    for slot, position in enumerate(chosen):
        pool = pools.pool(slot)
        positions = np.flatnonzero(pool)
        if len(positions) == 0:
            break
        distribution = _distribution(scores[positions], config)
        if values is not None:
            expected[slot] = float(distribution @ values[positions])
        if position >= 0:
            if pool[position]:
                probabilities[slot] = distribution[int(np.searchsorted(positions, position))]
            pools.take(position)
    return probabilities, expected
