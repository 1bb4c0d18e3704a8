"""Domain errors. Adapters raise these (`raise X from exc`); the API maps them to HTTP codes in one place."""

from __future__ import annotations


class RtrecError(Exception):
    """Base class of every error the core raises on purpose.

    `code` is the stable, machine-readable name an API client sees; `public` says whether the message is fit for
    a client (our own words about its request) or only for the logs (it may quote an SDK: resource names, ARNs,
    account ids), in which case the client gets `public_detail`."""

    code = "error"
    public = True
    public_detail = "the request failed"


class InvalidInputError(RtrecError):
    """The caller sent something the system cannot act on (maps to 422)."""

    code = "invalid_input"


class NotFoundError(RtrecError):
    """A named thing does not exist (maps to 404)."""

    code = "not_found"


class ModelNotReadyError(RtrecError):
    """No model or popularity snapshot has been published yet (maps to 503)."""

    code = "model_not_ready"


class DependencyError(RtrecError):
    """A backing service (DynamoDB, S3, Kinesis, ...) failed or is unreachable (maps to 503)."""

    code = "dependency_unavailable"
    public = False
    public_detail = "a backing service failed or did not answer; retry later"


class UnauthorizedError(RtrecError):
    """No key, or a key this API does not know (maps to 401)."""

    code = "unauthorized"


class ForbiddenError(RtrecError):
    """A known key without the role the route needs (maps to 403)."""

    code = "forbidden"


class ThrottledError(RtrecError):
    """The key's rate limit or daily quota is used up (maps to 429, with Retry-After)."""

    code = "throttled"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DataUnavailableError(RtrecError):
    """A data set could not be found in the cache nor fetched."""

    code = "data_unavailable"


MAX_REASON_CHARS = 300


def short_reason(reason: object, limit: int = MAX_REASON_CHARS) -> str:
    """One line of at most `limit` characters: enough to say why a record failed, never the payload itself
    (a dead letter's reason, a shard's last error)."""
    text = " ".join(str(reason if reason is not None else "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
