"""Full-ranking evaluation: every user is scored against every item, seen items masked, as RecBole does."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices [B] -> scores [B, n_items]


def selection_score(metrics: Mapping[str, float], prefix: str = "") -> float:
    """Recall@10 + NDCG@10 (under `prefix`, e.g. "valid."): what every choice made on the valid part maximises, the
    towers' best epoch and the item-to-item model's l2 and k alike."""
    return metrics[f"{prefix}recall@10"] + metrics[f"{prefix}ndcg@10"]


def _lists(frame: pd.DataFrame) -> dict[int, np.ndarray]:
    return {int(u): g.to_numpy() for u, g in frame.groupby("user_index")["item_index"]}


def evaluate_full_ranking(
    score: Scorer,
    target: pd.DataFrame,
    seen: Sequence[pd.DataFrame],
    n_items: int,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 512,
    candidate_items: np.ndarray | None = None,
) -> dict[str, float]:
    """Recall, NDCG, Hit @k averaged over users with targets, and catalog coverage @k.

    `seen` interactions are masked out of each user's ranking. Recall = hits / |targets|;
    NDCG uses RecBole's ideal DCG over min(|targets|, k) positions. Only `candidate_items`
    (default: every item that appears in `seen` or `target`) can be recommended.
    """
    targets = _lists(target)
    seen_lists = _lists(pd.concat(list(seen))) if seen else {}
    if candidate_items is None:
        candidate_items = np.unique(
            np.concatenate([target["item_index"].to_numpy()] + [s["item_index"].to_numpy() for s in seen])
        )
    allowed = np.zeros(n_items, dtype=bool)
    allowed[candidate_items] = True
    users = np.array(sorted(targets), dtype=np.int64)
    max_k = max(ks)
    discounts = 1.0 / np.log2(np.arange(2, max_k + 2))
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "hit")}
    recommended = {k: np.zeros(n_items, dtype=bool) for k in ks}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = np.array(score(batch), dtype=np.float32, copy=True)
        scores[:, ~allowed] = -np.inf
        for row, user in enumerate(batch):
            if user in seen_lists:
                scores[row, seen_lists[user]] = -np.inf
        top = np.argpartition(-scores, max_k, axis=1)[:, :max_k]
        top_scores = np.take_along_axis(scores, top, axis=1)
        top = np.take_along_axis(top, np.argsort(-top_scores, axis=1, kind="stable"), axis=1)
        for row, user in enumerate(batch):
            truth = targets[int(user)]
            hits = np.isin(top[row], truth)
            for k in ks:
                hit_k = hits[:k]
                n_hits = int(hit_k.sum())
                ideal = discounts[: min(len(truth), k)].sum()
                sums[f"recall@{k}"] += n_hits / len(truth)
                sums[f"ndcg@{k}"] += float((hit_k * discounts[:k]).sum() / ideal)
                sums[f"hit@{k}"] += float(n_hits > 0)
                recommended[k][top[row, :k]] = True
    metrics = {name: value / len(users) for name, value in sums.items()}
    for k in ks:
        metrics[f"coverage@{k}"] = float(recommended[k].sum() / allowed.sum())
    metrics["users"] = float(len(users))
    return metrics


def popularity_scorer(train: pd.DataFrame, n_items: int) -> Scorer:
    """The same ranking for everyone: training-set interaction counts."""
    counts = np.bincount(train["item_index"].to_numpy(), minlength=n_items).astype(np.float32)

    def score(users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(users), n_items))

    return score
