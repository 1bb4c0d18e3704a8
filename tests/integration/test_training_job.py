"""The training job as `rtrec train` runs it (SageMaker's contract, a local subprocess), registered in
MLflow, promoted into the models bucket, and the published model answering a query end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pytest

from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.adapters.model.onnx_towers import load_model_folder
from rtrec.adapters.search.faiss_index import FaissVectorIndex
from rtrec.domain.encoder import FeatureEncoder
from rtrec.domain.models import UserProfile
from rtrec.resources import MODELS_BUCKET
from rtrec.services.model_watcher import ModelWatcher
from rtrec_local.jobs import LocalJobRunner
from rtrec_local.registry import local_registry_config
from rtrec_local.state import LocalState
from training import artifacts
from training.index import build_item_index
from training.registry import default_gate, promote

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {
    "dataset": "ml-100k",
    "protocols": "recbole",
    "epochs": 1,
    "dim": 8,
    "hidden": 16,
    "batch_size": 512,
    "user_hash_buckets": 512,
    "baselines": False,
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_cache_dir):
    state = LocalState(tmp_path_factory.mktemp("state")).ensure()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "MLFLOW_"))}
    env.update({"MLFLOW_TRACKING_URI": state.mlflow_tracking_uri, "RTREC_RUN_TAGS": json.dumps({"trigger": "test"})})
    job = LocalJobRunner(state.root / "jobs").start("tiny-job", TINY, {"train": data_cache_dir}, env=env)
    assert job.wait(timeout_s=300) == "Completed", job.paths.log_file.read_text()
    return state, job


def test_the_job_follows_the_sagemaker_contract(trained):
    _, job = trained
    hps = json.loads((job.paths.config_dir / "hyperparameters.json").read_text())
    assert hps["epochs"] == "1"
    assert hps["baselines"] == "false"
    assert artifacts.missing_files(job.paths.model_dir) == []
    result = json.loads((job.paths.output_data_dir / "result.json").read_text())
    assert result["version"] == "1"
    assert result["job_name"] == "tiny-job"
    assert 0 < result["metrics"]["recbole.test.recall@10"] < 1
    assert "epoch 1/1" in job.paths.log_file.read_text()


def test_registered_run_carries_tags_metrics_and_data_hash(trained):
    state, _ = trained
    config = local_registry_config(state.root)
    client = config.client()
    version = client.get_model_version_by_alias(config.model_name, "staging")
    run = client.get_run(version.run_id)
    assert run.data.tags["trigger"] == "test"
    assert run.data.tags["job_name"] == "tiny-job"
    assert run.data.metrics["recbole.test.recall_at_10"] > 0
    assert len(run.data.tags["data_sha256"]) == 64


def test_promotion_publishes_a_servable_model(trained, cloud, names, client, tmp_path):
    state, _ = trained
    store = S3ModelStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url, prefix="itest-job/models")
    outcome = promote(local_registry_config(state.root), store, default_gate(), index_builder=build_item_index)
    assert outcome.promoted
    assert outcome.pointer is not None
    assert outcome.pointer.version == "1"

    # What serving will do: follow the pointer, download, embed a user with ONNX, search the index.
    pointer = store.read_pointer()
    assert pointer is not None
    assert pointer.version == "1"
    folder = store.download(pointer.version, tmp_path / "served")
    encoder = FeatureEncoder.from_json((folder / artifacts.ENCODER).read_text())
    index = FaissVectorIndex.load(folder / artifacts.ITEM_INDEX)
    assert len(index) == len(encoder.item_ids) == 1682
    session = ort.InferenceSession(str(folder / artifacts.USER_TOWER))
    user = UserProfile("1", age=24, gender="M", occupation="technician", zip_prefix="85", history=("1", "2", "3"))
    vector = session.run(None, encoder.encode_users([user]))[0][0]
    results = index.search(vector, k=10, exclude={"1", "2", "3"})
    assert len(results) == 10
    assert not {"1", "2", "3"} & {item for item, _ in results}
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    expected = np.load(folder / artifacts.ITEM_EMBEDDINGS) @ vector
    best = encoder.item_ids[int(np.argmax(np.where(np.isin(encoder.item_ids, ["1", "2", "3"]), -np.inf, expected)))]
    assert results[0][0] == best  # below the HNSW threshold the index is exact

    # The same through serving's own loader, which follows the pointer and needs no training code.
    watcher = ModelWatcher(store, load_model_folder, tmp_path / "serving")
    model = watcher.current()
    assert model is not None
    assert model.version == "1"
    assert model.data_snapshot["dataset"] == "ml-100k"
    served = model.towers.user_vectors([user])[0]
    np.testing.assert_allclose(served, vector, atol=1e-6)
    assert model.index.search(served, k=10, exclude={"1", "2", "3"}) == results

    # The index built at promotion is kept with the run's artifacts as well.
    mlflow = local_registry_config(state.root).client()
    listed = {a.path for a in mlflow.list_artifacts(pointer.run_id, f"model/{artifacts.ITEM_INDEX}")}
    assert listed == {f"model/{artifacts.ITEM_INDEX}/index.faiss", f"model/{artifacts.ITEM_INDEX}/index.json"}


def test_a_bad_hyperparameter_fails_the_job_with_the_reason(tmp_path, data_cache_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "MLFLOW_"))}
    job = LocalJobRunner(tmp_path).start("bad-job", {"epochs": "0", "dataset": "ml-100k"}, {"train": data_cache_dir}, env=env)
    assert job.wait(timeout_s=120) == "Failed"
    reason = job.failure_reason()
    assert reason is not None
    assert "epochs" in reason
    assert "greater than or equal to 1" in reason


def test_job_names_follow_sagemaker_rules(tmp_path):
    from rtrec.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="job name"):
        LocalJobRunner(tmp_path).start("bad name!", {}, {}, env={})
