"""The promotion step that puts a model's item vectors into the embedded vector index (FAISS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtrec.adapters.search.faiss_index import FaissVectorIndex
from training import artifacts


def build_item_index(model_dir: Path, exact_below: int = 20_000) -> FaissVectorIndex:
    """Index every item embedding of the folder and save the index into it (ITEM_INDEX)."""
    vectors = np.load(Path(model_dir) / artifacts.ITEM_EMBEDDINGS)
    item_ids = artifacts.read_json(model_dir, artifacts.ITEM_IDS)
    index = FaissVectorIndex(int(vectors.shape[1]), exact_below=exact_below)
    index.upsert(item_ids, vectors)
    index.save(Path(model_dir) / artifacts.ITEM_INDEX)
    return index
