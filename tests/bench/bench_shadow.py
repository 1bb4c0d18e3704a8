"""What shadow scoring costs on the serving compute path: the same requests served with and without a shadow
candidate loaded, interleaved round by round (ratios, since this machine is noisy).

    .venv/bin/python tests/bench/bench_shadow.py --production .rtrec/s3/models/models/versions/2 \
        --shadow .rtrec/s3/models/models/versions/4 [--requests 2000 --rounds 3]

Both folders must be published model versions (with item_index/); ML-1M from the data cache.
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

import numpy as np
from bench_serving import K, load_workload, popularity_store, real_model, recommender_for
from benchkit import percentiles, table


def timed(recommender, requests) -> np.ndarray:
    out = []
    for r in requests:
        start = time.perf_counter_ns()
        recommender.recommend_for(r.user_id, r.profile, K)
        out.append(time.perf_counter_ns() - start)
    return np.array(out) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--production", type=Path, required=True)
    parser.add_argument("--shadow", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rtrec")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workload = load_workload(args.cache, args.requests)
    production = real_model(args.production.name, args.production, workload)
    shadow = real_model(args.shadow.name, args.shadow, workload)
    popularity = popularity_store(workload)
    plain = recommender_for(production, None, popularity)
    scored = recommender_for(production, None, popularity)
    scored._shadow = lambda: shadow
    for r in workload.warmup:
        plain.recommend_for(r.user_id, r.profile, K)
        assert scored.recommend_for(r.user_id, r.profile, K).shadow is not None or r.profile is None
    results: dict[str, list[np.ndarray]] = {"without shadow": [], "with shadow": []}
    for _ in range(args.rounds):
        for name, recommender in (("without shadow", plain), ("with shadow", scored)):
            gc.collect()
            results[name].append(timed(recommender, workload.requests))
    print(
        f"{args.requests:,} requests x {args.rounds} rounds, interleaved; production {args.production.name}, "
        f"shadow {args.shadow.name}; compute path (recommend_for), ms"
    )
    columns = ["p50", "p90", "p99", "mean"]
    summary = {name: percentiles(np.concatenate(rounds)) for name, rounds in results.items()}
    rows = [[name, *(f"{figures[c]:.3f}" for c in columns)] for name, figures in summary.items()]
    rows.append(["ratio", *(f"{summary['with shadow'][c] / summary['without shadow'][c]:.2f}x" for c in columns)])
    print(table(["arm", *columns], rows))


if __name__ == "__main__":
    main()
