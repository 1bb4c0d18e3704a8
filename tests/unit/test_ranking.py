"""The ranking layer: filters, blending, promoted slots, genre cap and exact propensities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.models import ItemFeatures
from rtrec.domain.ranking import (
    Filters,
    RankingConfig,
    blend,
    eligible,
    promoted_slots,
    select_slate,
    slate_probabilities,
)

GENRES = ("Action", "Comedy", "Drama")
NOW = 1_000_000_000.0
DAY = 86_400


def make_catalog(items: list[ItemFeatures], trained: int | None = None) -> ItemCatalog:
    catalog = ItemCatalog(4, GENRES)
    rng = np.random.default_rng(0)
    catalog.upsert(items[: trained if trained is not None else len(items)], rng.standard_normal((trained or len(items), 4)))
    catalog.mark_trained()
    if trained is not None:
        catalog.upsert(items[trained:], rng.standard_normal((len(items) - trained, 4)))
    return catalog


def item(i: int, genre: str = "Action", **kwargs) -> ItemFeatures:
    defaults = {"created_at": int(NOW - 1000 * DAY)}
    return ItemFeatures(str(i), f"t{i}", genres=(genre,), **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("k", "share", "slots"), [(10, 0.2, {2, 7}), (10, 0.0, set()), (4, 0.25, {2}), (3, 0.2, set()), (5, 1.0, {0, 1, 2, 3, 4})]
)
def test_promoted_slots_are_spread_evenly(k, share, slots):
    assert promoted_slots(k, share) == slots


def test_eligible_drops_seen_excluded_and_filtered_items():
    catalog = make_catalog([item(1, "Action"), item(2, "Comedy"), item(3, "Drama"), item(4, "Comedy")])
    rows = np.arange(4)
    seen = catalog.rows(["1"])
    assert eligible(rows, catalog, Filters(), seen).tolist() == [False, True, True, True]
    only_comedy = Filters(include_genres=("Comedy",), exclude_items=frozenset({"4"}))
    assert eligible(rows, catalog, only_comedy, seen).tolist() == [False, True, False, False]
    assert eligible(rows, catalog, Filters(exclude_genres=("Comedy", "Drama")), seen[:0]).tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_a_genre_no_item_has_includes_nothing_and_excludes_nothing():
    catalog = make_catalog([item(1)])
    none_seen = np.empty(0, dtype=np.int64)
    assert not eligible(np.arange(1), catalog, Filters(include_genres=("Westerns",)), none_seen).any()
    assert eligible(np.arange(1), catalog, Filters(exclude_genres=("Westerns",)), none_seen).all()


def test_new_item_boost_decays_with_impressions_and_age():
    items = [item(1), item(2, created_at=int(NOW)), item(3, created_at=int(NOW - 28 * DAY))]
    catalog = make_catalog(items, trained=1)
    config = RankingConfig(
        popularity_weight=0, freshness_weight=0, new_item_boost=0.3, new_item_half_life_days=14, new_item_impressions_scale=100
    )
    rows = np.arange(3)
    scores = blend(rows, np.zeros(3), catalog, config, NOW)
    assert scores[0] == 0  # trained on: no boost
    assert scores[1] == pytest.approx(0.3)
    assert scores[2] == pytest.approx(0.3 * 0.25)  # two half-lives old
    catalog.record_impressions(np.array([1] * 100))
    assert blend(rows, np.zeros(3), catalog, config, NOW)[1] == pytest.approx(0.3 * math.exp(-1))


def test_popularity_and_freshness_raise_scores():
    items = [item(1, popularity=0.0), item(2, popularity=99.0), item(3, created_at=int(NOW))]
    catalog = make_catalog(items)
    config = RankingConfig(popularity_weight=0.1, freshness_weight=0.05, new_item_boost=0)
    scores = blend(np.arange(3), np.full(3, 0.5), catalog, config, NOW)
    assert scores[1] == pytest.approx(0.6, abs=1e-6)  # the most popular gets the whole weight
    assert scores[0] == pytest.approx(0.5, abs=1e-3)
    assert scores[2] == pytest.approx(0.55, abs=1e-6)


def test_greedy_slate_is_ordered_and_deterministic():
    catalog = make_catalog([item(i, GENRES[i % 3]) for i in range(6)])
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3, 0.8])
    slate = select_slate(
        np.arange(6), scores, catalog, 4, RankingConfig(policy="greedy", max_genre_share=1.0), np.random.default_rng(0)
    )
    assert [s.row for s in slate] == [1, 5, 3, 2]
    assert all(s.propensity == 1.0 for s in slate)


def test_genre_cap_keeps_the_slate_diverse_and_relaxes_when_nothing_else_is_left():
    catalog = make_catalog([item(i, "Action") for i in range(5)] + [item(5, "Drama")])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.1])
    config = RankingConfig(policy="greedy", max_genre_share=0.5)
    slate = select_slate(np.arange(6), scores, catalog, 4, config, np.random.default_rng(0))
    # cap = 2 Action items; then the Drama item; then the cap is relaxed for the last slot
    assert [s.row for s in slate] == [0, 1, 5, 2]


def test_promoted_slots_take_promoted_items():
    items = [item(i, GENRES[i % 3]) for i in range(8)] + [item(8, promoted=True), item(9, promoted=True)]
    catalog = make_catalog(items)
    scores = np.linspace(1.0, 0.1, 10)  # promoted items score lowest
    config = RankingConfig(policy="greedy", promoted_share=0.2, max_genre_share=1.0)
    slate = select_slate(np.arange(10), scores, catalog, 10, config, np.random.default_rng(0))
    assert [s.row for s in slate][2] == 8
    assert [s.row for s in slate][7] == 9


def slate_probability(rows_scores, k, config, catalog) -> dict[tuple[int, ...], float]:
    """Every slate's probability from the logged per-slot propensities, over many sampled slates."""
    rows, scores = rows_scores
    rng = np.random.default_rng(1)
    seen: dict[tuple[int, ...], float] = {}
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(20_000):
        slate = select_slate(rows, scores, catalog, k, config, rng)
        key = tuple(s.row for s in slate)
        seen[key] = math.prod(s.propensity for s in slate)
        counts[key] = counts.get(key, 0) + 1
    return {key: (seen[key], counts[key] / 20_000) for key in seen}


