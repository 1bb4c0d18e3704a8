"""Evaluation protocols over MovieLens: which interactions train, validate and test a model.

Both protocols start like RecBole's ml-1m general-recommendation setup: keep ratings >= 3, then
keep users and items with at least 10 interactions (repeated until stable). They then split each
user's interactions 8:1:1 with RecBole's rounding, either in random order (`recbole`, RecBole's
`RS` + `RO`, which published figures use) or in time order (`temporal`, RecBole's `TO`: train on
each user's past, test on their latest interactions, as the live system is used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from rtrec.data.movielens import MovieLens

if TYPE_CHECKING:
    from scipy import sparse

Protocol = Literal["recbole", "temporal"]
RATIOS = (0.8, 0.1, 0.1)


@dataclass(frozen=True)
class Split:
    """Interactions (user_index, item_index, timestamp) per part, in the data set's index space."""

    protocol: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    n_users: int
    n_items: int

    def describe(self) -> str:
        return (
            f"{self.protocol}: train {len(self.train):,} / valid {len(self.valid):,} / test {len(self.test):,} "
            f"interactions, {self.train['user_index'].nunique():,} users, "
            f"{pd.concat([self.train, self.valid, self.test])['item_index'].nunique():,} items"
        )


def k_core(interactions: pd.DataFrame, min_user: int = 10, min_item: int = 10) -> pd.DataFrame:
    """Drop users and items with too few interactions until every remaining one has enough."""
    frame = interactions
    while True:
        user_counts = frame["user_index"].map(frame["user_index"].value_counts())
        item_counts = frame["item_index"].map(frame["item_index"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return frame
        frame = frame[keep]


def split_sizes(total: int, ratios: tuple[float, ...] = RATIOS) -> list[int]:
    """RecBole's `_calcu_split_ids`: floor the later parts, give the rest to train, and make sure a
    non-empty part is never rounded down to nothing while train keeps more than one."""
    counts = [int(r * total) for r in ratios]
    counts[0] = total - sum(counts[1:])
    for i in range(1, len(ratios)):
        if counts[0] <= 1:
            break
        if 0 < ratios[-i] * total < 1:
            counts[-i] += 1
            counts[0] -= 1
    return counts


def make_split(dataset: MovieLens, protocol: Protocol = "recbole", seed: int = 2020, min_rating: float = 3.0) -> Split:
    inter = dataset.interactions
    inter = inter[inter["rating"] >= min_rating]
    inter = k_core(inter)[["user_index", "item_index", "timestamp"]]
    rng = np.random.default_rng(seed)
    if protocol == "recbole":
        inter = inter.assign(_order=rng.permutation(len(inter))).sort_values(["user_index", "_order"], kind="stable")
    elif protocol == "temporal":
        inter = inter.sort_values(["user_index", "timestamp", "item_index"], kind="stable").assign(_order=0)
    else:
        raise ValueError(f"unknown protocol {protocol!r}; choose recbole or temporal")
    position = inter.groupby("user_index").cumcount().to_numpy()
    totals = inter["user_index"].map(inter["user_index"].value_counts()).to_numpy()
    sizes = np.array([split_sizes(t) for t in range(int(totals.max()) + 1)] if len(totals) else [[0, 0, 0]])
    train_end = sizes[totals, 0]
    valid_end = train_end + sizes[totals, 1]
    inter = inter.drop(columns="_order")
    part = np.where(position < train_end, 0, np.where(position < valid_end, 1, 2))
    return Split(
        protocol=protocol,
        train=inter[part == 0].reset_index(drop=True),
        valid=inter[part == 1].reset_index(drop=True),
        test=inter[part == 2].reset_index(drop=True),
        n_users=dataset.n_users,
        n_items=dataset.n_items,
    )


def interaction_matrix(
    frames: Sequence[pd.DataFrame], n_users: int, n_items: int, dtype: type[np.floating[Any]] = np.float64
) -> sparse.csr_matrix:
    """Binary user x item matrix (scipy CSR) of the interactions in `frames` (repeats count once): the history the
    item-to-item fit and the matrix-factorisation peer learn from."""
    from scipy import sparse

    frame = pd.concat(list(frames))
    ones = np.ones(len(frame), dtype=dtype)
    matrix = sparse.csr_matrix(
        (ones, (frame["user_index"].to_numpy(), frame["item_index"].to_numpy())), shape=(n_users, n_items)
    )
    matrix.data[:] = 1.0
    return matrix
