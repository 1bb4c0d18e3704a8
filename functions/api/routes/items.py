"""The items: GET /items/{item_id}/similar (read), and the catalog's admin routes (add, activate or deactivate,
delete), each of which embeds or withdraws the item in the loaded model at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from rtrec.domain.models import ItemFeatures
from rtrec.services.recommend import MAX_K

from ..deps import AdminDep, CatalogDep, ReaderDep, RecommenderDep
from ..schemas import (
    BODY_ERRORS,
    ERRORS,
    ItemIn,
    ItemOut,
    ItemStateIn,
    ItemStateOut,
    SimilarItem,
    SimilarItemsResponse,
    validated_json,
)

router = APIRouter()

ItemIdPath = Annotated[str, Path(min_length=1, max_length=128, description="the item's id")]


@router.get("/items/{item_id}/similar", response_model=SimilarItemsResponse, responses=ERRORS)
def similar(
    recommender: RecommenderDep,
    _caller: ReaderDep,
    item_id: Annotated[str, Path(min_length=1, max_length=128)],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
) -> Response:
    result = recommender.similar(item_id, k)
    return validated_json(
        SimilarItemsResponse(
            item_id=result.item_id,
            model_version=result.model_version,
            similar=[SimilarItem(item_id=i.item_id, score=i.score) for i in result.items],
        )
    )


@router.post(
    "/items",
    response_model=ItemOut,
    status_code=201,
    responses={200: {"model": ItemOut, "description": "an existing item was updated"}, **BODY_ERRORS},
)
def add_item(_caller: AdminDep, body: ItemIn, response: Response, recommender: RecommenderDep, catalog: CatalogDep) -> ItemOut:
    """Add an item, or update one (its active state and its statistics are kept); the model embeds it from its
    features at once, the other instances within the catalog sync."""
    item = ItemFeatures(
        item_id=body.item_id, title=body.title, year=body.year, genres=tuple(body.genres), promoted=body.promoted
    )
    model = recommender.model()
    added = catalog.add_item(item, model)
    known_genres = set(model.towers.encoder.genres) if model is not None else set(body.genres)
    if not added.created:
        response.status_code = 200
    return ItemOut(
        item_id=added.item_id,
        created=added.created,
        model_version=added.model_version,
        new_to_model=added.new_to_model,
        unknown_genres=[g for g in body.genres if g not in known_genres],
    )


@router.patch("/items/{item_id}", response_model=ItemStateOut, responses=BODY_ERRORS)
def set_item_state(
    _caller: AdminDep, item_id: ItemIdPath, body: ItemStateIn, recommender: RecommenderDep, catalog: CatalogDep
) -> ItemStateOut:
    """Deactivate (`{"active": false}`) or activate an item: a deactivated item is never served; this instance
    stops at once, the others within the catalog sync interval."""
    item = catalog.set_active(item_id, body.active, recommender.model())
    return ItemStateOut(item_id=item.item_id, active=item.active)


@router.delete("/items/{item_id}", status_code=204, responses=ERRORS)
def delete_item(_caller: AdminDep, item_id: ItemIdPath, recommender: RecommenderDep, catalog: CatalogDep) -> Response:
    """Delete an item: never served again (this instance at once, the others within the catalog sync), 404 to
    these routes; its past events stay valid. POST /items with the id adds it again."""
    catalog.delete_item(item_id, recommender.model())
    return Response(status_code=204)
