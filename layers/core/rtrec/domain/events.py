"""What flows through the event stream: user events and the impressions serving logged.

Both travel as JSON records on one Kinesis stream with the user id as partition key, so every record
of a user lands on one shard, in order, and one consumer is the only writer of that user's profile.
`decode_record` is strict: a record it rejects is poison (it goes to the dead-letter queue with the
reason), never silently dropped or half applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from itertools import chain
from typing import Any, Literal, overload

import numpy as np
import orjson

from rtrec.errors import InvalidInputError

EventType = Literal["view", "click", "purchase", "rating"]
EVENT_TYPES: tuple[str, ...] = ("view", "click", "purchase", "rating")
# Events that say the user chose the item: they enter the history the user tower reads, and count
# as a reward for the impression that showed the item. A rating counts when it is >= 3 of 5 (the
# threshold the training protocol uses); a view is weaker evidence and only updates counters.
POSITIVE_RATING = 3.0
MAX_ID_LENGTH = 128


@dataclass(frozen=True)
class UserEvent:
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    timestamp: float  # unix seconds
    value: float | None = None  # the rating for type "rating"
    request_id: str | None = None  # the recommendation response that showed the item, if any

    @property
    def is_positive(self) -> bool:
        if self.type in ("click", "purchase"):
            return True
        return self.type == "rating" and (self.value is None or self.value >= POSITIVE_RATING)


@dataclass(frozen=True)
class Impression:
    """One served slate: what was shown, in order, with each slot's propensity under the serving policy."""

    request_id: str
    user_id: str
    model_version: str | None
    strategy: str
    items: tuple[str, ...]
    propensities: tuple[float, ...]
    scores: tuple[float, ...]
    timestamp: float
    features: tuple[tuple[float, ...], ...] = ()  # per item, RANKER_FEATURES; empty when none were computed
    # Per item, the reward model's click probability (empty: none was available). With the shadow fields,
    # what a doubly robust estimate of the shadow policy needs (rtrec.domain.ope.LoggedCascade).
    q_hat: tuple[float, ...] = ()
    # The candidate model scored beside the serving one (None: none was): per slot, the probability that its
    # policy picks the shown item given the items shown above it, and the expectation of q_hat under that
    # policy's distribution for the slot.
    shadow_version: str | None = None
    shadow_propensities: tuple[float, ...] = ()
    shadow_expected_q: tuple[float, ...] = ()
    caller: str | None = None  # the API key that asked for the slate (rtrec.domain.access.Caller.name)

    @property
    def event_id(self) -> str:
        return f"impression:{self.request_id}"


StreamMessage = UserEvent | Impression


def encode_record(message: StreamMessage) -> bytes:
    # Field by field rather than dataclasses.asdict, which deep-copies every feature row of an impression.
    body: dict[str, Any] = {f.name: getattr(message, f.name) for f in fields(message)}
    body["kind"] = "impression" if isinstance(message, Impression) else "event"
    return orjson.dumps(body)


@overload
def _text(body: dict[str, Any], name: str, *, required: Literal[True] = True) -> str: ...
@overload
def _text(body: dict[str, Any], name: str, *, required: bool) -> str | None: ...
def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    """The field `name` of `body`: a string of 1 to MAX_ID_LENGTH characters (None when optional and absent)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidInputError(f"{name} must be a string of 1 to {MAX_ID_LENGTH} characters, got {value!r}")
    return value


@overload
def _number(body: dict[str, Any], name: str, *, required: Literal[True] = True) -> float: ...
@overload
def _number(body: dict[str, Any], name: str, *, required: bool) -> float | None: ...
def _number(body: dict[str, Any], name: str, *, required: bool = True) -> float | None:
    """The field `name` of `body`: a finite number, not a boolean (None when optional and absent)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _per_item(body: dict[str, Any], name: str, count: int) -> tuple[float, ...]:
    """An optional list of finite numbers, one per shown item (empty when absent)."""
    values = body.get(name) or []
    if not isinstance(values, list) or (values and len(values) != count):
        raise InvalidInputError(f"impression {name} must be a list with one number per item")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise InvalidInputError(f"impression {name} must hold finite numbers")
    return tuple(float(v) for v in values)


