"""FaissVectorIndex: the embedded VectorIndex, FAISS inner product over L2-normalised float32 vectors.

Small catalogs get an exact `IndexFlatIP` (a scan of a few thousand vectors is fast and has perfect
recall); from `exact_below` items on, an `IndexHNSWFlat` with the same HnswParams that the OpenSearch
adapter puts in its mapping. The engine switches on the upsert that crosses the threshold.

Replacement. HNSW cannot remove a vector, so both kinds use one scheme: rows are append-only, and an
upsert of a known item appends its new vector and turns the old row into a tombstone that searches
skip (they over-fetch to make up for it). When tombstones would exceed a quarter of the live items, the
upsert instead rebuilds the index from the live vectors plus the new ones, so a retraining that
re-upserts every item costs one build, not a doubled graph.

Concurrency. Searches run concurrently under a shared lock (FAISS searches on an index nobody is
changing are thread-safe and release the GIL); an in-place add holds the exclusive lock. Upserts are
serialised among themselves, and a rebuild is built beside the live index while searches go on, then
swapped in under the exclusive lock. A large in-place add (new items only, below the rebuild trigger)
blocks searches while it runs.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from rtrec.adapters.search import (
    HnswParams,
    as_id_set,
    check_item_ids,
    check_k,
    last_wins,
    unit_query,
    unit_rows,
)
from rtrec.errors import DependencyError, InvalidInputError, NotFoundError

Kind = Literal["flat", "hnsw"]

INDEX_FILE = "index.faiss"
META_FILE = "index.json"
_FORMAT = "rtrec.faiss_vector_index"
_FORMAT_VERSION = 1

_MAX_TOMBSTONE_RATIO = 0.25
_PROGRESS_ABOVE = 50_000
_PROGRESS_CHUNK = 25_000


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers so it is never starved.

    Plain acquire/release methods for the read side: it is on every search, where a generator-based
    context manager costs more than the lock itself."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        with self._cond:
            while self._writing or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def _new_faiss_index(kind: Kind, dimension: int, params: HnswParams) -> Any:
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dimension, params.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
        index.hnsw.efSearch = params.ef_search
        return index
    return faiss.IndexFlatIP(dimension)


class FaissVectorIndex:
    """VectorIndex over FAISS: exact below `exact_below` items, HNSW from there on; see the module docstring."""

    def __init__(
        self,
        dimension: int,
        *,
        params: HnswParams | None = None,
        exact_below: int = 20_000,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if isinstance(exact_below, bool) or not isinstance(exact_below, int) or exact_below < 0:
            raise ValueError(f"exact_below must be a non-negative integer, got {exact_below!r}")
        self._dimension = dimension
        self._params = params if params is not None else HnswParams()
        self._exact_below = exact_below
        self._progress = progress
        self._rw = _ReadWriteLock()
        self._upsert_lock = threading.Lock()
        # The state below changes only under self._rw.write().
        self._kind: Kind = "flat" if exact_below > 0 else "hnsw"
        self._index: Any = _new_faiss_index(self._kind, dimension, self._params)
        self._item_of: list[str | None] = []  # faiss row -> item id, None for a tombstone
        self._row_of: dict[str, int] = {}  # live item id -> faiss row
        self._dead = 0

    # -- the VectorIndex port -------------------------------------------------------------------------

    @property
    def dimension(self) -> int:
        return self._dimension

    def __len__(self) -> int:
        return len(self._row_of)

    def upsert(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace vectors (normalised here); every item is searchable when this returns."""
        matrix = unit_rows(vectors, self._dimension)
        ids, matrix = last_wins(check_item_ids(item_ids, len(matrix)), matrix)
        if not ids:
            return
        with self._upsert_lock:
            replaced = sum(1 for item_id in ids if item_id in self._row_of)
            live_after = len(self._row_of) + len(ids) - replaced
            dead_after = self._dead + replaced
            kind: Kind = "hnsw" if live_after >= self._exact_below else "flat"
            if kind != self._kind or dead_after > _MAX_TOMBSTONE_RATIO * live_after:
                self._rebuild(kind, ids, matrix)
            else:
                self._add_in_place(ids, matrix)

    def search(self, query: np.ndarray, k: int, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """The k items with the highest inner product (cosine) with `query`, best first, none from `exclude`."""
        vector = unit_query(query, self._dimension)[None, :]
        k = check_k(k)
        excluded = as_id_set(exclude)
        self._rw.acquire_read()
        try:
            return self._search(vector, k, excluded)
        finally:
            self._rw.release_read()

    def _search(self, vector: np.ndarray, k: int, excluded: set[str] | frozenset[str]) -> list[tuple[str, float]]:
        live = len(self._row_of)
        excluded_live = sum(1 for item_id in excluded if item_id in self._row_of)
        want = min(k, live - excluded_live)
        if want <= 0:
            return []
        total = self._index.ntotal
        # Over-fetch for the excluded items and, in proportion, for tombstones; widen if that was short.
        fetch = min(total, math.ceil((want + excluded_live) * (1 + self._dead / live)) + 8)
        while True:
            scores, rows = self._index.search(vector, fetch)
            found: list[tuple[str, float]] = []
            for score, row in zip(scores[0].tolist(), rows[0].tolist()):
                item_id = self._item_of[row] if row >= 0 else None
                if item_id is not None and item_id not in excluded:
                    found.append((item_id, score))
                    if len(found) == want:
                        return found
            # -1 rows: HNSW found fewer than `fetch` neighbours (its graph walk is exhausted); asking for more
            # would only repeat ever larger searches (up to the whole index), so return what there is.
            if fetch >= total or rows[0].min() < 0:
                return found
            fetch = min(total, fetch * 2)

    # -- introspection --------------------------------------------------------------------------------

    @property
    def params(self) -> HnswParams:
        return self._params

    @property
    def exact_below(self) -> int:
        return self._exact_below

    @property
    def kind(self) -> Kind:
        """The engine in use: "flat" (exact IndexFlatIP) or "hnsw" (IndexHNSWFlat)."""
        return self._kind

    @property
    def tombstones(self) -> int:
        """Replaced vectors still in the FAISS index, skipped by searches until the next rebuild."""
        return self._dead

    # -- persistence ----------------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to folder `path`: `index.faiss` (faiss.write_index) and `index.json` (ids, params)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".{uuid.uuid4().hex}.tmp"
        index_tmp, meta_tmp = folder / (INDEX_FILE + suffix), folder / (META_FILE + suffix)
        with self._rw.read():
            meta = {
                "format": _FORMAT,
                "version": _FORMAT_VERSION,
                "dimension": self._dimension,
                "kind": self._kind,
                "params": self._params.as_dict(),
                "exact_below": self._exact_below,
                "ntotal": int(self._index.ntotal),
                "rows": self._item_of,
            }
            try:
                faiss.write_index(self._index, str(index_tmp))
            except RuntimeError as exc:
                index_tmp.unlink(missing_ok=True)
                raise DependencyError(f"writing the faiss index to {index_tmp} failed: {exc}") from exc
        meta_tmp.write_text(json.dumps(meta))
        # The index file first: a reader that sees the new sidecar also sees the new index.
        os.replace(index_tmp, folder / INDEX_FILE)
        os.replace(meta_tmp, folder / META_FILE)
        return folder

    @classmethod
    def load(cls, path: str | Path, *, progress: Callable[[str], None] | None = None) -> FaissVectorIndex:
        """Read an index that `save` wrote; NotFoundError when it is missing, InvalidInputError when inconsistent."""
        folder = Path(path)
        index_file, meta_file = folder / INDEX_FILE, folder / META_FILE
        if not index_file.is_file() or not meta_file.is_file():
            raise NotFoundError(f"no saved faiss index at {folder} (expected {INDEX_FILE} and {META_FILE})")
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("format") != _FORMAT or meta.get("version") != _FORMAT_VERSION:
                raise ValueError(f"unknown format {meta.get('format')!r} version {meta.get('version')!r}")
            params = HnswParams(**meta["params"])
            instance = cls(int(meta["dimension"]), params=params, exact_below=int(meta["exact_below"]), progress=progress)
            kind: Kind = meta["kind"]
            rows: list[str | None] = list(meta["rows"])
            index = faiss.read_index(str(index_file))
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InvalidInputError(f"the saved faiss index at {folder} cannot be read: {exc}") from exc
        expected_type = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexFlatIP
        problems = []
        if not isinstance(index, expected_type):
            problems.append(f"index is {type(index).__name__}, the sidecar says {kind}")
        if index.d != instance.dimension:
            problems.append(f"index dimension {index.d} != sidecar dimension {instance.dimension}")
        if index.ntotal != len(rows) or meta.get("ntotal") != len(rows):
            problems.append(f"index holds {index.ntotal} vectors, the sidecar names {len(rows)} rows")
        if problems:
            raise InvalidInputError(f"the saved faiss index at {folder} is inconsistent: {'; '.join(problems)}")
        if isinstance(index, faiss.IndexHNSWFlat):  # kind == "hnsw": checked above
            index.hnsw.efSearch = params.ef_search
        instance._kind = kind
        instance._index = index
        instance._item_of = rows
        instance._row_of = {item_id: row for row, item_id in enumerate(rows) if item_id is not None}
        instance._dead = len(rows) - len(instance._row_of)
        return instance

    # -- internals ------------------------------------------------------------------------------------

    def _add_in_place(self, ids: list[str], matrix: np.ndarray) -> None:
        with self._rw.write():
            first = self._index.ntotal
            try:
                self._add(self._index, matrix)
            finally:
                # Rows a failed add left behind stay as tombstones: the mapping always matches the index.
                added = self._index.ntotal - first
                for offset, item_id in enumerate(ids[:added]):
                    old = self._row_of.get(item_id)
                    if old is not None:
                        self._item_of[old] = None
                        self._dead += 1
                    self._row_of[item_id] = first + offset
                    self._item_of.append(item_id)

    def _rebuild(self, kind: Kind, ids: list[str], matrix: np.ndarray) -> None:
        # Runs beside concurrent searches: only upserts change the index, and they are serialised.
        incoming = set(ids)
        keep = [(item_id, row) for item_id, row in self._row_of.items() if item_id not in incoming]
        if keep:
            stored = self._index.reconstruct_n(0, self._index.ntotal)
            kept = stored[[row for _, row in keep]]
            matrix = np.ascontiguousarray(np.vstack([kept, matrix]), dtype=np.float32)
            ids = [item_id for item_id, _ in keep] + ids
        index = _new_faiss_index(kind, self._dimension, self._params)
        self._add(index, matrix)
        with self._rw.write():
            self._kind, self._index = kind, index
            self._item_of = list(ids)
            self._row_of = {item_id: row for row, item_id in enumerate(ids)}
            self._dead = 0

    def _add(self, index: Any, matrix: np.ndarray) -> None:
        total = len(matrix)
        if self._progress is None or total <= _PROGRESS_ABOVE:
            index.add(matrix)
            return
        start = time.perf_counter()
        for begin in range(0, total, _PROGRESS_CHUNK):
            index.add(matrix[begin : begin + _PROGRESS_CHUNK])
            done = min(total, begin + _PROGRESS_CHUNK)
            elapsed = max(time.perf_counter() - start, 1e-9)
            rate = done / elapsed
            self._progress(
                f"faiss {self._kind_name(index)}: added {done:,}/{total:,} vectors, "
                f"{rate:,.0f}/s, ETA {(total - done) / rate:,.0f} s"
            )

    @staticmethod
    def _kind_name(index: Any) -> str:
        return "hnsw" if isinstance(index, faiss.IndexHNSWFlat) else "flat"
