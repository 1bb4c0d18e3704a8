"""The HTTP API (FastAPI): the same app runs under Mangum in Lambda and under uvicorn locally."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

import orjson
from aws_lambda_powertools import Logger
from fastapi import BackgroundTasks, Depends, FastAPI, Path, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from rtrec.domain.access import (
    AccessPolicy,
    Caller,
    Limits,
    RateLimiter,
    Role,
    gateway_keys,
    local_keys,
    retry_after_header,
)
from rtrec.domain.events import UserEvent
from rtrec.domain.models import ItemFeatures, Recommendation
from rtrec.domain.ranking import Filters
from rtrec.errors import (
    DependencyError,
    ForbiddenError,
    InvalidInputError,
    ModelNotReadyError,
    NotFoundError,
    RtrecError,
    ThrottledError,
    UnauthorizedError,
    short_reason,
)
from rtrec.monitoring.catalog import API_SERVICE
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry
from rtrec.services.catalog import ITEM_ID_PATTERN, CatalogService, ServingModel
from rtrec.services.recommend import MAX_K, Recommender, RetrievalConfig
from rtrec.services.stream import MAX_EVENTS_PER_REQUEST, IngestService
from rtrec.settings import DEFAULT_MAX_BODY_BYTES, ApiSettings

from .limits import BodyLimitMiddleware
from .observability import ObservabilityMiddleware
from .observability import request_id as current_request_id

logger = Logger(service=API_SERVICE)

ERROR_STATUS: dict[type[RtrecError], int] = {
    InvalidInputError: 422,
    NotFoundError: 404,
    ModelNotReadyError: 503,
    DependencyError: 503,
    UnauthorizedError: 401,
    ForbiddenError: 403,
    ThrottledError: 429,
}


# -- schemas ---------------------------------------------------------------------------------------


def _number(value: Any) -> Any:
    """JSON Schema's number: a JSON number, never a string or a boolean (pydantic's lax mode takes both)."""
    if isinstance(value, (str, bool)):
        raise ValueError("must be a JSON number")
    return value


JsonFloat = Annotated[float, BeforeValidator(_number)]
# Bounds inside the Annotated and before the validator: otherwise they reach the OpenAPI document as "ge"/"le",
# which JSON Schema does not know (and a generator then ignores).
Year = Annotated[int, Field(ge=1800, le=2100), BeforeValidator(_number)]  # 2026 and 2026.0, not "2026" nor true
Rating = Annotated[float, Field(ge=0, le=10), BeforeValidator(_number)]


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    propensity: float = Field(description="probability the serving policy chose this item for this slot, "
                                          "given the slots before it")


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str
    model_version: str | None
    cold_start: bool
    strategy: str = Field(description="two_tower | cold_user_features | popular_fallback | popular")
    online_ranker: bool = Field(False, description="whether the online ranker's score was part of the ranking")
    recommendations: list[RecommendedItem]


class SimilarItem(BaseModel):
    item_id: str
    score: float


class SimilarItemsResponse(BaseModel):
    item_id: str
    model_version: str
    similar: list[SimilarItem]


class ItemIn(BaseModel):
    """An item to add or update; it is embedded by the item tower from these features."""

    model_config = ConfigDict(extra="forbid")

    item_id: str = Field(pattern=ITEM_ID_PATTERN.pattern, examples=["tt9999999"])
    title: str = Field(min_length=1, max_length=500, examples=["A New Film (2026)"])
    genres: list[str] = Field(default_factory=list, max_length=20, examples=[["Comedy", "Romance"]])
    year: Year | None = Field(default=None, examples=[2026])
    promoted: bool = Field(default=False, strict=True, description="eligible for the promoted slots of every slate")


class ItemOut(BaseModel):
    item_id: str
    created: bool
    model_version: str | None = Field(description="the model that embedded it; null when none is loaded yet "
                                                  "(it is embedded when one is)")
    new_to_model: bool = Field(description="true when embedded from its features alone (the model was not "
                                           "trained on it); it then gets the new-item exploration boost")
    unknown_genres: list[str] = Field(description="genres the model does not know; they do not shape the embedding")


class ItemStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool = Field(strict=True, description="false: never served (until set true again)")


class ItemStateOut(BaseModel):
    item_id: str
    active: bool


class _EventFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128, description="unique; a re-sent event is applied once, also "
                                                                     "when repeated within one batch")
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    timestamp: JsonFloat = Field(gt=0, description="unix seconds (more than a day ahead of the server's clock: "
                                                   "taken as the time it arrived)")
    request_id: str | None = Field(default=None, min_length=1, max_length=128,
                                   description="the recommendation response that showed the item")


class ActionEventIn(_EventFields):
    """A view, click or purchase; `request_id` ties it to the recommendation response that showed the item."""

    type: Literal["view", "click", "purchase"]
    value: Rating | None = Field(default=None, description="not used for these types")


class RatingEventIn(_EventFields):
    """A rating, with its value (the schema says so, rather than a check after it)."""

    type: Literal["rating"]
    value: Rating = Field(description="the rating")


EventIn = Annotated[ActionEventIn | RatingEventIn, Field(discriminator="type")]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class EventsAccepted(BaseModel):
    accepted: int


class ConsumerHealth(BaseModel):
    """The stream consumer's lag as /health reports it: read from the event source mapping when it runs in this
    process (`rtrec run`); in AWS the Lambda service runs it, and its IteratorAge metric (alarmed) is the lag."""

    source: Literal["local", "cloudwatch", "unavailable"]
    status: Literal["ok", "lagging", "stalled", "unknown"] = "unknown"
    lag_seconds: float | None = Field(None, description="max over shards of the iterator age / behind-latest")
    stalled_shards: dict[str, str] = Field(default_factory=dict, description="shard -> its state and since when, "
                                                                           "while stuck")
    detail: str = "lag is the consumer's IteratorAge metric (CloudWatch alarm consumer-iterator-age)"


CONSUMER_LAG_OK_S = 60.0  # as the iterator-age alarm: a minute behind is lagging


def consumer_health(status: Callable[[], dict] | None) -> ConsumerHealth:
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
    stalled = {shard: f"{s.get('state') or 'stalled'} since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(s['stalled_since'])))}"
               for shard, s in (stats.get("shards") or {}).items() if s.get("stalled_since") is not None}
    state = "stalled" if stalled else ("lagging" if lag is not None and lag > CONSUMER_LAG_OK_S else "ok")
    return ConsumerHealth(source="local", status=state, lag_seconds=lag, stalled_shards=stalled,
                          detail="read from the local event source mapping")


class HealthResponse(BaseModel):
    status: str = Field(description="ok | degraded (serving popular items only) | unavailable")
    model_version: str | None
    index_size: int
    popular_items: int
    online_ranker_examples: int = Field(0, description="examples the online ranker has learned from (all shards)")
    shadow_version: str | None = Field(None, description="the candidate scored beside production for the promotion "
                                                         "gate's off-policy check (none shown to users)")
    dependencies: dict[str, str]
    consumer: ConsumerHealth = Field(default_factory=lambda: ConsumerHealth(source="cloudwatch"),
                                     description="the stream consumer's lag (degrades, never fails, health)")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx the API answers (FastAPI's validation errors included)."""

    error: str = Field(description="a stable code: invalid_input, unauthorized, not_found, method_not_allowed, "
                                   "payload_too_large, model_not_ready, dependency_unavailable, internal_error",
                       examples=["invalid_input"])
    detail: str = Field(description="a short reason the client can act on (never the SDK's text: that goes to "
                                    "the log under the request id)")
    request_id: str = Field(description="the request's id (also the X-Request-Id header), for the logs")


