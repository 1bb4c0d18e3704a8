from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rtrec.data.movielens import load_movielens
from training.data import k_core, make_split, split_sizes
from training.evaluate import evaluate_full_ranking, popularity_scorer


@pytest.mark.parametrize(
    ("total", "expected"),
    [(10, [8, 1, 1]), (19, [17, 1, 1]), (20, [16, 2, 2]), (3, [1, 1, 1]), (2, [1, 0, 1]), (101, [81, 10, 10])],
)
def test_split_sizes_follow_recbole_rounding(total, expected):
    assert split_sizes(total) == expected
    assert sum(split_sizes(total)) == total


def test_k_core_is_stable():
    frame = pd.DataFrame({"user_index": [0, 0, 1, 1, 2], "item_index": [0, 1, 0, 1, 0]})
    core = k_core(frame, 2, 2)
    assert sorted(core["user_index"].unique()) == [0, 1]
    assert (core.groupby("item_index").size() >= 2).all()


@pytest.fixture(scope="module")
def ml100k(data_cache_dir):
    return load_movielens("ml-100k", data_cache_dir, allow_download=False)


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_splits_partition_each_users_interactions(ml100k, protocol):
    split = make_split(ml100k, protocol)
    parts = [split.train, split.valid, split.test]
    joined = pd.concat(parts)
    assert not joined.duplicated(["user_index", "item_index", "timestamp"]).any()
    sizes = joined.groupby("user_index").size()
    assert (sizes >= 10).all()
    for user, total in sizes.head(50).items():
        counts = [int((p["user_index"] == user).sum()) for p in parts]
        assert counts == split_sizes(int(total))
    assert (ml100k.interactions["rating"] >= 3).sum() >= len(joined)


def test_temporal_tests_on_each_users_latest(ml100k):
    split = make_split(ml100k, "temporal")
    last_train = split.train.groupby("user_index")["timestamp"].max()
    first_test = split.test.groupby("user_index")["timestamp"].min()
    assert (first_test >= last_train.loc[first_test.index]).all()


def test_recbole_split_is_seeded(ml100k):
    a, b = make_split(ml100k, "recbole", seed=1), make_split(ml100k, "recbole", seed=1)
    c = make_split(ml100k, "recbole", seed=2)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert not a.test.equals(c.test)


def test_metrics_on_a_hand_computed_case():
    # Two users, 4 items. User 0's target is item 2, ranked 2nd after masking item 0; user 1's targets
    # are items 1 and 3, ranked 1st and 3rd.
    scores = np.array([[9.0, 8.0, 7.0, 1.0], [1.0, 9.0, 8.0, 7.0]])
    target = pd.DataFrame({"user_index": [0, 1, 1], "item_index": [2, 1, 3]})
    seen = pd.DataFrame({"user_index": [0], "item_index": [0]})
    metrics = evaluate_full_ranking(
        lambda users: scores[users], target, [seen], n_items=4, ks=(1, 3), candidate_items=np.arange(4)
    )
    ndcg_user0 = (1 / np.log2(3)) / 1.0
    ndcg_user1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert metrics["recall@1"] == pytest.approx((0 + 0.5) / 2)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["hit@1"] == pytest.approx(0.5)
    assert metrics["ndcg@3"] == pytest.approx((ndcg_user0 + ndcg_user1) / 2)
    assert metrics["coverage@1"] == pytest.approx(1 / 4)  # both users get item 1 first


def test_popularity_beats_nothing_and_masks_seen(ml100k):
    split = make_split(ml100k, "recbole")
    metrics = evaluate_full_ranking(
        popularity_scorer(split.train, ml100k.n_items), split.test, [split.train, split.valid], ml100k.n_items
    )
    assert 0.05 < metrics["recall@10"] < 0.5
    assert metrics["coverage@10"] < 0.2  # the same list for everyone, minus what each has seen
