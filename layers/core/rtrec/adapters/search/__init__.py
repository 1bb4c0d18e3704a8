"""Vector index adapters (the VectorIndex port): FaissVectorIndex (embedded) and OpenSearchVectorIndex (AWS).

This package module holds what both engines share: the HNSW parameters, so that the embedded index and
OpenSearch's `faiss` engine are built alike, and the input checks, so that both reject the same bad input
with the same InvalidInputError. The engines live in submodules, imported lazily so that importing this
package loads neither faiss nor opensearch-py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rtrec.errors import InvalidInputError

if TYPE_CHECKING:
    from rtrec.adapters.search.faiss_index import FaissVectorIndex
    from rtrec.adapters.search.opensearch_index import OpenSearchVectorIndex

__all__ = ["FaissVectorIndex", "HnswParams", "OpenSearchVectorIndex"]


@dataclass(frozen=True)
class HnswParams:
    """HNSW graph parameters, shared by FAISS (`IndexHNSWFlat`) and OpenSearch (`method.parameters`).

    m: links per node (memory and recall grow with it); ef_construction: candidate list size while
    building (build time and graph quality); ef_search: candidate list size while searching (latency vs.
    recall; a search for k results uses at least k).
    """

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 64

    def __post_init__(self) -> None:
        for name in ("m", "ef_construction", "ef_search"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HnswParams.{name} must be a positive integer, got {value!r}")
        if self.m < 2:
            raise ValueError(f"HnswParams.m must be at least 2, got {self.m}")

    def as_dict(self) -> dict[str, int]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}


_ROWS_PER_BLOCK = 65_536


def _as_float32(values: Any, what: str) -> np.ndarray:
    if isinstance(values, np.ndarray) and values.dtype == np.float32:
        return values
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32 becomes inf, rejected below
            return np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} must be numeric: {exc}") from exc


def unit_rows(vectors: Any, dimension: int, *, what: str = "vectors") -> np.ndarray:
    """`vectors` as a C-contiguous float32 (n, dimension) array of unit rows; InvalidInputError if it cannot be."""
    array = _as_float32(vectors, what)
    if array.ndim != 2 or array.shape[1] != dimension:
        raise InvalidInputError(f"{what} must have shape (n, {dimension}), got {array.shape}")
    out = np.empty(array.shape, dtype=np.float32)
    for start in range(0, len(array), _ROWS_PER_BLOCK):  # blocks keep the float64 temporaries small
        wide = array[start : start + _ROWS_PER_BLOCK].astype(np.float64)  # no overflow for any finite float32
        norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
        bad = np.flatnonzero(~np.isfinite(norms))  # a NaN or inf anywhere in a row makes its norm non-finite
        if len(bad):
            raise InvalidInputError(
                f"{what} contain NaN or infinite values (or values too large for float32), first at row {start + bad[0]}"
            )
        zero = np.flatnonzero(norms == 0)
        if len(zero):
            raise InvalidInputError(
                f"{what} contain a zero vector, which has no direction to compare, first at row {start + zero[0]}"
            )
        out[start : start + len(wide)] = wide / norms[:, None]
    return out


def unit_query(query: Any, dimension: int) -> np.ndarray:
    """One query vector, shape (dimension,) or (1, dimension), as a float32 unit vector of shape (dimension,).

    The per-request path, so it avoids the general matrix code: one float64 dot product checks finiteness,
    zero length and gives the norm."""
    array = _as_float32(query, "query")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.shape[0] != dimension:
        raise InvalidInputError(f"query must be one vector of dimension {dimension}, got shape {array.shape}")
    wide = array.astype(np.float64)
    norm = math.sqrt(float(wide @ wide))
    if not math.isfinite(norm):
        raise InvalidInputError("query contains NaN or infinite values (or values too large for float32)")
    if norm == 0:
        raise InvalidInputError("query is a zero vector, which has no direction to compare")
    return (wide / norm).astype(np.float32)


def check_k(k: Any, *, limit: int | None = None) -> int:
    """k as an int >= 1 (and <= limit when the engine has one)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if limit is not None and k > limit:
        raise InvalidInputError(f"k must be at most {limit}, got {k}")
    return int(k)


def check_item_ids(item_ids: Sequence[str], count: int) -> list[str]:
    """Item ids as a list of non-empty strings, one per vector row."""
    if isinstance(item_ids, (str, bytes)):
        raise InvalidInputError("item_ids must be a sequence of strings, not a single string")
    ids = list(item_ids)
    if len(ids) != count:
        raise InvalidInputError(f"got {len(ids)} item ids for {count} vectors")
    bad = [item_id for item_id in ids if not isinstance(item_id, str) or not item_id]
    if bad:
        raise InvalidInputError(f"item ids must be non-empty strings, got {bad[:3]!r}")
    return ids


def last_wins(item_ids: list[str], vectors: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Drop all but the last occurrence of an id repeated within one batch (the later vector replaces the earlier)."""
    last = {item_id: row for row, item_id in enumerate(item_ids)}
    if len(last) == len(item_ids):
        return item_ids, vectors
    rows = sorted(last.values())
    return [item_ids[row] for row in rows], vectors[rows]


def as_id_set(exclude: Iterable[str] | None) -> set[str] | frozenset[str]:
    """The ids to leave out, as a set (a set passed in is used as it is, not copied)."""
    if exclude is None:
        return frozenset()
    if isinstance(exclude, (set, frozenset)):
        return exclude
    if isinstance(exclude, (str, bytes)):
        raise InvalidInputError("exclude must be a collection of item ids, not a single string")
    return frozenset(exclude)


def __getattr__(name: str) -> Any:
    # Lazy engine imports: `from rtrec.adapters.search import FaissVectorIndex` loads faiss only then.
    if name == "FaissVectorIndex":
        from rtrec.adapters.search.faiss_index import FaissVectorIndex

        return FaissVectorIndex
    if name == "OpenSearchVectorIndex":
        from rtrec.adapters.search.opensearch_index import OpenSearchVectorIndex

        return OpenSearchVectorIndex
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
