"""The registry and promotion path: MLflow (SQLite in tmp_path) + S3ModelStore against the embedded cloud."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.domain.catalog import catalog_columns
from rtrec.domain.models import ItemFeatures
from rtrec.errors import DependencyError, InvalidInputError, NotFoundError
from rtrec.resources import MODELS_BUCKET
from rtrec_local.registry import local_artifact_location, local_registry_config
from training import artifacts
from training.artifacts import PRIMARY_METRICS, REQUIRED, TrainResult
from training.registry import (
    RegistryConfig,
    default_gate,
    from_mlflow_key,
    log_and_register,
    mlflow_key,
    promote,
    publish_shadow,
)

pytestmark = pytest.mark.integration

RECALL, NDCG = PRIMARY_METRICS
GOOD = {RECALL: 0.20, NDCG: 0.10, "recbole.test.hit@10": 0.5}
WORSE = {RECALL: 0.15, NDCG: 0.10, "recbole.test.hit@10": 0.5}
# Stand-ins for the exported towers: nothing in these tests loads an ONNX graph.
PLACEHOLDER_ONNX = b"placeholder bytes, not an ONNX graph"


@pytest.fixture(scope="module")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store: creating one costs ~6 s, copying it ~50 ms."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def state_dir(tmp_path, migrated_mlflow_db) -> Path:
    state = tmp_path / "state"
    (state / "mlflow").mkdir(parents=True)
    shutil.copy(migrated_mlflow_db, state / "mlflow" / "mlflow.db")
    return state


@pytest.fixture
def config(state_dir):
    return local_registry_config(state_dir)


@pytest.fixture
def store(cloud, names) -> S3ModelStore:
    # A fresh prefix per test keeps tests independent inside the session's one models bucket.
    return S3ModelStore(
        names.bucket(MODELS_BUCKET),
        endpoint_url=cloud.endpoint_url,
        region=cloud.region,
        prefix=f"itest-registry-{uuid.uuid4().hex[:8]}/models",
    )


def fake_result(root: Path, name: str, metrics: dict[str, float], data_sha256: str = "ab" * 32) -> TrainResult:
    """A complete model folder (every file of artifacts.REQUIRED) with small stand-in contents."""
    model_dir = root / name
    model_dir.mkdir(parents=True)
    (model_dir / artifacts.USER_TOWER).write_bytes(PLACEHOLDER_ONNX + b" (user)")
    (model_dir / artifacts.ITEM_TOWER).write_bytes(PLACEHOLDER_ONNX + b" (item)")
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    np.save(model_dir / artifacts.ITEM_EMBEDDINGS, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    params = {"embedding_dim": 4, "lr": 0.01, "hidden": [8, 4]}
    artifacts.write_json(model_dir, artifacts.ITEM_IDS, ["1", "2", "3"])
    items = [ItemFeatures(i, f"Item {i}", genres=("Comedy",)) for i in ("1", "2", "3")]
    np.savez(model_dir / artifacts.ITEM_CATALOG, **catalog_columns(items, ["Comedy"]))
    artifacts.write_json(model_dir, artifacts.ENCODER, {"genres": ["Comedy"], "occupations": [0]})
    artifacts.write_json(model_dir, artifacts.METRICS, metrics)
    artifacts.write_json(model_dir, artifacts.PARAMS, params)
    artifacts.write_json(model_dir, artifacts.DATA_SNAPSHOT, {"dataset": "fake", "sha256": data_sha256})
    assert artifacts.missing_files(model_dir) == []
    history = [{"loss": 0.9, "valid.recall@10": 0.1}, {"loss": 0.7, "valid.recall@10": 0.2}]
    return TrainResult(
        model_dir=model_dir,
        params=params,
        metrics=dict(metrics),
        data_sha256=data_sha256,
        epochs=2,
        seconds=1.5,
        history=history,
    )


def fake_index_builder(calls: list[Path]):
    def build(model_dir: Path) -> None:
        calls.append(model_dir)
        (model_dir / artifacts.ITEM_INDEX).write_bytes(b"placeholder index")

    return build


def alias_version(config, alias: str) -> str:
    # The SQLite store hands versions back as int, other stores as str.
    return str(config.client().get_model_version_by_alias(config.model_name, alias).version)


def keys_under(client, bucket: str, prefix: str) -> set[str]:
    response = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {obj["Key"][len(prefix) :] for obj in response.get("Contents", [])}


def test_mlflow_keys_map_at_signs_reversibly_and_refuse_what_would_not_round_trip():
    assert mlflow_key("recbole.test.recall@10") == "recbole.test.recall_at_10"
    assert from_mlflow_key(mlflow_key("a b/c-d.e@5")) == "a b/c-d.e@5"
    for bad in ("x_at_y", "recall#10", "a//b", "/abs", "../up", ""):
        with pytest.raises(ValueError, match="cannot be an MLflow name"):
            mlflow_key(bad)


def test_register_promote_reject_and_override(tmp_path, state_dir, config, store, client):
    mlflow = config.client()
    s3 = client("s3")
    first = log_and_register(fake_result(tmp_path, "v1", GOOD), config, tags={"trigger": "test"})
    assert (first.version, first.model_name) == ("1", "rtrec-two-tower")
    assert alias_version(config, "staging") == "1"

    run = mlflow.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["recbole.test.recall_at_10"] == pytest.approx(0.20)
    assert run.data.params["embedding_dim"] == "4"
    assert run.data.params["hidden"] == "[8, 4]"
    assert run.data.params["data_sha256"] == run.data.tags["data_sha256"] == "ab" * 32
    assert run.data.tags["trigger"] == "test"
    assert [m.value for m in mlflow.get_metric_history(first.run_id, "history.valid.recall_at_10")] == [0.1, 0.2]
    assert {f.path for f in mlflow.list_artifacts(first.run_id, "model")} == {f"model/{name}" for name in REQUIRED}
    # Artifacts live in the state folder, not in ./mlruns of whatever the cwd is.
    assert run.info.artifact_uri.startswith(local_artifact_location(state_dir))
    assert any((state_dir / "mlflow" / "artifacts").rglob("metrics.json"))

    built: list[Path] = []
    promoted = promote(config, store, default_gate(), index_builder=fake_index_builder(built))
    assert promoted.decision.approved
    assert not promoted.decision.overridden
    assert promoted.promoted
    assert promoted.version == "1"
    assert len(built) == 1
    assert alias_version(config, "production") == "1"
    pointer = store.read_pointer()
    assert pointer == promoted.pointer
    assert (pointer.version, pointer.run_id, pointer.metrics) == ("1", first.run_id, GOOD)
    assert pointer.s3_prefix == f"{store.prefix}/versions/1/"
    assert keys_under(s3, store.bucket, pointer.s3_prefix) == set(REQUIRED) | {artifacts.ITEM_INDEX}
    tags = mlflow.get_model_version(config.model_name, "1").tags
    assert tags["gate.approved"] == "true"
    assert tags["promotion.status"] == "promoted"
    assert "no production model" in tags["gate.reason"]
    assert float(tags["gate.candidate.recbole.test.recall_at_10"]) == 0.20

    second = log_and_register(fake_result(tmp_path, "v2", WORSE), config)
    assert second.version == "2"
    assert alias_version(config, "staging") == "2"
    rejected = promote(config, store, default_gate(), index_builder=fake_index_builder(built))
    assert not rejected.decision.approved
    assert rejected.pointer is None
    assert rejected.version == "2"
    assert RECALL in rejected.decision.reason
    assert len(built) == 1  # a rejection builds and publishes nothing
    assert alias_version(config, "production") == "1"
    assert store.read_pointer() == pointer
    assert keys_under(s3, store.bucket, f"{store.prefix}/versions/2/") == set()
    tags = mlflow.get_model_version(config.model_name, "2").tags
    assert tags["gate.approved"] == "false"
    assert tags["gate.overridden"] == "false"
    assert tags["promotion.status"] == "rejected"
    assert tags["gate.production_version"] == "1"
    assert RECALL in tags["gate.reason"]
    assert "2.00%" in tags["gate.reason"]
    assert float(tags["gate.relative_change.recbole.test.recall_at_10"]) == pytest.approx(-0.25)

    with pytest.raises(ValueError, match="non-empty"):
        promote(config, store, default_gate(), version="2", override_reason=" ")
    forced = promote(config, store, default_gate(), version="2", override_reason="new catalogue; offline split changed")
    assert forced.decision.approved
    assert forced.decision.overridden
    assert alias_version(config, "production") == "2"
    assert store.read_pointer() == forced.pointer
    assert forced.pointer.version == "2"
    assert "new catalogue" in forced.pointer.gate_reason
    tags = mlflow.get_model_version(config.model_name, "2").tags
    assert tags["gate.approved"] == "true"
    assert tags["gate.overridden"] == "true"
    assert "new catalogue" in tags["gate.reason"]
    assert tags["promotion.status"] == "promoted"
    assert keys_under(s3, store.bucket, f"{store.prefix}/versions/2/") == set(REQUIRED)


def test_a_shadow_candidate_is_published_once_and_the_off_policy_gate_decides_its_promotion(tmp_path, config, store, client):
    from rtrec.domain.promotion import GateDecision

    mlflow = config.client()
    built: list[Path] = []
    log_and_register(fake_result(tmp_path, "v1", GOOD), config)
    assert promote(config, store, default_gate(), index_builder=fake_index_builder(built)).promoted
    log_and_register(fake_result(tmp_path, "v2", GOOD), config)
    shadow = publish_shadow(config, store, index_builder=fake_index_builder(built))
    assert shadow.version == "2"
    assert store.read_pointer("shadow") == shadow
    assert len(built) == 2
    assert store.read_pointer().version == "1"  # production is untouched
    assert keys_under(client("s3"), store.bucket, shadow.s3_prefix) == set(REQUIRED) | {artifacts.ITEM_INDEX}
    assert "shadow.published_at" in mlflow.get_model_version(config.model_name, "2").tags

    asked: list[tuple[str, str]] = []

    def policy_gate(approve: bool):
        def decide(candidate: str, production: str) -> GateDecision:
            asked.append((candidate, production))
            return GateDecision(approve, "off-policy: test verdict", {"ope.dr": 0.1, "ope.slates": 300.0})

        return decide

    rejected = promote(config, store, default_gate(), policy_gate=policy_gate(False))
    assert not rejected.promoted
    assert asked == [("2", "1")]
    tags = mlflow.get_model_version(config.model_name, "2").tags
    assert tags["gate.approved"] == "false"
    assert "off-policy: test verdict" in tags["gate.reason"]
    assert float(tags["gate.ope.dr"]) == 0.1
    assert store.read_pointer("shadow") == shadow

    approved = promote(config, store, default_gate(), policy_gate=policy_gate(True))
    assert approved.promoted
    assert approved.pointer.s3_prefix == shadow.s3_prefix
    assert len(built) == 2  # published as the shadow candidate already: not built or uploaded again
    assert store.read_pointer().version == "2"
    assert store.read_pointer("shadow") is None
    assert "within tolerance" in approved.decision.reason
    assert "test verdict" in approved.decision.reason


def test_promote_needs_a_candidate_and_register_needs_a_complete_consistent_folder(tmp_path, config, store):
    with pytest.raises(NotFoundError, match="staging"):
        promote(config, store, default_gate())
    result = fake_result(tmp_path, "v", GOOD)
    with pytest.raises(ValueError, match="differs"):
        log_and_register(TrainResult(**{**result.__dict__, "metrics": WORSE}), config)
    (result.model_dir / artifacts.ENCODER).unlink()
    with pytest.raises(ValueError, match=artifacts.ENCODER):
        log_and_register(result, config)
    with pytest.raises(NotFoundError):
        promote(config, store, default_gate(), version="7")


def test_the_experiment_keeps_its_artifacts_beside_the_database_and_nowhere_else(tmp_path, state_dir, config):
    assert RegistryConfig("sqlite:///:memory:").experiment_artifact_location is None
    with pytest.raises(ValueError, match="artifact_location must be set"):
        log_and_register(fake_result(tmp_path, "mem", GOOD), RegistryConfig("sqlite:///:memory:"))
    # What the training job passes: only the tracking URI of the local store.
    bare = RegistryConfig(tracking_uri=config.tracking_uri)
    assert bare.experiment_artifact_location == local_artifact_location(state_dir) == config.artifact_location
    result = fake_result(tmp_path, "v", GOOD)
    log_and_register(result, bare)
    log_and_register(result, config)
    elsewhere = RegistryConfig(tracking_uri=config.tracking_uri, artifact_location=(tmp_path / "elsewhere").as_uri())
    with pytest.raises(ValueError, match="stores artifacts at"):
        log_and_register(result, elsewhere)
    assert config.client().get_experiment_by_name("rtrec").artifact_location == local_artifact_location(state_dir)


def test_a_published_version_downloads_byte_for_byte_and_republishing_drops_stale_files(tmp_path, cloud, names):
    store = S3ModelStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url, region=cloud.region)
    version = f"rt-{uuid.uuid4().hex[:8]}"
    source = fake_result(tmp_path, "src", GOOD).model_dir
    (source / "extra").mkdir()
    (source / "extra" / "notes.txt").write_text("kept with its sub-folder")
    prefix = store.publish(version, source)
    assert prefix == f"models/versions/{version}/"

    target = store.download(version, tmp_path / "dst")
    downloaded = {p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    expected = {p.relative_to(source).as_posix(): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    assert downloaded == expected
    assert "extra/notes.txt" in downloaded

    (source / "extra" / "notes.txt").unlink()
    store.publish(version, source)
    again = store.download(version, tmp_path / "again")
    assert {p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()} == set(REQUIRED)

    with pytest.raises(NotFoundError):
        store.download("never-published", tmp_path / "none")
    with pytest.raises(InvalidInputError):
        store.publish("../escape", source)


def test_no_pointer_in_an_empty_bucket_and_a_garbled_one_is_a_dependency_error(cloud, client):
    bucket = f"itest-empty-{uuid.uuid4().hex[:8]}"
    s3 = client("s3")
    s3.create_bucket(Bucket=bucket)
    store = S3ModelStore(bucket, s3)
    assert store.read_pointer() is None
    s3.put_object(Bucket=bucket, Key=store.pointer_key, Body=json.dumps({"model_name": "m"}).encode())
    with pytest.raises(DependencyError, match="not a valid production pointer"):
        store.read_pointer()


def test_each_drift_report_becomes_a_run_of_the_drift_experiment(state_dir):
    from rtrec.adapters.mlflow.drift_runs import MlflowDriftRuns

    config = local_registry_config(state_dir)
    runs = MlflowDriftRuns(config.tracking_uri, artifact_location=config.artifact_location)
    report = {
        "generated_at": 1_700_000_000.0,
        "model_version": "3",
        "drifted": True,
        "reasons": ["genre: JS 0.3"],
        "features": [
            {"name": "genre", "statistic": "js_distance", "value": 0.3, "drifted": True},
            {"name": "score", "statistic": None, "value": None, "drifted": False},
        ],
    }
    run_id = runs.log(report, "drift/reports/2023-11-14T22-13-20-000007.json")
    assert runs.log({**report, "drifted": False, "features": []}, "drift/reports/next.json") != run_id
    run = config.client().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "2023-11-14T22-13-20-000007"
    assert run.data.tags["drift_report"].endswith("000007.json")
    assert run.data.tags["model_version"] == "3"
    assert run.data.metrics == {"drifted": 1.0, "genre.js_distance": 0.3, "genre.drifted": 1.0, "score.drifted": 0.0}
    assert [a.path for a in config.client().list_artifacts(run_id)] == ["drift_report.json"]
    assert run.info.artifact_uri.startswith(config.artifact_location)
