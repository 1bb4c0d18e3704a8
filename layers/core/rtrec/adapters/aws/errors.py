"""Translate botocore failures into domain errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

from rtrec.errors import DependencyError


@contextmanager
def translate_aws_errors(what: str) -> Iterator[None]:
    """Re-raise any SDK error inside the block as DependencyError naming `what` failed."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        raise DependencyError(f"{what} failed: {code}: {exc.response.get('Error', {}).get('Message', '')}") from exc
    except BotoCoreError as exc:
        raise DependencyError(f"{what} failed: {exc}") from exc