# -- wiring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Services:
    """What the routes call, built once (`build_services` in Lambda and `rtrec run`; tests build their own)."""

    recommender: Recommender
    catalog: CatalogService
    # Who may call what (rtrec.domain.access). The default knows no key: keyless reads and events, no admin.
    access: AccessPolicy = field(default_factory=lambda: AccessPolicy((), require_keys=False))
    model_error: Callable[[], str | None] = lambda: None  # the last failed model load, for /health
    shadow_version: Callable[[], str | None] = lambda: None  # the shadow candidate's version, for /health
    ingest: IngestService | None = None  # POST /events and impression logging; None: not configured
    model_version: Callable[[], str | None] = lambda: None  # the production version loaded (no poll), for the logs
    impression_flush_s: float = 2.0  # the end of a Lambda invocation waits this long at most for its impressions
    impression_shutdown_s: float = 5.0  # the app's shutdown waits this long at most
    impression_log_lines: bool = True  # an `impression` log line per slate (ApiSettings.impression_log_lines)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # larger request bodies get 413 (ApiSettings.max_body_bytes)

    def flush_impressions(self, timeout_s: float | None = None) -> int:
        """Send the buffered impressions now (the end of a Lambda invocation); how many are still buffered."""
        if self.ingest is None:
            return 0
        left = self.ingest.flush_impressions(self.impression_flush_s if timeout_s is None else timeout_s)
        if left:
            logger.warning("impressions still buffered after the flush", extra={"impressions": left})
        return left

    def close(self) -> int:
        """Flush and stop the impression producer (the app's shutdown); how many impressions were dropped."""
        if self.ingest is None:
            return 0
        dropped = self.ingest.close(self.impression_shutdown_s)
        if dropped:
            logger.error("impressions dropped at shutdown: the stream did not take them in time",
                         extra={"impressions": dropped})
        return dropped

    def log_impression(self, result: Recommendation, caller: str | None = None) -> None:
        """Runs after the response is sent; a failure is logged, never turned into an error for the client."""
        if self.ingest is None:
            return
        try:
            self.ingest.log_impression(result, caller)
        except RtrecError as exc:
            logger.warning("impression not logged to the stream", extra={"request_id": result.request_id,
                                                                        "error": str(exc)})


