"""OnnxTowers: the exported user and item towers under ONNX Runtime, fed by the shared encoder.

Serving imports neither torch nor mlflow: a published model folder (see training/artifacts.py for
its layout) is everything it needs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rtrec.domain.catalog import ItemCatalog
from rtrec.domain.encoder import ITEM_INPUTS, USER_INPUTS, FeatureEncoder
from rtrec.domain.model_files import (
    DATA_SNAPSHOT,
    ENCODER,
    ITEM_CATALOG,
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    ITEM_INDEX,
    ITEM_TOWER,
    USER_TOWER,
)
from rtrec.domain.models import ItemFeatures, UserProfile
from rtrec.errors import DependencyError, NotFoundError
from rtrec.ports import FeatureStore, VectorIndex
from rtrec.services.catalog import ServingModel


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One request embeds one user: more threads only add scheduling cost on a 2-vCPU Lambda.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a missing or corrupt graph
        raise DependencyError(f"cannot load the ONNX graph {path}: {exc}") from exc


class OnnxTowers:
    """Embeds users and items with the production towers."""

    def __init__(self, folder: Path) -> None:
        folder = Path(folder)
        for name in (USER_TOWER, ITEM_TOWER, ENCODER):
            if not (folder / name).is_file():
                raise NotFoundError(f"{folder} is not a model folder: {name} is missing")
        self.encoder = FeatureEncoder.from_json((folder / ENCODER).read_text())
        self._user = _session(folder / USER_TOWER)
        self._item = _session(folder / ITEM_TOWER)
        expected = {USER_TOWER: list(USER_INPUTS), ITEM_TOWER: list(ITEM_INPUTS)}
        for name, session in ((USER_TOWER, self._user), (ITEM_TOWER, self._item)):
            inputs = [i.name for i in session.get_inputs()]
            if inputs != expected[name]:
                raise DependencyError(f"{name} takes {inputs}, but this encoder produces {expected[name]}")

    def user_vectors(self, users: Sequence[UserProfile], *, with_id: bool = True) -> np.ndarray:
        vectors: np.ndarray = self._user.run(None, self.encoder.encode_users(users, with_id=with_id))[0]
        return vectors

    def item_vectors(self, items: Sequence[ItemFeatures], *, with_id: bool = True) -> np.ndarray:
        vectors: np.ndarray = self._item.run(None, self.encoder.encode_items(items, with_id=with_id))[0]
        return vectors


@dataclass(frozen=True)
class LoadedModel:
    """One production model, loaded whole: what a request uses from start to end."""

    version: str
    towers: OnnxTowers
    index: VectorIndex
    data_snapshot: dict[str, Any]


def load_model_folder(version: str, folder: Path) -> LoadedModel:
    """Load the towers and the FAISS item index of a downloaded model folder."""
    from rtrec.adapters.search.faiss_index import FaissVectorIndex

    folder = Path(folder)
    towers = OnnxTowers(folder)
    index = FaissVectorIndex.load(folder / ITEM_INDEX)
    snapshot_file = folder / DATA_SNAPSHOT
    snapshot = json.loads(snapshot_file.read_text()) if snapshot_file.is_file() else {}
    return LoadedModel(version=version, towers=towers, index=index, data_snapshot=snapshot)


def load_item_catalog(folder: Path, genres: Sequence[str], features: FeatureStore | None = None) -> ItemCatalog:
    """The model's items with their vectors: from ITEM_CATALOG when training wrote it, else the item
    features are read from the feature store (models published before the catalog file existed)."""
    folder = Path(folder)
    vectors = np.load(folder / ITEM_EMBEDDINGS)
    item_ids = json.loads((folder / ITEM_IDS).read_text())
    if len(item_ids) != len(vectors):
        raise DependencyError(f"{folder}: {len(item_ids)} item ids but {len(vectors)} item vectors")
    if (folder / ITEM_CATALOG).is_file():
        with np.load(folder / ITEM_CATALOG) as columns:
            if columns["item_ids"].tolist() != item_ids:
                raise DependencyError(f"{folder}: {ITEM_CATALOG} lists other items than {ITEM_IDS}")
            return ItemCatalog.bulk(
                genres,
                item_ids,
                columns["titles"].tolist(),
                vectors,
                columns["genre_mask"],
                columns["popularity"],
                columns["created_at"],
                columns["promoted"],
            )
    if features is None:
        raise NotFoundError(f"{folder} has no {ITEM_CATALOG} and no feature store was given to read items from")
    known = features.get_items(item_ids)
    items = [known.get(i) or ItemFeatures(item_id=i, title=i) for i in item_ids]
    catalog = ItemCatalog(int(vectors.shape[1]), genres, capacity=len(items))
    catalog.upsert(items, vectors)
    catalog.mark_trained()
    return catalog


def load_serving_model(version: str, folder: Path, features: FeatureStore | None = None) -> ServingModel:
    """Towers, item index and item catalog of a downloaded model folder, ready to serve."""
    loaded = load_model_folder(version, folder)
    catalog = load_item_catalog(folder, loaded.towers.encoder.genres, features)
    if len(catalog) != len(loaded.index):
        raise DependencyError(f"{folder}: the index holds {len(loaded.index)} items, the catalog {len(catalog)}")
    return ServingModel(version=version, towers=loaded.towers, index=loaded.index, catalog=catalog)
