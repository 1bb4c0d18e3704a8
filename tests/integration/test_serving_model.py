"""The api Lambda serving a real (tiny) trained model from the embedded cloud: the whole request path,
cold start strategies, a new item added through POST /items, and a hot reload to a newly promoted version."""

from __future__ import annotations

import copy
import importlib
import json
import sys
import time

import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.adapters.aws.provision import Provisioner
from rtrec.adapters.aws.s3 import S3PopularityStore
from rtrec.data.movielens import load_movielens
from rtrec.domain.models import UserProfile
from rtrec.domain.promotion import ProductionPointer
from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES, ResourceNames
from rtrec.services.seed import seed_catalog
from tests.conftest import SAMPLE_API_KEY_ROLES

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NAMES = ResourceNames(prefix="iserve")


class LambdaContext:
    function_name = "rtrec-api"
    aws_request_id = "itest"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-api"


def pointer(version: str) -> ProductionPointer:
    return ProductionPointer(
        model_name="rtrec-two-tower",
        version=version,
        run_id="test",
        s3_prefix="",
        promoted_at=int(time.time()),
        metrics={},
        gate_reason="test",
    )


@pytest.fixture(scope="module")
def world(cloud, data_cache_dir, tmp_path_factory):
    from training.index import build_item_index
    from training.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("model")
    config = TrainConfig(
        dataset="ml-100k",
        data_cache_dir=data_cache_dir,
        output_dir=folder,
        protocols=("recbole",),
        epochs=2,
        dim=16,
        hidden=32,
        batch_size=512,
        user_hash_buckets=1024,
        baselines=False,
        threads=1,
    )
    train(config)
    build_item_index(folder)
    Provisioner(NAMES, endpoint_url=cloud.endpoint_url).provision()
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features = DynamoFeatureStore(NAMES.table(USER_FEATURES), NAMES.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    seed_catalog(dataset, features, S3PopularityStore(NAMES.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url))
    features.put_users([UserProfile("newbie", age=30, gender="F", occupation="engineer", zip_prefix="55")])
    store = S3ModelStore(NAMES.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
    store.publish("1", folder)
    store.write_pointer(pointer("1"))
    return folder, store, features


@pytest.fixture(scope="module")
def handler(world, cloud, tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("AWS_ENDPOINT_URL", cloud.endpoint_url)
    patch.setenv("RTREC_PREFIX", NAMES.prefix)
    patch.setenv("RTREC_API_KEY_ROLES", json.dumps(SAMPLE_API_KEY_ROLES))
    patch.setenv("RTREC_MODEL_CACHE_DIR", str(tmp_path_factory.mktemp("model-cache")))
    patch.setenv("RTREC_MODEL_POLL_SECONDS", "0.2")
    patch.setenv("RTREC_CATALOG_SYNC_SECONDS", "0.2")
    sys.modules.pop("functions.api.handler", None)
    module = importlib.import_module("functions.api.handler")
    yield module.handler
    sys.modules.pop("functions.api.handler", None)
    patch.undo()


def call(
    handler, lambda_event, name: str, path: str | None = None, query: dict | None = None, body: dict | None = None
) -> tuple[int, dict]:
    event = copy.deepcopy(lambda_event(name))
    if path is not None:
        event["path"] = path
    if query is not None:
        event["queryStringParameters"] = {k: v for k, v in query.items()}
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    if body is not None:
        event["body"] = json.dumps(body)
    response = handler(event, LambdaContext())
    return response["statusCode"], json.loads(response["body"])


def test_health_reports_the_loaded_model(handler, lambda_event):
    status, body = call(handler, lambda_event, "api_health.json")
    assert status == 200
    assert body["status"] == "ok"
    assert body["model_version"] == "1"
    assert body["index_size"] == 1682


def test_known_user_gets_two_tower_recommendations_outside_their_history(handler, lambda_event, world):
    _, _, features = world
    status, body = call(handler, lambda_event, "api_recommend_user_1.json", query={"k": "10"})
    assert status == 200
    assert body["strategy"] == "two_tower"
    assert body["model_version"] == "1"
    picked = [r["item_id"] for r in body["recommendations"]]
    assert len(picked) == 10
    assert not set(picked) & set(features.get_user("1").history)
    assert all(0 < r["propensity"] <= 1 for r in body["recommendations"])


def test_cold_start_strategies(handler, lambda_event):
    _, newbie = call(handler, lambda_event, "api_recommend_user_1.json", path="/recommend/newbie")
    assert newbie["strategy"] == "cold_user_features"
    assert newbie["cold_start"] is True
    _, stranger = call(handler, lambda_event, "api_recommend_user_1.json", path="/recommend/stranger")
    assert stranger["strategy"] == "popular_fallback"
    assert len(stranger["recommendations"]) == 5


def test_genre_filter_on_the_real_catalog(handler, lambda_event, world):
    _, _, features = world
    status, body = call(handler, lambda_event, "api_recommend_user_1.json", query={"k": "5", "include_genres": "Horror"})
    assert status == 200
    assert len(body["recommendations"]) == 5
    items = features.get_items([r["item_id"] for r in body["recommendations"]])
    assert all("Horror" in item.genres for item in items.values())


def test_new_item_is_indexed_at_once_and_explored(handler, lambda_event):
    status, added = call(handler, lambda_event, "api_post_item.json")
    assert status == 201
    assert added == {"item_id": "tt9999999", "created": True, "model_version": "1", "new_to_model": True, "unknown_genres": []}
    status, similar = call(handler, lambda_event, "api_similar_items.json", path="/items/tt9999999/similar")
    assert status == 200
    assert len(similar["similar"]) == 5
    shown = 0
    for user in range(1, 101):
        _, body = call(handler, lambda_event, "api_recommend_user_1.json", path=f"/recommend/{user}", query={"k": "10"})
        shown += "tt9999999" in [r["item_id"] for r in body["recommendations"]]
    assert shown > 0, "the exploration boost should put the new item in front of some users"
    assert call(handler, lambda_event, "api_post_item.json")[0] == 200  # the same id again is an update


def test_hot_reload_to_a_newly_promoted_version_keeps_added_items(handler, lambda_event, world):
    folder, store, _ = world
    store.publish("2", folder)
    store.write_pointer(pointer("2"))
    deadline = time.monotonic() + 20
    version = None
    while time.monotonic() < deadline and version != "2":
        time.sleep(0.3)
        version = call(handler, lambda_event, "api_health.json")[1]["model_version"]
    assert version == "2"
    status, similar = call(handler, lambda_event, "api_similar_items.json", path="/items/tt9999999/similar")
    assert status == 200
    assert similar["model_version"] == "2"


def test_serving_a_model_imports_neither_torch_nor_mlflow(world, cloud, tmp_path):
    import os
    import subprocess

    code = (
        "import json, sys; import functions.api.handler as h; "
        "assert h.app.state.services.recommender.model() is not None, 'no model loaded'; "
        "print(json.dumps(sorted(m for m in ('torch', 'mlflow', 'training') if m in sys.modules)))"
    )
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": cloud.endpoint_url,
        "RTREC_PREFIX": NAMES.prefix,
        "RTREC_MODEL_CACHE_DIR": str(tmp_path),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
