"""Fit the item-to-item model: EASE (Steck 2019) on the train part, pruned to each item's strongest weights.

EASE: B = I - P / diag(P) with P = (X^T X + l2 I)^-1, so diag(B) = 0 and column j holds the weights that
predict item j from the other items. The dense B is items^2; the served model keeps, per column, the k weights
of largest magnitude (a sparse relative of EASE that scales with items x k). l2 and k are chosen on the valid
part (Recall@10 + NDCG@10, the two-tower's early-stopping score), never on test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse

from rtrec.domain.item_to_item import ItemToItem
from training.data import Split, interaction_matrix
from training.evaluate import Scorer, evaluate_full_ranking, selection_score

Progress = Callable[[str], None]

L2_GRID = (100.0, 200.0, 500.0, 1000.0)
TOP_K_GRID = (50, 100, 200, 300)


def gram(matrix: sparse.csr_matrix) -> np.ndarray:
    """X^T X as a dense float64 item x item array."""
    return np.asarray((matrix.T @ matrix).toarray(), dtype=np.float64)


def ease_weights(gram_matrix: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form from X^T X: float32 [n_items, n_items], zero diagonal."""
    regularized = gram_matrix.copy()
    regularized[np.diag_indices_from(regularized)] += l2
    precision = np.linalg.inv(regularized)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights.astype(np.float32)


def prune(weights: np.ndarray, top_k: int, item_ids: Sequence[str]) -> ItemToItem:
    """Keep, in each column (each predicted item), the `top_k` weights of largest magnitude."""
    n_items = weights.shape[0]
    keep = np.zeros(weights.shape, dtype=bool)
    if top_k >= n_items:
        keep[:] = True
    else:
        strongest = np.argpartition(-np.abs(weights), top_k, axis=0)[:top_k]
        keep[strongest, np.arange(n_items)] = True
    keep &= weights != 0
    rows, cols = np.nonzero(keep)  # row-major: already in CSR order
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_items))])
    return ItemToItem(item_ids=tuple(item_ids), indptr=indptr, indices=cols, weights=weights[rows, cols])


def dense_scorer(history: sparse.csr_matrix, weights: np.ndarray) -> Scorer:
    """Full-ranking scores of dense EASE: each user's history row times B."""
    return lambda users: np.asarray(history[users] @ weights)


def model_scorer(model: ItemToItem, history: sparse.csr_matrix) -> Scorer:
    """Full-ranking scores through the served model's own `scores`, one user at a time, as serving calls it."""

    def score(users: np.ndarray) -> np.ndarray:
        return np.stack([model.scores(history.indices[history.indptr[u] : history.indptr[u + 1]]) for u in users])

    return score


@dataclass
class ItemToItemFit:
    """The chosen model, the dense EASE it was pruned from, and the figures that chose them."""

    model: ItemToItem
    dense: np.ndarray
    l2: float
    top_k: int
    metrics: dict[str, float] = field(default_factory=dict)  # "valid.*" / "test.*" (pruned), "ease.*" (dense)


def fit_item_to_item(
    split: Split,
    item_ids: Sequence[str],
    progress: Progress = print,
    l2_grid: Sequence[float] = L2_GRID,
    top_k_grid: Sequence[int] = TOP_K_GRID,
    evaluate_test: bool = True,
) -> ItemToItemFit:
    """Choose l2 (dense EASE) then k (pruned) on split.valid; report split.test with train + valid as history."""
    n_users, n_items = split.n_users, split.n_items
    train_history = interaction_matrix([split.train], n_users, n_items)
    started = time.monotonic()
    gram_matrix = gram(train_history)
    progress(f"item-to-item: X^T X of {n_items:,} items in {time.monotonic() - started:.1f}s")
    best: tuple[float, float, np.ndarray, dict[str, float]] | None = None
    for l2 in l2_grid:
        started = time.monotonic()
        weights = ease_weights(gram_matrix, l2)
        valid = evaluate_full_ranking(dense_scorer(train_history, weights), split.valid, [split.train], n_items)
        progress(
            f"item-to-item: EASE l2 {l2:g}: valid recall@10 {valid['recall@10']:.4f} ndcg@10 {valid['ndcg@10']:.4f} "
            f"({time.monotonic() - started:.1f}s)"
        )
        if best is None or selection_score(valid) > best[0]:
            best = (selection_score(valid), l2, weights, valid)
    assert best is not None
    _, l2, dense, dense_valid = best
    chosen: tuple[float, int, ItemToItem, dict[str, float]] | None = None
    for top_k in top_k_grid:
        started = time.monotonic()
        model = prune(dense, top_k, item_ids)
        valid = evaluate_full_ranking(model_scorer(model, train_history), split.valid, [split.train], n_items)
        progress(
            f"item-to-item: l2 {l2:g} top {top_k}: {model.nnz:,} weights, valid recall@10 {valid['recall@10']:.4f} "
            f"ndcg@10 {valid['ndcg@10']:.4f} ({time.monotonic() - started:.1f}s)"
        )
        if chosen is None or selection_score(valid) > chosen[0]:
            chosen = (selection_score(valid), top_k, model, valid)
    assert chosen is not None
    _, top_k, model, valid = chosen
    metrics = {"l2": l2, "top_k": float(top_k), "nnz": float(model.nnz)}
    metrics.update({f"valid.{k}": v for k, v in valid.items() if k != "users"})
    metrics.update({f"ease.valid.{k}": v for k, v in dense_valid.items() if k != "users"})
    if evaluate_test:
        history = interaction_matrix([split.train, split.valid], n_users, n_items)
        seen = [split.train, split.valid]
        test = evaluate_full_ranking(model_scorer(model, history), split.test, seen, n_items)
        dense_test = evaluate_full_ranking(dense_scorer(history, dense), split.test, seen, n_items)
        metrics.update({f"test.{k}": v for k, v in test.items() if k != "users"})
        metrics.update({f"ease.test.{k}": v for k, v in dense_test.items() if k != "users"})
        progress(
            f"item-to-item (l2 {l2:g}, top {top_k}): test recall@10 {test['recall@10']:.4f} ndcg@10 "
            f"{test['ndcg@10']:.4f}; dense EASE {dense_test['recall@10']:.4f} / {dense_test['ndcg@10']:.4f}"
        )
    return ItemToItemFit(model=model, dense=dense, l2=l2, top_k=top_k, metrics=metrics)
