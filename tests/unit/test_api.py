"""The HTTP API over in-memory ports: over ASGI (TestClient) and as the Lambda handler (Mangum)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from mangum import Mangum

from functions.api.app import create_app
from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.domain.models import PopularItems, ScoredItem, UserProfile
from rtrec.errors import DependencyError
from rtrec.services.recommend import Recommender


class LambdaContext:
    function_name = "rtrec-api"
    aws_request_id = "test-request"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-api"


def make_recommender(popular: bool = True) -> Recommender:
    features = InMemoryFeatureStore()
    features.put_users([UserProfile("1", age=1, gender="F", history=("10",), interaction_count=1)])
    snapshot = PopularItems(tuple(ScoredItem(str(i), 100.0 - i) for i in range(10, 40)), generated_at=0,
                            half_life_days=90) if popular else None
    return Recommender(features, InMemoryPopularityStore(snapshot))


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(make_recommender()))


def test_recommend_known_user(client):
    response = client.get("/recommend/1", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "1" and body["cold_start"] is False and body["strategy"] == "popular"
    assert [r["item_id"] for r in body["recommendations"]] == ["11", "12", "13", "14", "15"]
    assert set(body) == {"request_id", "user_id", "model_version", "cold_start", "strategy", "recommendations"}


def test_unknown_user_is_a_cold_start_not_an_error(client):
    body = client.get("/recommend/never-seen").json()
    assert body["cold_start"] is True and body["strategy"] == "popular_fallback"
    assert len(body["recommendations"]) == 10


@pytest.mark.parametrize("k", ["0", "101", "ten", "1.5"])
def test_bad_k_is_422_with_a_reason(client, k):
    response = client.get("/recommend/1", params={"k": k})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


def test_no_snapshot_yet_is_503_with_a_message():
    client = TestClient(create_app(make_recommender(popular=False)))
    response = client.get("/recommend/1")
    assert response.status_code == 503
    assert response.json()["error"] == "ModelNotReadyError"
    assert "seed" in response.json()["detail"]


def test_health_reports_dependencies(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["popular_items"] == 30
    assert body["dependencies"] == {"feature_store": "ok", "popularity": "ok"}


def test_health_is_503_when_the_feature_store_is_down():
    recommender = make_recommender()

    def down() -> None:
        raise DependencyError("describing rtrec-user-features failed: connection refused")

    recommender._features.ping = down  # type: ignore[method-assign]
    response = TestClient(create_app(recommender)).get("/health")
    assert response.status_code == 503
    assert "connection refused" in response.json()["dependencies"]["feature_store"]


def test_backend_failure_during_recommend_is_503_not_500():
    recommender = make_recommender()

    def broken(_user_id: str):
        raise DependencyError("reading user '1' failed: ProvisionedThroughputExceededException")

    recommender._features.get_user = broken  # type: ignore[method-assign]
    response = TestClient(create_app(recommender)).get("/recommend/1")
    assert response.status_code == 503
    assert "ProvisionedThroughputExceeded" in response.json()["detail"]


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/recommend/{user_id}" in client.get("/openapi.json").json()["paths"]


def test_mangum_answers_an_api_gateway_rest_proxy_event(lambda_event):
    handler = Mangum(create_app(make_recommender()), lifespan="off")
    response = handler(lambda_event("api_recommend_user_1.json"), LambdaContext())
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["user_id"] == "1" and len(body["recommendations"]) == 5


def test_mangum_maps_bad_input_to_422(lambda_event):
    handler = Mangum(create_app(make_recommender()), lifespan="off")
    response = handler(lambda_event("api_recommend_bad_k.json"), LambdaContext())
    assert response["statusCode"] == 422