@pytest.mark.parametrize(
    "config",
    [
        RankingConfig(policy="plackett_luce", temperature=0.2, max_genre_share=0.5),
        RankingConfig(policy="epsilon_greedy", epsilon=0.3, max_genre_share=0.5),
    ],
)
def test_logged_propensities_match_the_sampling_frequencies(config):
    catalog = make_catalog([item(i, GENRES[i % 3]) for i in range(4)])
    scores = np.array([0.5, 0.4, 0.3, 0.1])
    result = slate_probability((np.arange(4), scores), 2, config, catalog)
    assert sum(p for p, _ in result.values()) == pytest.approx(1.0, abs=1e-9)  # every possible slate was seen
    # the genre cap (1 per genre in a 2-slot slate) rules out the two orders of items 0 and 3 (both Action)
    possible = [p for p in itertools.permutations(range(4), 2) if set(p) != {0, 3}]
    assert sorted(result) == sorted(possible)
    for logged, observed in result.values():
        assert observed == pytest.approx(logged, abs=0.012)


def test_plackett_luce_prefers_higher_scores_and_temperature_controls_how_much():
    catalog = make_catalog([item(i, GENRES[i % 3]) for i in range(3)])
    scores = np.array([0.6, 0.5, 0.4])
    sharp = select_slate(np.arange(3), scores, catalog, 1, RankingConfig(temperature=0.01), np.random.default_rng(0))
    flat = select_slate(np.arange(3), scores, catalog, 1, RankingConfig(temperature=10.0), np.random.default_rng(0))
    assert sharp[0].row == 0
    assert sharp[0].propensity > 0.99
    assert flat[0].propensity == pytest.approx(1 / 3, abs=0.01)


