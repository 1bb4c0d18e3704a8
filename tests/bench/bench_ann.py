"""ANN retrieval benchmark: FaissVectorIndex (FAISS HNSW) against exact search and peer HNSW libraries.

For each catalog size: synthetic L2-normalised vectors (Gaussian, so uniform on the sphere: harder
than real embeddings, which cluster; `--data clustered` puts them around 1,000 centers), 1,000
queries drawn alike, and the exact top-10 from a brute-force `IndexFlatIP`. Every engine gets the
same HNSW parameters (M=32, efConstruction=200, inner product), and each built index is searched at
several efSearch values (`--ef`; 64 is the adapter's default).
Builds use `--threads` threads (default: all cores); queries run one at a time on one thread
(faiss.omp_set_num_threads(1), hnswlib num_threads=1, usearch threads=1), each timed (p50/p99).
The FAISS rows go through the adapter (validation, normalisation, locking, id mapping), as serving
does; "raw faiss call" is the bare faiss search on the same index, to show what the adapter adds.
Peers (hnswlib, usearch) run when they are installed and are skipped, with a note, when not.

    .venv/bin/python tests/bench/bench_ann.py                      # 3,700 and 100,000 vectors
    .venv/bin/python tests/bench/bench_ann.py --sizes 3700,100000,1000000
    .venv/bin/python tests/bench/bench_ann.py --sizes 100000 --data clustered
    .venv/bin/python -m pytest tests/bench/bench_ann.py -s         # the default sizes under pytest
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np
from benchkit import percentiles, table

from rtrec.adapters.search import HnswParams
from rtrec.adapters.search.faiss_index import FaissVectorIndex

K = 10
PARAMS = HnswParams(m=32, ef_construction=200, ef_search=64)


@dataclass
class Row:
    size: int
    engine: str
    ef_search: str
    build_s: float
    recall: float
    p50_ms: float
    p99_ms: float


@dataclass
class Built:
    """An engine after its build: how to set efSearch and how to run one query (returning row numbers)."""

    engine: str
    build_s: float
    search: Callable[[np.ndarray], np.ndarray]
    set_ef: Callable[[int], None] | None  # None: not an HNSW engine, one row only


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, to keep the float64 temporaries small
        block = rng.standard_normal((min(100_000, n - start), d))
        out[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def clustered(rng: np.random.Generator, n: int, d: int, centers: np.ndarray) -> np.ndarray:
    """Unit vectors scattered around `centers` (cosine to their center about 0.7): closer to the
    structure of learned embeddings than uniform vectors, and easier for every ANN index."""
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        block = centers[rng.integers(0, len(centers), m)] + rng.standard_normal((m, d)) / np.sqrt(d)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall_at_k(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K].tolist()) & set(t.tolist())) / K for f, t in zip(found, truth)]))


def time_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray) -> tuple[list[np.ndarray], float, float]:
    for query in queries[:20]:  # warm-up
        search(query)
    found, times = [], []
    for query in queries:
        start = time.perf_counter_ns()
        result = search(query)
        times.append(time.perf_counter_ns() - start)
        found.append(result)
    ms = percentiles(np.array(times) / 1e6)
    return found, ms["p50"], ms["p99"]


def build_faiss(data: np.ndarray, threads: int) -> list[Built]:
    size = len(data)
    ids = [str(i) for i in range(size)]
    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    index = FaissVectorIndex(data.shape[1], params=PARAMS, exact_below=0, progress=lambda line: print("   ", line))
    index.upsert(ids, data)
    build = time.perf_counter() - start
    raw = index._index  # the bare faiss index: efSearch is set on it, and "raw" shows what the adapter adds

    def set_ef(ef: int) -> None:
        raw.hnsw.efSearch = ef

    start = time.perf_counter()
    flat = FaissVectorIndex(data.shape[1], exact_below=size + 1)
    flat.upsert(ids, data)
    flat_build = time.perf_counter() - start
    return [
        Built("FAISS HNSW (FaissVectorIndex)", build, lambda q: np.array([int(i) for i, _ in index.search(q, K)]), set_ef),
        Built("FAISS HNSW (raw faiss call)", build, lambda q: raw.search(q[None, :], K)[1][0], None),
        Built(
            "FAISS flat, exact (FaissVectorIndex)", flat_build, lambda q: np.array([int(i) for i, _ in flat.search(q, K)]), None
        ),
    ]


def build_hnswlib(data: np.ndarray, threads: int) -> list[Built]:
    import hnswlib

    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=PARAMS.m, ef_construction=PARAMS.ef_construction, random_seed=1)
    index.add_items(data, np.arange(len(data)), num_threads=threads)
    build = time.perf_counter() - start
    return [
        Built(
            f"hnswlib {importlib.metadata.version('hnswlib')}",
            build,
            lambda q: index.knn_query(q, k=K, num_threads=1)[0][0],
            index.set_ef,
        )
    ]


def build_usearch(data: np.ndarray, threads: int) -> list[Built]:
    from usearch.index import Index

    start = time.perf_counter()
    index = Index(
        ndim=data.shape[1],
        metric="ip",
        dtype="f32",
        connectivity=PARAMS.m,
        expansion_add=PARAMS.ef_construction,
        expansion_search=PARAMS.ef_search,
    )
    index.add(np.arange(len(data)), data, threads=threads)
    build = time.perf_counter() - start

    def set_ef(ef: int) -> None:
        index.expansion_search = ef

    return [
        Built(f"usearch {importlib.metadata.version('usearch')}", build, lambda q: index.search(q, K, threads=1).keys, set_ef)
    ]


ENGINES = {"faiss": build_faiss, "hnswlib": build_hnswlib, "usearch": build_usearch}


def run(
    sizes: list[int], dim: int, n_queries: int, threads: int, engines: list[str], efs: list[int], data_kind: str = "uniform"
) -> list[Row]:
    available = []
    for name in engines:
        try:
            __import__(name)
            available.append(name)
        except ImportError:
            print(f"note: {name} is not installed; skipped (.venv/bin/pip install {name})")
    rows: list[Row] = []
    for size in sizes:
        rng = np.random.default_rng(size)
        if data_kind == "clustered":
            centers = unit(rng, 1_000, dim)
            data, queries = clustered(rng, size, dim, centers), clustered(rng, n_queries, dim, centers)
        else:
            data, queries = unit(rng, size, dim), unit(rng, n_queries, dim)
        faiss.omp_set_num_threads(threads)
        exact = faiss.IndexFlatIP(dim)
        exact.add(data)
        truth = exact.search(queries, K)[1]
        del exact
        print(f"== {size:,} {data_kind} vectors, dimension {dim}", flush=True)
        for build in [ENGINES[name] for name in available]:
            engines = build(data, threads)
            faiss.omp_set_num_threads(1)  # queries: one at a time, one thread
            for engine in engines:
                for ef in efs if engine.set_ef else [None]:
                    if engine.set_ef and ef is not None:
                        engine.set_ef(ef)
                    found, p50, p99 = time_queries(engine.search, queries)
                    label = str(ef) if ef is not None else (str(PARAMS.ef_search) if "raw" in engine.engine else "-")
                    row = Row(size, engine.engine, label, engine.build_s, recall_at_k(found, truth), p50, p99)
                    print(
                        f"   {row.engine:38s} ef {row.ef_search:>3s}  build {row.build_s:8.2f} s  "
                        f"recall@10 {row.recall:.4f}  p50 {row.p50_ms:.3f} ms  p99 {row.p99_ms:.3f} ms",
                        flush=True,
                    )
                    rows.append(row)
                if engine.set_ef:
                    engine.set_ef(PARAMS.ef_search)  # back to the default for the rows that share the index
            del engines
            gc.collect()
    return rows


def markdown(rows: list[Row]) -> str:
    return table(
        ["vectors", "engine", "efSearch", "build (s)", "recall@10", "p50 (ms)", "p99 (ms)"],
        [
            [f"{r.size:,}", r.engine, r.ef_search, f"{r.build_s:.2f}", f"{r.recall:.4f}", f"{r.p50_ms:.3f}", f"{r.p99_ms:.3f}"]
            for r in rows
        ],
        "rlrrrrr",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="3700,100000", help="comma-separated catalog sizes (1000000 takes minutes)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="build threads (queries use 1)")
    parser.add_argument(
        "--engines", default="faiss,hnswlib,usearch", help="comma-separated engines; peers that are not installed are skipped"
    )
    parser.add_argument("--ef", default="64,128,256", help="efSearch values to sweep on each HNSW index")
    parser.add_argument(
        "--data",
        choices=["uniform", "clustered"],
        default="uniform",
        help="uniform on the sphere (worst case) or 1,000 clusters (closer to learned embeddings)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        parser.error(f"unknown engines {sorted(unknown)}; choose from {sorted(ENGINES)}")
    print(f"faiss {faiss.__version__}, build threads {args.threads}, query threads 1, k={K}, {PARAMS}, {args.data} data")
    efs = [int(e) for e in args.ef.split(",") if e]
    rows = run(sizes, args.dim, args.queries, args.threads, engines, efs, args.data)
    print()
    print(markdown(rows))


def test_ann_benchmark() -> None:
    """`pytest tests/bench/bench_ann.py -s`: the default sizes; HNSW must stay useful, not a timing check."""
    rows = run([3_700, 100_000], 64, 1_000, os.cpu_count() or 1, list(ENGINES), [64, 256])
    print(markdown(rows))
    assert all(row.recall >= 0.9 for row in rows if row.ef_search in ("-", "256") or row.size < 10_000)


if __name__ == "__main__":
    main()
