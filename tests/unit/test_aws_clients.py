"""aws_client's routing of one shared endpoint to each service's own (the embedded cloud without its router hop)."""

from __future__ import annotations

from rtrec.adapters.aws.clients import aws_client, route_services, routed_endpoint


def test_routed_services_skip_the_shared_endpoint_and_the_others_keep_it():
    shared = "http://localhost:45999"
    route_services(shared, {"dynamodb": "http://127.0.0.1:46001", "s3": "http://127.0.0.1:46003"})
    try:
        assert aws_client("dynamodb", shared).meta.endpoint_url == "http://127.0.0.1:46001"
        assert aws_client("s3", shared).meta.endpoint_url == "http://127.0.0.1:46003"
        assert aws_client("kinesis", shared).meta.endpoint_url == shared  # no route: the shared endpoint
        assert routed_endpoint("dynamodb", "http://localhost:1") == "http://localhost:1"  # another endpoint
    finally:
        route_services(shared, {})
    assert aws_client("dynamodb", shared).meta.endpoint_url == shared
