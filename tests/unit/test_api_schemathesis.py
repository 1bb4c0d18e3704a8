"""Schemathesis against the app (in-memory ports, a real model's catalog): every operation of the OpenAPI document,
generated valid and invalid requests, all of Schemathesis' checks, a fixed seed and a bounded number of examples
per operation. Zero failures means the server does what its document says. A longer run with more examples is
`tests/bench/bench_api_contract.py`."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the test extra installs schemathesis (make test does)")
from hypothesis import HealthCheck, settings  # noqa: E402

from functions.api.app import Services, create_app  # noqa: E402
from rtrec.adapters.memory import InMemoryEventStream  # noqa: E402
from rtrec.services.stream import IngestService  # noqa: E402
from tests.unit.serving_world import make_world  # noqa: E402

EXAMPLES_PER_OPERATION = 40


def make_app():
    world = make_world()
    services = Services(recommender=world.recommender(), catalog=world.catalog_service,
                        ingest=IngestService(InMemoryEventStream(), clock=lambda: 1_800_000_000.0))
    return create_app(services)


schema = schemathesis.openapi.from_asgi("/openapi.json", make_app())


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_the_api_does_what_its_openapi_document_says(case):
    case.call_and_validate()