@pytest.mark.parametrize(
    "bad",
    [
        {"policy": "softmax"},
        {"temperature": 0},
        {"epsilon": 1.5},
        {"promoted_share": -0.1},
        {"max_genre_share": 0},
        {"new_item_boost": -1},
        {"new_item_half_life_days": 0},
    ],
)
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        RankingConfig(**bad)


@pytest.mark.parametrize(
    "config",
    [
        RankingConfig(policy="plackett_luce", temperature=0.3, promoted_share=0.25, max_genre_share=0.5),
        RankingConfig(policy="epsilon_greedy", epsilon=0.3, promoted_share=0.25, max_genre_share=0.5),
        RankingConfig(policy="greedy", promoted_share=0.25, max_genre_share=0.5),
    ],
)
def test_slate_probabilities_give_back_what_the_serving_policy_logged(config):
    """The propensities select_slate logs, recomputed for its slates (promoted slots and the genre cap included)."""
    items = [item(i, GENRES[i % 3], promoted=i % 5 == 0) for i in range(1, 16)]
    catalog = make_catalog(items)
    rows = np.arange(len(items))
    rng = np.random.default_rng(3)
    for _ in range(50):
        scores = rng.normal(size=len(items))
        slate = select_slate(rows, scores, catalog, 8, config, rng)
        again = slate_probabilities(rows, scores, catalog, 8, config, [s.position for s in slate])
        assert again == pytest.approx([s.propensity for s in slate])


def test_slate_probabilities_under_another_policy_are_a_distribution_per_slot():
    items = [item(i, GENRES[i % 3]) for i in range(1, 9)]
    catalog = make_catalog(items)
    rows, scores = np.arange(8), np.linspace(1.0, 0.0, 8)
    served = RankingConfig(policy="greedy", max_genre_share=1.0)
    target = RankingConfig(policy="plackett_luce", temperature=0.5, max_genre_share=1.0)
    slate = [s.position for s in select_slate(rows, scores, catalog, 4, served, np.random.default_rng(0))]
    assert slate == [0, 1, 2, 3]
    first = [slate_probabilities(rows, scores, catalog, 4, target, [p])[0] for p in range(8)]
    assert sum(first) == pytest.approx(1.0)
    assert first == sorted(first, reverse=True)
    assert slate_probabilities(rows, scores, catalog, 4, served, [1, 0])[0] == 0.0  # greedy never starts with 1


def test_slate_policy_terms_give_each_slots_expected_value_and_skip_items_outside_the_candidates():
    from rtrec.domain.ranking import slate_policy_terms

    items = [item(i, GENRES[i % 3]) for i in range(1, 7)]
    catalog = make_catalog(items)
    rows, scores = np.arange(6), np.linspace(1.0, 0.0, 6)
    values = np.array([0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    config = RankingConfig(policy="plackett_luce", temperature=0.5, max_genre_share=1.0)
    first = np.exp(scores / 0.5) / np.exp(scores / 0.5).sum()
    probabilities, expected = slate_policy_terms(rows, scores, catalog, 3, config, [2, -1, 0], values)
    assert probabilities[0] == pytest.approx(first[2])
    assert probabilities[1] == 0.0
    assert expected[0] == pytest.approx(first @ values)
    after_two = np.delete(np.arange(6), 2)  # the slot after the unknown item: only item 2 was taken
    second = np.exp(scores[after_two] / 0.5) / np.exp(scores[after_two] / 0.5).sum()
    assert expected[1] == pytest.approx(second @ values[after_two])
    assert probabilities[2] == pytest.approx(second[0])
    assert slate_policy_terms(rows, scores, catalog, 3, config, [0, 1])[1].tolist() == [0.0, 0.0]
