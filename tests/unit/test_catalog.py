"""The item catalog (columns) and the catalog service (new items without retraining)."""

from __future__ import annotations

import numpy as np
import pytest

from rtrec.domain.catalog import ItemCatalog, catalog_columns
from rtrec.domain.models import ItemFeatures
from rtrec.errors import InvalidInputError
from rtrec.services.catalog import CatalogService
from tests.unit.serving_world import GENRES, NOW, catalog_items, make_model, make_world


def test_upsert_adds_then_updates_in_place_and_grows():
    catalog = ItemCatalog(3, GENRES, capacity=2)
    rows = catalog.upsert([ItemFeatures(str(i), f"t{i}", genres=("Drama",)) for i in range(5)], np.ones((5, 3)))
    assert rows.tolist() == [0, 1, 2, 3, 4]
    assert len(catalog) == 5
    assert np.allclose(np.linalg.norm(catalog.columns.vectors[:5], axis=1), 1.0)
    again = catalog.upsert([ItemFeatures("2", "renamed", genres=("Comedy", "Westerns"))], np.ones((1, 3)))
    assert again.tolist() == [2]
    assert len(catalog) == 5
    assert catalog.title(2) == "renamed"
    assert catalog.genres_of(2) == ("Comedy",)


def test_rows_skip_unknown_ids_and_new_rows_follow_training():
    catalog = ItemCatalog(2, GENRES)
    catalog.upsert([ItemFeatures("a", "a"), ItemFeatures("b", "b")], np.ones((2, 2)))
    catalog.mark_trained()
    catalog.upsert([ItemFeatures("c", "c")], np.ones((1, 2)))
    assert catalog.rows(["b", "zzz", "c"]).tolist() == [1, 2]
    assert catalog.new_rows().tolist() == [2]
    assert catalog.is_new(np.array([0, 2])).tolist() == [False, True]


def test_bulk_matches_item_by_item():
    items = catalog_items(6)
    vectors = np.random.default_rng(0).standard_normal((6, 4))
    columns = catalog_columns(items, GENRES)
    bulk = ItemCatalog.bulk(
        GENRES,
        columns["item_ids"].tolist(),
        columns["titles"].tolist(),
        vectors,
        columns["genre_mask"],
        columns["popularity"],
        columns["created_at"],
        columns["promoted"],
    )
    one_by_one = ItemCatalog(4, GENRES)
    one_by_one.upsert(items, vectors)
    for name in ("vectors", "genre_mask", "popularity", "created_at", "promoted"):
        assert np.allclose(getattr(bulk.columns, name)[:6], getattr(one_by_one.columns, name)[:6], equal_nan=True)
    assert bulk.trained_items == 6
    assert len(bulk.new_rows()) == 0


def test_a_genre_the_catalog_does_not_know_has_no_bit():
    catalog = ItemCatalog(2, GENRES)
    assert catalog.genre_mask(["Noir"]) == 0
    assert catalog.genre_mask(["Noir", GENRES[1]]) == catalog.genre_mask([GENRES[1]]) != 0


def test_adding_an_item_writes_the_store_the_additions_and_the_model():
    world = make_world()
    added = world.catalog_service.add_item(ItemFeatures("n1", "New", genres=("Drama",)), world.model)
    assert added.created
    assert added.new_to_model
    assert world.features.items["n1"].created_at == int(NOW)
    assert "n1" in world.additions.items
    assert world.model.catalog.row("n1") is not None
    updated = world.catalog_service.add_item(ItemFeatures("n1", "New, renamed", genres=("Drama",)), world.model)
    assert not updated.created
    assert world.features.items["n1"].created_at == int(NOW)


def test_updating_a_trained_item_keeps_its_stats_and_id_embedding():
    world = make_world()
    result = world.catalog_service.add_item(ItemFeatures("1", "Item 1 (restored)", genres=("Action",)), world.model)
    assert not result.created
    assert not result.new_to_model
    assert world.features.items["1"].interaction_count == 99


def test_bad_items_are_invalid_input():
    world = make_world()
    for bad in (ItemFeatures("has space", "t"), ItemFeatures("ok", " "), ItemFeatures("ok", "t", year=1200)):
        with pytest.raises(InvalidInputError):
            world.catalog_service.add_item(bad, world.model)


def test_another_instance_and_the_next_model_pick_up_additions():
    world = make_world()
    world.catalog_service.add_item(ItemFeatures("n1", "New", genres=("Comedy",)), world.model)
    other_instance = make_model(catalog_items())
    clock = [0.0]
    service = CatalogService(world.features, world.additions, sync_seconds=30, clock=lambda: clock[0])
    service.maybe_sync(other_instance)
    assert other_instance.catalog.row("n1") is not None
    world.catalog_service.add_item(ItemFeatures("n2", "Newer", genres=("Drama",)), world.model)
    clock[0] = 10
    service.maybe_sync(other_instance)
    assert other_instance.catalog.row("n2") is None  # not due yet
    clock[0] = 31
    service.maybe_sync(other_instance)
    assert other_instance.catalog.row("n2") is not None
    next_model = service.prepare(make_model(catalog_items(), version="2"))
    assert next_model.catalog.row("n1") is not None
    assert len(next_model.index) == 42
