"""The routes' dependencies, each declared once as an `Annotated` alias (`ServicesDep`, `RecommenderDep`,
`CatalogDep`, `IngestDep`, and a caller with a role: `ReaderDep`, `EventsCallerDep`, `AdminDep`).

Each resolves from `request.app.state`, where `create_app` puts what the app was built with, so a test replaces
one with FastAPI's own seam: `app.dependency_overrides[get_recommender] = lambda: fake`. A part of `Services` the
app was built without (a test's app, which wires only what its routes use) is a wiring error, `UnwiredError`, not
a client's error: it surfaces in the test that calls such a route, and `build_services` wires every part.

The dependencies are coroutines: FastAPI runs a plain function dependency in its thread pool, a hand-off (and a
fight for the interpreter lock) per dependency per request for what is an attribute read. FastAPI also solves
each node of a route's dependency graph per request (about 20 us each), so a hot route takes as few as it can.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from rtrec.domain.access import AccessPolicy, Caller, Role
from rtrec.errors import InvalidInputError, short_reason
from rtrec.monitoring.telemetry import Telemetry
from rtrec.services.catalog import CatalogService
from rtrec.services.recommend import Recommender
from rtrec.services.stream import IngestService

from .wiring import ConsumerStatus, Services


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_recommender(request: Request) -> Recommender:
    """The recommender the app was created with."""
    recommender: Recommender = request.app.state.services.recommender
    return recommender


class UnwiredError(RuntimeError):
    """A route needs a part of `Services` its app was created without: a bug in the wiring, never the client's
    (nor a model still loading, which is ModelNotReadyError's 503)."""


async def get_catalog(request: Request) -> CatalogService:
    """The catalog service (the admin routes'); UnwiredError when the app was created without one."""
    catalog: CatalogService | None = request.app.state.services.catalog
    if catalog is None:
        raise UnwiredError("the app's Services has no catalog: give it one, or override get_catalog")
    return catalog


async def get_ingest(request: Request) -> IngestService:
    """Ingestion onto the event stream (POST /events'); UnwiredError when the app was created without it."""
    ingest: IngestService | None = request.app.state.services.ingest
    if ingest is None:
        raise UnwiredError("the app's Services has no ingest service: give it one, or override get_ingest")
    return ingest


async def get_telemetry(request: Request) -> Telemetry:
    """Where each request's and each slate's metrics go (EMF in Lambda, Prometheus locally)."""
    return app_telemetry(request)


def app_telemetry(request: Request) -> Telemetry:
    """The app's telemetry, for a hot route to read without one more dependency to solve."""
    telemetry: Telemetry = request.app.state.telemetry
    return telemetry


async def get_consumer_status(request: Request) -> ConsumerStatus | None:
    """The local event source mapping's `stats` when `rtrec run` runs the consumer in this process, else None."""
    status: ConsumerStatus | None = request.app.state.consumer_status
    return status


ServicesDep = Annotated[Services, Depends(get_services)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
CatalogDep = Annotated[CatalogService, Depends(get_catalog)]
IngestDep = Annotated[IngestService, Depends(get_ingest)]
TelemetryDep = Annotated[Telemetry, Depends(get_telemetry)]
ConsumerStatusDep = Annotated[ConsumerStatus | None, Depends(get_consumer_status)]


API_KEY_HEADER = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    scheme_name="ApiKey",
    description="a key per role: read (recommendations), events (POST /events; its slates are logged as "
    "impressions), admin (the catalog). See the README's Security section",
)


def gateway_key_id(request: Request) -> str | None:
    """The id of the key API Gateway checked (REST API, Lambda proxy integration): Mangum passes the event on."""
    event = request.scope.get("aws.event")
    if not isinstance(event, dict):
        return None
    identity = (event.get("requestContext") or {}).get("identity") or {}
    key_id = identity.get("apiKeyId")
    return key_id if isinstance(key_id, str) and key_id else None


def requires(role: Role) -> Callable[..., Awaitable[Caller]]:
    """The dependency that checks a route's role. One dependency per route: it reads the key through the security
    scheme (which puts it in the OpenAPI document) and nothing else."""

    async def check(request: Request, api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None) -> Caller:
        access: AccessPolicy = request.app.state.services.access
        return access.authorize(access.identify(api_key, gateway_key_id(request)), role)

    check.__name__ = f"require_{role.value}"
    return check


require_read, require_events, require_admin = requires(Role.READ), requires(Role.EVENTS), requires(Role.ADMIN)

# A route's role check comes before any dependency that can fail: FastAPI solves dependencies in order, and a caller
# without the role learns nothing about the deployment (a 401 or 403 before any other dependency's 503).
ReaderDep = Annotated[Caller, Depends(require_read)]
EventsCallerDep = Annotated[Caller, Depends(require_events)]
AdminDep = Annotated[Caller, Depends(require_admin)]


def _query_parameters(dependant: Any) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names: set[str] = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_parameters(sub)
    return names


async def reject_unknown_query_parameters(request: Request) -> None:
    """A query parameter the route does not take is a 422, as an unknown body field is: a typo (`?k=5&exlude_items=3`)
    would otherwise be ignored without a word. The app's one global dependency."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or not request.query_params:
        return
    known = _query_parameters(dependant)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter(s): {', '.join(short_reason(u, 40) for u in unknown[:5])}"
            + (f"; this route takes {', '.join(sorted(known))}" if known else "")
        )
