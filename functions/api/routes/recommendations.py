"""GET /recommend/{user_id}: a user's slate; the hot route (see the module docstring of deps on its dependencies)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, Request, Response

from rtrec.domain.access import Role
from rtrec.domain.models import Recommendation
from rtrec.domain.ranking import Filters
from rtrec.services.recommend import MAX_K

from ..deps import ReaderDep, ServicesDep, app_telemetry
from ..observability import logger
from ..schemas import ERRORS, RecommendationResponse, RecommendedItem, validated_json
from ..wiring import Services

router = APIRouter()


def _names(values: list[str] | None) -> tuple[str, ...]:
    """Repeated query parameters, each of which may also be comma-separated."""
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


async def _log_impression(services: Services, result: Recommendation, caller: str) -> None:
    """After the response, on the event loop: the impression only joins the producer's buffer (no I/O), so a
    thread-pool hand-off would cost more than the work."""
    services.log_impression(result, caller)


@router.get("/recommend/{user_id}", response_model=RecommendationResponse, responses=ERRORS)
def recommend(
    services: ServicesDep,
    caller: ReaderDep,
    background: BackgroundTasks,
    request: Request,  # for the telemetry: read, not solved as one more dependency
    user_id: Annotated[str, Path(min_length=1, max_length=128, description="the client's user id")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
    include_genres: Annotated[
        list[str] | None, Query(description="keep items with any of these genres (repeat or comma-separate)")
    ] = None,
    exclude_genres: Annotated[list[str] | None, Query(description="drop items with any of these genres")] = None,
    exclude_items: Annotated[list[str] | None, Query(description="item ids never to return")] = None,
    online_ranker: Annotated[
        bool,
        Query(description="add the online ranker's score (false: rank without it, for A/B comparison; it goes on learning)"),
    ] = True,
) -> Response:
    filters = Filters(_names(include_genres), _names(exclude_genres), frozenset(_names(exclude_items)))
    result = services.recommender.recommend(user_id, k, filters, online_ranker=online_ranker)
    if caller.may(Role.EVENTS):  # a read-only key's slates are not logged (README, Security)
        background.add_task(_log_impression, services, result, caller.name)
    app_telemetry(request).recommendation(result.strategy, result.cold_start, result.model_version, result.online_ranker)
    if services.impression_log_lines:
        logger.info(
            "impression",
            extra={
                "request_id": result.request_id,
                "user_id": result.user_id,
                "model_version": result.model_version,
                "caller": caller.name,
                "logged": caller.may(Role.EVENTS),
                "strategy": result.strategy,
                "items": [i.item_id for i in result.items],
                "propensities": [round(i.propensity, 6) for i in result.items],
            },
        )
    return validated_json(
        RecommendationResponse(
            request_id=result.request_id,
            user_id=result.user_id,
            model_version=result.model_version,
            cold_start=result.cold_start,
            strategy=result.strategy,
            online_ranker=result.online_ranker,
            recommendations=[RecommendedItem(item_id=i.item_id, score=i.score, propensity=i.propensity) for i in result.items],
        )
    )
