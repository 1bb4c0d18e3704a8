"""Schemathesis against the app (in-memory ports, a real model's catalog): every operation of the OpenAPI document,
generated valid and invalid requests, all of Schemathesis' checks, a fixed seed and a bounded number of examples
per operation. Zero failures means the server does what its document says. A longer run with more examples is
`tests/bench/bench_api_contract.py`."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the test extra installs schemathesis (make test does)")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import negative_data_rejection  # noqa: E402
from schemathesis.generation.meta import negated_parameters  # noqa: E402

from functions.api.app import Services, create_app  # noqa: E402
from rtrec.adapters.memory import InMemoryEventStream  # noqa: E402
from rtrec.services.stream import IngestService  # noqa: E402
from tests.unit.serving_world import ADMIN, keyed_access, make_world  # noqa: E402

EXAMPLES_PER_OPERATION = 40
# Repeated query parameters (`?include_genres=A&include_genres=B`). Schemathesis "negates" one by making it an
# object, which a query string serialises as the same repeated key=value pairs: a request that no server can tell
# from a valid one (a known false positive of its negative_data_rejection check). Negative cases that mutate only
# these skip that check; every other check still runs on them, and every other negative case runs all checks.
QUERY_LISTS = {"include_genres", "exclude_genres", "exclude_items"}


def make_app():
    world = make_world()
    services = Services(
        recommender=world.recommender(),
        catalog=world.catalog_service,
        ingest=IngestService(InMemoryEventStream(), clock=lambda: 1_800_000_000.0),
        impression_log_lines=False,
        access=keyed_access(require_keys=True),
    )
    return create_app(services)


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.auth()
class AdminKey:
    """Every case carries the admin key (every role), so generation explores the routes behind it; the
    ignored_auth check still sends each request without it and with a wrong one, and expects 401."""

    def get(self, case, context):
        return ADMIN["X-Api-Key"]

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "X-Api-Key": data}


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_does_what_its_openapi_document_says(case):
    validate(case)


def only_union_tags(meta) -> bool:
    """A negative case whose every mutation is an enum violation of a `oneOf` branch's `type`: the events' union is
    tagged by `type`, so a value one branch refuses can be another branch's tag, and the event is then valid
    (Schemathesis negates one branch, not the union). Unknown types are refused with 422: test_api_contract."""
    data = getattr(getattr(meta, "phase", None), "data", None)
    mutations = list(getattr(data, "mutations", None) or [])
    return bool(mutations) and all(
        "/oneOf/" in (m.schema_pointer or "")
        and str(m.schema_pointer).endswith("/properties/type")
        and "enum" in (m.keywords or ())
        for m in mutations
    )


def validate(case) -> None:
    """Call the app with `case` and run every check on the answer (the two exceptions: QUERY_LISTS, and
    only_union_tags)."""
    negated = {name for name, _location in negated_parameters(case.meta)}
    only_query_lists = bool(negated) and negated <= QUERY_LISTS
    skip_negative = only_query_lists or only_union_tags(case.meta)
    case.call_and_validate(excluded_checks=[negative_data_rejection] if skip_negative else None)
