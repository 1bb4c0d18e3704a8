"""One place that builds boto3 clients, so every adapter gets the same endpoint, retries and timeouts."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

# Local emulators accept any credentials; real AWS uses the default provider chain.
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}

_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=3,
    read_timeout=10,
    max_pool_connections=32,
)


def aws_client(service: str, endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    """A boto3 client for `service`; with `endpoint_url` set, it targets that emulator."""
    kwargs: dict[str, Any] = {"region_name": region, "config": _CONFIG}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
        kwargs.update(LOCAL_CREDENTIALS)
    return boto3.session.Session().client(service, **kwargs)
