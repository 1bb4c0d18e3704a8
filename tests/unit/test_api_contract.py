"""The API's error contract and input bounds: one error schema for every 4xx and 5xx, nothing internal in it,
bodies bounded before they are parsed, strict types where the schema says number or boolean."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from rtrec.adapters.memory import InMemoryEventStream
from rtrec.services.stream import IngestService
from tests.unit.serving_world import ADMIN, keyed_access, make_world

NOW = 1_800_000_000.0


@pytest.fixture
def client() -> TestClient:
    world = make_world()
    services = Services(
        recommender=world.recommender(),
        catalog=world.catalog_service,
        ingest=IngestService(InMemoryEventStream(), clock=lambda: NOW),
        max_body_bytes=64 * 1024,
        access=keyed_access(),
    )
    return TestClient(create_app(services), headers=ADMIN)  # every role; the access tests are test_api_access


def click(**fields: object) -> dict:
    return {"event_id": "e1", "user_id": "u1", "item_id": "7", "type": "click", "timestamp": NOW, **fields}


def assert_error(response, status: int, code: str) -> dict:
    body = response.json()
    assert response.status_code == status, response.text
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_a_body_over_the_limit_is_413_before_it_is_parsed_and_not_echoed(client):
    huge = json.dumps({"events": [click(item_id="x" * (200 * 1024))]})
    response = client.post("/events", content=huge, headers={"content-type": "application/json"})
    assert_error(response, 413, "payload_too_large")
    assert len(response.content) < 1024


def test_a_validation_message_never_repeats_the_input(client):
    title = "A" * 40_000  # under the body limit, over the field's
    response = client.post("/items", json={"item_id": "n1", "title": title})
    body = assert_error(response, 422, "invalid_input")
    assert body["detail"].startswith("title: ")
    assert "AAAA" not in response.text
    assert len(response.content) < 1024


def test_many_validation_errors_are_summed_up(client):
    events = [{"event_id": str(n), "type": "like"} for n in range(50)]
    body = assert_error(client.post("/events", json={"events": events}), 422, "invalid_input")
    assert "more" in body["detail"]
    assert len(body["detail"]) <= 300


@pytest.mark.parametrize(
    "event",
    [click(type="rating", value=False), click(timestamp="1800000000"), click(timestamp=True), click(type="rating", value="4")],
)
def test_numbers_are_numbers(client, event):
    assert_error(client.post("/events", json={"events": [event]}), 422, "invalid_input")


@pytest.mark.parametrize(
    "item",
    [
        {"item_id": "n1", "title": "t", "promoted": 0},
        {"item_id": "n1", "title": "t", "promoted": "true"},
        {"item_id": "n1", "title": "t", "year": "2020"},
        {"item_id": "n1", "title": "t", "year": 2020.5},
        {"item_id": "n1", "title": "t", "year": True},
    ],
)
def test_booleans_are_booleans_and_years_whole_numbers(client, item):
    assert_error(client.post("/items", json=item), 422, "invalid_input")


def test_a_whole_number_written_with_a_fraction_is_an_integer_as_json_schema_says(client):
    assert client.post("/items", json={"item_id": "n1", "title": "t", "year": 2020.0}).status_code == 201


def test_a_rating_may_be_a_whole_number(client):
    assert client.post("/events", json={"events": [click(type="rating", value=4)]}).status_code == 202


def test_malformed_json_is_422_in_the_error_schema(client):
    response = client.post("/events", content=b'{"events": [', headers={"content-type": "application/json"})
    assert "JSON" in assert_error(response, 422, "invalid_input")["detail"]


def test_unknown_routes_and_methods_answer_in_the_error_schema(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.delete("/recommend/1"), 405, "method_not_allowed")


def test_every_error_status_a_route_documents_uses_the_error_schema(client):
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")) and path != "/health":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)
    for path in ("/events", "/items"):
        assert "413" in spec["paths"][path]["post"]["responses"]


def test_a_chunked_body_is_counted_as_it_arrives(client):
    def chunks():
        yield b'{"events": ['
        for _ in range(20):
            yield b'"' + b"x" * 8192 + b'",'
        yield b'"x"]}'

    response = client.post("/events", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def test_an_unknown_query_parameter_is_422_not_ignored(client):
    body = assert_error(client.get("/recommend/u1", params={"k": 5, "exlude_items": "3"}), 422, "invalid_input")
    assert "exlude_items" in body["detail"]
    assert "exclude_items" in body["detail"]
    assert client.get("/recommend/u1", params={"k": 5, "exclude_items": "3"}).status_code == 200
