"""Keys per role (issue 17, items 1 and 2): who may read, send events and administer the catalog; whose slates are
logged as impressions; per-key throttling; and the admin's item deactivation and deletion."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mangum import Mangum

from functions.api.app import Services, UnwiredError, create_app
from rtrec.adapters.memory import InMemoryEventStream
from rtrec.domain.access import AccessPolicy, Limits, RateLimiter, gateway_keys
from rtrec.domain.events import Impression
from rtrec.domain.ranking import RankingConfig
from rtrec.errors import ThrottledError
from rtrec.services.catalog import CatalogService
from rtrec.services.stream import IngestService
from tests.conftest import SAMPLE_API_KEY_ROLES
from tests.unit.serving_world import ADMIN, EVENTS, NOW, READ, keyed_access, make_model, make_world

CLICK = {"event_id": "e1", "user_id": "u1", "item_id": "7", "type": "click", "timestamp": NOW}
NEW_ITEM = {"item_id": "new-1", "title": "Brand New", "genres": ["Drama"], "year": 2026}


class Stack:
    """The app over an in-memory world, with the stream it logs impressions to."""

    def __init__(self, access: AccessPolicy, world=None) -> None:
        self.world = world or make_world()
        self.stream = InMemoryEventStream()
        recommender = self.world.recommender(RankingConfig(policy="greedy", new_item_boost=2.0, freshness_weight=0.0))
        self.services = Services(
            recommender=recommender,
            catalog=self.world.catalog_service,
            access=access,
            ingest=IngestService(self.stream, clock=lambda: NOW),
            impression_log_lines=False,
        )
        self.client = TestClient(create_app(self.services))

    def impressions(self) -> list[Impression]:
        return [m for m in self.stream.messages if isinstance(m, Impression)]

    def shown(self, user: str = "u1", headers: dict | None = None) -> list[str]:
        response = self.client.get(f"/recommend/{user}", params={"k": 10}, headers=headers or ADMIN)
        assert response.status_code == 200, response.text
        return [r["item_id"] for r in response.json()["recommendations"]]


def status_of(client: TestClient, headers: dict | None) -> dict[str, int]:
    return {
        "recommend": client.get("/recommend/u1", headers=headers).status_code,
        "similar": client.get("/items/1/similar", headers=headers).status_code,
        "events": client.post("/events", json={"events": [CLICK]}, headers=headers).status_code,
        "items": client.post("/items", json=NEW_ITEM, headers=headers).status_code,
        "health": client.get("/health", headers=headers).status_code,
    }


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (READ, {"recommend": 200, "similar": 200, "events": 403, "items": 403, "health": 200}),
        (EVENTS, {"recommend": 200, "similar": 200, "events": 202, "items": 403, "health": 200}),
        (ADMIN, {"recommend": 200, "similar": 200, "events": 202, "items": 201, "health": 200}),
        (None, {"recommend": 401, "similar": 401, "events": 401, "items": 401, "health": 200}),
        ({"X-Api-Key": "not-a-key"}, {"recommend": 401, "similar": 401, "events": 401, "items": 401, "health": 200}),
    ],
)
def test_each_role_may_do_its_work_and_no_more_when_keys_are_required(headers, expected):
    assert status_of(Stack(keyed_access(require_keys=True)).client, headers) == expected


def test_on_loopback_keyless_clients_read_and_send_events_but_never_administer():
    client = Stack(keyed_access(require_keys=False)).client
    assert status_of(client, None) == {"recommend": 200, "similar": 200, "events": 202, "items": 401, "health": 200}
    assert client.get("/recommend/u1", headers={"X-Api-Key": "not-a-key"}).status_code == 401  # a wrong key is wrong


def test_errors_say_what_is_missing_in_the_one_error_schema():
    client = Stack(keyed_access(require_keys=True)).client
    body = client.get("/recommend/u1").json()
    assert body["error"] == "unauthorized"
    assert "X-Api-Key" in body["detail"]
    assert body["request_id"]
    body = client.post("/events", json={"events": [CLICK]}, headers=READ).json()
    assert body["error"] == "forbidden"
    assert "events role" in body["detail"]


def test_impressions_are_attributed_to_the_key_and_a_read_key_logs_none():
    stack = Stack(keyed_access(require_keys=False))
    stack.shown(headers=READ)
    assert stack.impressions() == []  # a read-only caller cannot replace u1's pending slate nor feed evaluation
    stack.shown(headers=EVENTS)
    stack.client.get("/recommend/u1")  # keyless on loopback: the local, trusted caller
    assert [i.caller for i in stack.impressions()] == ["events", "anonymous"]


def test_behind_api_gateway_the_key_id_in_the_request_context_decides(lambda_event):
    stack = Stack(AccessPolicy(gateway_keys(SAMPLE_API_KEY_ROLES), require_keys=True))
    handler = Mangum(create_app(stack.services), lifespan="off")
    event = lambda_event("api_recommend_user_1.json")
    assert handler(event, {})["statusCode"] == 200
    assert [i.caller for i in stack.impressions()] == ["apikey:sample-events-key-id"]
    event["requestContext"]["identity"]["apiKeyId"] = "a-key-of-another-api"
    assert handler(event, {})["statusCode"] == 401
    event["requestContext"]["identity"]["apiKeyId"] = None  # the header's value is API Gateway's to check, not ours
    value = "sample-key-value-not-seen-by-the-api"
    event["headers"]["X-Api-Key"], event["multiValueHeaders"]["X-Api-Key"] = value, [value]
    assert handler(event, {})["statusCode"] == 401
    post = lambda_event("api_post_item.json")
    post["requestContext"]["identity"]["apiKeyId"] = "sample-events-key-id"
    assert handler(post, {})["statusCode"] == 403  # the events key cannot administer the catalog


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_each_key_has_its_own_rate_limit_with_retry_after():
    clock = Clock()
    limiter = RateLimiter(Limits(rate_per_s=2.0, burst=2), clock=clock, wall_clock=lambda: NOW)
    client = Stack(keyed_access(require_keys=True, limiter=limiter)).client
    assert [client.get("/recommend/u1", headers=READ).status_code for _ in range(3)] == [200, 200, 429]
    throttled = client.get("/recommend/u1", headers=READ)
    assert throttled.json()["error"] == "throttled"
    assert throttled.headers["Retry-After"] == "1"
    assert client.get("/recommend/u1", headers=EVENTS).status_code == 200  # another key, its own bucket
    clock.now += 0.5  # one token back at 2/s
    assert [client.get("/recommend/u1", headers=READ).status_code for _ in range(2)] == [200, 429]


def test_a_daily_quota_resets_at_midnight_utc():
    wall = Clock(86_400 * 20_000 + 3_600)
    limiter = RateLimiter(Limits(daily_quota=2), wall_clock=wall)
    limiter.take("read")
    limiter.take("read")
    with pytest.raises(ThrottledError) as raised:
        limiter.take("read")
    assert raised.value.retry_after_s == pytest.approx(86_400 - 3_600)
    limiter.take("events")
    wall.now += 86_400
    limiter.take("read")


def test_no_limits_means_no_limiter_work():
    assert not RateLimiter(Limits()).active


# -- deactivating and deleting items ----------------------------------------------------------------


def admin_stack() -> Stack:
    stack = Stack(keyed_access(require_keys=False))
    assert stack.client.post("/items", json=NEW_ITEM, headers=ADMIN).status_code == 201
    assert stack.shown()[0] == "new-1"  # the boost puts a new item first
    return stack


def test_a_deactivated_item_is_not_served_until_activated_again():
    stack = admin_stack()
    response = stack.client.patch("/items/new-1", json={"active": False}, headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"item_id": "new-1", "active": False}
    assert "new-1" not in stack.shown()
    assert stack.client.get("/items/new-1/similar", headers=ADMIN).status_code == 404
    assert all(
        "new-1"
        not in [
            s["item_id"] for s in stack.client.get(f"/items/{i}/similar", params={"k": 50}, headers=ADMIN).json()["similar"]
        ]
        for i in ("1", "2", "3")
    )
    # an update of its description keeps it deactivated
    assert stack.client.post("/items", json={**NEW_ITEM, "title": "Renamed"}, headers=ADMIN).status_code == 200
    assert "new-1" not in stack.shown()
    assert stack.client.patch("/items/new-1", json={"active": True}, headers=ADMIN).json()["active"] is True
    assert stack.shown()[0] == "new-1"


def test_a_trained_item_can_be_deactivated_too():
    stack = admin_stack()
    first_trained = next(i for i in stack.shown() if i != "new-1")
    stack.client.patch(f"/items/{first_trained}", json={"active": False}, headers=ADMIN)
    assert first_trained not in stack.shown()


def test_a_deleted_item_is_gone_from_serving_and_the_admin_routes_until_added_again():
    stack = admin_stack()
    assert stack.client.delete("/items/new-1", headers=ADMIN).status_code == 204
    assert "new-1" not in stack.shown()
    assert stack.client.delete("/items/new-1", headers=ADMIN).status_code == 404
    assert stack.client.patch("/items/new-1", json={"active": True}, headers=ADMIN).status_code == 404
    assert stack.client.delete("/items/never-was", headers=ADMIN).status_code == 404
    assert stack.world.features.get_items(["new-1"])["new-1"].deleted_at == int(NOW)  # a tombstone, not a DeleteItem
    again = stack.client.post("/items", json=NEW_ITEM, headers=ADMIN)
    assert again.status_code == 201
    assert again.json()["created"] is True
    assert stack.shown()[0] == "new-1"


@pytest.mark.parametrize("headers", [None, READ, EVENTS])
def test_only_the_admin_deactivates_or_deletes(headers):
    client = admin_stack().client
    assert client.patch("/items/new-1", json={"active": False}, headers=headers).status_code in (401, 403)
    assert client.delete("/items/new-1", headers=headers).status_code in (401, 403)


@pytest.mark.parametrize("body", [{"active": "false"}, {"active": 0}, {}, {"active": False, "extra": 1}])
def test_the_item_state_body_is_strict(body):
    assert admin_stack().client.patch("/items/new-1", json=body, headers=ADMIN).status_code == 422


def test_another_instance_stops_serving_a_deactivated_item_at_its_next_catalog_sync():
    stack = admin_stack()
    clock = Clock()
    other_model = make_model([stack.world.features.get_items([str(i)])[str(i)] for i in range(1, 41)])
    other = CatalogService(stack.world.features, stack.world.additions, sync_seconds=30.0, clock=clock, wall_clock=lambda: NOW)
    other.prepare(other_model)
    row = other_model.catalog.row("new-1")
    assert row is not None
    assert other_model.catalog.is_active(row)
    stack.client.patch("/items/new-1", json={"active": False}, headers=ADMIN)
    other.maybe_sync(other_model)
    assert other_model.catalog.is_active(row)  # not yet: within the sync interval
    clock.now += 30.0
    other.maybe_sync(other_model)
    assert not other_model.catalog.is_active(row)
    assert "new-1" in other_model.catalog.inactive_ids
    found = [
        i for i, _ in other_model.index.search(np.ones(8, dtype=np.float32), 50, exclude=set(other_model.catalog.inactive_ids))
    ]
    assert "new-1" not in found


def test_the_openapi_document_declares_the_key_and_the_new_codes():
    spec = Stack(keyed_access()).client.get("/openapi.json").json()
    scheme = spec["components"]["securitySchemes"]["ApiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "X-Api-Key")
    for path, method in (
        ("/recommend/{user_id}", "get"),
        ("/events", "post"),
        ("/items", "post"),
        ("/items/{item_id}", "patch"),
        ("/items/{item_id}", "delete"),
    ):
        operation = spec["paths"][path][method]
        assert operation["security"] == [{"ApiKey": []}]
        assert {"401", "403", "429"} <= set(operation["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]


def test_an_app_created_without_a_catalog_fails_the_admin_routes_as_a_wiring_error_after_the_key_check():
    """A wiring gap is the code's error, not a model still loading: no 503 model_not_ready that a client would retry."""
    app = create_app(Services(recommender=make_world().recommender(), access=keyed_access(require_keys=True)))
    client = TestClient(app)
    item = {"item_id": "new-1", "title": "New", "genres": ["Drama"]}
    assert client.post("/items", json=item).status_code == 401  # no key: the catalog is not even looked at
    calls = (
        lambda: client.post("/items", json=item, headers=ADMIN),
        lambda: client.patch("/items/i1", json={"active": False}, headers=ADMIN),
        lambda: client.delete("/items/i1", headers=ADMIN),
    )
    for call in calls:
        with pytest.raises(UnwiredError, match="no catalog"):
            call()
    response = TestClient(app, raise_server_exceptions=False).delete("/items/i1", headers=ADMIN)
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "internal_error", response.text


def test_an_app_created_without_ingestion_fails_post_events_as_a_wiring_error_after_the_key_check():
    client = TestClient(create_app(Services(recommender=make_world().recommender(), access=keyed_access(require_keys=True))))
    batch = {"events": [CLICK]}
    assert client.post("/events", json=batch).status_code == 401  # no key: ingestion is not even looked at
    with pytest.raises(UnwiredError, match="no ingest service"):
        client.post("/events", json=batch, headers=EVENTS)
