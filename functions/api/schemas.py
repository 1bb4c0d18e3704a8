"""The API's request and response models: what the OpenAPI document shows, and how a hot route answers with one."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rtrec.services.catalog import ITEM_ID_PATTERN
from rtrec.services.stream import MAX_EVENTS_PER_REQUEST


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
    propensity: float = Field(
        description="probability the serving policy chose this item for this slot, given the slots before it"
    )


class RecommendationResponse(BaseModel):
    request_id: str
    user_id: str
    model_version: str | None
    cold_start: bool
    strategy: str = Field(description="two_tower | cold_user_features | popular_fallback | popular")
    online_ranker: bool = Field(default=False, description="whether the online ranker's score was part of the ranking")
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
    model_version: str | None = Field(
        description="the model that embedded it; null when none is loaded yet (it is embedded when one is)"
    )
    new_to_model: bool = Field(
        description="true when embedded from its features alone (the model was not "
        "trained on it); it then gets the new-item exploration boost"
    )
    unknown_genres: list[str] = Field(description="genres the model does not know; they do not shape the embedding")


class ItemStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool = Field(strict=True, description="false: never served (until set true again)")


class ItemStateOut(BaseModel):
    item_id: str
    active: bool


class _EventFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(
        min_length=1, max_length=128, description="unique; a re-sent event is applied once, also when repeated within one batch"
    )
    user_id: str = Field(min_length=1, max_length=128)
    item_id: str = Field(min_length=1, max_length=128)
    timestamp: JsonFloat = Field(
        gt=0, description="unix seconds (more than a day ahead of the server's clock: taken as the time it arrived)"
    )
    request_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="the recommendation response that showed the item"
    )


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
    lag_seconds: float | None = Field(default=None, description="max over shards of the iterator age / behind-latest")
    stalled_shards: dict[str, str] = Field(default_factory=dict, description="shard -> its state and since when, while stuck")
    detail: str = "lag is the consumer's IteratorAge metric (CloudWatch alarm consumer-iterator-age)"


class HealthResponse(BaseModel):
    status: str = Field(description="ok | degraded (serving popular items only) | unavailable")
    model_version: str | None
    index_size: int
    popular_items: int
    online_ranker_examples: int = Field(default=0, description="examples the online ranker has learned from (all shards)")
    shadow_version: str | None = Field(
        default=None,
        description="the candidate scored beside production for the promotion gate's off-policy check (none shown to users)",
    )
    dependencies: dict[str, str]
    consumer: ConsumerHealth = Field(
        default_factory=lambda: ConsumerHealth(source="cloudwatch"),
        description="the stream consumer's lag (degrades, never fails, health)",
    )


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx the API answers (FastAPI's validation errors included)."""

    error: str = Field(
        description="a stable code: invalid_input, unauthorized, not_found, method_not_allowed, "
        "payload_too_large, model_not_ready, dependency_unavailable, internal_error",
        examples=["invalid_input"],
    )
    detail: str = Field(
        description="a short reason the client can act on (never the SDK's text: that goes to the log under the request id)"
    )
    request_id: str = Field(description="the request's id (also the X-Request-Id header), for the logs")


# The error answers each route documents (OpenAPI `responses`).
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no API key, or one this API does not know"},
    403: {"model": ErrorResponse, "description": "the API key lacks the route's role"},
    404: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse, "description": "the key's rate limit or daily quota is used up (Retry-After)"},
    500: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    413: {"model": ErrorResponse, "description": "the body is larger than the API takes"},
}


def validated_json(body: BaseModel) -> Response:
    """A hot route's response model as JSON. The model validated its fields when it was built; returned as a model,
    FastAPI would validate it against `response_model` and encode it a second time (a fifth of the route's own CPU)."""
    return Response(content=body.model_dump_json(), media_type="application/json")
