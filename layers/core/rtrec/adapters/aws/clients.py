"""One place that builds boto3 clients, so every adapter gets the same endpoint, retries and timeouts."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config

# Local emulators accept any credentials; real AWS uses the default provider chain.
LOCAL_CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}

# No client-side parameter validation: the adapters build every request from typed values, the service validates
# it again anyway (a ValidationException), and botocore's walk of each request against its shape cost about a tenth
# of a GetItem's CPU on the API's hot path.
_CONFIG = Config(
    parameter_validation=False,
    retries={"mode": "standard", "max_attempts": 5},
    connect_timeout=3,
    read_timeout=10,
    max_pool_connections=32,
)
# Emulators (s3rver, moto) and LocalStack: botocore's default flexible checksums (CRC32 trailers on every upload,
# since 1.36) are sent only where the API requires them, and responses are checked only then.
_LOCAL_CONFIG = _CONFIG.merge(
    Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")
)


_session: boto3.session.Session | None = None
_session_lock = threading.Lock()
# A shared endpoint -> {service: that service's own endpoint}: see route_services.
_routes: dict[str, dict[str, str]] = {}


def route_services(endpoint_url: str, service_endpoints: Mapping[str, str]) -> None:
    """From now on, this process's clients for `endpoint_url` talk to each listed service's own endpoint.

    The embedded cloud answers every service on one port through a router (for the AWS CLI and awslocal); a
    process of the system itself skips that hop, which under load cost as much CPU as the DynamoDB emulator."""
    with _session_lock:
        _routes[endpoint_url] = dict(service_endpoints)


def routed_endpoint(service: str, endpoint_url: str) -> str:
    """The endpoint a client of `service` for `endpoint_url` uses (see route_services)."""
    return _routes.get(endpoint_url, {}).get(service, endpoint_url)


def aws_client(service: str, endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    """A boto3 client for `service`; with `endpoint_url` set, it targets that emulator.

    Clients come from one session per process: a new session per client re-reads the botocore data files
    (0.1 s each), which a Lambda cold start pays for every client. Session.client is not thread-safe, hence
    the lock; the clients themselves are."""
    global _session
    kwargs: dict[str, Any] = {"region_name": region, "config": _CONFIG}
    if endpoint_url:
        kwargs["endpoint_url"] = routed_endpoint(service, endpoint_url)
        kwargs["config"] = _LOCAL_CONFIG
        kwargs.update(LOCAL_CREDENTIALS)
    with _session_lock:
        if _session is None:
            _session = boto3.session.Session()
        # Through Any: boto3-stubs types client() by one overload per literal service name, and `service` is a
        # run-time string here (the adapters, the local cloud and the tests name theirs); the adapters drive the
        # client untyped anyway.
        session: Any = _session
        return session.client(service, **kwargs)