_NUMBER_TYPES = frozenset({int, float})


def _feature_rows(features: Any, count: int) -> tuple[tuple[float, ...], ...]:
    """An impression's ranking features: one row of finite numbers per item, all rows of one length. Checked as a
    whole (numpy, and one pass over the values' types) rather than value by value: 10 rows of 7 numbers per slate
    made the value-by-value check a quarter of the consumer's CPU."""
    if not isinstance(features, list) or (features and len(features) != count):
        raise InvalidInputError("impression features must be a list with one row per item")
    if not features:
        return ()
    if not all(type(row) is list for row in features) or not set(map(type, chain.from_iterable(features))) <= _NUMBER_TYPES:
        raise InvalidInputError("impression feature rows must be lists of finite numbers")
    try:
        matrix = np.array(features, dtype=np.float64)
    except ValueError as exc:  # rows of different lengths
        raise InvalidInputError("impression feature rows must all have one length") from exc
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise InvalidInputError("impression feature rows must be lists of finite numbers")
    return tuple(map(tuple, matrix.tolist()))


def decode_record(data: bytes) -> StreamMessage:
    """Parse one stream record; InvalidInputError (poison) names what is wrong."""
    try:
        body = orjson.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"record is not JSON: {exc}") from exc
    return decode_message(body)


def message_to_dict(message: StreamMessage) -> dict[str, Any]:
    """The record as a dict that always carries `event_id` (an impression's is derived from its request)."""
    body: dict[str, Any] = orjson.loads(encode_record(message))
    body["event_id"] = message.event_id
    return body


def decode_message(body: Any) -> StreamMessage:
    """Validate a decoded JSON body as a stream message."""
    if not isinstance(body, dict):
        raise InvalidInputError("record is not a JSON object")
    kind = body.get("kind")
    if kind == "event":
        event_type = body.get("type")
        if event_type not in EVENT_TYPES:
            raise InvalidInputError(f"type must be one of {', '.join(EVENT_TYPES)}, got {event_type!r}")
        return UserEvent(
            event_id=_text(body, "event_id"),
            user_id=_text(body, "user_id"),
            item_id=_text(body, "item_id"),
            type=event_type,
            timestamp=_number(body, "timestamp"),
            value=_number(body, "value", required=False),
            request_id=_text(body, "request_id", required=False),
        )
    if kind == "impression":
        items, propensities, scores = body.get("items"), body.get("propensities"), body.get("scores")
        if not (
            isinstance(items, list)
            and isinstance(propensities, list)
            and isinstance(scores, list)
            and len(items) == len(propensities) == len(scores)
        ):
            raise InvalidInputError("impression needs items, propensities and scores lists of one length")
        if not all(isinstance(p, (int, float)) and 0 < p <= 1 for p in propensities):
            raise InvalidInputError("propensities must be in (0, 1]")
        features = _feature_rows(body.get("features") or [], len(items))
        q_hat = _per_item(body, "q_hat", len(items))
        shadow_version = _text(body, "shadow_version", required=False)
        shadow_propensities = _per_item(body, "shadow_propensities", len(items))
        shadow_expected_q = _per_item(body, "shadow_expected_q", len(items))
        if shadow_version is not None and not (shadow_propensities and shadow_expected_q):
            raise InvalidInputError("an impression with a shadow_version needs shadow_propensities and shadow_expected_q")
        if not all(0 <= p <= 1 for p in shadow_propensities):
            raise InvalidInputError("shadow_propensities must be in [0, 1]")
        return Impression(
            request_id=_text(body, "request_id"),
            user_id=_text(body, "user_id"),
            model_version=_text(body, "model_version", required=False),
            strategy=_text(body, "strategy"),
            items=tuple(str(i) for i in items),
            propensities=tuple(float(p) for p in propensities),
            scores=tuple(float(s) for s in scores),
            timestamp=_number(body, "timestamp"),
            features=features,
            q_hat=q_hat,
            shadow_version=shadow_version,
            shadow_propensities=shadow_propensities,
            shadow_expected_q=shadow_expected_q,
            caller=_text(body, "caller", required=False),
        )
    raise InvalidInputError(f"kind must be 'event' or 'impression', got {kind!r}")
