"""The HTTP API (FastAPI): the same app runs under Mangum in Lambda and under uvicorn locally.

The app is assembled here from its parts: the routers (routes/, one per resource), the dependencies they declare
(deps), the one error mapping (errors), the request and response models (schemas), and what the routes call
(wiring: `Services`, built once by `build_services`).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry

from .deps import UnwiredError, reject_unknown_query_parameters, require_admin, require_events, require_read
from .errors import add_error_handlers, error_body
from .limits import BodyLimitMiddleware
from .observability import ObservabilityMiddleware, logger
from .routes import events, health, items, recommendations
from .wiring import ConsumerStatus, Services, build_services

__all__ = [
    "Services",
    "UnwiredError",
    "build_services",
    "create_app",
    "freeze_startup_heap",
    "lambda_entry",
    "logger",
    "require_admin",
    "require_events",
    "require_read",
]

LambdaHandler = Callable[[dict[str, Any], Any], Any]
FLUSH_MARGIN_S = 0.5  # of the invocation's remaining time, left for the response and the EMF lines


def create_app(
    services: Services, *, telemetry: Telemetry = NO_TELEMETRY, consumer_status: ConsumerStatus | None = None
) -> FastAPI:
    """The app over `services`; `telemetry` receives each request's and each slate's metrics (EMF in Lambda,
    Prometheus locally, whose registry is then served at GET /metrics); `consumer_status` (the local event source
    mapping's `stats`, when `rtrec run` runs it in this process) gives /health the consumer's lag.

    A route that needs a part `services` lacks (a test's app) raises UnwiredError when called (deps)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """On shutdown (uvicorn; Mangum runs with lifespan="off" and `lambda_entry` flushes instead), send the
        buffered impressions before the process goes."""
        freeze_startup_heap()
        yield
        await run_in_threadpool(services.close)

    app = FastAPI(
        title="rtrec",
        version="0.1.0",
        description="Real-time recommendations: two-tower retrieval, ANN candidates, ranking with exploration.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    # What the dependencies (deps) resolve from.
    app.state.services = services
    app.state.telemetry = telemetry
    app.state.consumer_status = consumer_status
    add_error_handlers(app)
    # Added first, so it runs inside the observability middleware (its 413 carries the request id).
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=services.max_body_bytes,
        error_body=lambda code, detail: orjson.dumps(error_body(code, detail)),
    )
    app.add_middleware(
        ObservabilityMiddleware, telemetry=telemetry, logger=logger, model_version=lambda: services.model_version()
    )
    if telemetry.exposition is not None:
        app.include_router(health.metrics_router)
    app.include_router(health.router)
    app.include_router(recommendations.router)
    app.include_router(events.router)
    app.include_router(items.router)
    return app


def freeze_startup_heap(*, collect_first: bool = True) -> None:
    """Move what start-up created (imports, clients, the model and its catalog: some 200k objects) out of the
    garbage collector's sight. Otherwise every full collection walks all of it, 180 ms with the interpreter lock
    held, triggered every few seconds by the objects a request and the online ranker's reload allocate; that
    was the p99 of `make run` at low rates. Called once serving is wired (uvicorn's start-up, the Lambda module,
    which skips the collection first: it would add that much to the cold start, to free a little memory)."""
    if collect_first:
        gc.collect()
    gc.freeze()


def lambda_entry(handler: LambdaHandler, services: Services) -> LambdaHandler:
    """`handler` (Mangum) that sends the invocation's impressions before it returns: Lambda freezes the process
    between invocations, so nothing may stay buffered for a background thread. The flush waits at most
    `services.impression_flush_s`, and never past the invocation's remaining time less FLUSH_MARGIN_S."""

    def entry(event: dict[str, Any], context: Any) -> Any:
        try:
            return handler(event, context)
        finally:
            timeout = services.impression_flush_s
            remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
            if callable(remaining_ms):
                timeout = max(0.0, min(timeout, remaining_ms() / 1000.0 - FLUSH_MARGIN_S))
            services.flush_impressions(timeout)

    return entry
