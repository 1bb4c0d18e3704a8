"""The HTTP API over in-memory ports: over ASGI (TestClient) and as the Lambda handler (Mangum)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from mangum import Mangum

from functions.api.app import Services, create_app
from rtrec.adapters.memory import InMemoryFeatureStore, InMemoryPopularityStore
from rtrec.domain.models import PopularItems, ScoredItem, UserProfile
from rtrec.domain.ranking import RankingConfig
from rtrec.errors import DependencyError
from rtrec.services.recommend import Recommender
from tests.unit.serving_world import ADMIN, EVENTS, behind_the_gateway, keyed_access, make_world


class LambdaContext:
    function_name = "rtrec-api"
    aws_request_id = "test-request"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-api"


def make_recommender(popular: bool = True) -> Recommender:
    features = InMemoryFeatureStore()
    features.put_users([UserProfile("1", age=1, gender="F", history=("10",), interaction_count=1)])
    snapshot = (
        PopularItems(tuple(ScoredItem(str(i), 100.0 - i) for i in range(10, 40)), generated_at=0, half_life_days=90)
        if popular
        else None
    )
    return Recommender(features, InMemoryPopularityStore(snapshot))


@pytest.fixture
def client() -> TestClient:
    return TestClient(create_app(Services(make_recommender())))


def test_recommend_known_user(client):
    response = client.get("/recommend/1", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "1"
    assert body["cold_start"] is False
    assert body["strategy"] == "popular"
    assert [r["item_id"] for r in body["recommendations"]] == ["11", "12", "13", "14", "15"]
    assert set(body) == {"request_id", "user_id", "model_version", "cold_start", "strategy", "online_ranker", "recommendations"}


def test_unknown_user_is_a_cold_start_not_an_error(client):
    body = client.get("/recommend/never-seen").json()
    assert body["cold_start"] is True
    assert body["strategy"] == "popular_fallback"
    assert len(body["recommendations"]) == 10


@pytest.mark.parametrize("k", ["0", "101", "ten", "1.5"])
def test_bad_k_is_422_with_a_reason(client, k):
    response = client.get("/recommend/1", params={"k": k})
    body = response.json()
    assert response.status_code == 422
    assert body["error"] == "invalid_input"
    assert body["detail"].startswith("query.k: ")
    assert body["request_id"] == response.headers["x-request-id"]


def test_no_snapshot_yet_is_503_with_a_message():
    client = TestClient(create_app(Services(make_recommender(popular=False))))
    response = client.get("/recommend/1")
    assert response.status_code == 503
    assert response.json()["error"] == "model_not_ready"
    assert "seed" in response.json()["detail"]


def test_health_without_a_model_is_degraded_but_serving(client):
    response = client.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "degraded"
    assert body["popular_items"] == 30
    assert body["dependencies"] == {"feature_store": "ok", "popularity": "ok", "model": "none promoted yet"}
    assert body["model_version"] is None
    assert body["index_size"] == 0


def test_health_is_503_when_the_feature_store_is_down():
    recommender = make_recommender()

    def down() -> None:
        raise DependencyError("describing rtrec-user-features failed: connection refused")

    recommender._features.ping = down  # type: ignore[method-assign]
    response = TestClient(create_app(Services(recommender))).get("/health")
    assert response.status_code == 503
    assert response.json()["dependencies"]["feature_store"] == "error: dependency_unavailable"
    assert "connection refused" not in response.text
    assert "rtrec-user-features" not in response.text


def test_backend_failure_during_recommend_is_503_not_500():
    recommender = make_recommender()

    def broken(_user_id: str):
        raise DependencyError(
            "reading user '1' from rtrec-user-features failed: ResourceNotFoundException: "
            "arn:aws:dynamodb:us-east-1:123456789012:table/rtrec-user-features not found"
        )

    recommender._features.get_user = broken  # type: ignore[method-assign]
    response = TestClient(create_app(Services(recommender))).get("/recommend/1")
    body = response.json()
    assert response.status_code == 503
    assert body["error"] == "dependency_unavailable"
    assert body["request_id"]
    for internal in ("123456789012", "arn:aws", "rtrec-user-features", "ResourceNotFound"):
        assert internal not in response.text  # the SDK's text goes to the log under the request id


def test_openapi_docs_are_served(client):
    assert client.get("/docs").status_code == 200
    assert "/recommend/{user_id}" in client.get("/openapi.json").json()["paths"]


def test_mangum_answers_an_api_gateway_rest_proxy_event(lambda_event):
    handler = Mangum(create_app(behind_the_gateway(make_recommender())), lifespan="off")
    response = handler(lambda_event("api_recommend_user_1.json"), LambdaContext())
    assert response["statusCode"] == 200
    body = json.loads(response["body"])
    assert body["user_id"] == "1"
    assert len(body["recommendations"]) == 5


def test_mangum_maps_bad_input_to_422(lambda_event):
    handler = Mangum(create_app(behind_the_gateway(make_recommender())), lifespan="off")
    response = handler(lambda_event("api_recommend_bad_k.json"), LambdaContext())
    assert response["statusCode"] == 422


# -- with a model (fake towers over a real FAISS index) ---------------------------------------------


@pytest.fixture
def world():
    return make_world()


@pytest.fixture
def served(world) -> TestClient:
    return TestClient(
        create_app(Services(recommender=world.recommender(), catalog=world.catalog_service, access=keyed_access()))
    )


def test_health_with_a_model_reports_version_and_index_size(served):
    body = served.get("/health").json()
    assert body["status"] == "ok"
    assert body["model_version"] == "1"
    assert body["index_size"] == 40


def test_recommend_with_a_model(served):
    body = served.get("/recommend/u1", params={"k": 4}).json()
    assert body["strategy"] == "two_tower"
    assert body["model_version"] == "1"
    assert len(body["recommendations"]) == 4
    assert body["request_id"]
    assert all(0 < r["propensity"] <= 1 for r in body["recommendations"])
    assert served.get("/recommend/cold").json()["strategy"] == "cold_user_features"


def test_filters_as_repeated_or_comma_separated_query_parameters(served):
    body = served.get("/recommend/u1?k=5&include_genres=Comedy,Drama&exclude_items=5&exclude_items=6").json()
    returned = [int(r["item_id"]) for r in body["recommendations"]]
    assert len(returned) == 5
    assert all(i % 4 in (1, 2) and i not in (5, 6) for i in returned)


def test_a_genre_no_item_has_is_a_filter_that_matches_nothing_not_an_error(served):
    response = served.get("/recommend/u1", params={"include_genres": "Western"})
    assert response.status_code == 200
    assert response.json()["recommendations"] == []
    assert len(served.get("/recommend/u1", params={"exclude_genres": "Western"}).json()["recommendations"]) == 10


def test_similar_items_route(served):
    body = served.get("/items/1/similar", params={"k": 3}).json()
    assert body["item_id"] == "1"
    assert len(body["similar"]) == 3
    missing = served.get("/items/nope/similar")
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


def test_post_item_creates_then_updates_and_it_is_recommended(world):
    boosted = world.recommender(RankingConfig(policy="greedy", new_item_boost=2.0, freshness_weight=0.0))
    served = TestClient(create_app(Services(recommender=boosted, catalog=world.catalog_service, access=keyed_access())))
    item = {"item_id": "new-1", "title": "Brand New", "genres": ["Drama", "Musical"], "year": 2026}
    created = served.post("/items", json=item, headers=ADMIN)
    assert created.status_code == 201, created.text
    assert created.json() == {
        "item_id": "new-1",
        "created": True,
        "model_version": "1",
        "new_to_model": True,
        "unknown_genres": ["Musical"],
    }
    assert served.post("/items", json=item, headers=ADMIN).status_code == 200
    shown = [r["item_id"] for r in served.get("/recommend/u1?k=10").json()["recommendations"]]
    assert shown[0] == "new-1"


@pytest.mark.parametrize(
    "body",
    [
        {"title": "no id"},
        {"item_id": "bad id", "title": "t"},
        {"item_id": "x", "title": "t", "year": 3000},
        {"item_id": "x", "title": "t", "colour": "red"},
        {"item_id": "x", "title": ""},
    ],
)
def test_post_item_bad_body_is_422(served, body):
    response = served.post("/items", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["detail"]


def test_post_item_malformed_json_is_422(served):
    response = served.post("/items", content=b"{not json", headers={"content-type": "application/json", **ADMIN})
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_input"
    assert "JSON" in response.json()["detail"]


def test_post_item_needs_the_admin_key(world):
    client = TestClient(
        create_app(Services(recommender=world.recommender(), catalog=world.catalog_service, access=keyed_access()))
    )
    item = {"item_id": "n", "title": "t"}
    assert client.post("/items", json=item).status_code == 401
    assert client.post("/items", json=item, headers={"X-Api-Key": "wrong"}).status_code == 401
    assert client.post("/items", json=item, headers=EVENTS).status_code == 403
    assert client.post("/items", json=item, headers=ADMIN).status_code == 201


def test_without_any_configured_key_nobody_administers_the_catalog(world):
    client = TestClient(create_app(Services(recommender=world.recommender(), catalog=world.catalog_service)))
    assert client.post("/items", json={"item_id": "n", "title": "t"}).status_code == 401
    assert client.get("/recommend/u1").status_code == 200  # keyless reads stay open where keys are not required


@pytest.mark.parametrize(
    ("event", "status", "check"),
    [
        ("api_recommend_user_1.json", 200, lambda body: body["strategy"] == "popular_fallback"),
        ("api_similar_items.json", 200, lambda body: len(body["similar"]) == 5),
        ("api_post_item.json", 201, lambda body: body["created"] is True),
        ("api_post_item_malformed.json", 422, lambda body: body["error"] == "invalid_input" and "JSON" in body["detail"]),
        ("api_recommend_unknown_genre.json", 200, lambda body: body["recommendations"] == []),  # no item has it
    ],
)
def test_mangum_with_a_model_answers_rest_proxy_events(world, lambda_event, event, status, check):
    handler = Mangum(create_app(behind_the_gateway(world.recommender(), world.catalog_service)), lifespan="off")
    response = handler(lambda_event(event), LambdaContext())
    assert response["statusCode"] == status, response["body"]
    assert check(json.loads(response["body"]))


def test_the_start_up_heap_is_frozen_out_of_the_garbage_collector_when_the_app_starts():
    import gc

    gc.unfreeze()
    try:
        with TestClient(create_app(Services(make_recommender()))) as client:
            assert gc.get_freeze_count() > 0  # the lifespan's start-up froze what was there
            assert client.get("/recommend/1").status_code == 200
    finally:
        gc.unfreeze()
