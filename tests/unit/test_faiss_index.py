from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from rtrec.adapters.search import HnswParams
from rtrec.adapters.search.faiss_index import FaissVectorIndex
from rtrec.errors import InvalidInputError, NotFoundError


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ids(n: int, start: int = 0) -> list[str]:
    return [f"i{i}" for i in range(start, start + n)]


def exact_top_sets(vectors: np.ndarray, queries: np.ndarray, k: int) -> list[set[str]]:
    """The ids of the true k best items for each query (brute force)."""
    best = np.argpartition(-(queries @ vectors.T), k, axis=1)[:, :k]
    return [{f"i{i}" for i in row} for row in best]


@pytest.fixture(scope="module")
def big():
    """20k random unit vectors (dimension 32) in the default index: at the default threshold, so HNSW."""
    rng = np.random.default_rng(7)
    vectors = unit(rng, 20_000, 32)
    index = FaissVectorIndex(32)
    index.upsert(ids(len(vectors)), vectors)
    return index, vectors, unit(rng, 200, 32)


# Both engines, forced by the threshold: the replacement and exclusion rules must hold for each.
KINDS = pytest.mark.parametrize("exact_below", [10**9, 0], ids=["flat", "hnsw"])


def test_engine_follows_the_catalog_size_threshold():
    rng = np.random.default_rng(0)
    vectors = unit(rng, 150, 8)
    index = FaissVectorIndex(8, exact_below=100)
    index.upsert(ids(99), vectors[:99])
    assert index.kind == "flat"
    index.upsert(ids(1, start=99), vectors[99:100])
    assert index.kind == "hnsw"
    assert len(index) == 100
    index.upsert(ids(50, start=100), vectors[100:])
    assert index.kind == "hnsw"
    assert len(index) == 150
    # Every item survived the switch and is still its own nearest neighbour.
    assert all(index.search(vectors[i], 1)[0][0] == f"i{i}" for i in range(150))


def test_hnsw_recall_at_10_against_exact_search(big):
    index, vectors, queries = big
    assert index.kind == "hnsw"
    assert index.params == HnswParams(m=32, ef_construction=200, ef_search=64)
    hits = 0
    for query, truth in zip(queries, exact_top_sets(vectors, queries, 10)):
        hits += len(truth & {item_id for item_id, _ in index.search(query, 10)})
    assert hits / (10 * len(queries)) >= 0.95


def test_scores_are_inner_products_best_first(big):
    index, vectors, queries = big
    results = index.search(queries[0], 10)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    for item_id, score in results:
        assert score == pytest.approx(float(vectors[int(item_id[1:])] @ queries[0]), abs=1e-5)


@KINDS
def test_upsert_of_a_known_item_replaces_its_vector(exact_below):
    rng = np.random.default_rng(1)
    vectors = unit(rng, 500, 16)
    index = FaissVectorIndex(16, exact_below=exact_below)
    index.upsert(ids(500), vectors)
    old = vectors[3]
    assert index.search(old, 1)[0][0] == "i3"

    index.upsert(["i3"], -old[None, :])  # the opposite direction: nowhere near the old vector

    assert len(index) == 500
    assert index.tombstones == 1
    near_old = [item_id for item_id, _ in index.search(old, 20)]
    assert "i3" not in near_old
    assert len(set(near_old)) == 20
    assert index.search(-old, 1)[0] == ("i3", pytest.approx(1.0, abs=1e-5))


@KINDS
def test_replacing_many_items_rebuilds_instead_of_piling_up_tombstones(exact_below):
    rng = np.random.default_rng(2)
    vectors = unit(rng, 400, 16)
    index = FaissVectorIndex(16, exact_below=exact_below)
    index.upsert(ids(400), vectors)
    fresh = unit(rng, 400, 16)
    index.upsert(ids(400), fresh)  # a retraining re-upserts every item
    assert len(index) == 400
    assert index.tombstones == 0
    assert all(index.search(fresh[i], 1)[0][0] == f"i{i}" for i in range(0, 400, 7))


@KINDS
def test_search_widens_past_tombstones_crowding_the_query(exact_below):
    rng = np.random.default_rng(11)
    vectors = unit(rng, 600, 16)
    index = FaissVectorIndex(16, exact_below=exact_below)
    index.upsert(ids(600), vectors)
    query = vectors[0]
    crowd = exact_top_sets(vectors, query[None, :], 40)[0]  # the 40 rows nearest the query...
    index.upsert(sorted(crowd), -vectors[[int(i[1:]) for i in sorted(crowd)]])  # ...become tombstones
    assert index.tombstones == 40

    found = [item_id for item_id, _ in index.search(query, 10)]

    assert len(found) == 10
    assert not crowd & set(found)
    if exact_below:
        live = np.array([i for i in range(600) if f"i{i}" not in crowd])
        assert found == [f"i{i}" for i in live[np.argsort(-(vectors[live] @ query))[:10]]]


