"""What the ranking layer costs in accuracy: held-out Recall@10 / NDCG@10 of the slates serving
actually returns, under each exploration policy and with the business rules on and off.

The production model was trained on the RecBole split's train part (seed 2020), so its test part is
held out. Each test user is served through `Recommender.recommend_for` with their train + valid
history as the profile (what the feature store would hold), exactly as a request would be; the
slate is scored against the user's test items. Stochastic policies are averaged over `--repeats`
slates per user. The first row (greedy, no business terms, no genre cap) is the retrieval model's
own ranking (it matches the offline evaluation up to the candidate cut-off, top-200).

    .venv/bin/python tests/bench/bench_policy.py [--model-dir .rtrec/s3/models/models/versions/2] [--users 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from benchkit import ROOT, machine

from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.adapters.model.onnx_towers import load_serving_model
from rtrec.data.movielens import load_movielens
from rtrec.domain.models import PopularItems, ScoredItem
from rtrec.domain.ranking import RankingConfig
from rtrec.services.recommend import Recommender
from training.data import make_split

K = 10
BASE = RankingConfig(
    policy="greedy", popularity_weight=0.0, freshness_weight=0.0, new_item_boost=0.0, promoted_share=0.0, max_genre_share=1.0
)
DEFAULT = RankingConfig()
VARIANTS: list[tuple[str, RankingConfig]] = [
    ("greedy, relevance only (the model's ranking)", BASE),
    ("greedy + popularity 0.05 + freshness", replace(BASE, popularity_weight=0.05, freshness_weight=0.02)),
    ("greedy + genre cap 0.6", replace(BASE, max_genre_share=0.6)),
    ("Plackett-Luce T=0.01, relevance only", replace(BASE, policy="plackett_luce", temperature=0.01)),
    ("Plackett-Luce T=0.02, relevance only", replace(BASE, policy="plackett_luce", temperature=0.02)),
    ("Plackett-Luce T=0.05, relevance only", replace(BASE, policy="plackett_luce", temperature=0.05)),
    ("epsilon-greedy 0.1, relevance only", replace(BASE, policy="epsilon_greedy", epsilon=0.1)),
    ("serving defaults (PL T=0.02, pop, fresh, genre cap 0.6)", DEFAULT),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / ".rtrec/s3/models/models/versions/2")
    parser.add_argument("--users", type=int, default=2000, help="test users sampled (0 = all)")
    parser.add_argument("--repeats", type=int, default=3, help="slates per user for stochastic policies")
    args = parser.parse_args()
    if not (args.model_dir / "user_tower.onnx").is_file():
        sys.exit(f"{args.model_dir} holds no model; run `make train` and `make promote` first (or pass --model-dir)")

    dataset = load_movielens("ml-1m", Path.home() / ".cache" / "rtrec")
    split = make_split(dataset, "recbole", seed=2020)
    features = InMemoryFeatureStore()
    features.put_items(dataset.catalog())
    model = load_serving_model("bench", args.model_dir, features)
    item_ids = dataset.items["item_id"].to_numpy()
    profiles = {p.user_id: p for p in dataset.user_profiles()}
    user_ids = dataset.users["user_id"].to_numpy()
    seen = pd.concat([split.train, split.valid]).sort_values("timestamp", kind="stable")
    history = seen.groupby("user_index")["item_index"].apply(lambda s: tuple(item_ids[s.to_numpy()]))
    truth = split.test.groupby("user_index")["item_index"].apply(lambda s: set(item_ids[s.to_numpy()]))
    users = truth.index.to_numpy()
    rng = np.random.default_rng(0)
    if args.users and args.users < len(users):
        users = rng.choice(users, args.users, replace=False)
    popular = PopularItems(
        tuple(ScoredItem(i.item_id, i.popularity) for i in sorted(dataset.catalog(), key=lambda i: -i.popularity)[:500]),
        generated_at=0,
        half_life_days=90,
    )
    now = float(dataset.interactions["timestamp"].max())

    print(f"# bench_policy: {len(users):,} ML-1M test users, model {args.model_dir}, k={K}")
    print(f"# machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    print("| ranking | Recall@10 | NDCG@10 | mean propensity | distinct items shown |")
    print("|---|---|---|---|---|")
    discount = 1.0 / np.log2(np.arange(2, K + 2))

    # The offline evaluation's ranking for the same users: every catalog item scored, all of the user's
    # train + valid items masked (serving excludes only the 200 most recent, the profile's history).
    all_seen = seen.groupby("user_index")["item_index"].apply(lambda s: s.to_numpy())
    vectors = model.catalog.columns.vectors[: len(model.catalog)]
    recalls, ndcgs = [], []
    for user in users:
        profile = replace(profiles[str(user_ids[user])], history=history.get(user, ()))
        scores = vectors @ model.towers.user_vectors([profile])[0]
        scores[model.catalog.rows(item_ids[all_seen.get(user, np.empty(0, dtype=np.int64))])] = -np.inf
        top = [model.catalog.item_id(r) for r in np.argsort(-scores)[:K]]
        relevant = truth[user]
        hits = np.array([i in relevant for i in top])
        recalls.append(hits.sum() / len(relevant))  # RecBole's recall: over all test items
        ndcgs.append((hits * discount).sum() / discount[: min(len(relevant), K)].sum())
    print(
        f"| offline-style full ranking, all train+valid items masked | {np.mean(recalls):.4f} | {np.mean(ndcgs):.4f} | - | - |",
        flush=True,
    )
    for name, config in VARIANTS:
        recommender = Recommender(
            features,
            InMemoryPopularityStore(popular),
            lambda: model,
            ranking=config,
            wall_clock=lambda: now,
            rng=np.random.default_rng(1),
        )
        repeats = 1 if config.policy == "greedy" else args.repeats
        recalls, ndcgs, propensities, shown = [], [], [], set()
        for user in users:
            profile = replace(
                profiles[str(user_ids[user])], history=history.get(user, ()), interaction_count=len(history.get(user, ()))
            )
            relevant = truth[user]
            ideal = discount[: min(len(relevant), K)].sum()
            for _ in range(repeats):
                slate = recommender.recommend_for(profile.user_id, profile, K).items
                hits = np.array([s.item_id in relevant for s in slate] + [False] * (K - len(slate)))
                recalls.append(hits.sum() / len(relevant))  # RecBole's recall: over all test items
                ndcgs.append((hits * discount).sum() / ideal)
                propensities.extend(s.propensity for s in slate)
                shown.update(s.item_id for s in slate)
        print(
            f"| {name} | {np.mean(recalls):.4f} | {np.mean(ndcgs):.4f} | {np.mean(propensities):.3f} | {len(shown):,} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
