"""File names inside a model folder: training writes them, promotion publishes them, serving reads them."""

from __future__ import annotations

USER_TOWER = "user_tower.onnx"  # inputs: rtrec.domain.encoder.USER_INPUTS
ITEM_TOWER = "item_tower.onnx"  # inputs: rtrec.domain.encoder.ITEM_INPUTS
ENCODER = "encoder.json"  # FeatureEncoder vocabularies, shared by training and serving
ITEM_EMBEDDINGS = "item_embeddings.npy"  # float32 [n_items, dim], L2-normalised, row i = item index i
ITEM_IDS = "item_ids.json"  # list of client item ids, row order of ITEM_EMBEDDINGS
METRICS = "metrics.json"  # flat {name: float}, e.g. "recbole.test.recall@10"
PARAMS = "params.json"  # the hyperparameters the run used
DATA_SNAPSHOT = "data_snapshot.json"  # {"dataset", "sha256", "interactions", ...}
ITEM_INDEX = "item_index"  # folder built at promotion (FaissVectorIndex.save: index.faiss + index.json)
ITEM_CATALOG = "item_catalog.npz"  # ItemCatalog columns (titles, genre masks, popularity, created_at), row = item index
ITEM_TO_ITEM = "item_to_item.npz"  # ItemToItem: top-k neighbour weights per item (CSR) and the item ids, optional