def test_within_one_batch_the_last_vector_of_an_id_wins():
    rng = np.random.default_rng(3)
    first, last = unit(rng, 2, 8)
    index = FaissVectorIndex(8)
    index.upsert(["a", "b", "a"], np.stack([first, unit(rng, 1, 8)[0], last]))
    assert len(index) == 2
    assert index.search(last, 1)[0] == ("a", pytest.approx(1.0, abs=1e-5))


@KINDS
def test_a_new_item_is_searchable_at_once(exact_below):
    rng = np.random.default_rng(4)
    index = FaissVectorIndex(16, exact_below=exact_below)
    index.upsert(ids(300), unit(rng, 300, 16))
    newcomer = unit(rng, 1, 16)
    index.upsert(["new"], newcomer)
    assert len(index) == 301
    assert index.search(newcomer[0], 1)[0][0] == "new"


@KINDS
def test_exclude_is_honoured_and_k_results_still_come_back(exact_below):
    rng = np.random.default_rng(5)
    vectors = unit(rng, 300, 16)
    index = FaissVectorIndex(16, exact_below=exact_below)
    index.upsert(ids(300), vectors)
    query = vectors[10]
    unfiltered = [item_id for item_id, _ in index.search(query, 30)]
    excluded = set(unfiltered[:15])

    results = index.search(query, 10, exclude=excluded)

    assert len(results) == 10
    assert not excluded & {item_id for item_id, _ in results}
    if exact_below:  # exact search: exactly the next ten
        assert [item_id for item_id, _ in results] == unfiltered[15:25]


def test_fewer_results_when_the_catalog_runs_out():
    rng = np.random.default_rng(6)
    index = FaissVectorIndex(8)
    assert index.search(unit(rng, 1, 8)[0], 5) == []
    index.upsert(ids(4), unit(rng, 4, 8))
    assert len(index.search(unit(rng, 1, 8)[0], 10)) == 4
    assert len(index.search(unit(rng, 1, 8)[0], 10, exclude={"i0", "i1", "not-indexed"})) == 2
    assert index.search(unit(rng, 1, 8)[0], 3, exclude=set(ids(4))) == []


def test_vectors_are_normalised_so_scores_are_cosines():
    index = FaissVectorIndex(2)
    index.upsert(["x", "y"], np.array([[10.0, 0.0], [0.0, 0.5]]))
    results = index.search(np.array([3.0, 3.0]), 2)
    assert [score for _, score in results] == pytest.approx([np.sqrt(0.5)] * 2, abs=1e-6)


def test_save_and_load_round_trip_gives_identical_results(big, tmp_path):
    index, _, queries = big
    index.save(tmp_path / "artifact")
    loaded = FaissVectorIndex.load(tmp_path / "artifact")
    assert (loaded.kind, len(loaded), loaded.dimension, loaded.params) == ("hnsw", 20_000, 32, index.params)
    for query in queries[:50]:
        assert loaded.search(query, 10, exclude={"i1"}) == index.search(query, 10, exclude={"i1"})


def test_save_keeps_tombstones_and_the_loaded_index_takes_upserts(tmp_path):
    rng = np.random.default_rng(8)
    vectors = unit(rng, 200, 8)
    index = FaissVectorIndex(8, exact_below=0, params=HnswParams(m=8, ef_construction=40, ef_search=32))
    index.upsert(ids(200), vectors)
    index.upsert(["i5"], -vectors[5:6])
    index.save(tmp_path)
    sidecar = json.loads((tmp_path / "index.json").read_text())
    assert sidecar["params"] == {"m": 8, "ef_construction": 40, "ef_search": 32}
    assert sidecar["kind"] == "hnsw"

    loaded = FaissVectorIndex.load(tmp_path)
    assert loaded.tombstones == 1
    assert "i5" not in [i for i, _ in loaded.search(vectors[5], 10)]
    loaded.upsert(["later"], vectors[7:8] * -1)
    assert loaded.search(-vectors[7], 1)[0][0] == "later"
    assert len(loaded) == 201


def test_load_reports_a_missing_or_inconsistent_artifact(tmp_path):
    with pytest.raises(NotFoundError, match="no saved faiss index"):
        FaissVectorIndex.load(tmp_path / "nothing")
    index = FaissVectorIndex(4)
    index.upsert(ids(3), np.eye(4, dtype=np.float32)[:3])
    index.save(tmp_path)
    sidecar = json.loads((tmp_path / "index.json").read_text())
    sidecar["rows"] = sidecar["rows"][:2]
    (tmp_path / "index.json").write_text(json.dumps(sidecar))
    with pytest.raises(InvalidInputError, match="inconsistent"):
        FaissVectorIndex.load(tmp_path)


