from __future__ import annotations

import numpy as np
import pytest

from rtrec.domain.popularity import SECONDS_PER_DAY, decayed_popularity, top_popular


def test_an_event_one_half_life_old_counts_half():
    now = 100 * SECONDS_PER_DAY
    scores = decayed_popularity(
        np.array([0, 1, 1]), np.array([now, now - 10 * SECONDS_PER_DAY, now]), n_items=3, half_life_days=10, now=now
    )
    np.testing.assert_allclose(scores, [1.0, 1.5, 0.0])


def test_future_events_count_as_fresh_not_more():
    scores = decayed_popularity(np.array([0]), np.array([200.0]), n_items=1, half_life_days=1, now=100.0)
    np.testing.assert_allclose(scores, [1.0])


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="out of range"):
        decayed_popularity(np.array([3]), np.array([1.0]), n_items=2, half_life_days=1)
    with pytest.raises(ValueError, match="positive"):
        decayed_popularity(np.array([0]), np.array([1.0]), n_items=1, half_life_days=0)


def test_top_popular_ranks_by_score_breaks_ties_by_order_and_drops_unseen():
    popular = top_popular(np.array([1.0, 3.0, 0.0, 3.0]), ["a", "b", "c", "d"], limit=10, generated_at=0, half_life_days=1)
    assert [i.item_id for i in popular.items] == ["b", "d", "a"]
