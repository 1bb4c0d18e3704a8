"""GET /health (can this instance serve, and how fresh is it) and, locally, GET /metrics (Prometheus)."""

from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from rtrec.errors import RtrecError

from ..deps import ConsumerStatusDep, RecommenderDep, ServicesDep, TelemetryDep
from ..observability import logger
from ..schemas import ConsumerHealth, HealthResponse
from ..wiring import ConsumerStatus

router = APIRouter()
# Included only when the telemetry has an exposition (Prometheus under `rtrec run`); EMF in Lambda has none.
metrics_router = APIRouter()

CONSUMER_LAG_OK_S = 60.0  # as the iterator-age alarm: a minute behind is lagging


def consumer_health(status: ConsumerStatus | None) -> ConsumerHealth:
    """Summarize the mapping's stats(); a failing status callable degrades to `unavailable`, never raises."""
    if status is None:
        return ConsumerHealth(source="cloudwatch")
    try:
        stats = status()
    except Exception as exc:  # the health route must answer whatever the consumer does
        logger.warning("health: consumer status failed", extra={"error": type(exc).__name__, "detail": str(exc)})
        return ConsumerHealth(source="unavailable", detail="the consumer's status could not be read")
    lag = stats.get("lag_seconds")
    # The state and since when; the last error (an SDK's text) is in the consumer's log and `rtrec` output.
    stalled = {
        shard: f"{s.get('state') or 'stalled'} since "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(s['stalled_since'])))}"
        for shard, s in (stats.get("shards") or {}).items()
        if s.get("stalled_since") is not None
    }
    state: Literal["ok", "lagging", "stalled"] = (
        "stalled" if stalled else ("lagging" if lag is not None and lag > CONSUMER_LAG_OK_S else "ok")
    )
    return ConsumerHealth(
        source="local", status=state, lag_seconds=lag, stalled_shards=stalled, detail="read from the local event source mapping"
    )


def _unhealthy(what: str, exc: RtrecError) -> str:
    """A dependency's state for /health: its error code; the SDK's text goes to the log only."""
    logger.warning(f"health: {what} failed", extra={"error": type(exc).__name__, "detail": str(exc)})
    return f"error: {exc.code}"


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(telemetry: TelemetryDep) -> Response:
    """Prometheus text format: request latency per route, errors, strategy mix, cold users, the model
    version, and the stream consumer's metrics when it runs in this process (`rtrec run`)."""
    exposition = telemetry.exposition
    assert exposition is not None  # the router is included only with one
    body, content_type = exposition()
    return Response(content=body, media_type=content_type)


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
def health(services: ServicesDep, recommender: RecommenderDep, consumer_status: ConsumerStatusDep) -> JSONResponse:
    dependencies: dict[str, str] = {}
    popular_items = 0
    try:
        recommender.ping()
        dependencies["feature_store"] = "ok"
    except RtrecError as exc:
        dependencies["feature_store"] = _unhealthy("feature store", exc)
    try:
        popular_items = len(recommender.popular().items)
        dependencies["popularity"] = "ok"
    except RtrecError as exc:
        dependencies["popularity"] = _unhealthy("popularity snapshot", exc)
    model = recommender.model()
    if model is not None:
        dependencies["model"] = "ok" if services.model_error() is None else "ok (a newer version failed to load)"
    else:
        dependencies["model"] = "error: failed to load" if services.model_error() else "none promoted yet"
    ranker = recommender.online_ranker()
    can_serve = dependencies["feature_store"] == "ok" and (model is not None or popular_items > 0)
    status = "unavailable" if not can_serve else ("ok" if model is not None and popular_items else "degraded")
    body = HealthResponse(
        status=status,
        model_version=model.version if model else None,
        index_size=len(model.index) if model else 0,
        popular_items=popular_items,
        online_ranker_examples=ranker.examples if ranker is not None else 0,
        shadow_version=services.shadow_version(),
        dependencies=dependencies,
        consumer=consumer_health(consumer_status),  # lag degrades serving's freshness, not its availability
    )
    return JSONResponse(status_code=200 if can_serve else 503, content=body.model_dump())