@pytest.mark.parametrize(
    ("query", "k", "message"),
    [
        (np.ones(5), 3, "dimension 4"),
        (np.ones((2, 4)), 3, "dimension 4"),
        (np.array([1.0, np.nan, 0.0, 0.0]), 3, "NaN or infinite"),
        (np.array([1.0, np.inf, 0.0, 0.0]), 3, "NaN or infinite"),
        (np.zeros(4), 3, "zero vector"),
        (np.ones(4), 0, "positive integer"),
        (np.ones(4), -2, "positive integer"),
        (np.ones(4), 2.5, "positive integer"),
        (np.ones(4), True, "positive integer"),
    ],
)
def test_bad_search_input_is_rejected(query, k, message):
    index = FaissVectorIndex(4)
    index.upsert(ids(3), np.eye(4, dtype=np.float32)[:3])
    with pytest.raises(InvalidInputError, match=message):
        index.search(query, k)


@pytest.mark.parametrize(
    ("item_ids", "vectors", "message"),
    [
        (["a"], np.ones((1, 3)), r"shape \(n, 4\)"),
        (["a"], np.ones(4), r"shape \(n, 4\)"),
        (["a", "b"], np.ones((1, 4)), "2 item ids for 1 vectors"),
        ("ab", np.ones((2, 4)), "not a single string"),
        ([""], np.ones((1, 4)), "non-empty strings"),
        ([7], np.ones((1, 4)), "non-empty strings"),
        (["a"], np.array([[1.0, 2.0, np.nan, 0.0]]), "NaN or infinite"),
        (["a"], np.array([[1e300, 0.0, 0.0, 0.0]]), "NaN or infinite"),
        (["a"], np.zeros((1, 4)), "zero vector"),
        (["a"], [["x", "y", "z", "w"]], "numeric"),
    ],
)
def test_bad_upsert_input_is_rejected_and_changes_nothing(item_ids, vectors, message):
    index = FaissVectorIndex(4)
    with pytest.raises(InvalidInputError, match=message):
        index.upsert(item_ids, vectors)
    assert len(index) == 0


def test_concurrent_searches_while_upserting_stay_consistent():
    rng = np.random.default_rng(9)
    vectors = unit(rng, 1_500, 16)
    index = FaissVectorIndex(16, exact_below=1_000, params=HnswParams(m=16, ef_construction=64, ef_search=32))
    index.upsert(ids(800), vectors[:800])  # flat; the writer below crosses into HNSW and replaces items
    queries = unit(rng, 50, 16)
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            for round_ in range(400):
                if stop.is_set() and round_ > 50:
                    return
                results = index.search(queries[round_ % len(queries)], 10, exclude={"i1", "i2"})
                found = [item_id for item_id, _ in results]
                scores = [score for _, score in results]
                assert len(found) == 10
                assert len(set(found)) == 10
                assert not {"i1", "i2"} & set(found)
                assert scores == sorted(scores, reverse=True)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    def writer() -> None:
        try:
            for start in range(800, 1_500, 50):
                index.upsert(ids(50, start=start), vectors[start : start + 50])
                index.upsert(ids(20, start=start - 400), unit(rng, 20, 16))  # replacements
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(index) == 1_500
    assert index.kind == "hnsw"


def test_large_builds_report_progress():
    rng = np.random.default_rng(10)
    lines: list[str] = []
    index = FaissVectorIndex(4, exact_below=10**9, progress=lines.append)
    index.upsert(ids(1_000), unit(rng, 1_000, 4))
    assert lines == []  # small adds stay quiet
    index.upsert(ids(60_000, start=1_000), unit(rng, 60_000, 4))
    assert len(lines) == 3
    assert "60,000/60,000" in lines[-1]
    assert "ETA" in lines[0]
    assert len(index) == 61_000


def test_hnsw_search_stops_widening_when_the_graph_is_exhausted():
    """HNSW returns -1 rows when it finds fewer neighbours than asked; the search must not keep doubling
    the request up to the whole index (that turned one request into a 1M-item scan)."""
    import numpy as np

    from rtrec.adapters.search.faiss_index import FaissVectorIndex

    rng = np.random.default_rng(0)
    index = FaissVectorIndex(8, exact_below=0)
    ids = [str(i) for i in range(2000)]
    index.upsert(ids, rng.standard_normal((2000, 8)).astype(np.float32))
    calls = []
    real = index._index

    class Exhausted:
        ntotal = real.ntotal

        def search(self, vector, k):
            calls.append(k)
            scores, rows = real.search(vector, min(k, 30))
            pad = k - rows.shape[1]
            return (
                np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf),
                np.pad(rows, ((0, 0), (0, pad)), constant_values=-1),
            )

    index._index = Exhausted()
    found = index.search(rng.standard_normal(8), k=10, exclude=set(ids[:500]))
    assert len(calls) == 1  # one search, not a doubling loop up to 2,000
    assert len(found) <= 10
