"""The routes through FastAPI's own seam: `app.dependency_overrides` replaces what a dependency of functions.api.deps
resolves (the recommender, the catalog) for one app, without building the services behind it."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from functions.api.deps import UnwiredError, get_catalog, get_recommender
from rtrec.domain.models import ItemFeatures, ScoredItem
from rtrec.errors import NotFoundError
from rtrec.services.recommend import SimilarItems
from tests.unit.serving_world import ADMIN, READ, keyed_access, make_world


class FakeRecommender:
    """Answers /similar from a fixed list; records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    def similar(self, item_id: str, k: int) -> SimilarItems:
        self.asked.append((item_id, k))
        if item_id == "gone":
            raise NotFoundError("item gone is not in the catalog")
        return SimilarItems(item_id, "fake-7", tuple(ScoredItem(f"s{n}", 1.0 - n / 10) for n in range(k)))

    def model(self) -> None:
        return None


class FakeCatalog:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_item(self, item_id: str, model: object) -> ItemFeatures:
        self.deleted.append(item_id)
        return ItemFeatures(item_id=item_id, title="t", year=None, genres=(), active=False)


@pytest.fixture
def app():
    """An app over the real serving world (a recommender, no catalog), with keys."""
    return create_app(Services(recommender=make_world().recommender(), access=keyed_access(require_keys=True)))


def test_an_overridden_recommender_answers_the_similar_route(app):
    fake = FakeRecommender()
    app.dependency_overrides[get_recommender] = lambda: fake
    client = TestClient(app, headers=READ)
    response = client.get("/items/42/similar", params={"k": 3})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "item_id": "42",
        "model_version": "fake-7",
        "similar": [{"item_id": "s0", "score": 1.0}, {"item_id": "s1", "score": 0.9}, {"item_id": "s2", "score": 0.8}],
    }
    assert fake.asked == [("42", 3)]
    # the fake's domain error goes through the app's one error mapping
    assert client.get("/items/gone/similar").status_code == 404
    # the role check is not overridden: no key, no call
    assert TestClient(app).get("/items/42/similar").status_code == 401
    assert len(fake.asked) == 2


def test_an_overridden_catalog_takes_the_admin_routes_of_an_app_built_without_one(app):
    client = TestClient(app, headers=ADMIN)
    with pytest.raises(UnwiredError):  # no catalog wired
        client.delete("/items/7")
    fake = FakeCatalog()
    app.dependency_overrides[get_catalog] = lambda: fake
    assert client.delete("/items/7").status_code == 204
    assert fake.deleted == ["7"]
    app.dependency_overrides.clear()
    with pytest.raises(UnwiredError):
        client.delete("/items/7")
    assert fake.deleted == ["7"]
