"""An item-to-item model scored from a user's live history: a click changes the next slate without retraining.

The model is a sparse item x item weight matrix (EASE pruned to each item's strongest neighbours, fitted in
training/item_to_item.py) kept as plain numpy CSR arrays, so the core stays numpy-only for the Lambda layer.
Row `h` holds what history item `h` adds to each of its neighbours' scores; a user's score for item `j` is
the sum over the distinct items `h` in their history of weight[h, j]. Items the model does not know have row
-1: they add nothing when in a history and score 0 as candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNKNOWN_ROW = -1


@dataclass(frozen=True, eq=False)
class ItemToItem:
    """Top-k neighbour weights per item, CSR by history item: row h's neighbours are
    indices[indptr[h]:indptr[h + 1]] with weights[indptr[h]:indptr[h + 1]]."""

    item_ids: tuple[str, ...]
    indptr: np.ndarray  # int64 [n_items + 1], non-decreasing, indptr[0] == 0
    indices: np.ndarray  # int32 [nnz], neighbour rows in [0, n_items)
    weights: np.ndarray  # float32 [nnz]
    _row_of: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n_items = len(self.item_ids)
        indptr = np.asarray(self.indptr, dtype=np.int64)
        indices = np.asarray(self.indices, dtype=np.int32)
        weights = np.asarray(self.weights, dtype=np.float32)
        if indptr.shape != (n_items + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must have n_items + 1 non-decreasing entries starting at 0")
        if indices.shape != weights.shape or indices.ndim != 1 or int(indptr[-1]) != len(indices):
            raise ValueError("indices and weights must be 1-d, of the same length, indptr[-1] long")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_items):
            raise ValueError("neighbour index out of range")
        row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        if len(row_of) != n_items:
            raise ValueError("item ids must be unique")
        object.__setattr__(self, "indptr", indptr)
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "_row_of", row_of)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def nnz(self) -> int:
        return len(self.indices)

    def rows(self, item_ids: Iterable[str]) -> np.ndarray:
        """Model rows of client item ids, UNKNOWN_ROW (-1) for items the model has not seen."""
        return np.array([self._row_of.get(item_id, UNKNOWN_ROW) for item_id in item_ids], dtype=np.int64)

    def _neighbours(self, history_rows: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The concatenated (neighbour, weight) entries of the distinct known history rows."""
        rows = np.unique(np.asarray(history_rows, dtype=np.int64))
        rows = rows[(rows >= 0) & (rows < self.n_items)]
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        # Positions of every entry of every row, without a Python loop: each row's start, repeated, plus an offset.
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        positions = np.repeat(starts, lengths) + offsets
        return self.indices[positions], self.weights[positions]

    def scores(self, history_rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 [n_items]: every item's score for a user whose history holds `history_rows`."""
        neighbours, weights = self._neighbours(history_rows)
        return np.bincount(neighbours, weights=weights, minlength=self.n_items).astype(np.float32)

    def scores_for(self, history_rows: np.ndarray | Sequence[int], candidate_rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 [len(candidate_rows)]: the candidates' scores only, in their order. The work grows with the
        history's neighbour entries, plus one int32 slot per catalog item (4 MB at 1M items): a lookup table is
        faster than binary search here (measured in tests/bench/bench_item_to_item.py)."""
        candidates = np.asarray(candidate_rows, dtype=np.int64)
        out = np.zeros(len(candidates), dtype=np.float32)
        neighbours, weights = self._neighbours(history_rows)
        known = (candidates >= 0) & (candidates < self.n_items)
        if len(neighbours) == 0 or not known.any():
            return out
        slot = np.full(self.n_items, -1, dtype=np.int32)
        slot[candidates[known]] = np.flatnonzero(known)  # a repeated candidate keeps one slot; every copy reads it
        hit_slot = slot[neighbours]
        hit = hit_slot >= 0
        summed = np.bincount(hit_slot[hit], weights=weights[hit], minlength=len(candidates))
        out[known] = summed[slot[candidates[known]]]
        return out

    def save(self, path: Path) -> None:
        """One .npz file (no pickles): the CSR arrays and the item ids."""
        np.savez(
            Path(path),
            item_ids=np.array(self.item_ids, dtype=np.str_),
            indptr=self.indptr,
            indices=self.indices,
            weights=self.weights,
        )

    @classmethod
    def load(cls, path: Path) -> ItemToItem:
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(
                item_ids=tuple(str(item_id) for item_id in data["item_ids"]),
                indptr=data["indptr"],
                indices=data["indices"],
                weights=data["weights"],
            )
