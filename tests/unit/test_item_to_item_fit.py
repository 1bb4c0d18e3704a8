"""EASE's closed form and the pruning that makes it the served sparse model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.item_to_item import ease_weights, gram, interaction_matrix, prune


def test_ease_solves_its_regression_with_a_zero_diagonal():
    rng = np.random.default_rng(3)
    x = (rng.random((40, 6)) < 0.4).astype(np.float64)
    l2 = 2.0
    weights = ease_weights(x.T @ x, l2).astype(np.float64)
    assert np.all(np.diag(weights) == 0)
    # Stationarity of ||X - XB||^2 + l2 ||B||^2 off the diagonal: (X^T X + l2 I) B - X^T X is zero off it.
    residual = (x.T @ x + l2 * np.eye(6)) @ weights - x.T @ x
    off_diagonal = residual[~np.eye(6, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, 0.0, atol=1e-4)


def test_the_interaction_matrix_is_binary():
    frame = pd.DataFrame({"user_index": [0, 0, 1], "item_index": [2, 2, 0]})
    matrix = interaction_matrix([frame], n_users=2, n_items=3)
    np.testing.assert_array_equal(matrix.toarray(), [[0, 0, 1], [1, 0, 0]])
    np.testing.assert_array_equal(gram(matrix), np.diag([1.0, 0.0, 1.0]))


def test_pruning_keeps_the_strongest_weights_of_each_column():
    weights = np.array([[0.0, 0.1, -3.0], [2.0, 0.0, 0.5], [-1.0, 0.2, 0.0]], dtype=np.float32)
    model = prune(weights, top_k=1, item_ids=["a", "b", "c"])
    expected = np.array([[0.0, 0.0, -3.0], [2.0, 0.0, 0.0], [0.0, 0.2, 0.0]], dtype=np.float32)
    dense = np.stack([model.scores([row]) for row in range(3)])
    np.testing.assert_array_equal(dense, expected)
    full = prune(weights, top_k=5, item_ids=["a", "b", "c"])
    np.testing.assert_array_equal(np.stack([full.scores([row]) for row in range(3)]), weights)
    assert full.nnz == 6  # the zeros are not stored
