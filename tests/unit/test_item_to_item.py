"""The item-to-item model scores a live history exactly as the sum of its items' weight rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rtrec.domain.item_to_item import UNKNOWN_ROW, ItemToItem

# Dense weights of a 4-item model: row h is what history item h adds to each item's score.
DENSE = np.array(
    [
        [0.0, 0.5, 0.0, -0.25],
        [0.5, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
        [2.0, 0.0, 0.75, 0.0],
    ],
    dtype=np.float32,
)


def from_dense(dense: np.ndarray) -> ItemToItem:
    rows, cols = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dense)))])
    return ItemToItem(
        item_ids=tuple(f"i{n}" for n in range(len(dense))), indptr=indptr, indices=cols, weights=dense[rows, cols]
    )


@pytest.fixture
def model() -> ItemToItem:
    return from_dense(DENSE)


def test_scores_are_the_sum_of_the_history_rows(model):
    np.testing.assert_array_equal(model.scores([0, 3]), [2.0, 0.5, 0.75, -0.25])
    np.testing.assert_array_equal(model.scores([1]), [0.5, 0.0, 1.0, 0.0])
    assert model.scores([0]).dtype == np.float32
    assert model.nnz == 6


def test_a_repeated_history_item_counts_once(model):
    np.testing.assert_array_equal(model.scores([3, 3, 0]), model.scores([0, 3]))


def test_an_empty_history_scores_zero(model):
    np.testing.assert_array_equal(model.scores([]), np.zeros(4))
    np.testing.assert_array_equal(model.scores([2]), np.zeros(4))  # an item without neighbours
    np.testing.assert_array_equal(model.scores_for([], [0, 1]), [0.0, 0.0])


def test_unknown_items_add_nothing_and_score_zero(model):
    assert model.rows(["i3", "new", "i0"]).tolist() == [3, UNKNOWN_ROW, 0]
    np.testing.assert_array_equal(model.scores([UNKNOWN_ROW, 3, 99]), model.scores([3]))
    np.testing.assert_array_equal(model.scores_for([0, 3], [2, UNKNOWN_ROW, 0]), [0.75, 0.0, 2.0])


def test_scores_for_equals_the_full_scores_on_the_candidates(model):
    candidates = [3, 0, 2, 0, 1]  # any order, repeats allowed
    np.testing.assert_array_equal(model.scores_for([0, 1, 3], candidates), model.scores([0, 1, 3])[candidates])
    assert model.scores_for([0], []).shape == (0,)


def test_scores_for_matches_dense_on_a_random_model():
    rng = np.random.default_rng(7)
    dense = np.where(rng.random((50, 50)) < 0.2, rng.normal(size=(50, 50)), 0.0).astype(np.float32)
    model = from_dense(dense)
    history, candidates = rng.choice(50, 12, replace=False), rng.choice(50, 20, replace=False)
    np.testing.assert_allclose(model.scores(history), dense[history].sum(axis=0), atol=1e-5)
    np.testing.assert_allclose(model.scores_for(history, candidates), dense[history].sum(axis=0)[candidates], atol=1e-5)


def test_save_and_load_round_trip(model, tmp_path: Path):
    path = tmp_path / "item_to_item.npz"
    model.save(path)
    loaded = ItemToItem.load(path)
    assert loaded.item_ids == model.item_ids
    for name in ("indptr", "indices", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.scores([0, 3]), model.scores([0, 3]))


def test_inconsistent_arrays_are_refused():
    with pytest.raises(ValueError, match="indptr"):
        ItemToItem(item_ids=("a", "b"), indptr=np.array([0, 1]), indices=np.array([1]), weights=np.array([1.0]))
    with pytest.raises(ValueError, match="out of range"):
        ItemToItem(item_ids=("a",), indptr=np.array([0, 1]), indices=np.array([1]), weights=np.array([1.0]))
    with pytest.raises(ValueError, match="unique"):
        ItemToItem(item_ids=("a", "a"), indptr=np.array([0, 0, 0]), indices=np.array([]), weights=np.array([]))
