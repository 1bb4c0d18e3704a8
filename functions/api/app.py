"""The HTTP API (FastAPI): the same app runs under Mangum in Lambda and under uvicorn locally."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools import Logger
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.s3 import S3PopularityStore
from rtrec.errors import (
    DependencyError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    RtrecError,
)
from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
from rtrec.services.recommend import MAX_K, Recommender
from rtrec.settings import ApiSettings

logger = Logger(service="rtrec-api")

ERROR_STATUS: dict[type[RtrecError], int] = {
    InvalidInputError: 422,
    NotFoundError: 404,
    ModelNotReadyError: 503,
    DependencyError: 503,
}


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    propensity: float = Field(description="probability the serving policy chose this item for this slot")


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str
    model_version: str | None
    cold_start: bool
    strategy: str
    recommendations: list[RecommendedItem]


class HealthResponse(BaseModel):
    status: str
    model_version: str | None
    popular_items: int
    dependencies: dict[str, str]


class ErrorResponse(BaseModel):
    error: str
    detail: str


def build_recommender(settings: ApiSettings) -> Recommender:
    """Wire the AWS adapters named by `settings` into the recommend service."""
    names = settings.names
    features = DynamoFeatureStore(
        names.table(USER_FEATURES),
        names.table(ITEM_FEATURES),
        endpoint_url=settings.endpoint_url,
        region=settings.region,
    )
    popularity = S3PopularityStore(
        names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url, region=settings.region
    )
    return Recommender(features, popularity, refresh_seconds=settings.popularity_refresh_seconds)


def get_recommender(request: Request) -> Recommender:
    """The service the app was created with; tests override this dependency."""
    return request.app.state.recommender


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]


def _status_for(exc: RtrecError) -> int:
    for error_type in type(exc).__mro__:
        if error_type in ERROR_STATUS:
            return ERROR_STATUS[error_type]
    return 500


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RtrecError)
    status = _status_for(exc)
    if status >= 500:
        logger.error("request failed", extra={"error": type(exc).__name__, "detail": str(exc)})
    return JSONResponse(status_code=status, content={"error": type(exc).__name__, "detail": str(exc)})


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return JSONResponse(status_code=500, content={"error": "InternalError", "detail": "unexpected server error"})


def create_app(recommender: Recommender) -> FastAPI:
    app = FastAPI(
        title="rtrec",
        version="0.1.0",
        description="Real-time recommendations: two-tower retrieval, ANN candidates, ranking with exploration.",
    )
    app.state.recommender = recommender
    app.add_exception_handler(RtrecError, _domain_error)
    app.add_exception_handler(Exception, _unexpected_error)

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    def health(recommender: RecommenderDep) -> JSONResponse:
        dependencies: dict[str, str] = {}
        popular_items = 0
        try:
            recommender.ping()
            dependencies["feature_store"] = "ok"
        except RtrecError as exc:
            dependencies["feature_store"] = f"error: {exc}"
        try:
            popular_items = len(recommender.popular().items)
            dependencies["popularity"] = "ok"
        except RtrecError as exc:
            dependencies["popularity"] = f"error: {exc}"
        healthy = all(v == "ok" for v in dependencies.values())
        body = HealthResponse(
            status="ok" if healthy else "degraded",
            model_version=None,
            popular_items=popular_items,
            dependencies=dependencies,
        )
        return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())

    @app.get(
        "/recommend/{user_id}",
        response_model=RecommendationResponse,
        responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    )
    def recommend(
        recommender: RecommenderDep,
        user_id: Annotated[str, Path(min_length=1, max_length=128, description="the client's user id")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
    ) -> RecommendationResponse:
        result = recommender.recommend(user_id, k)
        return RecommendationResponse(
            request_id=result.request_id,
            user_id=result.user_id,
            model_version=result.model_version,
            cold_start=result.cold_start,
            strategy=result.strategy,
            recommendations=[
                RecommendedItem(item_id=i.item_id, score=i.score, propensity=i.propensity) for i in result.items
            ],
        )

    return app
