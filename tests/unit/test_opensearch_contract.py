"""The OpenSearch adapter's request bodies and client use, checked without a server."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import NotFoundError as OpenSearchNotFoundError
from opensearchpy.exceptions import RequestError
from opensearchpy.serializer import JSONSerializer

from rtrec.adapters.search import HnswParams
from rtrec.adapters.search.faiss_index import FaissVectorIndex
from rtrec.adapters.search.opensearch_index import (
    OpenSearchVectorIndex,
    bulk_actions,
    index_body,
    inner_product_from_score,
    innerproduct_score,
    knn_query,
)
from rtrec.errors import DependencyError, InvalidInputError


class FakeIndices:
    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.existing: set[str] = set()

    def exists(self, index: str) -> bool:
        self.client.calls.append(("indices.exists", {"index": index}))
        return index in self.existing

    def create(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.client.calls.append(("indices.create", {"index": index, "body": body}))
        self.existing.add(index)
        return {"acknowledged": True}

    def refresh(self, index: str) -> dict[str, Any]:
        self.client.calls.append(("indices.refresh", {"index": index}))
        return {}


class FakeTransport:
    serializer = JSONSerializer()  # opensearchpy.helpers.bulk serialises the actions with the client's serializer


class FakeClient:
    """Records every call; answers search with `hits`; raises `fail` from every call when set."""

    def __init__(self, hits: list[dict[str, Any]] | None = None, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.hits = hits or []
        self.fail = fail
        self.indices = FakeIndices(self)
        self.transport = FakeTransport()
        self.bulk_lines: list[dict[str, Any]] = []

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.fail is not None:
            raise self.fail

    def bulk(self, body: str, **kwargs: Any) -> dict[str, Any]:
        self._record("bulk", body=body, **kwargs)
        lines = [json.loads(line) for line in body.splitlines() if line]
        self.bulk_lines.extend(lines)
        actions = lines[0::2]
        return {"errors": False, "items": [{"index": {**a["index"], "status": 201}} for a in actions]}

    def search(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self._record("search", index=index, body=body)
        return {"hits": {"hits": self.hits}}

    def count(self, index: str) -> dict[str, Any]:
        self._record("count", index=index)
        return {"count": len(self.hits)}


# -- request bodies --------------------------------------------------------------------------------


def test_mapping_is_a_faiss_hnsw_innerproduct_knn_vector_with_the_faiss_index_params():
    params = FaissVectorIndex(64).params  # whatever the embedded index uses, OpenSearch must use too
    body = index_body(64, params)

    assert body["settings"]["index"]["knn"] is True
    assert body["settings"]["index"]["knn.algo_param.ef_search"] == params.ef_search
    properties = body["mappings"]["properties"]
    assert properties["item_id"] == {"type": "keyword"}
    assert properties["genres"] == {"type": "keyword"}
    vector = properties["vector"]
    assert vector["type"] == "knn_vector"
    assert vector["dimension"] == 64
    method = vector["method"]
    assert (method["name"], method["engine"], method["space_type"]) == ("hnsw", "faiss", "innerproduct")
    assert HnswParams(**method["parameters"]) == params
    assert method["parameters"] == {"m": 32, "ef_construction": 200, "ef_search": 64}
    json.dumps(body)  # it must serialise as it is


def test_mapping_follows_custom_params():
    params = HnswParams(m=16, ef_construction=128, ef_search=100)
    body = index_body(8, params)
    assert body["mappings"]["properties"]["vector"]["method"]["parameters"] == params.as_dict()
    assert body["settings"]["index"]["knn.algo_param.ef_search"] == 100


def test_knn_query_excludes_ids_and_restricts_genres_in_an_efficient_filter():
    vector = np.array([0.6, 0.8], dtype=np.float32)
    body = knn_query(vector, 5, exclude_ids={"b", "a"}, genre_filter=["Drama", "Comedy"])

    assert body["size"] == 5
    knn = body["query"]["knn"]["vector"]
    assert knn["k"] == 5
    assert knn["vector"] == pytest.approx([0.6, 0.8])
    assert all(isinstance(x, float) for x in knn["vector"])
    assert knn["filter"] == {
        "bool": {
            "must_not": [{"terms": {"item_id": ["a", "b"]}}],
            "filter": [{"terms": {"genres": ["Comedy", "Drama"]}}],
        }
    }
    json.dumps(body)


def test_knn_query_without_exclusions_or_genres_has_no_filter():
    knn = knn_query([1.0, 0.0], 3)["query"]["knn"]["vector"]
    assert "filter" not in knn
    assert knn["k"] == 3
    only_exclude = knn_query([1.0, 0.0], 3, exclude_ids=["x"])["query"]["knn"]["vector"]["filter"]
    assert only_exclude == {"bool": {"must_not": [{"terms": {"item_id": ["x"]}}]}}


def test_bulk_actions_use_the_item_id_as_document_id():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    actions = bulk_actions(["m1", "m2"], vectors, {"m2": {"genres": ["Drama"]}}, index_name="items")
    assert actions == [
        {"_op_type": "index", "_index": "items", "_id": "m1", "_source": {"item_id": "m1", "vector": [1.0, 0.0]}},
        {
            "_op_type": "index",
            "_index": "items",
            "_id": "m2",
            "_source": {"item_id": "m2", "vector": [0.0, 1.0], "genres": ["Drama"]},
        },
    ]
    with pytest.raises(InvalidInputError, match="must not set"):
        bulk_actions(["m1"], vectors[:1], {"m1": {"vector": [0, 0]}}, index_name="items")


# -- scores ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("inner_product", "score"), [(0.5, 1.5), (1.0, 2.0), (0.0, 1.0), (-1.0, 0.5), (-0.25, 0.8)])
def test_opensearch_innerproduct_scores_map_back_to_raw_inner_products(inner_product, score):
    assert innerproduct_score(inner_product) == pytest.approx(score)
    assert inner_product_from_score(score) == pytest.approx(inner_product)


def test_score_transform_inverse_round_trips_over_the_whole_range():
    values = np.linspace(-1.0, 1.0, 201)
    back = [inner_product_from_score(innerproduct_score(float(v))) for v in values]
    np.testing.assert_allclose(back, values, atol=1e-12)


# -- the adapter with a fake client ----------------------------------------------------------------


def test_ensure_index_creates_the_index_only_when_missing():
    client = FakeClient()
    index = OpenSearchVectorIndex("items", client, dimension=4)
    assert index.ensure_index() is True
    assert index.ensure_index() is False
    creates = [kwargs for name, kwargs in client.calls if name == "indices.create"]
    assert creates == [{"index": "items", "body": index_body(4, HnswParams())}]


def test_ensure_index_tolerates_a_concurrent_creation():
    class RacingIndices(FakeIndices):
        def create(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
            raise RequestError(400, "resource_already_exists_exception", {})

    client = FakeClient()
    client.indices = RacingIndices(client)
    assert OpenSearchVectorIndex("items", client, dimension=4).ensure_index() is False


def test_upsert_sends_bulk_index_actions_then_refreshes():
    client = FakeClient()
    index = OpenSearchVectorIndex("items", client, dimension=2)
    index.upsert(["m1", "m2", "m1"], np.array([[3.0, 4.0], [0.0, 2.0], [0.0, -1.0]]), {"m2": {"genres": ["Drama"]}})

    assert [name for name, _ in client.calls] == ["bulk", "indices.refresh"]
    actions, sources = client.bulk_lines[0::2], client.bulk_lines[1::2]
    assert actions == [{"index": {"_index": "items", "_id": "m2"}}, {"index": {"_index": "items", "_id": "m1"}}]
    # Normalised vectors; within a batch the last vector of an id wins.
    assert sources == [
        {"item_id": "m2", "vector": [0.0, 1.0], "genres": ["Drama"]},
        {"item_id": "m1", "vector": [0.0, -1.0]},
    ]


def test_upsert_validates_before_calling_the_cluster():
    client = FakeClient()
    index = OpenSearchVectorIndex("items", client, dimension=2)
    with pytest.raises(InvalidInputError, match=r"dimension|shape"):
        index.upsert(["m1"], np.ones((1, 3)))
    assert client.calls == []


def test_search_sends_the_knn_query_and_maps_hits_to_raw_inner_products():
    hits = [{"_id": "m7", "_score": 1.9}, {"_id": "m3", "_score": 1.25}, {"_id": "m9", "_score": 0.5}]
    client = FakeClient(hits=hits)
    index = OpenSearchVectorIndex("items", client, dimension=2)

    results = index.search(np.array([0.0, 5.0]), 3, exclude={"m1"}, genres=["Drama"])

    assert [item_id for item_id, _ in results] == ["m7", "m3", "m9"]
    assert [score for _, score in results] == pytest.approx([0.9, 0.25, -1.0])
    ((name, call),) = client.calls
    assert name == "search"
    assert call["index"] == "items"
    assert call["body"] == knn_query([0.0, 1.0], 3, {"m1"}, ["Drama"])


def test_search_rejects_bad_input_without_calling_the_cluster():
    client = FakeClient()
    index = OpenSearchVectorIndex("items", client, dimension=2)
    for query, k in [(np.ones(3), 1), (np.array([np.nan, 1.0]), 1), (np.ones(2), 0), (np.ones(2), 10_001)]:
        with pytest.raises(InvalidInputError):
            index.search(query, k)
    assert client.calls == []


def test_len_counts_documents():
    assert len(OpenSearchVectorIndex("items", FakeClient(hits=[{}, {}]), dimension=2)) == 2


@pytest.mark.parametrize(
    "error",
    [
        OpenSearchConnectionError("N/A", "connection refused", Exception("refused")),
        OpenSearchNotFoundError(404, "index_not_found_exception", {}),
    ],
)
def test_client_errors_become_dependency_errors(error):
    index = OpenSearchVectorIndex("items", FakeClient(fail=error), dimension=2)
    with pytest.raises(DependencyError, match="searching items failed") as raised:
        index.search(np.ones(2), 3)
    assert raised.value.__cause__ is error
    with pytest.raises(DependencyError, match="indexing 1 vectors into items failed"):
        index.upsert(["m1"], np.ones((1, 2)))
    with pytest.raises(DependencyError, match="counting"):
        len(index)


def test_failed_bulk_items_become_a_dependency_error():
    class RejectingClient(FakeClient):
        def bulk(self, body: str, **kwargs: Any) -> dict[str, Any]:
            return {"errors": True, "items": [{"index": {"_id": "m1", "status": 400, "error": {"type": "mapper"}}}]}

    index = OpenSearchVectorIndex("items", RejectingClient(), dimension=2)
    with pytest.raises(DependencyError, match="BulkIndexError"):
        index.upsert(["m1"], np.ones((1, 2)))


def test_a_client_or_url_is_required():
    with pytest.raises(ValueError, match="client or the url"):
        OpenSearchVectorIndex("items", dimension=2)
