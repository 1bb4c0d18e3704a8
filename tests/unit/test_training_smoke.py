"""A tiny-dimension training run on ML-100K: the whole path (split, towers, loss, early stopping,
evaluation, baselines, ONNX export) in seconds, as torchrec's retrieval example smoke-tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rtrec.domain.encoder import ITEM_INPUTS, USER_INPUTS, FeatureEncoder
from rtrec.domain.item_to_item import ItemToItem
from training import artifacts
from training.export import sample_inputs
from training.model import sampled_softmax_loss
from training.train import TrainConfig, train

pytestmark = pytest.mark.slow


def tiny_config(tmp: Path, **overrides) -> TrainConfig:
    values = dict(
        dataset="ml-100k",
        output_dir=tmp,
        protocols=("recbole",),
        epochs=2,
        patience=1,
        dim=8,
        hidden=16,
        batch_size=512,
        user_hash_buckets=512,
        baselines=True,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_cache_dir):
    out = tmp_path_factory.mktemp("model")
    return train(tiny_config(out, data_cache_dir=data_cache_dir), progress=lambda _line: None)


def test_the_model_folder_is_complete(smoke):
    assert artifacts.missing_files(smoke.model_dir) == []
    embeddings = np.load(smoke.model_dir / artifacts.ITEM_EMBEDDINGS)
    item_ids = json.loads((smoke.model_dir / artifacts.ITEM_IDS).read_text())
    assert embeddings.shape == (1682, 8)
    assert len(item_ids) == 1682
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert json.loads((smoke.model_dir / artifacts.DATA_SNAPSHOT).read_text())["interactions"] == 100_000


def test_it_learns_something_beyond_popularity(smoke):
    metrics = smoke.metrics
    for name in ("test.recall@10", "test.ndcg@10", "test.hit@10", "test.coverage@10", "valid.recall@10"):
        assert 0.0 < metrics[f"recbole.{name}"] <= 1.0
    assert metrics["recbole.pop.test.recall@10"] > 0
    assert metrics["recbole.test.coverage@10"] > metrics["recbole.pop.test.coverage@10"]
    losses = [h["recbole.loss"] for h in smoke.history]
    assert losses[-1] < losses[0]


def test_the_item_to_item_model_is_saved_and_evaluated(smoke):
    model = ItemToItem.load(smoke.model_dir / artifacts.ITEM_TO_ITEM)
    assert model.item_ids == tuple(json.loads((smoke.model_dir / artifacts.ITEM_IDS).read_text()))
    assert 0 < model.nnz <= model.n_items * smoke.metrics["recbole.i2i.top_k"]
    metrics = smoke.metrics
    for name in ("i2i.test.recall@10", "i2i.test.ndcg@10", "i2i.valid.recall@10", "i2i.ease.test.recall@10"):
        assert 0.0 < metrics[f"recbole.{name}"] <= 1.0
    assert metrics["recbole.i2i.test.recall@10"] > metrics["recbole.pop.test.recall@10"]


def test_onnx_towers_match_torch_within_1e_5(smoke):
    assert smoke.metrics["onnx.max_abs_diff"] < 1e-5
    encoder = FeatureEncoder.from_json((smoke.model_dir / artifacts.ENCODER).read_text())
    users, _items = sample_inputs(encoder, batch=5)
    user_session = ort.InferenceSession(str(smoke.model_dir / artifacts.USER_TOWER))
    item_session = ort.InferenceSession(str(smoke.model_dir / artifacts.ITEM_TOWER))
    assert [i.name for i in user_session.get_inputs()] == list(USER_INPUTS)
    assert [i.name for i in item_session.get_inputs()] == list(ITEM_INPUTS)
    user_vectors = user_session.run(None, users)[0]
    assert user_vectors.shape == (5, 8)  # a batch size the export never saw: the batch axis is dynamic


def test_exported_item_embeddings_equal_the_item_tower(smoke):
    encoder = FeatureEncoder.from_json((smoke.model_dir / artifacts.ENCODER).read_text())
    session = ort.InferenceSession(str(smoke.model_dir / artifacts.ITEM_TOWER))
    embeddings = np.load(smoke.model_dir / artifacts.ITEM_EMBEDDINGS)
    # Item 0 (Toy Story) is in the training split, so it was embedded with its id.
    from rtrec.domain.models import ItemFeatures

    toy = ItemFeatures("1", "Toy Story", year=1995, genres=("Animation", "Children's", "Comedy"), interaction_count=0)
    inputs = encoder.encode_items([toy])
    # The popularity bucket comes from the training split's counts, which the folder does not
    # carry: one of the buckets must reproduce the exported vector exactly.
    best = min(
        float(np.abs(session.run(None, {**inputs, "popularity": np.array([b])})[0][0] - embeddings[0]).max())
        for b in range(encoder.cardinalities["popularity"])
    )
    assert best < 1e-5


def test_training_is_deterministic(tmp_path, data_cache_dir):
    runs = [
        train(
            tiny_config(tmp_path / str(n), data_cache_dir=data_cache_dir, epochs=1, baselines=False, item_to_item=False),
            progress=lambda _line: None,
        )
        for n in range(2)
    ]
    np.testing.assert_array_equal(*(np.load(r.model_dir / artifacts.ITEM_EMBEDDINGS) for r in runs))
    assert runs[0].metrics["recbole.test.recall@10"] == runs[1].metrics["recbole.test.recall@10"]


def test_logq_correction_lowers_popular_items_logits():
    users = torch.nn.functional.normalize(torch.ones(2, 4), dim=-1)
    items = users.clone()
    flat = sampled_softmax_loss(users, items, torch.zeros(2), temperature=1.0)
    corrected = sampled_softmax_loss(users, items, torch.log(torch.tensor([0.9, 0.1])), temperature=1.0)
    assert flat.item() == pytest.approx(np.log(2))
    assert corrected.item() != pytest.approx(flat.item())
    masked = sampled_softmax_loss(users, items, torch.zeros(2), 1.0, torch.tensor([[False, True], [True, False]]))
    assert masked.item() == pytest.approx(0.0, abs=1e-6)
