"""Domain errors. Adapters raise these (`raise X from exc`); the API maps them to HTTP codes in one place."""

from __future__ import annotations


class RtrecError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidInputError(RtrecError):
    """The caller sent something the system cannot act on (maps to 422)."""


class NotFoundError(RtrecError):
    """A named thing does not exist (maps to 404)."""


class ModelNotReadyError(RtrecError):
    """No model or popularity snapshot has been published yet (maps to 503)."""


class DependencyError(RtrecError):
    """A backing service (DynamoDB, S3, Kinesis, ...) failed or is unreachable (maps to 503)."""


class DataUnavailableError(RtrecError):
    """A data set could not be found in the cache nor fetched."""


MAX_REASON_CHARS = 300


def short_reason(reason: object, limit: int = MAX_REASON_CHARS) -> str:
    """One line of at most `limit` characters: enough to say why a record failed, never the payload itself
    (a dead letter's reason, a shard's last error)."""
    text = " ".join(str(reason if reason is not None else "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
