"""Item-to-item benchmark (issue 18): dense EASE, the pruned served model, a blend with the two towers, latency.

    .venv/bin/python tests/bench/bench_item_to_item.py [--two-tower MODEL_DIR] [--million]

On ML-1M's RecBole split (ratings >= 3, 10-core, random 8:1:1, seed 2020), full ranking with seen items masked:
l2, k and the blend weight are chosen on valid; test ranks with train + valid as the history (as the two towers
and serving do), and dense EASE once more with train only as its history (RecBole's EASE). The two-tower rows
need a trained ML-1M model folder (default: the newest under .rtrec/jobs/); without one they are skipped.
Prints the figures; record them in tests/bench/RESULTS.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
from benchkit import machine

from rtrec.data.movielens import load_movielens
from rtrec.domain.encoder import FeatureEncoder
from rtrec.domain.item_to_item import ItemToItem
from rtrec.settings import LocalSettings
from training import artifacts
from training.data import Split, make_split
from training.evaluate import Scorer, evaluate_full_ranking
from training.item_to_item import dense_scorer, fit_item_to_item, interaction_matrix, model_scorer
from training.report import PUBLISHED_ML1M
from training.train import history_matrix

COLUMNS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "hit@10", "hit@20", "coverage@10", "coverage@20")
BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def newest_two_tower(root: Path) -> Path | None:
    """The newest ML-1M model folder under `root` (a job's model/ folder), or None."""
    folders = [p.parent for p in root.glob("jobs/*/model/" + artifacts.DATA_SNAPSHOT)]
    folders = [f for f in folders if artifacts.read_json(f, artifacts.DATA_SNAPSHOT).get("dataset") == "ml-1m"]
    return max(folders, key=lambda f: f.stat().st_mtime) if folders else None


def two_tower_vectors(folder: Path, split: Split, profiles: list, with_valid: bool) -> tuple[np.ndarray, np.ndarray]:
    """User vectors from the exported ONNX user tower (history: train, or train + valid) and the item embeddings."""
    encoder = FeatureEncoder.from_json((folder / artifacts.ENCODER).read_text())
    inputs = encoder.encode_users(profiles)
    frames = [split.train, split.valid] if with_valid else [split.train]
    inputs["history"] = history_matrix(split.n_users, frames, encoder.history_length)
    session = ort.InferenceSession(str(folder / artifacts.USER_TOWER), providers=["CPUExecutionProvider"])
    users = np.concatenate(
        [session.run(None, {k: v[s : s + 1024] for k, v in inputs.items()})[0] for s in range(0, split.n_users, 1024)]
    )
    return users, np.load(folder / artifacts.ITEM_EMBEDDINGS)


def standardized(scores: np.ndarray) -> np.ndarray:
    """Per-user z-scores over the catalog, so two models' scores can be added."""
    return (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-9)


def blend_scorer(first: Scorer, second: Scorer, weight: float) -> Scorer:
    return lambda users: (1 - weight) * standardized(first(users)) + weight * standardized(second(users))


def blend_label(weight: float) -> str:
    return f"blend: {1 - weight:.1f} x served item-to-item + {weight:.1f} x two-tower (per-user z-scores)"


def percentiles(call, repeats: int) -> tuple[float, float]:
    """p50 / p99 of one call, in microseconds."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        call()
        times.append((time.perf_counter_ns() - started) / 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def latency(model: ItemToItem, split: Split, label: str, history_items: int = 50, candidates: int = 500) -> None:
    rng = np.random.default_rng(2020)
    counts = split.train.groupby("user_index")["item_index"].apply(np.asarray)
    users = [h for h in counts if len(h) >= history_items]
    histories = [rng.choice(users[rng.integers(len(users))], history_items, replace=False) for _ in range(200)]
    pools = [rng.choice(model.n_items, candidates, replace=False) for _ in range(200)]
    state = {"n": 0}

    def next_pair() -> tuple[np.ndarray, np.ndarray]:
        state["n"] += 1
        return histories[state["n"] % 200], pools[state["n"] % 200]

    for name, call in (
        (f"scores_for, {candidates} candidates", lambda: model.scores_for(*next_pair())),
        ("scores, every item", lambda: model.scores(next_pair()[0])),
    ):
        percentiles(call, 200)  # warm up
        p50, p99 = percentiles(call, 3000)
        print(f"| {label} | {name}, {history_items}-item history | {p50:.0f} | {p99:.0f} |")


def synthetic_model(n_items: int, top_k: int, seed: int = 0) -> ItemToItem:
    """A catalog-sized model with `top_k` random neighbours per item: what latency costs at that scale."""
    rng = np.random.default_rng(seed)
    indptr = np.arange(0, (n_items + 1) * top_k, top_k, dtype=np.int64)
    indices = rng.integers(0, n_items, n_items * top_k, dtype=np.int32)
    weights = rng.standard_normal(n_items * top_k, dtype=np.float32)
    return ItemToItem(item_ids=tuple(str(i) for i in range(n_items)), indptr=indptr, indices=indices, weights=weights)


def per_user(score: Scorer, split: Split, k: int = 10) -> dict[str, np.ndarray]:
    """Test-part Recall@k and NDCG@k per user (evaluate_full_ranking's definitions, candidates = seen or target
    items), for a paired bootstrap over users."""
    target = split.test.groupby("user_index")["item_index"].apply(np.asarray)
    seen = pd.concat([split.train, split.valid]).groupby("user_index")["item_index"].apply(np.asarray)
    allowed = np.zeros(split.n_items, dtype=bool)
    allowed[np.unique(np.concatenate([split.train["item_index"], split.valid["item_index"], split.test["item_index"]]))] = True
    users = np.array(sorted(target.index), dtype=np.int64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall, ndcg = np.zeros(len(users)), np.zeros(len(users))
    for start in range(0, len(users), 512):
        batch = users[start : start + 512]
        scores = np.array(score(batch), dtype=np.float32, copy=True)
        scores[:, ~allowed] = -np.inf
        for row_, user in enumerate(batch):
            scores[row_, seen.get(user, [])] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        for row_, user in enumerate(batch):
            hits = np.isin(top[row_], target[user])
            recall[start + row_] = hits.sum() / len(target[user])
            ndcg[start + row_] = (hits * discounts).sum() / discounts[: min(len(target[user]), k)].sum()
    return {"recall@10": recall, "ndcg@10": ndcg}


def paired_bootstrap(first: dict[str, np.ndarray], second: dict[str, np.ndarray], label: str, draws: int = 1000) -> None:
    """95% interval of (second - first) / first on each metric, users resampled with replacement."""
    rng = np.random.default_rng(2020)
    n = len(first["recall@10"])
    picks = rng.integers(0, n, (draws, n))
    for name in ("recall@10", "ndcg@10"):
        a, b = first[name], second[name]
        ratio = b[picks].mean(axis=1) / a[picks].mean(axis=1) - 1
        low, high = np.percentile(ratio, [2.5, 97.5])
        print(
            f"| {label} | {name} | {a.mean():.4f} -> {b.mean():.4f} | {b.mean() / a.mean() - 1:+.2%} "
            f"| [{low:+.2%}, {high:+.2%}] |"
        )


def row(label: str, metrics: dict[str, float]) -> str:
    return f"| {label} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--two-tower", type=Path, default=None, help="an ML-1M model folder (default: newest under .rtrec)")
    parser.add_argument("--million", action="store_true", help="also time a synthetic 1M-item model (top 100)")
    args = parser.parse_args()
    started = time.monotonic()
    dataset = load_movielens("ml-1m", LocalSettings().data_cache_dir)
    split = make_split(dataset, "recbole", seed=2020)
    print(split.describe(), flush=True)
    fit = fit_item_to_item(split, tuple(dataset.items["item_id"].tolist()), progress=lambda line: print(line, flush=True))
    n_items = split.n_items
    train_only, with_valid = (
        interaction_matrix([split.train], split.n_users, n_items),
        interaction_matrix([split.train, split.valid], split.n_users, n_items),
    )
    seen_test = [split.train, split.valid]
    tables: dict[str, dict[str, dict[str, float]]] = {"valid": {}, "test": {}}
    m = fit.metrics
    for part in ("valid", "test"):
        tables[part][f"EASE dense (l2 {fit.l2:g})"] = {c: m[f"ease.{part}.{c}"] for c in COLUMNS}
        tables[part][f"item-to-item, top {fit.top_k} per item (served)"] = {c: m[f"{part}.{c}"] for c in COLUMNS}
    tables["test"]["EASE dense, train-only history (RecBole's EASE)"] = evaluate_full_ranking(
        dense_scorer(train_only, fit.dense), split.test, seen_test, n_items
    )
    folder = args.two_tower or newest_two_tower(Path(".rtrec"))
    if folder is None:
        print("two-tower rows skipped: no ML-1M model folder under .rtrec/jobs/ (pass --two-tower DIR)")
    else:
        print(f"two-tower: {folder} ({artifacts.read_json(folder, artifacts.PARAMS).get('epochs')} epochs)", flush=True)
        profiles = dataset.user_profiles()
        valid_users, items = two_tower_vectors(folder, split, profiles, with_valid=False)
        test_users, _ = two_tower_vectors(folder, split, profiles, with_valid=True)

        def tower(users_matrix: np.ndarray) -> Scorer:
            return lambda users: users_matrix[users] @ items.T

        served_valid, served_test = model_scorer(fit.model, train_only), model_scorer(fit.model, with_valid)
        tables["valid"]["two-tower (ONNX)"] = evaluate_full_ranking(tower(valid_users), split.valid, [split.train], n_items)
        tables["test"]["two-tower (ONNX)"] = evaluate_full_ranking(tower(test_users), split.test, seen_test, n_items)
        best_weight, best_valid = 0.0, -1.0
        for weight in BLEND_WEIGHTS:
            valid = evaluate_full_ranking(
                blend_scorer(served_valid, tower(valid_users), weight), split.valid, [split.train], n_items
            )
            print(f"blend weight {weight}: valid recall@10 {valid['recall@10']:.4f} ndcg@10 {valid['ndcg@10']:.4f}")
            if valid["recall@10"] + valid["ndcg@10"] > best_valid:
                best_weight, best_valid = weight, valid["recall@10"] + valid["ndcg@10"]
                tables["valid"][blend_label(weight)] = valid
        label = blend_label(best_weight)
        tables["valid"] = {k: v for k, v in tables["valid"].items() if not k.startswith("blend") or k == label}
        tables["test"][label] = evaluate_full_ranking(
            blend_scorer(served_test, tower(test_users), best_weight), split.test, seen_test, n_items
        )
        comparisons = (
            ("served item-to-item vs dense EASE", dense_scorer(with_valid, fit.dense), served_test),
            (
                "blend vs dense EASE",
                dense_scorer(with_valid, fit.dense),
                blend_scorer(served_test, tower(test_users), best_weight),
            ),
        )
    print(f"\nmachine: {machine()}; date {time.strftime('%Y-%m-%d')}; {time.monotonic() - started:.0f}s so far")
    print(f"chosen on valid: l2 {fit.l2:g}, top {fit.top_k} per item ({fit.model.nnz:,} weights)\n")
    for part in ("test", "valid"):
        print(f"{part} part\n\n| model | " + " | ".join(COLUMNS) + " |\n|" + "---|" * (len(COLUMNS) + 1))
        for label, metrics in tables[part].items():
            print(row(label, metrics))
        if part == "test":
            for name in ("EASE",):
                recall, ndcg = PUBLISHED_ML1M[name]
                print(f"| {name} (RecBole, published) | {recall:.4f} | {ndcg:.4f} |" + " |" * (len(COLUMNS) - 2))
        print()
    if folder is not None:
        print("paired bootstrap over test users (1,000 draws)\n\n| comparison | metric | means | change | 95% interval |")
        print("|---|---|---|---|---|")
        for label, baseline, challenger in comparisons:
            paired_bootstrap(per_user(baseline, split), per_user(challenger, split), label)
        print()
    print("| model | call | p50 µs | p99 µs |\n|---|---|---|---|")
    latency(fit.model, split, f"ML-1M, top {fit.top_k} ({n_items:,} items)")
    if args.million:
        big = synthetic_model(1_000_000, 100)
        latency(big, split, "synthetic, 1M items, top 100")


if __name__ == "__main__":
    main()
