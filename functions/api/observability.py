"""Per-request observability for the API: a request id and the serving model version in every log line, and each
request's route, status and latency in the metrics (`Telemetry`: EMF in Lambda, Prometheus locally).

A pure ASGI middleware, not Starlette's BaseHTTPMiddleware (which costs tens of microseconds and a task per request):
it wraps `send` to see the status and the end of the body. Latency stops at the last body byte, so the background
task that logs the impression after the response is not counted. The route label is the route's template
(`/recommend/{user_id}`), never the raw path, so the metrics' cardinality stays bounded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from aws_lambda_powertools import Logger

from rtrec.monitoring.catalog import API_SERVICE
from rtrec.monitoring.telemetry import Telemetry

REQUEST_ID: ContextVar[str | None] = ContextVar("rtrec_request_id", default=None)
UNMATCHED_ROUTE = "unmatched"
UNMEASURED_ROUTES = frozenset({"/metrics"})  # a scraper's requests are not traffic
_LOG_KEYS = ("request_id", "model_version")

logger = Logger(service=API_SERVICE)  # the API's one logger: JSON lines with the request id and the model version


def request_id() -> str:
    """The current request's id (the slate's request id, so logs and the counterfactual log join); a fresh one
    outside a request."""
    return REQUEST_ID.get() or uuid.uuid4().hex


class ObservabilityMiddleware:
    def __init__(self, app: Any, *, telemetry: Telemetry, logger: Logger, model_version: Callable[[], str | None]) -> None:
        self.app = app
        self.telemetry = telemetry
        self.logger = logger
        self.model_version = model_version

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        REQUEST_ID.set(rid)  # the request's task (and the thread its sync route runs in) sees it
        self.logger.thread_safe_append_keys(request_id=rid, model_version=self.model_version())
        started = time.perf_counter()
        status = 500
        done = False
        telemetry = self.telemetry

        async def send_and_measure(message: dict[str, Any]) -> None:
            nonlocal status, done
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (b"x-request-id", rid.encode())]}
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False) and not done:
                done = True
                _measure(telemetry, scope, status, time.perf_counter() - started)

        try:
            await self.app(scope, receive, send_and_measure)
        finally:
            if not done:  # an exception escaped before the response ended: the server answers 500
                done = True
                _measure(telemetry, scope, 500, time.perf_counter() - started)
            self.logger.thread_safe_remove_keys(_LOG_KEYS)


def _measure(telemetry: Telemetry, scope: dict[str, Any], status: int, seconds: float) -> None:
    route = scope.get("route")
    path = getattr(route, "path", UNMATCHED_ROUTE) if route is not None else UNMATCHED_ROUTE
    if path not in UNMEASURED_ROUTES:
        telemetry.request(path, status, seconds)
