"""OpenSearchVectorIndex: item vectors in an OpenSearch k-NN index (the VectorIndex in AWS).

The request bodies are built by pure functions (`index_body`, `knn_query`, `bulk_actions`) so they can be
contract-tested without a server. The mapping uses the `faiss` engine's HNSW with `innerproduct` and the
same HnswParams as FaissVectorIndex, so the embedded index and OpenSearch build the same kind of graph.
References (OpenSearch documentation, "Methods and engines", "Spaces" and "Efficient k-NN filtering"):
https://docs.opensearch.org/latest/mappings/supported-field-types/knn-methods-engines/
https://docs.opensearch.org/latest/mappings/supported-field-types/knn-spaces/
https://docs.opensearch.org/latest/vector-search/filter-search-knn/efficient-knn-filtering/
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from opensearchpy import OpenSearch, helpers
from opensearchpy.exceptions import OpenSearchException, RequestError

from rtrec.adapters.search import (
    HnswParams,
    as_id_set,
    check_item_ids,
    check_k,
    last_wins,
    unit_query,
    unit_rows,
)
from rtrec.errors import DependencyError, InvalidInputError

ID_FIELD = "item_id"
GENRES_FIELD = "genres"
VECTOR_FIELD = "vector"
# A k-NN query returns at most this many results (`k` and the search `size` are both capped at 10,000).
MAX_K = 10_000


def index_body(dimension: int, params: HnswParams) -> dict[str, Any]:
    """The create-index body: a `knn_vector` field (faiss HNSW, inner product) plus keyword id and genres."""
    return {
        "settings": {
            "index": {
                "knn": True,
                "knn.algo_param.ef_search": params.ef_search,
            }
        },
        "mappings": {
            "properties": {
                ID_FIELD: {"type": "keyword"},
                GENRES_FIELD: {"type": "keyword"},
                VECTOR_FIELD: {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "space_type": "innerproduct",
                        "engine": "faiss",
                        # The faiss engine also reads ef_search from the mapping, which overrides the setting.
                        "parameters": {
                            "m": params.m,
                            "ef_construction": params.ef_construction,
                            "ef_search": params.ef_search,
                        },
                    },
                },
            }
        },
    }


def knn_query(
    vector: Sequence[float] | np.ndarray,
    k: int,
    exclude_ids: Iterable[str] | None = None,
    genre_filter: Iterable[str] | None = None,
) -> dict[str, Any]:
    """A `knn` search body for the k best items, with an efficient filter (applied during the HNSW search,
    so k results come back whenever k items pass it) that drops `exclude_ids` and keeps items having any
    of `genre_filter`."""
    excluded = sorted(set(exclude_ids or ()))
    genres = sorted(set(genre_filter or ()))
    knn: dict[str, Any] = {"vector": [float(x) for x in np.asarray(vector, dtype=np.float32).ravel()], "k": k}
    clauses: dict[str, Any] = {}
    if excluded:
        clauses["must_not"] = [{"terms": {ID_FIELD: excluded}}]
    if genres:
        clauses["filter"] = [{"terms": {GENRES_FIELD: genres}}]
    if clauses:
        knn["filter"] = {"bool": clauses}
    # `_id` is the item id, so the stored fields (and the vector) need not come back.
    return {"size": k, "_source": False, "query": {"knn": {VECTOR_FIELD: knn}}}


def bulk_actions(
    item_ids: Sequence[str],
    vectors: np.ndarray,
    extra_fields: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    index_name: str,
) -> list[dict[str, Any]]:
    """Actions for `opensearchpy.helpers.bulk`: one `index` action per item with `_id` = item id, so an
    upsert of a known item replaces its document. `extra_fields` maps an item id to more source fields
    (e.g. {"genres": [...]}) for filtering."""
    extra_fields = extra_fields or {}
    actions = []
    for item_id, vector in zip(item_ids, vectors, strict=True):
        source: dict[str, Any] = {ID_FIELD: item_id, VECTOR_FIELD: [float(x) for x in vector]}
        extra = extra_fields.get(item_id, {})
        clash = {ID_FIELD, VECTOR_FIELD} & set(extra)
        if clash:
            raise InvalidInputError(f"extra fields of item {item_id!r} must not set {sorted(clash)}")
        source.update(extra)
        actions.append({"_op_type": "index", "_index": index_name, "_id": item_id, "_source": source})
    return actions


def innerproduct_score(inner_product: float) -> float:
    """The `_score` OpenSearch's faiss engine reports for a raw inner product (the "Spaces" doc: with
    d = -ip, score = 1 / (1 + d) when d >= 0, else -d + 1)."""
    return 1.0 / (1.0 - inner_product) if inner_product <= 0 else 1.0 + inner_product


def inner_product_from_score(score: float) -> float:
    """The raw inner product behind an OpenSearch faiss `innerproduct` `_score` (inverse of innerproduct_score),
    so both adapters return comparable scores."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


