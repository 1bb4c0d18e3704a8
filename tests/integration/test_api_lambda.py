"""The real Lambda module (functions/api/handler.py) against the embedded cloud, fed API Gateway REST events."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.s3 import S3PopularityStore
from rtrec.data.movielens import load_movielens
from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
from rtrec.services.seed import seed_catalog
from tests.conftest import SAMPLE_API_KEY_ROLES

pytestmark = pytest.mark.integration


class LambdaContext:
    function_name = "rtrec-api"
    aws_request_id = "itest"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-api"


@pytest.fixture(scope="module")
def seeded(cloud, names, data_cache_dir):
    dataset = load_movielens("ml-100k", data_cache_dir, allow_download=False)
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)
    popularity = S3PopularityStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
    report = seed_catalog(dataset, features, popularity)
    return dataset, features, report


@pytest.fixture
def handler_module(cloud, names, monkeypatch, seeded):
    # The Lambda reads its configuration from the environment, as it would in AWS.
    monkeypatch.setenv("AWS_ENDPOINT_URL", cloud.endpoint_url)
    monkeypatch.setenv("RTREC_PREFIX", names.prefix)
    monkeypatch.setenv("RTREC_API_KEY_ROLES", json.dumps(SAMPLE_API_KEY_ROLES))
    sys.modules.pop("functions.api.handler", None)
    module = importlib.import_module("functions.api.handler")
    yield module
    sys.modules.pop("functions.api.handler", None)


def test_seeded_features_are_readable_through_the_adapter(seeded):
    dataset, features, report = seeded
    assert report.users_written == dataset.n_users
    user = features.get_user("1")
    assert user is not None
    assert user.gender == "M"
    assert len(user.history) == 272


def test_recommend_event_returns_popular_unseen_items(handler_module, lambda_event, seeded):
    _, features, _ = seeded
    response = handler_module.handler(lambda_event("api_recommend_user_1.json"), LambdaContext())
    assert response["statusCode"] == 200, response["body"]
    body = json.loads(response["body"])
    assert body["cold_start"] is False
    assert body["strategy"] == "popular"
    picked = [r["item_id"] for r in body["recommendations"]]
    assert len(picked) == 5
    assert not set(picked) & set(features.get_user("1").history)


def test_health_event(handler_module, lambda_event):
    response = handler_module.handler(lambda_event("api_health.json"), LambdaContext())
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["dependencies"] == {"feature_store": "ok", "popularity": "ok", "model": "none promoted yet"}
    assert body["status"] == "degraded"  # popular items only until a model is promoted


def test_bad_k_event_is_422(handler_module, lambda_event):
    response = handler_module.handler(lambda_event("api_recommend_bad_k.json"), LambdaContext())
    assert response["statusCode"] == 422