class ModelLoadErrors:
    """The last failed model load (None once a load succeeds): the model watcher's callbacks write it, /health
    reads it through `Services.model_error`."""

    def __init__(self) -> None:
        self.last: str | None = None


def access_policy(settings: ApiSettings) -> AccessPolicy:
    """The keys named by `settings` (one per role by value, API Gateway's by id) and the per-key limits."""
    secrets_by_role = {role.value: key.get_secret_value() for role in Role
                       if (key := getattr(settings, f"{role.value}_api_key")) is not None}
    keys = local_keys(secrets_by_role) + gateway_keys(settings.api_key_roles)
    limiter = RateLimiter(Limits(rate_per_s=settings.api_key_rate_limit, burst=settings.api_key_burst,
                                 daily_quota=settings.api_key_daily_quota))
    return AccessPolicy(keys, require_keys=settings.require_api_keys, limiter=limiter)


def build_services(settings: ApiSettings, *, telemetry: Telemetry = NO_TELEMETRY,
                   background_impressions: bool = True) -> Services:
    """Wire the AWS adapters named by `settings` into the services, and load the production model.

    Impressions go through a KinesisImpressionProducer: a background sender under uvicorn; none in Lambda
    (`background_impressions=False`: the runtime freezes threads between invocations), where the handler flushes
    at the end of every invocation (`lambda_entry`). `telemetry` counts the impressions it drops."""
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.model_store import S3ModelStore
    from rtrec.adapters.aws.s3 import S3CatalogAdditions, S3PopularityStore, S3RankerStateStore
    from rtrec.adapters.model.onnx_towers import load_serving_model
    from rtrec.domain.promotion import SHADOW_POINTER
    from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
    from rtrec.services.model_watcher import ModelWatcher
    from rtrec.services.online import OnlineRankerSource

    names = settings.names
    aws = {"endpoint_url": settings.endpoint_url, "region": settings.region}
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), **aws)
    bucket = names.bucket(MODELS_BUCKET)
    catalog = CatalogService(features, S3CatalogAdditions(bucket, **aws), sync_seconds=settings.catalog_sync_seconds)
    from rtrec.adapters.aws.kinesis import KinesisEventStream
    from rtrec.adapters.aws.kinesis_producer import KinesisImpressionProducer
    from rtrec.resources import EVENTS_STREAM

    stream = KinesisEventStream(names.stream(EVENTS_STREAM), **aws)
    producer = KinesisImpressionProducer(
        stream, max_records=settings.impression_buffer_records, max_bytes=settings.impression_buffer_bytes,
        linger_s=settings.impression_linger_ms / 1000.0, overflow=settings.impression_overflow,
        background=background_impressions, telemetry=telemetry,
    )
    ingest = IngestService(stream, clock=time.time, impressions=producer)
    load_errors = ModelLoadErrors()

    def load(version: str, folder: FilePath) -> ServingModel:
        try:
            model = catalog.prepare(load_serving_model(version, folder, features))
        except RtrecError:
            raise
        except Exception as exc:  # a corrupt or incompatible model folder must not take serving down
            raise DependencyError(f"model {version} could not be loaded: {type(exc).__name__}: {exc}") from exc
        logger.info("model loaded", extra={"model_version": version, "items": len(model.catalog)})
        load_errors.last = None
        return model

    def on_error(message: str) -> None:
        load_errors.last = message
        logger.warning(message)

    watcher: ModelWatcher[ServingModel] = ModelWatcher(
        S3ModelStore(bucket, **aws), load, settings.model_cache_dir, poll_seconds=settings.model_poll_seconds,
        on_error=on_error,
    )

    def current_model() -> ServingModel | None:
        model = watcher.current()
        if model is not None:
            try:
                catalog.maybe_sync(model)
            except RtrecError as exc:  # serve the model as it is; the next sync retries
                logger.warning("catalog sync failed", extra={"error": str(exc)})
        return model

    shadow_watcher: ModelWatcher[ServingModel] = ModelWatcher(
        S3ModelStore(bucket, **aws), load, settings.model_cache_dir / "shadow", poll_seconds=settings.model_poll_seconds,
        on_error=lambda message: logger.warning(f"shadow candidate: {message}"), role=SHADOW_POINTER,
    )

    def shadow_model() -> ServingModel | None:
        if not settings.shadow_scoring:
            return None
        model = shadow_watcher.current()
        if model is not None:
            try:
                catalog.maybe_sync(model)
            except RtrecError as exc:
                logger.warning("catalog sync of the shadow candidate failed", extra={"error": str(exc)})
        return model

    recommender = Recommender(
        features, S3PopularityStore(bucket, **aws), current_model, ranking=settings.ranking(),
        retrieval=RetrievalConfig(candidates=settings.candidates), refresh_seconds=settings.popularity_refresh_seconds,
        ranker=OnlineRankerSource(S3RankerStateStore(bucket, **aws), poll_seconds=settings.online_ranker_poll_seconds),
        shadow=shadow_model, shadow_share=settings.shadow_share,
        request_ids=current_request_id,  # the slate's id is the request's (logs join the log)
    )
    current_model()  # load at start (the Lambda cold start), not on the first request
    return Services(
        recommender=recommender, catalog=catalog, access=access_policy(settings), ingest=ingest,
        model_error=lambda: load_errors.last, model_version=lambda: watcher.version,
        shadow_version=lambda: shadow_watcher.version if settings.shadow_scoring else None,
        impression_flush_s=settings.impression_flush_seconds, impression_shutdown_s=settings.impression_shutdown_seconds,
        impression_log_lines=settings.impression_log_lines, max_body_bytes=settings.max_body_bytes,
    )


