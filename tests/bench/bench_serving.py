"""Serving latency benchmark (issue 4): the recommend path in-process, over HTTP, and the Lambda cold start.

Parts (`--part`, default all):

- `inprocess`: the recommend path of `Recommender` with the production model (real ONNX towers), on ML-1M's
  catalog (3,883 items, exact FAISS flat index) and on a synthetic catalog of `--items` items (default
  1,000,000: vectors scattered around the real item vectors, HNSW M=32 efC=200 efS=64 built here). A shuffled
  mix of requests: real ML-1M users (profile with history: two_tower), cold users with demographics only
  (cold_user_features) and unknown users (popular_fallback). Measured one request at a time, each timed:
  (a) the compute path `recommend_for(user_id, profile, 10)` with the profile in hand, split into stages (user
  tower, ANN search, ranking) by timing proxies around the model's towers, index and ranking functions in a
  second pass; (b) `recommend(user_id, 10)` with the feature fetch from a DynamoFeatureStore on the embedded
  cloud (moto server, in its own process), and the bare `get_user` alone. On the synthetic catalog also the
  recall of the HNSW step against exact search, for 200 real users' queries.
- `http`: `functions.api.handler:app` under uvicorn against the embedded cloud with the model published and
  ML-1M seeded ("moto"), and the same app over in-memory features ("memory", no emulator behind a request);
  1 worker, 2 workers, and 2 workers with TCP_NODELAY restored (uvicorn's multi-worker socket leaves it off,
  see UVICORN_NODELAY). A loopback asyncio + httpx load generator at a fixed concurrency (1, 8, 32) for
  `--duration` seconds per point, random known users; CPU per component from /proc. The load generator, the
  moto server and uvicorn share the machine's cores: compare the rows of one run rather than reading them as
  capacity.
- `coldstart`: a fresh interpreter per run imports the Lambda module `functions.api.handler` (settings, clients,
  model download from the embedded cloud and load at module scope) and serves one API Gateway event through
  the Mangum handler; `--repeats` runs, median and max, with the phases timed inside the child. When the model
  folder has no item_catalog.npz (so serving reads every item's features from DynamoDB at load), a copy with
  that file, as `make train` writes it now, is measured too.

The production model folder (`--model-dir`, default .rtrec/s3/models/models/versions/2) comes from
`make train` and `make promote`. Nothing here asserts on timings.

    .venv/bin/python tests/bench/bench_serving.py                          # everything (about 20 minutes)
    .venv/bin/python tests/bench/bench_serving.py --part inprocess --items 100000
    .venv/bin/python tests/bench/bench_serving.py --part http --duration 10 --http-backends memory --workers 1,2+nodelay
    .venv/bin/python tests/bench/bench_serving.py --part coldstart --repeats 5
    .venv/bin/python tests/bench/bench_serving.py --part inprocess --index-cache /tmp/rtrec-bench   # keep the 1M builds
    .venv/bin/python -m pytest tests/bench/bench_serving.py -s             # a small smoke run of every part
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from benchkit import (
    ROOT,
    child_cloud,
    load_average,
    machine,
    percentiles,
    progress,
    show,
    table,
    tree_cpu_seconds,
    tree_paths,
)

from rtrec.domain.models import UserProfile

DEFAULT_MODEL_DIR = ROOT / ".rtrec" / "s3" / "models" / "models" / "versions" / "2"
PREFIX = "bench"  # resource prefix in the embedded cloud
K = 10
STRATEGIES = ("two_tower", "cold_user_features", "popular_fallback")
MIX = {"two_tower": 0.6, "cold_user_features": 0.2, "popular_fallback": 0.2}
TARGET_COMPUTE_P99_MS = {"ML-1M": 5.0, "synthetic": 15.0}
TARGET_COLD_START_S = 1.5
SEED = 2026


# -- figures and tables ----------------------------------------------------------------------------------


def ms(values_ns: list[int] | np.ndarray) -> tuple[float, float, float]:
    """p50, p99 and mean in milliseconds."""
    figures = percentiles(np.asarray(values_ns, dtype=np.float64) / 1e6)
    return figures["p50"], figures["p99"], figures["mean"]


def f3(value: float) -> str:
    return "-" if value != value else f"{value:.3f}"  # NaN -> "-"


# -- data, users and models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    user_id: str
    profile: UserProfile | None  # what the feature store holds for the user (None: unknown)
    expected: str  # the strategy the mix meant to exercise


@dataclass
class Workload:
    dataset: Any  # MovieLens
    profiles: list[UserProfile]  # every ML-1M user, with history
    cold: list[UserProfile]  # demographics only, ids "cold-<n>"
    requests: list[Request]
    warmup: list[Request]


def load_workload(data_dir: Path, n_requests: int) -> Workload:
    from rtrec.data.movielens import load_movielens
    from rtrec.services.seed import user_profiles

    started = time.perf_counter()
    dataset = load_movielens("ml-1m", data_dir)
    profiles = list(user_profiles(dataset))
    progress(f"{dataset.summary()} (loaded in {time.perf_counter() - started:.1f} s)")
    rng = np.random.default_rng(SEED)

    def draw(n: int) -> list[Request]:
        kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
        out = []
        for kind in kinds:
            profile = profiles[int(rng.integers(len(profiles)))]
            if kind == "two_tower":
                out.append(Request(profile.user_id, profile, kind))
            elif kind == "cold_user_features":
                cold = replace(profile, user_id=f"cold-{profile.user_id}", history=(), interaction_count=0, last_seen=None)
                out.append(Request(cold.user_id, cold, kind))
            else:
                out.append(Request(f"unknown-{int(rng.integers(1_000_000))}", None, kind))
        return out

    warmup, requests = draw(200), draw(n_requests)
    cold = list({r.user_id: r.profile for r in warmup + requests if r.expected == "cold_user_features"}.values())
    return Workload(dataset, profiles, cold, requests, warmup)  # type: ignore[arg-type]


def check_model_dir(model_dir: Path) -> str:
    """The model version (the folder's name when it is a valid one); exits with advice when the folder is missing."""
    needed = [
        "user_tower.onnx",
        "item_tower.onnx",
        "encoder.json",
        "item_embeddings.npy",
        "item_ids.json",
        "item_index/index.faiss",
    ]
    missing = [name for name in needed if not (model_dir / name).is_file()]
    if missing:
        sys.exit(
            f"error: {model_dir} is not a trained model folder ({', '.join(missing)} missing). "
            f"Run `make train` and `make promote` first (with `make run` or `make cloud` up), "
            f"or pass --model-dir."
        )
    name = model_dir.name
    return name if name.replace(".", "").replace("-", "").replace("_", "").isalnum() else "bench"


def real_model(version: str, model_dir: Path, workload: Workload) -> Any:
    """The production model as serving loads it (the item features come from a feature store when the
    folder has no item_catalog.npz; here an in-memory one filled from ML-1M)."""
    from rtrec.adapters.memory import InMemoryFeatureStore
    from rtrec.adapters.model.onnx_towers import load_serving_model

    features = InMemoryFeatureStore()
    features.put_items(workload.dataset.catalog())
    started = time.perf_counter()
    model = load_serving_model(version, model_dir, features)
    progress(
        f"model {version}: {len(model.catalog):,} items, index {type(model.index).__name__} "
        f"({getattr(model.index, 'kind', '?')}), loaded in {time.perf_counter() - started:.2f} s"
    )
    return model


def synthetic_model(real: Any, n_items: int, noise: float, index_cache: Path | None) -> Any:
    """`n_items` items: the real ones first (same ids, vectors and features), then synthetic ones, each a real
    item's vector plus Gaussian noise of norm about `noise`, re-normalised, with that item's genres, a real
    item's popularity and a random created_at. Same towers; a FaissVectorIndex (HNSW above 20,000 items)."""
    from rtrec.adapters.search.faiss_index import FaissVectorIndex
    from rtrec.domain.catalog import ItemCatalog
    from rtrec.services.catalog import ServingModel

    rng = np.random.default_rng(SEED)
    base_catalog = real.catalog
    n_real = len(base_catalog)
    if n_items < n_real:
        raise SystemExit(f"--items must be at least the real catalog's {n_real:,} items")
    cols = base_catalog.columns
    base = cols.vectors[:n_real]
    dim = base.shape[1]
    started = time.perf_counter()
    centers = np.concatenate([np.arange(n_real), rng.integers(0, n_real, n_items - n_real)])
    vectors = np.empty((n_items, dim), dtype=np.float32)
    vectors[:n_real] = base
    for start in range(n_real, n_items, 100_000):
        stop = min(n_items, start + 100_000)
        block = base[centers[start:stop]] + rng.standard_normal((stop - start, dim)).astype(np.float32) * (noise / np.sqrt(dim))
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    created = cols.created_at[:n_real]
    known = created[np.isfinite(created)]
    lo, hi = (float(known.min()), float(known.max())) if len(known) else (0.0, 1.0)
    real_popularity = cols.popularity[:n_real]
    ids = [base_catalog.item_id(r) for r in range(n_real)] + [f"syn-{i}" for i in range(n_real, n_items)]
    titles = [base_catalog.title(r) for r in range(n_real)] + ids[n_real:]
    genre_mask = cols.genre_mask[:n_real][centers]
    popularity = np.concatenate([real_popularity, real_popularity[rng.integers(0, n_real, n_items - n_real)]])
    created_at = np.concatenate([created, rng.uniform(lo, hi, n_items - n_real)])
    catalog = ItemCatalog.bulk(base_catalog.genres, ids, titles, vectors, genre_mask, popularity, created_at)
    synthetic = slice(n_real, min(n_items, n_real + 10_000))
    cosine = float(np.median(np.einsum("ij,ij->i", vectors[synthetic], base[centers[synthetic]])))
    progress(
        f"synthetic catalog: {n_items:,} items ({n_real:,} real + {n_items - n_real:,} synthetic, median "
        f"cosine to their real item {cosine:.3f}) in {time.perf_counter() - started:.1f} s"
    )

    fingerprint = hashlib.sha256(base.tobytes() + f"{n_items}/{noise}/{SEED}".encode()).hexdigest()[:16]
    index = None
    if index_cache is not None and (index_cache / "fingerprint").is_file():
        if (index_cache / "fingerprint").read_text().strip() == fingerprint:
            started = time.perf_counter()
            index = FaissVectorIndex.load(index_cache)
            progress(f"index loaded from {index_cache} in {time.perf_counter() - started:.1f} s")
        else:
            progress(f"{index_cache} holds an index of other vectors; building anew")
    build_s = float("nan")
    if index is None:
        progress(
            f"building FaissVectorIndex over {n_items:,} vectors (exact_below=20,000, so "
            f"{'HNSW' if n_items >= 20_000 else 'flat'}); 1M takes minutes"
        )
        started = time.perf_counter()
        index = FaissVectorIndex(dim, exact_below=20_000, progress=progress)
        index.upsert(ids, vectors)
        build_s = time.perf_counter() - started
        progress(f"index built in {build_s:.1f} s ({index.kind}, {index.params})")
        if index_cache is not None:
            index.save(index_cache)
            (index_cache / "fingerprint").write_text(fingerprint)
    del vectors
    model = ServingModel(version=f"{real.version}-synthetic-{n_items}", towers=real.towers, index=index, catalog=catalog)
    model.build_s = build_s  # type: ignore[attr-defined]
    return model


def recommender_for(model: Any, features: Any, popularity: Any) -> Any:
    """A Recommender wired as the API wires it (ranking and retrieval from the default ApiSettings)."""
    from rtrec.services.recommend import Recommender, RetrievalConfig
    from rtrec.settings import ApiSettings

    settings = ApiSettings(endpoint_url=None, resource_prefix=PREFIX)
    return Recommender(
        features,
        popularity,
        lambda: model,
        ranking=settings.ranking(),
        retrieval=RetrievalConfig(candidates=settings.candidates),
        rng=np.random.default_rng(SEED),
    )


def popularity_store(workload: Workload) -> Any:
    from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
    from rtrec.services.seed import seed_catalog

    store = InMemoryPopularityStore()
    features = InMemoryFeatureStore()
    seed_catalog(workload.dataset, features, store)  # the same snapshot the seeded cloud serves
    return store


# -- the embedded cloud, in its own process -----------------------------------------------------------------


class Cloud:
    """EmbeddedCloud (moto server) in a child process: its request handling does not share this process's GIL
    with the code being measured, as a remote DynamoDB would not."""

    def __init__(self, workdir: Path) -> None:
        self.log = workdir / "moto.log"
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint_url = ""

    def __enter__(self) -> Cloud:
        started = time.perf_counter()
        self._context = child_cloud(PREFIX, self.log)
        self.endpoint_url, self.proc = self._context.__enter__()
        progress(
            f"embedded cloud (moto server, pid {self.proc.pid}) at {self.endpoint_url}, "
            f"started in {time.perf_counter() - started:.1f} s"
        )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is not None:
            self._context.__exit__(None, None, None)
            self.proc = None

    def env(self, cache_dir: Path) -> dict[str, str]:
        """The environment the API reads (ApiSettings) to find this cloud."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RTREC_")}
        env.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "RTREC_PREFIX": PREFIX,
                "RTREC_MODEL_CACHE_DIR": str(cache_dir),
                "RTREC_REQUIRE_API_KEYS": "false",  # keyless loopback load, as `rtrec run` on 127.0.0.1
                "PYTHONPATH": os.pathsep.join([*tree_paths(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
            }
        )
        return env

    def feature_store(self) -> Any:
        from rtrec.adapters.aws.dynamo import DynamoFeatureStore
        from rtrec.resources import ITEM_FEATURES, USER_FEATURES, ResourceNames

        names = ResourceNames(prefix=PREFIX)
        return DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=self.endpoint_url)

    def seed(self, workload: Workload, model_dir: Path, version: str) -> None:
        """ML-1M users and items, the popular-items snapshot, the cold users of the mix, and the model published
        with the production pointer on it."""
        from rtrec.adapters.aws.s3 import S3PopularityStore
        from rtrec.resources import MODELS_BUCKET, ResourceNames
        from rtrec.services.seed import seed_catalog

        bucket = ResourceNames(prefix=PREFIX).bucket(MODELS_BUCKET)
        features = self.feature_store()
        started = time.perf_counter()
        report = seed_catalog(
            workload.dataset, features, S3PopularityStore(bucket, endpoint_url=self.endpoint_url), progress=progress
        )
        features.put_users(workload.cold)
        progress(
            f"seeded {report.users_written:,} users + {len(workload.cold):,} cold users, "
            f"{report.items_written:,} items, {report.popular_items} popular in {time.perf_counter() - started:.1f} s"
        )
        self.promote(version, model_dir)

    def promote(self, version: str, model_dir: Path | None = None) -> None:
        """Publish `model_dir` as `version` (when given) and point production at it."""
        from rtrec.adapters.aws.model_store import S3ModelStore
        from rtrec.domain.promotion import ProductionPointer
        from rtrec.resources import MODELS_BUCKET, ResourceNames

        bucket = ResourceNames(prefix=PREFIX).bucket(MODELS_BUCKET)
        store = S3ModelStore(bucket, endpoint_url=self.endpoint_url)
        prefix = store.publish(version, model_dir) if model_dir is not None else store.version_prefix(version)
        store.write_pointer(
            ProductionPointer(
                model_name="rtrec-two-tower",
                version=version,
                run_id="bench",
                s3_prefix=prefix,
                promoted_at=int(time.time()),
                metrics={},
                gate_reason="bench_serving.py",
            )
        )
        progress(f"model {version} {'published to' if model_dir else 'at'} s3://{bucket}/{prefix} is production")


# -- part 1: in-process -------------------------------------------------------------------------------------


class StageClock:
    """Accumulates time per stage for one request; proxies and wrappers call `timed`."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = defaultdict(int)

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                self.ns[stage] += time.perf_counter_ns() - start

        return wrapper


class _TimedTowers:
    def __init__(self, inner: Any, clock: StageClock) -> None:
        self._inner = inner
        self.user_vectors = clock.timed("user tower (ONNX)", inner.user_vectors)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TimedIndex:
    def __init__(self, inner: Any, clock: StageClock) -> None:
        self._inner = inner
        self.search = clock.timed("ANN search (index.search)", inner.search)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


STAGES = (
    "user tower (ONNX)",
    "ANN search (index.search)",
    "ranking: eligible",
    "ranking: ranking_features",
    "ranking: select_slate",
)
OTHER = "rest (checks, history rows, ids<->rows, exploration pool, popular candidates, result)"


@contextlib.contextmanager
def timed_ranking(clock: StageClock) -> Iterator[None]:
    """Time the ranking functions as the recommend service calls them (its module globals), then restore them."""
    import rtrec.services.recommend as service

    saved = {name: getattr(service, name) for name in ("eligible", "ranking_features", "select_slate")}
    try:
        for name, fn in saved.items():
            setattr(service, name, clock.timed(f"ranking: {name}", fn))
        yield
    finally:
        for name, fn in saved.items():
            setattr(service, name, fn)


@dataclass
class InProcessResult:
    catalog: str
    items: int
    index_kind: str
    compute: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    fetch: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    get_user: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    get_user_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # ms per call: this thread, moto
    stages: dict[str, dict[str, list[int]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    recall: list[list[str]] = field(default_factory=list)
    mismatched: int = 0


def measure_compute(recommender: Any, workload: Workload, result: InProcessResult) -> None:
    for r in workload.warmup:
        recommender.recommend_for(r.user_id, r.profile, K)
    gc.collect()
    for r in workload.requests:
        start = time.perf_counter_ns()
        rec = recommender.recommend_for(r.user_id, r.profile, K)
        elapsed = time.perf_counter_ns() - start
        result.compute[rec.strategy].append(elapsed)
        result.mismatched += rec.strategy != r.expected or len(rec.items) != K


def measure_stages(recommender: Any, model: Any, workload: Workload, result: InProcessResult) -> None:
    from rtrec.services.catalog import ServingModel

    clock = StageClock()
    timed = ServingModel(
        version=model.version,
        towers=_TimedTowers(model.towers, clock),  # type: ignore[arg-type]
        index=_TimedIndex(model.index, clock),
        catalog=model.catalog,
    )  # type: ignore[arg-type]
    saved = recommender._models
    recommender._models = lambda: timed
    try:
        with timed_ranking(clock):
            for r in workload.warmup[:50]:
                recommender.recommend_for(r.user_id, r.profile, K)
            for r in workload.requests:
                clock.ns.clear()
                start = time.perf_counter_ns()
                rec = recommender.recommend_for(r.user_id, r.profile, K)
                total = time.perf_counter_ns() - start
                per = result.stages[rec.strategy]
                for stage in STAGES:
                    per[stage].append(clock.ns.get(stage, 0))
                per[OTHER].append(total - sum(clock.ns.values()))
                per["total (with the timing proxies)"].append(total)
    finally:
        recommender._models = saved


def measure_fetch(recommender: Any, features: Any, workload: Workload, result: InProcessResult, moto_pid: int | None) -> None:
    for r in workload.warmup:
        recommender.recommend(r.user_id, K)
    for r in workload.requests:
        start = time.perf_counter_ns()
        rec = recommender.recommend(r.user_id, K)
        result.fetch[rec.strategy].append(time.perf_counter_ns() - start)
    # The bare read, one strategy's users at a time, to split its cost: this thread's CPU (boto3 request
    # signing, response parsing, the record -> UserProfile mapping) and the moto server process's CPU.
    for strategy in STRATEGIES:
        group = [r for r in workload.requests if r.expected == strategy]
        if not group:
            continue
        cpu, moto = time.thread_time(), tree_cpu_seconds(moto_pid) if moto_pid else 0.0
        for r in group:
            start = time.perf_counter_ns()
            features.get_user(r.user_id)
            result.get_user[strategy].append(time.perf_counter_ns() - start)
        moto = tree_cpu_seconds(moto_pid) - moto if moto_pid else float("nan")
        result.get_user_cpu[strategy] = (1e3 * (time.thread_time() - cpu) / len(group), 1e3 * moto / len(group))


RECALL_EF = (64, 128, 256)


def measure_recall(model: Any, workload: Workload, result: InProcessResult, queries: int = 200) -> None:
    """HNSW against exact search on the same vectors, for real users' queries, at efSearch 64 (the configured
    value), 128 and 256: the serving call (top-200 candidates, the user's history excluded, as `_retrieve` asks)
    with its latency, and a bare top-10 search."""
    catalog = model.catalog
    n = len(catalog)
    vectors = catalog.columns.vectors[:n]
    rng = np.random.default_rng(SEED + 1)
    users = [workload.profiles[i] for i in rng.choice(len(workload.profiles), queries, replace=False)]
    user_vectors = model.towers.user_vectors(users)
    c = 200
    truth = []
    for profile, vector in zip(users, user_vectors):
        scores = vectors @ (vector / np.linalg.norm(vector))
        plain = {catalog.item_id(int(row)) for row in np.argpartition(-scores, K)[:K]}
        scores[catalog.rows(profile.history)] = -np.inf
        top = np.argpartition(-scores, c)[:c]
        top = top[np.argsort(-scores[top])]
        truth.append((plain, [catalog.item_id(int(row)) for row in top]))
    hnsw = getattr(getattr(model.index, "_index", None), "hnsw", None)  # the bare faiss index's HNSW settings
    configured = hnsw.efSearch if hnsw is not None else None
    try:
        for ef in RECALL_EF if hnsw is not None else (None,):
            if hnsw is not None:
                hnsw.efSearch = ef
            r10, r200, plain10, times = [], [], [], []
            for profile, vector, (plain, exact) in zip(users, user_vectors, truth):
                start = time.perf_counter_ns()
                found = [i for i, _ in model.index.search(vector, c, exclude=set(profile.history))]
                times.append(time.perf_counter_ns() - start)
                r10.append(len(set(found[:K]) & set(exact[:K])) / K)
                r200.append(len(set(found) & set(exact)) / c)
                plain10.append(len({i for i, _ in model.index.search(vector, K)} & plain) / K)
            p50, p99, _ = ms(times)
            label = f"{ef}" + (" (configured)" if ef == configured else "") if ef is not None else "-"
            result.recall.append(
                [
                    label,
                    f"{np.mean(r10):.4f}",
                    f"{np.mean(r200):.4f}",
                    f"{np.mean(plain10):.4f}",
                    f3(p50),
                    f3(p99),
                    f"{max(times) / 1e6:.1f}",
                ]
            )
    finally:
        if hnsw is not None:
            hnsw.efSearch = configured


def run_inprocess_catalog(
    label: str, model: Any, workload: Workload, popularity: Any, cloud: Cloud | None, recall: bool
) -> InProcessResult:
    from rtrec.adapters.memory import InMemoryFeatureStore

    result = InProcessResult(label, len(model.catalog), getattr(model.index, "kind", type(model.index).__name__))
    memory = InMemoryFeatureStore()
    recommender = recommender_for(model, memory, popularity)
    progress(f"{label}: compute path, {len(workload.requests):,} requests after {len(workload.warmup)} warm-up")
    measure_compute(recommender, workload, result)
    progress(f"{label}: stage breakdown (second pass, with timing proxies)")
    measure_stages(recommender, model, workload, result)
    if recall:
        progress(f"{label}: HNSW recall against exact search")
        measure_recall(model, workload, result)
    if cloud is not None:
        features = cloud.feature_store()
        progress(f"{label}: with the feature fetch from DynamoDB on moto, then bare get_user")
        measure_fetch(
            recommender_for(model, features, popularity), features, workload, result, cloud.proc.pid if cloud.proc else None
        )
    report_inprocess(result)
    return result


def report_inprocess(res: InProcessResult) -> None:
    title = f"{res.catalog}: {res.items:,} items, FAISS {res.index_kind}"
    rows = []

    def pick(d: dict[str, list[int]], strategy: str) -> list[int]:
        return [v for s in STRATEGIES for v in d.get(s, [])] if strategy == "all" else d.get(strategy, [])

    for strategy in (*STRATEGIES, "all"):
        compute, fetch, get_user = (pick(d, strategy) for d in (res.compute, res.fetch, res.get_user))
        c50, c99, cmean = ms(compute)
        f50, f99, fmean = ms(fetch)
        g50, g99, _ = ms(get_user)
        rows.append([strategy, f"{len(compute):,}", f3(c50), f3(c99), f3(cmean), f3(f50), f3(f99), f3(fmean), f3(g50), f3(g99)])
    show(
        f"Recommend path in-process, {title} (ms)",
        table(
            [
                "strategy",
                "requests",
                "compute p50",
                "compute p99",
                "compute mean",
                "with fetch p50",
                "with fetch p99",
                "with fetch mean",
                "get_user p50",
                "get_user p99",
            ],
            rows,
            "lrrrrrrrrr",
        )
        + ("\n\nStrategy mismatches or short slates: " + str(res.mismatched) if res.mismatched else ""),
    )
    stage_rows = []
    for stage in (*STAGES, OTHER, "total (with the timing proxies)"):
        row = [stage]
        for strategy in STRATEGIES:
            values = res.stages.get(strategy, {}).get(stage, [])
            p50, p99, _ = ms(values)
            row += ["-", "-"] if not values or max(values) == 0 else [f3(p50), f3(p99)]
        stage_rows.append(row)
    if res.get_user_cpu:
        cpu_rows = [
            [s, f3(ms(res.get_user[s])[0]), f3(ms(res.get_user[s])[1]), f3(ms(res.get_user[s])[2]), f3(client), f3(moto)]
            for s, (client, moto) in res.get_user_cpu.items()
        ]
        show(
            f"Feature fetch alone (DynamoFeatureStore.get_user against moto), {title} (ms per call)",
            table(["users", "p50", "p99", "mean", "client CPU (this thread: boto3, parsing)", "moto server CPU"], cpu_rows)
            + "\n\npopular_fallback users are unknown ids (an empty read), cold_user_features users "
            "have demographics only, two_tower users carry up to 200 history ids.",
        )
    show(
        f"Compute path by stage, {title} (ms; p50 and p99 of each stage on its own)",
        table(["stage", *[f"{s} {p}" for s in STRATEGIES for p in ("p50", "p99")]], stage_rows, "lrrrrrr"),
    )
    if res.recall:
        show(
            f"HNSW against exact search, {title}: 200 real users' queries",
            table(
                [
                    "efSearch",
                    "recall@10, serving call",
                    "recall@200, serving call",
                    "recall@10, bare top-10",
                    "serving call p50 (ms)",
                    "serving call p99 (ms)",
                    "serving call max (ms)",
                ],
                res.recall,
            )
            + "\n\nServing call: index.search(user vector, 200, exclude=the user's history), as `_retrieve` asks "
            "(faiss searches with k = 200 + excluded + 8 there, so efSearch is at least that k); bare top-10: "
            "index.search(user vector, 10).",
        )


def report_targets(results: list[InProcessResult]) -> None:
    rows = []
    for res in results:
        target = TARGET_COMPUTE_P99_MS["ML-1M" if res.catalog == "ML-1M" else "synthetic"]
        _, p99, _ = ms([v for s in STRATEGIES for v in res.compute.get(s, [])])
        worst_strategy, worst = max(
            ((s, ms(res.compute[s])[1]) for s in STRATEGIES if res.compute.get(s)), key=lambda pair: pair[1]
        )
        recall = res.recall[0][1] if res.recall else "1 (exact)"
        rows.append(
            [
                f"{res.catalog} ({res.items:,} items)",
                f"<= {target:g}",
                f3(p99),
                "met" if p99 <= target else "not met",
                f"{f3(worst)} ({worst_strategy})",
                "met" if worst <= target else "not met",
                recall,
            ]
        )
    show(
        "Targets: compute path p99 (ms)",
        table(
            [
                "catalog",
                "target p99",
                "p99, all requests",
                "verdict",
                "worst strategy's p99",
                "verdict",
                "recall@10 of its ANN step",
            ],
            rows,
            "lrrlrll",
        ),
    )


def part_inprocess(args: argparse.Namespace, workload: Workload, version: str, cloud: Cloud | None) -> None:
    print("\n## Part 1: the recommend path in-process, one request at a time\n", flush=True)
    try:
        import faiss

        progress(
            f"faiss {faiss.__version__}, OpenMP threads {faiss.omp_get_max_threads()} (the default serving "
            f"uses), onnxruntime sessions with 1 intra-op thread"
        )
    except ImportError:
        pass
    popularity = popularity_store(workload)
    model = real_model(version, args.model_dir, workload)
    results = [run_inprocess_catalog("ML-1M", model, workload, popularity, cloud, recall=False)]
    for noise in args.noise if args.items else ():
        cache = args.index_cache / f"{args.items}-noise-{noise}" if args.index_cache else None
        big = synthetic_model(model, args.items, noise, cache)
        results.append(run_inprocess_catalog(f"synthetic, noise {noise}", big, workload, popularity, cloud, recall=True))
        if big.build_s == big.build_s:
            progress(f"(HNSW build of {args.items:,} vectors took {big.build_s:.0f} s)")
        del big
        gc.collect()
    report_targets(results)


# -- part 2: HTTP under uvicorn ------------------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies_ns: list[int]
    errors: int
    no_model: int
    seconds: float
    loadgen_cpu_s: float


async def _load(port: int, concurrency: int, duration: float, seed: int) -> LoadResult:
    import httpx

    rng = np.random.default_rng(seed)
    latencies: list[int] = []
    errors = no_model = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0) as client:
        loop = asyncio.get_running_loop()
        cpu0, start = time.process_time(), loop.time()
        deadline = start + duration

        async def user() -> None:
            nonlocal errors, no_model
            while loop.time() < deadline:
                user_id = int(rng.integers(1, 6041))
                t0 = time.perf_counter_ns()
                try:
                    response = await client.get(f"/recommend/{user_id}", params={"k": K})
                    body = response.content
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter_ns() - t0)
                if response.status_code != 200:
                    errors += 1
                elif b'"model_version":null' in body:
                    no_model += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
        return LoadResult(latencies, errors, no_model, loop.time() - start, time.process_time() - cpu0)


@dataclass(frozen=True)
class Backend:
    name: str  # "moto" or "memory"
    label: str
    app: list[str]  # uvicorn's app arguments


BACKENDS = {
    "moto": Backend("moto", "functions.api.handler:app, features in DynamoDB on moto", ["functions.api.handler:app"]),
    "memory": Backend(
        "memory",
        "the same app with the features in memory (no emulator)",
        ["bench_serving:memory_app", "--factory", "--app-dir", str(Path(__file__).resolve().parent)],
    ),
}


def memory_app() -> Any:
    """uvicorn factory for the in-memory HTTP variant: the API app (create_app) over the ML-1M feature store and
    popularity snapshot in memory, with the same model, ranking and retrieval, so no emulator sits behind a request."""
    from functions.api.app import Services, create_app
    from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
    from rtrec.adapters.model.onnx_towers import load_serving_model
    from rtrec.data.movielens import load_movielens
    from rtrec.services.seed import seed_catalog

    features, popularity = InMemoryFeatureStore(), InMemoryPopularityStore()
    seed_catalog(load_movielens("ml-1m", Path(os.environ["BENCH_DATA_DIR"])), features, popularity)
    model = load_serving_model(os.environ["BENCH_MODEL_VERSION"], Path(os.environ["BENCH_MODEL_DIR"]), features)
    return create_app(Services(recommender_for(model, features, popularity)))


# `uvicorn --workers N` (N > 1) binds the listening socket itself with proto 0, and asyncio then leaves
# TCP_NODELAY off on accepted connections (Kludex/uvicorn#3149): each keep-alive response waits for the
# client's delayed ACK (~40 ms on Linux). "N+nodelay" runs uvicorn through this launcher, which re-wraps
# the bound socket with IPPROTO_TCP, to show what the workers give without that artefact.
UVICORN_NODELAY = """
import socket, sys
import uvicorn.config
from uvicorn.main import main

_bind = uvicorn.config.Config.bind_socket

def bind_socket(self):
    sock = _bind(self)
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.proto == 0:
        return socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    return sock

uvicorn.config.Config.bind_socket = bind_socket
sys.argv[0] = "uvicorn"
main()
"""


def parse_workers(spec: str) -> tuple[int, bool]:
    """ "2" -> (2, False); "2+nodelay" -> (2, True)."""
    count, _, flag = spec.partition("+")
    if not count.isdigit() or int(count) < 1 or flag not in ("", "nodelay"):
        raise ValueError(f"worker setting {spec!r}: expected N or N+nodelay")
    return int(count), flag == "nodelay"


class Uvicorn:
    def __init__(
        self, cloud: Cloud, backend: Backend, workers: str, workdir: Path, args: argparse.Namespace, version: str
    ) -> None:
        from rtrec_local.cloud import free_port

        self.workers, self.nodelay = parse_workers(workers)
        self.backend = backend
        self.port = free_port()
        self.log = workdir / f"uvicorn-{backend.name}-{workers}.log"
        self.cache = workdir / f"models-uvicorn-{backend.name}-{workers}"
        self.env = cloud.env(self.cache)
        self.env.update(
            {"BENCH_DATA_DIR": str(args.data_dir), "BENCH_MODEL_DIR": str(args.model_dir), "BENCH_MODEL_VERSION": version}
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.incidents: list[str] = []

    def __enter__(self) -> Uvicorn:
        # Workers sharing RTREC_MODEL_CACHE_DIR can trip over each other's model download at start (see
        # RESULTS.md): a worker then dies (uvicorn starts another) or serves without a model until its next
        # poll of the production pointer (RTREC_MODEL_POLL_SECONDS, 30 s). Wait until every /health probe
        # sees the model; start again if that takes longer than two polls.
        for attempt in range(1, 4):
            self._start()
            started = time.monotonic()
            while time.monotonic() - started < 65:
                probes = [self._healthy() for _ in range(10 * self.workers)]
                if all(probes):
                    break
                time.sleep(1.0)
            log = self.log.read_text()
            errors = [line for line in log.splitlines() if line.split(":")[0].endswith(("Error", "Exception"))]
            waited = time.monotonic() - started
            note = f"; {len(errors)} worker crash(es) in its log, the last: {errors[-1][:240]}" if errors else ""
            if all(probes):
                if waited > 2 or errors:
                    progress(f"every worker serves the model {waited:.0f} s after start-up{note}")
                    self.incidents.append(f"{waited:.0f} s until every worker served the model{note}")
                return self
            progress(
                f"attempt {attempt}: {probes.count(None)} of {len(probes)} /health probes still without a "
                f"model after {waited:.0f} s{note}; restarting uvicorn"
            )
            self.incidents.append(f"restarted: a worker without a model after {waited:.0f} s{note}")
            self.__exit__()
            shutil.rmtree(self.cache, ignore_errors=True)
        raise RuntimeError(f"uvicorn with {self.workers} workers never served the model from every worker")

    def _start(self) -> None:
        # log level info, not warning: each worker's "Application startup complete" tells when every worker
        # serves (the access log stays off); the API's impression lines (stdout) go to /dev/null.
        launcher = ["-c", UVICORN_NODELAY] if self.nodelay else ["-m", "uvicorn"]
        command = [
            sys.executable,
            *launcher,
            *self.backend.app,
            "--workers",
            str(self.workers),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "info",
            "--no-access-log",
        ]
        started = time.perf_counter()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.log.read_text().count("Application startup complete") >= self.workers and self._healthy():
                progress(
                    f"uvicorn ({self.backend.name}), {self.workers} worker(s){' +nodelay' * self.nodelay}, "
                    f"port {self.port}: every worker "
                    f"started, model "
                    f"{self._healthy()}, after {time.perf_counter() - started:.1f} s"
                )
                return
            time.sleep(0.25)
        raise RuntimeError(f"uvicorn did not become healthy within 120 s:\n{self.log.read_text()[-3000:]}")

    def _healthy(self) -> str | None:
        import httpx

        try:
            response = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json().get("model_version") if response.status_code == 200 else None

    def __exit__(self, *exc_info: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def part_http(args: argparse.Namespace, cloud: Cloud, workdir: Path, version: str) -> None:
    print("\n## Part 2: HTTP under uvicorn, loopback load generator\n", flush=True)
    progress(
        f"load generator: asyncio + httpx in this process (pid {os.getpid()}), moto server pid "
        f"{cloud.proc.pid if cloud.proc else '?'}, uvicorn and its workers: all on the same "
        f"{os.cpu_count()} cores"
    )
    header = [
        "features",
        "workers",
        "concurrency",
        "requests",
        "req/s",
        "p50 (ms)",
        "p99 (ms)",
        "mean (ms)",
        "errors",
        "served without model",
        "cores busy: API / moto / load gen",
        "CPU ms per request: API / moto / load gen",
    ]
    rows, throughput, incidents = [], {}, []
    for backend in (BACKENDS[name] for name in args.http_backends):
        for workers in args.workers:
            with Uvicorn(cloud, backend, workers, workdir, args, version) as server:
                assert server.proc is not None
                assert cloud.proc is not None
                incidents += [f"{backend.name}, {workers} worker(s): {x}" for x in server.incidents]
                asyncio.run(_load(server.port, 8, args.warmup_s, seed=0))  # warm-up: every worker, every code path
                for concurrency in args.concurrency:
                    progress(f"{backend.name}, {workers} worker(s), concurrency {concurrency}: {args.duration:.0f} s")
                    api0, moto0 = tree_cpu_seconds(server.proc.pid), tree_cpu_seconds(cloud.proc.pid)
                    res = asyncio.run(_load(server.port, concurrency, args.duration, seed=server.workers * 100 + concurrency))
                    api_cpu = tree_cpu_seconds(server.proc.pid) - api0
                    moto_cpu = tree_cpu_seconds(cloud.proc.pid) - moto0
                    p50, p99, mean = ms(res.latencies_ns)
                    rps = len(res.latencies_ns) / res.seconds
                    throughput[(backend.name, workers, concurrency)] = rps
                    done = max(len(res.latencies_ns), 1)
                    rows.append(
                        [
                            backend.name,
                            workers,
                            concurrency,
                            f"{len(res.latencies_ns):,}",
                            f"{rps:,.0f}",
                            f"{p50:.2f}",
                            f"{p99:.2f}",
                            f"{mean:.2f}",
                            res.errors,
                            res.no_model,
                            f"{api_cpu / res.seconds:.2f} / {moto_cpu / res.seconds:.2f} / "
                            f"{res.loadgen_cpu_s / res.seconds:.2f}",
                            f"{1e3 * api_cpu / done:.1f} / {1e3 * moto_cpu / done:.1f} / {1e3 * res.loadgen_cpu_s / done:.1f}",
                        ]
                    )
                    print(f"      {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, errors {res.errors}", flush=True)
    notes = "; ".join(f"{b.name}: {b.label}" for b in BACKENDS.values() if b.name in args.http_backends)
    show(
        "GET /recommend/{user}?k=10 over HTTP (uvicorn, loopback)",
        table(header, rows, "lrrrrrrrrrll")
        + f"\n\n{notes}. {args.duration:.0f} s per row after a {args.warmup_s:.0f} s warm-up; random users 1..6040 "
        "(all known: two_tower). The load generator and the moto server run on the same cores as uvicorn, so "
        "compare the rows with each other, not with a deployment." + "".join(f"\n\nStart-up: {x}" for x in incidents),
    )
    if "1" in args.workers and len(args.workers) > 1:
        others = [w for w in args.workers if w != "1"]
        show(
            "Throughput against 1 worker (same features, same concurrency)",
            table(
                ["features", "concurrency", *[f"{w} / 1" for w in others]],
                [
                    [b, c, *[f"{throughput[(b, w, c)] / throughput[(b, '1', c)]:.2f}" for w in others]]
                    for b in args.http_backends
                    for c in args.concurrency
                ],
                "lr" + "r" * len(others),
            ),
        )


# -- part 3: Lambda cold start -------------------------------------------------------------------------------

COLDSTART_CHILD = r"""
import time
T0, WALL0 = time.perf_counter(), time.time()
import json, sys
sys.path[:0] = sys.argv[2:]  # the checkout's import roots (benchkit.tree_paths)
marks = {"interpreter_started_at": WALL0}

def lap(name, start):
    marks[name] = time.perf_counter() - start

t = time.perf_counter()
import fastapi, pydantic, aws_lambda_powertools
lap("import fastapi, pydantic, powertools", t)
t = time.perf_counter()
import functions.api.app
lap("import functions.api.app (rest: rtrec services, settings)", t)
t = time.perf_counter()
import rtrec.adapters.aws.dynamo, rtrec.adapters.aws.model_store, rtrec.adapters.aws.s3
lap("import boto3 + AWS adapters", t)
t = time.perf_counter()
import rtrec.adapters.model.onnx_towers
lap("import onnxruntime (onnx_towers)", t)
t = time.perf_counter()
import rtrec.adapters.search.faiss_index
lap("import faiss (faiss_index)", t)
t = time.perf_counter()
import mangum, rtrec.services.model_watcher
lap("import mangum, model_watcher", t)
marks["imports"] = time.perf_counter() - T0

# Timing wrappers around what the handler module runs at import (attributes looked up at call time).
from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.model_store import S3ModelStore
import rtrec.adapters.model.onnx_towers as onnx_towers

def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            marks[name] = marks.get(name, 0.0) + time.perf_counter() - start
    return wrapper

import rtrec.adapters.aws.dynamo, rtrec.adapters.aws.model_store, rtrec.adapters.aws.s3
from rtrec.services.catalog import CatalogService
functions.api.app.build_services = timed("build_services", functions.api.app.build_services)
for module in (rtrec.adapters.aws.dynamo, rtrec.adapters.aws.model_store, rtrec.adapters.aws.s3):
    module.aws_client = timed("boto3 clients", module.aws_client)
S3ModelStore.read_pointer = timed("production pointer read (S3)", S3ModelStore.read_pointer)
CatalogService.prepare = timed("catalog additions applied (S3)", CatalogService.prepare)
S3ModelStore.download = timed("model download (S3)", S3ModelStore.download)
onnx_towers.load_serving_model = timed("model load (towers, index, catalog)", onnx_towers.load_serving_model)
DynamoFeatureStore.get_items = timed("item features read (DynamoDB)", DynamoFeatureStore.get_items)

t = time.perf_counter()
import functions.api.handler as handler
lap("import functions.api.handler", t)

class Context:
    function_name = "rtrec-api"
    function_version = "$LATEST"
    aws_request_id = "bench-cold-start"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-api"
    log_group_name = "/aws/lambda/rtrec-api"
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 30000

event = json.loads(open(sys.argv[1]).read())
t = time.perf_counter()
response = handler.handler(event, Context())
lap("first handler call", t)
marks["status"] = response["statusCode"]
marks["strategy"] = json.loads(response["body"]).get("strategy") if response["statusCode"] == 200 else response["body"]
t = time.perf_counter()
handler.handler(event, Context())
lap("second handler call", t)
marks["total"] = marks["imports"] + marks["import functions.api.handler"] + marks["first handler call"]
print("BENCH_RESULT " + json.dumps(marks), flush=True)
"""

COLD_ROWS = [
    ("python start", "python interpreter start"),
    ("import fastapi, pydantic, powertools", None),
    ("import functions.api.app (rest: rtrec services, settings)", None),
    ("import boto3 + AWS adapters", None),
    ("import onnxruntime (onnx_towers)", None),
    ("import faiss (faiss_index)", None),
    ("import mangum, model_watcher", None),
    ("imports", "(a) imports, all"),
    ("import functions.api.handler", "(b) import functions.api.handler (after (a))"),
    ("build_services", "    of which build_services"),
    ("boto3 clients", "        of which boto3 clients (4)"),
    ("production pointer read (S3)", "        of which production pointer read (S3)"),
    ("model download (S3)", "        of which model download (S3)"),
    ("model load (towers, index, catalog)", "        of which model load (towers, index, catalog)"),
    ("item features read (DynamoDB)", "            of which item features read (DynamoDB)"),
    ("catalog additions applied (S3)", "        of which catalog additions checked (S3)"),
    ("first handler call", "(c) first handler call (Mangum, GET /recommend/1?k=5)"),
    ("total", "(a) + (b) + (c)"),
    ("total with start", "interpreter start + (a) + (b) + (c)"),
    ("second handler call", "second handler call (warm), for comparison"),
]


def coldstart_runs(args: argparse.Namespace, cloud: Cloud, workdir: Path, tag: str) -> list[dict[str, Any]]:
    event = ROOT / "tests" / "events" / "api_recommend_user_1.json"
    runs: list[dict[str, Any]] = []
    for n in range(args.repeats):
        cache = workdir / f"models-cold-{tag}-{n}"  # empty: every run downloads the model, as a new instance does
        spawned = time.time()
        done = subprocess.run(
            [sys.executable, "-c", COLDSTART_CHILD, str(event), *tree_paths(ROOT)],
            cwd=ROOT,
            env=cloud.env(cache),
            capture_output=True,
            text=True,
            timeout=300,
        )
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"cold-start run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        marks = json.loads(line.removeprefix("BENCH_RESULT "))
        marks["python start"] = marks["interpreter_started_at"] - spawned
        marks["total with start"] = marks["total"] + marks["python start"]
        runs.append(marks)
        progress(f"{tag}, run {n + 1}: total {marks['total with start']:.3f} s (status {marks['status']}, {marks['strategy']})")
    return runs


def with_item_catalog(model_dir: Path, workload: Workload, target: Path) -> Path | None:
    """A copy of `model_dir` with item_catalog.npz written as `make train` writes it now (None when the
    folder's items are not ML-1M's in item order, so the file cannot be made to match)."""
    from rtrec.domain.catalog import catalog_columns
    from rtrec.domain.encoder import FeatureEncoder

    items = workload.dataset.catalog()
    if json.loads((model_dir / "item_ids.json").read_text()) != [i.item_id for i in items]:
        return None
    shutil.copytree(model_dir, target)
    genres = FeatureEncoder.from_json((model_dir / "encoder.json").read_text()).genres
    np.savez(target / "item_catalog.npz", **catalog_columns(items, genres))
    return target


def part_coldstart(args: argparse.Namespace, cloud: Cloud, workdir: Path, workload: Workload, version: str) -> None:
    print("\n## Part 3: Lambda cold start (a fresh interpreter per run)\n", flush=True)
    variants: list[tuple[str, list[dict[str, Any]]]] = []
    has_catalog = (args.model_dir / "item_catalog.npz").is_file()
    label = "model as published" + ("" if has_catalog else " (no item_catalog.npz: item features read from DynamoDB)")
    variants.append((label, coldstart_runs(args, cloud, workdir, "published")))
    if not has_catalog:
        copy = with_item_catalog(args.model_dir, workload, workdir / "model-with-catalog")
        if copy is None:
            progress("the model's items are not ML-1M's in order: no item_catalog.npz variant")
        else:
            cloud.promote(f"{version}-catalog", copy)
            try:
                variants.append(
                    (
                        "same model + item_catalog.npz (as `make train` writes it now)",
                        coldstart_runs(args, cloud, workdir, "with-catalog"),
                    )
                )
            finally:
                cloud.promote(version)
    target_rows = []
    for label, runs in variants:
        rows = []
        for key, name in COLD_ROWS:
            values = [r.get(key, 0.0) for r in runs]
            rows.append(
                [name or key, f"{statistics.median(values):.3f}", f"{max(values):.3f}", " ".join(f"{v:.3f}" for v in values)]
            )
        show(
            f"Lambda cold start (s), {label}; {args.repeats} fresh interpreters, the model downloaded from the "
            f"embedded cloud each time",
            table(["phase", "median", "max", "each run"], rows, "lrrl"),
        )
        totals = [r["total with start"] for r in runs]
        median = statistics.median(totals)
        target_rows.append(
            [
                label,
                f"<= {TARGET_COLD_START_S:g} s",
                f"{median:.3f}",
                f"{max(totals):.3f}",
                "met" if median <= TARGET_COLD_START_S else "not met",
            ]
        )
    show(
        "Target: cold start (interpreter start + imports + handler import + first call)",
        table(["model folder", "target", "median (s)", "max (s)", "verdict (median)"], target_rows, "llrrl"),
    )


# -- main ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["inprocess", "http", "coldstart", "all"], default="all")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="the promoted model folder")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "rtrec", help="ML-1M wheel cache")
    parser.add_argument("--requests", type=int, default=2_000, help="timed in-process requests per catalog")
    parser.add_argument("--items", type=int, default=1_000_000, help="synthetic catalog size (0: skip it)")
    parser.add_argument(
        "--noise",
        default="0.4,1.0",
        help="comma-separated norms of the Gaussian noise added to a real item vector for a synthetic "
        "item, one synthetic catalog each (0.4: cosine about 0.93 to it, the median nearest-"
        "neighbour cosine of the real items; 1.0: about 0.7, looser clusters)",
    )
    parser.add_argument(
        "--index-cache",
        type=Path,
        default=None,
        help="folder to save the synthetic indexes in, and to load them from when they match",
    )
    parser.add_argument(
        "--workers",
        default="1,2,2+nodelay",
        help="uvicorn worker settings: N, or N+nodelay (TCP_NODELAY restored, see UVICORN_NODELAY)",
    )
    parser.add_argument("--concurrency", default="1,8,32", help="load generator concurrency levels")
    parser.add_argument(
        "--http-backends",
        default="moto,memory",
        help="moto: the Lambda app against DynamoDB on moto; memory: the same app, features in memory",
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per HTTP load point")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="HTTP warm-up seconds per server")
    parser.add_argument("--repeats", type=int, default=5, help="cold-start runs")
    args = parser.parse_args(argv)
    args.workers = [x for x in args.workers.split(",") if x]
    for spec in args.workers:
        try:
            parse_workers(spec)
        except ValueError as exc:
            parser.error(str(exc))
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    args.http_backends = [x for x in args.http_backends.split(",") if x]
    args.noise = [float(x) for x in args.noise.split(",") if x]
    unknown = set(args.http_backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown --http-backends {sorted(unknown)}; choose from {sorted(BACKENDS)}")
    args.model_dir = args.model_dir.resolve()
    args.data_dir = args.data_dir.resolve()
    return args


def run(args: argparse.Namespace, argv: list[str]) -> None:
    version = check_model_dir(args.model_dir)
    print(
        f"# Serving benchmark\n\ncommand: {shlex.join([Path(sys.executable).name, *argv])}\n"
        f"machine: {machine(with_load=True)}\ndate: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n"
        f"model: {args.model_dir} (version {version})",
        flush=True,
    )
    parts = {"inprocess", "http", "coldstart"} if args.part == "all" else {args.part}
    workload = load_workload(args.data_dir, args.requests)
    with tempfile.TemporaryDirectory(prefix="rtrec-bench-") as tmp, Cloud(Path(tmp)) as cloud:
        cloud.seed(workload, args.model_dir, version)
        if "inprocess" in parts:
            part_inprocess(args, workload, version, cloud)
        gc.collect()
        if "http" in parts:
            part_http(args, cloud, Path(tmp), version)
        if "coldstart" in parts:
            part_coldstart(args, cloud, Path(tmp), workload, version)
    print(f"\nload average at the end: {load_average()}", flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), [str(Path(__file__).relative_to(ROOT)), *argv])


def test_serving_benchmark_smoke() -> None:
    """`pytest tests/bench/bench_serving.py -s`: every part at a small size (HNSW at 25,000 items); no timing checks."""
    argv = [
        "--requests",
        "200",
        "--items",
        "25000",
        "--noise",
        "0.4",
        "--workers",
        "1,2+nodelay",
        "--concurrency",
        "4",
        "--duration",
        "2",
        "--warmup-s",
        "1",
        "--repeats",
        "1",
    ]
    run(parse_args(argv), argv)


if __name__ == "__main__":
    main()