@contextmanager
def _translate_opensearch_errors(what: str) -> Iterator[None]:
    """Re-raise opensearch-py errors (connection, transport, not found, bulk item failures) as DependencyError."""
    try:
        yield
    except OpenSearchException as exc:
        raise DependencyError(f"{what} failed: {type(exc).__name__}: {exc}") from exc


class OpenSearchVectorIndex:
    """VectorIndex over an OpenSearch k-NN index; documents carry `item_id`, `genres` and `vector`."""

    def __init__(
        self,
        index_name: str,
        client: Any = None,
        *,
        url: str | None = None,
        dimension: int,
        params: HnswParams | None = None,
        refresh: bool = True,
        timeout_s: float = 10.0,
    ) -> None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive integer, got {dimension!r}")
        if client is None and url is None:
            raise ValueError("pass an opensearch-py client or the url of the cluster")
        self.index_name = index_name
        self._dimension = dimension
        self._params = params if params is not None else HnswParams()
        self._refresh = refresh
        self._client = client if client is not None else OpenSearch(hosts=[url], timeout=timeout_s)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def params(self) -> HnswParams:
        return self._params

    def ensure_index(self) -> bool:
        """Create the index when it is missing; True when this call created it."""
        with _translate_opensearch_errors(f"creating index {self.index_name}"):
            if self._client.indices.exists(index=self.index_name):
                return False
            try:
                self._client.indices.create(index=self.index_name, body=index_body(self._dimension, self._params))
            except RequestError as exc:
                if exc.error == "resource_already_exists_exception":  # created by someone else meanwhile
                    return False
                raise
        return True

    def __len__(self) -> int:
        with _translate_opensearch_errors(f"counting documents in {self.index_name}"):
            return int(self._client.count(index=self.index_name)["count"])

    def upsert(
        self, item_ids: Sequence[str], vectors: np.ndarray, extra_fields: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        """Index (add or replace) the vectors, normalised; with `refresh` they are searchable on return."""
        matrix = unit_rows(vectors, self._dimension)
        ids, matrix = last_wins(check_item_ids(item_ids, len(matrix)), matrix)
        if not ids:
            return
        actions = bulk_actions(ids, matrix, extra_fields, index_name=self.index_name)
        with _translate_opensearch_errors(f"indexing {len(ids)} vectors into {self.index_name}"):
            helpers.bulk(self._client, actions, max_retries=3)
            if self._refresh:
                self._client.indices.refresh(index=self.index_name)

    def search(
        self, query: np.ndarray, k: int, exclude: set[str] | None = None, *, genres: Iterable[str] | None = None
    ) -> list[tuple[str, float]]:
        """The k items with the highest inner product with `query` (raw inner product scores), best first."""
        vector = unit_query(query, self._dimension)
        k = check_k(k, limit=MAX_K)
        body = knn_query(vector, k, as_id_set(exclude), genres)
        with _translate_opensearch_errors(f"searching {self.index_name}"):
            response = self._client.search(index=self.index_name, body=body)
        hits = response.get("hits", {}).get("hits", [])
        return [(str(hit["_id"]), inner_product_from_score(float(hit["_score"]))) for hit in hits[:k]]