LambdaHandler = Callable[[dict[str, Any], Any], Any]
FLUSH_MARGIN_S = 0.5  # of the invocation's remaining time, left for the response and the EMF lines


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


# The dependencies are coroutines: FastAPI runs a plain function dependency in its thread pool, a hand-off (and a
# fight for the interpreter lock) per dependency per request for what is an attribute read.
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_recommender(request: Request) -> Recommender:
    """The service the app was created with; tests override this dependency."""
    return request.app.state.services.recommender


async def get_catalog(request: Request) -> CatalogService:
    """The catalog service; an app built without one (a recommender alone) answers the admin routes 503."""
    catalog: CatalogService | None = request.app.state.services.catalog
    if catalog is None:
        raise ModelNotReadyError("this deployment has no catalog store configured")
    return catalog


RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
CatalogDep = Annotated[CatalogService, Depends(get_catalog)]
ServicesDep = Annotated[Services, Depends(get_services)]


API_KEY_HEADER = APIKeyHeader(
    name="X-Api-Key", auto_error=False, scheme_name="ApiKey",
    description="a key per role: read (recommendations), events (POST /events; its slates are logged as "
                "impressions), admin (the catalog). See the README's Security section")


def gateway_key_id(request: Request) -> str | None:
    """The id of the key API Gateway checked (REST API, Lambda proxy integration): Mangum passes the event on."""
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    identity = (event.get("requestContext") or {}).get("identity") or {}
    key_id = identity.get("apiKeyId")
    return key_id if isinstance(key_id, str) and key_id else None


