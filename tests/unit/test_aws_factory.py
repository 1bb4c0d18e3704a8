"""AwsAdapters: every adapter named from the deployment's ResourceNames, at the settings' endpoint and region, the
adapters of one service on one client. Building them calls no AWS API (no endpoint listens here)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from rtrec.adapters.aws import factory as factory_module
from rtrec.adapters.aws.factory import AwsAdapters
from rtrec.settings import DriftSettings

LOCAL = Path(__file__).resolve().parents[2] / "localstack" / "rtrec_local"
ENDPOINT = "http://localhost:45998"  # nothing listens: a call would fail, constructing must not call


def adapters(**clients: object) -> AwsAdapters:
    settings = DriftSettings(endpoint_url=ENDPOINT, region="eu-west-3", resource_prefix="fx", bucket_suffix="acct")
    return AwsAdapters.from_settings(settings, clients=clients or None)


def test_every_adapter_takes_its_name_from_the_deployment():
    aws = adapters()
    assert (aws.feature_store().user_table, aws.feature_store().item_table) == ("fx-user-features", "fx-item-features")
    assert aws.lock().table == "fx-locks"
    for store in (
        aws.model_store(),
        aws.popularity_store(),
        aws.catalog_additions(),
        aws.ranker_state_store(),
        aws.drift_store(),
        aws.drift_reports(),
    ):
        assert store.bucket == "fx-models-acct", type(store).__name__
    assert aws.counterfactual_log().bucket == aws.drift_sources().bucket == "fx-counterfactual-logs-acct"
    assert aws.event_stream().stream_name == "fx-events"
    assert aws.impression_producer(background=False)._stream.stream_name == "fx-events"
    dlq = aws.dead_letter_queue()
    assert (dlq.queue_name, dlq.bucket) == ("fx-events-dlq", "fx-dead-letters-acct")
    assert aws.metrics().namespace == "rtrec/fx"
    assert aws.metrics("other").namespace == "other"
    jobs = aws.training_jobs(role_arn="arn:aws:iam::1:role/r", image_uri="img", environment={"A": "1"})
    assert jobs.config.train_s3_uri == "s3://fx-offline-store-acct/train/"
    assert jobs.config.output_s3_uri == "s3://fx-models-acct/jobs/"
    assert dict(jobs.config.environment) == {"A": "1"}


def test_clients_target_the_settings_endpoint_and_region_and_are_shared_per_service():
    aws = adapters()
    s3 = aws.client("s3")
    assert (s3.meta.endpoint_url, s3.meta.region_name) == (ENDPOINT, "eu-west-3")
    assert aws.model_store()._client is aws.counterfactual_log()._client is s3
    assert aws.feature_store()._client is aws.lock()._client is aws.client("dynamodb") is not s3
    assert aws.dead_letter_queue().s3 is s3


def test_a_given_client_replaces_that_service_only():
    fake_dynamodb = object()
    aws = adapters(dynamodb=fake_dynamodb)
    assert aws.feature_store(consistent_profile_reads=True)._client is fake_dynamodb
    assert aws.event_stream()._client.meta.endpoint_url == ENDPOINT


def test_the_cli_and_the_local_cloud_build_no_adapter_the_factory_builds():
    """One wiring: `rtrec_local` asks AwsAdapters for every adapter it builds. The one exception is the local event
    source mapping's DLQ, which it builds from a queue URL (an event source mapping's own setting), not from names."""
    factory = ast.parse(inspect.getsource(factory_module))
    adapters = {
        alias.asname or alias.name
        for node in factory.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rtrec.adapters.aws.")
        for alias in node.names
        if alias.name[0].isupper() and not alias.name.endswith("Config")
    }
    assert {"S3ModelStore", "DynamoFeatureStore", "SqsDeadLetterQueue"} <= adapters
    allowed = {("event_source.py", "SqsDeadLetterQueue")}
    built_by_hand = sorted(
        (str(path.relative_to(LOCAL)), name)
        for path in LOCAL.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        for name in [_called_name(node.func)]
        if name in adapters and (str(path.relative_to(LOCAL)), name) not in allowed
    )
    assert built_by_hand == []


def _called_name(func: ast.expr) -> str | None:
    """`X` of a call `X(...)` or `X.for_names(...)`."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        return func.value.id
    return None
