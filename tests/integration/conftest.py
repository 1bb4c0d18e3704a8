"""The embedded cloud, started once per test session on a free port (never 4566, which `make run` may hold)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rtrec.adapters.aws.clients import aws_client
from rtrec.local.cloud import EmbeddedCloud
from rtrec.resources import ResourceNames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cloud() -> Iterator[EmbeddedCloud]:
    embedded = EmbeddedCloud(port=0, names=ResourceNames(prefix="itest"))
    embedded.start()
    yield embedded
    embedded.stop(save_state=False)


@pytest.fixture(scope="session")
def names(cloud: EmbeddedCloud) -> ResourceNames:
    return cloud.names


@pytest.fixture
def client(cloud: EmbeddedCloud):
    def make(service: str):
        return aws_client(service, cloud.endpoint_url, cloud.region)

    return make
