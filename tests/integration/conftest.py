"""The embedded cloud, started once per test session on a free port (never 4566, which `make run` may hold).

By default the durable emulators (dynalite, kinesalite, s3rver, moto for the rest, behind the router; state in a
temporary folder); `RTREC_CLOUD_BACKEND=moto` runs the same tests against moto server in this process.

With AWS_ENDPOINT_URL set (LocalStack: localstack/README.md), the same tests run against that endpoint instead:
the `itest` resources are provisioned there, nothing is started.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.provision import Provisioner
from rtrec.resources import ResourceNames
from rtrec.settings import LocalSettings
from rtrec_local.cloud import EmbeddedCloud


@dataclass
class ExternalCloud:
    """A cloud running elsewhere (LocalStack), with what the tests use of EmbeddedCloud."""

    endpoint_url: str
    names: ResourceNames
    region: str = "us-east-1"

    def client(self, service: str):
        return aws_client(service, self.endpoint_url, self.region)


pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def cloud() -> Iterator[EmbeddedCloud]:
    if os.environ.get("AWS_ENDPOINT_URL"):
        external = ExternalCloud(
            os.environ["AWS_ENDPOINT_URL"].rstrip("/"), ResourceNames(prefix="itest"), os.environ.get("AWS_REGION", "us-east-1")
        )
        Provisioner(external.names, endpoint_url=external.endpoint_url, region=external.region).provision()
        yield external  # type: ignore[misc]
        return
    embedded = EmbeddedCloud(port=0, names=ResourceNames(prefix="itest"), backend=LocalSettings().cloud_backend)
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