def requires(role: Role) -> Callable[..., Awaitable[Caller]]:
    """The dependency that checks a route's role. One dependency per route (FastAPI solves each node of a dependency
    graph per request, about 20 us each): it reads the key through the security scheme (which puts it in the
    OpenAPI document) and nothing else."""

    async def check(request: Request, api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None) -> Caller:
        access: AccessPolicy = request.app.state.services.access
        return access.authorize(access.identify(api_key, gateway_key_id(request)), role)

    check.__name__ = f"require_{role.value}"
    return check


require_read, require_events, require_admin = requires(Role.READ), requires(Role.EVENTS), requires(Role.ADMIN)


ItemIdPath = Annotated[str, Path(min_length=1, max_length=128, description="the item's id")]
# A route's role check is its first parameter: FastAPI solves dependencies in order, and a caller without the role
# learns nothing about the deployment (a 401 or 403 before any other dependency's 503).
ReaderDep = Annotated[Caller, Depends(require_read)]
EventsCallerDep = Annotated[Caller, Depends(require_events)]
AdminDep = Annotated[Caller, Depends(require_admin)]


def _query_parameters(dependant: Any) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


async def reject_unknown_query_parameters(request: Request) -> None:
    """A query parameter the route does not take is a 422, as an unknown body field is: a typo (`?k=5&exlude_items=3`)
    would otherwise be ignored without a word."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _query_parameters(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInputError(f"unknown query parameter(s): {', '.join(short_reason(u, 40) for u in unknown[:5])}"
                                + (f"; this route takes {', '.join(sorted(known))}" if known else ""))


async def _log_impression(services: Services, result: Recommendation, caller: str) -> None:
    """After the response, on the event loop: the impression only joins the producer's buffer (no I/O), so a
    thread-pool hand-off would cost more than the work."""
    services.log_impression(result, caller)


def validated_json(body: BaseModel) -> Response:
    """A hot route's response model as JSON. The model validated its fields when it was built; returned as a model,
    FastAPI would validate it against `response_model` and encode it a second time (a fifth of the route's own CPU)."""
    return Response(content=body.model_dump_json(), media_type="application/json")


def _unhealthy(what: str, exc: RtrecError) -> str:
    """A dependency's state for /health: its error code; the SDK's text goes to the log only."""
    logger.warning(f"health: {what} failed", extra={"error": type(exc).__name__, "detail": str(exc)})
    return f"error: {exc.code}"


def _status_for(exc: RtrecError) -> int:
    for error_type in type(exc).__mro__:
        if error_type in ERROR_STATUS:
            return ERROR_STATUS[error_type]
    return 500


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": short_reason(detail), "request_id": current_request_id()}


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RtrecError)
    status = _status_for(exc)
    if status >= 500 or not exc.public:
        logger.error("request failed", extra={"error": type(exc).__name__, "detail": str(exc)})
    detail = str(exc) if exc.public else exc.public_detail
    headers = {"Retry-After": retry_after_header(exc.retry_after_s)} if isinstance(exc, ThrottledError) else None
    return JSONResponse(status_code=status, content=error_body(exc.code, detail), headers=headers)


