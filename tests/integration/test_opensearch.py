"""OpenSearchVectorIndex against a real cluster with the k-NN plugin (OpenSearch 2.9+), when one is named."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL")

pytestmark = pytest.mark.skipif(
    not OPENSEARCH_URL,
    reason="needs a cluster: OPENSEARCH_URL=http://localhost:9200 .venv/bin/python -m pytest "
    "tests/integration/test_opensearch.py (OpenSearch 2.9+ with the k-NN plugin; credentials go in the URL, "
    "e.g. https://admin:PASSWORD@localhost:9200)",
)


@pytest.fixture
def index() -> Iterator[object]:
    from opensearchpy import OpenSearch

    from rtrec.adapters.search.opensearch_index import OpenSearchVectorIndex

    client = OpenSearch(hosts=[OPENSEARCH_URL], verify_certs=False, ssl_show_warn=False, timeout=30)
    vector_index = OpenSearchVectorIndex(f"rtrec-itest-{uuid.uuid4().hex[:8]}", client, dimension=8)
    assert vector_index.ensure_index() is True
    yield vector_index
    client.indices.delete(index=vector_index.index_name, ignore_unavailable=True)


def unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_create_upsert_search_exclude_and_replace(index):
    rng = np.random.default_rng(0)
    vectors = unit(rng, 60, 8)
    ids = [f"m{i}" for i in range(60)]
    genres = {item_id: {"genres": ["Drama" if i % 2 else "Comedy"]} for i, item_id in enumerate(ids)}
    assert index.ensure_index() is False
    index.upsert(ids, vectors, genres)
    assert len(index) == 60

    top = index.search(vectors[4], 5)
    assert top[0][0] == "m4"
    assert top[0][1] == pytest.approx(1.0, abs=1e-4)
    exact = sorted(range(60), key=lambda i: -float(vectors[i] @ vectors[4]))
    for item_id, score in top:
        assert score == pytest.approx(float(vectors[int(item_id[1:])] @ vectors[4]), abs=1e-4)

    excluded = {item_id for item_id, _ in top[:3]}
    filtered = index.search(vectors[4], 5, exclude=excluded)
    assert len(filtered) == 5
    assert not excluded & {item_id for item_id, _ in filtered}
    assert [item_id for item_id, _ in filtered][:2] == [f"m{i}" for i in exact[3:5]]

    dramas = index.search(vectors[4], 10, genres=["Drama"])
    assert len(dramas) == 10
    assert all(int(item_id[1:]) % 2 == 1 for item_id, _ in dramas)

    index.upsert(["m4"], -vectors[4:5])
    assert len(index) == 60
    assert "m4" not in {item_id for item_id, _ in index.search(vectors[4], 10)}
    assert index.search(-vectors[4], 1)[0][0] == "m4"