VALIDATION_DETAIL_CHARS = 240  # then "and N more"


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's request validation errors in the one error schema: where and what, never the input itself
    (FastAPI's own body repeats it, which for an 11 MB body was an 11 MB answer)."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    parts: list[str] = []
    for n, error in enumerate(errors):
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        part = f"{short_reason(where, 60)}: {short_reason(error.get('msg', 'invalid'), 100)}"
        if parts and sum(len(p) + 2 for p in parts) + len(part) > VALIDATION_DETAIL_CHARS:
            parts.append(f"and {len(errors) - n} more")
            break
        parts.append(part)
    return JSONResponse(status_code=422, content=error_body("invalid_input", "; ".join(parts) or "invalid request"))


HTTP_ERROR_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def _allowed_methods(request: Request) -> str | None:
    """Every method some route serves at this path: Starlette's 405 names only the first matching route's, and a
    path can have several routes (PATCH and DELETE /items/{id})."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})  # a method no route has: a path-only match
        if match is not Match.NONE and getattr(route, "methods", None):
            methods |= route.methods
    return ", ".join(sorted(methods)) if methods else None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown route, wrong method, body over the limit, a body that is not JSON) in the
    one error schema; a 400 (a body that cannot be read as the route's input) is a 422, as every other bad input."""
    assert isinstance(exc, StarletteHTTPException)
    status = 422 if exc.status_code == 400 else exc.status_code
    code = HTTP_ERROR_CODES.get(status, "invalid_input" if status < 500 else "internal_error")
    headers = dict(exc.headers or {})
    if status == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = allowed
    return JSONResponse(status_code=status, content=error_body(code, str(exc.detail)), headers=headers or None)


async def _unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unexpected error")
    return JSONResponse(status_code=500, content=error_body("internal_error", "unexpected server error"))


def _names(values: list[str] | None) -> tuple[str, ...]:
    """Repeated query parameters, each of which may also be comma-separated."""
    return tuple(part.strip() for value in values or () for part in value.split(",") if part.strip())


ERRORS = {401: {"model": ErrorResponse, "description": "no API key, or one this API does not know"},
          403: {"model": ErrorResponse, "description": "the API key lacks the route's role"},
          404: {"model": ErrorResponse}, 422: {"model": ErrorResponse},
          429: {"model": ErrorResponse, "description": "the key's rate limit or daily quota is used up (Retry-After)"},
          500: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
BODY_ERRORS = {**ERRORS, 413: {"model": ErrorResponse, "description": "the body is larger than the API takes"}}


def create_app(services: Services | Recommender, *, telemetry: Telemetry = NO_TELEMETRY,
               consumer_status: Callable[[], dict] | None = None) -> FastAPI:
    """The app over `services`; `telemetry` receives each request's and each slate's metrics (EMF in Lambda,
    Prometheus locally, whose registry is then served at GET /metrics); `consumer_status` (the local event source
    mapping's `stats`, when `rtrec run` runs it in this process) gives /health the consumer's lag."""
    if isinstance(services, Recommender):  # a recommender alone: no admin routes' store behind it
        services = Services(recommender=services, catalog=None)  # type: ignore[arg-type]
    served = services

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        """On shutdown (uvicorn; Mangum runs with lifespan="off" and `lambda_entry` flushes instead), send the
        buffered impressions before the process goes."""
        freeze_startup_heap()
        yield
        await run_in_threadpool(served.close)

    app = FastAPI(
        title="rtrec",
        version="0.1.0",
        description="Real-time recommendations: two-tower retrieval, ANN candidates, ranking with exploration.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query_parameters)],
    )
    app.state.services = services
    app.add_exception_handler(RtrecError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # Added first, so it runs inside the observability middleware (its 413 carries the request id).
    app.add_middleware(BodyLimitMiddleware, max_bytes=services.max_body_bytes,
                       error_body=lambda code, detail: orjson.dumps(error_body(code, detail)))
    app.add_middleware(ObservabilityMiddleware, telemetry=telemetry, logger=logger,
                       model_version=lambda: services.model_version())
    exposition = telemetry.exposition
    if exposition is not None:

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            """Prometheus text format: request latency per route, errors, strategy mix, cold users, the model
            version, and the stream consumer's metrics when it runs in this process (`rtrec run`)."""
            body, content_type = exposition()
            return Response(content=body, media_type=content_type)

    @app.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    def health(services: ServicesDep, recommender: RecommenderDep) -> JSONResponse:
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

    @app.get("/recommend/{user_id}", response_model=RecommendationResponse, responses=ERRORS)
    def recommend(
        services: ServicesDep,
        caller: ReaderDep,
        background: BackgroundTasks,
        user_id: Annotated[str, Path(min_length=1, max_length=128, description="the client's user id")],
        k: Annotated[int, Query(ge=1, le=MAX_K, description="how many items")] = 10,
        include_genres: Annotated[list[str] | None, Query(description="keep items with any of these genres "
                                                                       "(repeat or comma-separate)")] = None,
        exclude_genres: Annotated[list[str] | None, Query(description="drop items with any of these genres")] = None,
        exclude_items: Annotated[list[str] | None, Query(description="item ids never to return")] = None,
        online_ranker: Annotated[bool, Query(description="add the online ranker's score (false: rank without it, "
                                                         "for A/B comparison; it goes on learning)")] = True,
    ) -> Response:
        filters = Filters(_names(include_genres), _names(exclude_genres), frozenset(_names(exclude_items)))
        result = services.recommender.recommend(user_id, k, filters, online_ranker=online_ranker)
        if caller.may(Role.EVENTS):  # a read-only key's slates are not logged (README, Security)
            background.add_task(_log_impression, services, result, caller.name)
        telemetry.recommendation(result.strategy, result.cold_start, result.model_version, result.online_ranker)
        if services.impression_log_lines:
            logger.info("impression", extra={
                "request_id": result.request_id, "user_id": result.user_id, "model_version": result.model_version,
                "caller": caller.name, "logged": caller.may(Role.EVENTS),
                "strategy": result.strategy, "items": [i.item_id for i in result.items],
                "propensities": [round(i.propensity, 6) for i in result.items],
            })
        return validated_json(RecommendationResponse(
            request_id=result.request_id,
            user_id=result.user_id,
            model_version=result.model_version,
            cold_start=result.cold_start,
            strategy=result.strategy,
            online_ranker=result.online_ranker,
            recommendations=[
                RecommendedItem(item_id=i.item_id, score=i.score, propensity=i.propensity) for i in result.items
            ],
        ))

    @app.post("/events", response_model=EventsAccepted, status_code=202, responses=BODY_ERRORS)
    def post_events(body: EventsIn, services: ServicesDep, _caller: EventsCallerDep) -> EventsAccepted:
        """Validate a batch of events and put it on the stream (partition key: user id); 202 once the
        stream holds every event. The consumer applies each event_id once."""
        if services.ingest is None:
            raise ModelNotReadyError("this deployment has no event stream configured")
        events = [UserEvent(**event.model_dump()) for event in body.events]
        return EventsAccepted(accepted=services.ingest.ingest(events))

    @app.get("/items/{item_id}/similar", response_model=SimilarItemsResponse, responses=ERRORS)
    def similar(
        recommender: RecommenderDep,
        _caller: ReaderDep,
        item_id: Annotated[str, Path(min_length=1, max_length=128)],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    ) -> Response:
        result = recommender.similar(item_id, k)
        return validated_json(SimilarItemsResponse(
            item_id=result.item_id, model_version=result.model_version,
            similar=[SimilarItem(item_id=i.item_id, score=i.score) for i in result.items]))

    @app.post("/items", response_model=ItemOut, status_code=201,
              responses={200: {"model": ItemOut, "description": "an existing item was updated"}, **BODY_ERRORS})
    def add_item(_caller: AdminDep, body: ItemIn, response: Response, recommender: RecommenderDep,
                 catalog: CatalogDep) -> ItemOut:
        """Add an item, or update one (its active state and its statistics are kept); the model embeds it from its
        features at once, the other instances within the catalog sync."""
        item = ItemFeatures(item_id=body.item_id, title=body.title, year=body.year, genres=tuple(body.genres),
                            promoted=body.promoted)
        model = recommender.model()
        added = catalog.add_item(item, model)
        known_genres = set(model.towers.encoder.genres) if model is not None else set(body.genres)
        if not added.created:
            response.status_code = 200
        return ItemOut(item_id=added.item_id, created=added.created, model_version=added.model_version,
                       new_to_model=added.new_to_model,
                       unknown_genres=[g for g in body.genres if g not in known_genres])

    @app.patch("/items/{item_id}", response_model=ItemStateOut, responses=BODY_ERRORS)
    def set_item_state(_caller: AdminDep, item_id: ItemIdPath, body: ItemStateIn, recommender: RecommenderDep,
                       catalog: CatalogDep) -> ItemStateOut:
        """Deactivate (`{"active": false}`) or activate an item: a deactivated item is never served; this instance
        stops at once, the others within the catalog sync interval."""
        item = catalog.set_active(item_id, body.active, recommender.model())
        return ItemStateOut(item_id=item.item_id, active=item.active)

    @app.delete("/items/{item_id}", status_code=204, responses=ERRORS)
    def delete_item(_caller: AdminDep, item_id: ItemIdPath, recommender: RecommenderDep,
                    catalog: CatalogDep) -> Response:
        """Delete an item: never served again (this instance at once, the others within the catalog sync), 404 to
        these routes; its past events stay valid. POST /items with the id adds it again."""
        catalog.delete_item(item_id, recommender.model())
        return Response(status_code=204)

    return app
