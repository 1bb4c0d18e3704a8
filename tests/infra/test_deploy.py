"""`rtrec cloud deploy`: the CDK CLI synthesizes the app offline and deploys it to a fresh embedded cloud, and what
CloudFormation created there equals what the embedded cloud provisions from rtrec.resources."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.provision import Provisioner
from rtrec.errors import InvalidInputError
from rtrec.resources import BUCKETS, EVENTS_DLQ, QUEUES, STREAMS, TABLES, ResourceNames
from rtrec_local.cloud import EmbeddedCloud
from rtrec_local.deploy import INFRA_DIR, CdkDeployer, DeployReport

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning"),  # moto, on each type it skips (reported)
    pytest.mark.skipif(
        not (INFRA_DIR / "node_modules" / ".bin" / "cdk").exists(),
        reason="the CDK CLI is not installed: `make infra-deps` (make test does it)",
    ),
]

PROVISIONED = ResourceNames(prefix="itest")  # what the embedded cloud provisions at start
DEPLOYED = ResourceNames(prefix="itcdk")  # what `cdk deploy` creates beside it


@dataclass
class Deployment:
    cloud: EmbeddedCloud
    deployer: CdkDeployer
    report: DeployReport

    def client(self, service: str):
        return aws_client(service, self.cloud.endpoint_url, self.cloud.region)


@pytest.fixture(scope="session")
def deployment(runtime_layer_stand_in: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    # moto only: its CloudFormation creates the stacks' resources inside moto, next to what start() provisioned there
    cloud = EmbeddedCloud(port=0, names=PROVISIONED, backend="moto")
    cloud.start()
    try:
        deployer = CdkDeployer(
            cloud.endpoint_url,
            base_env=os.environ,
            python=sys.executable,
            prefix=DEPLOYED.prefix,
            runtime_layer_dir=runtime_layer_stand_in,
            out_dir=tmp_path_factory.mktemp("assembly"),
            core_layer_dir=tmp_path_factory.mktemp("deployed-layers") / "core",
            log=lambda _: None,
            echo_cli=False,
        )
        yield Deployment(cloud, deployer, deployer.run())
    finally:
        cloud.stop(save_state=False)


def test_the_cdk_cli_synthesizes_the_app_offline(deployment):
    out = deployment.deployer.out_dir
    manifest = json.loads((out / "manifest.json").read_text())
    stacks = {a["properties"]["stackName"] for a in manifest["artifacts"].values() if a["type"] == "aws:cloudformation:stack"}
    assert stacks == {f"itcdk-{s}" for s in ("data", "streaming", "serving", "training", "drift", "monitoring")}
    assert deployment.deployer.stack_names()[0] == "itcdk-data"  # dependencies first
    data = json.loads((out / "Data.template.json").read_text())
    assert {r["Properties"]["TableName"] for r in data["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"} == {
        DEPLOYED.table(t) for t in TABLES
    }


def test_deployed_names_and_key_schemas_equal_the_provisioned_ones(deployment):
    dynamodb, kinesis, sqs = (deployment.client(s) for s in ("dynamodb", "kinesis", "sqs"))
    for spec in TABLES:
        provisioned = dynamodb.describe_table(TableName=PROVISIONED.table(spec))["Table"]
        deployed = dynamodb.describe_table(TableName=DEPLOYED.table(spec))["Table"]
        assert deployed["KeySchema"] == provisioned["KeySchema"], spec.logical_name
        assert sorted(deployed["AttributeDefinitions"], key=str) == sorted(provisioned["AttributeDefinitions"], key=str), (
            spec.logical_name
        )
        assert deployed["BillingModeSummary"]["BillingMode"] == provisioned["BillingModeSummary"]["BillingMode"]
        # (moto's CloudFormation ignores TimeToLiveSpecification; test_templates checks it against the spec.)
    for spec in STREAMS:
        summaries = [
            kinesis.describe_stream_summary(StreamName=n)["StreamDescriptionSummary"]
            for n in (PROVISIONED.stream(spec), DEPLOYED.stream(spec))
        ]
        assert summaries[0]["OpenShardCount"] == summaries[1]["OpenShardCount"] == spec.shard_count
        assert summaries[0]["RetentionPeriodHours"] == summaries[1]["RetentionPeriodHours"]
    for spec in QUEUES:
        retention = [
            sqs.get_queue_attributes(
                QueueUrl=sqs.get_queue_url(QueueName=n)["QueueUrl"], AttributeNames=["MessageRetentionPeriod"]
            )["Attributes"]
            for n in (PROVISIONED.queue(spec), DEPLOYED.queue(spec))
        ]
        assert retention[0] == retention[1]
    buckets = {b["Name"] for b in deployment.client("s3").list_buckets()["Buckets"]}
    assert {DEPLOYED.bucket(b) for b in BUCKETS} <= buckets
    # The embedded cloud's provisioner finds every resource of the deployed prefix already there.
    report = Provisioner(DEPLOYED, endpoint_url=deployment.cloud.endpoint_url).provision()
    assert report.created == []
    assert len(report.existing) == len(TABLES) + len(STREAMS) + len(BUCKETS) + len(QUEUES)


def test_the_consumer_is_mapped_to_the_stream_with_the_dead_letter_queue(deployment):
    awslambda = deployment.client("lambda")
    mappings = awslambda.list_event_source_mappings(FunctionName="itcdk-stream-consumer")["EventSourceMappings"]
    assert len(mappings) == 1
    mapping = mappings[0]
    assert mapping["EventSourceArn"].endswith(f"stream/{DEPLOYED.stream(STREAMS[0])}")
    assert mapping["BatchSize"] == 500
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == 3
    assert mapping["DestinationConfig"]["OnFailure"]["Destination"].endswith(f":{DEPLOYED.queue(EVENTS_DLQ)}")
    for name, handler in (
        ("api", "api.handler.handler"),
        ("stream-consumer", "stream_consumer.handler.handler"),
        ("drift-check", "drift_check.handler.handler"),
    ):
        config = awslambda.get_function(FunctionName=f"itcdk-{name}")["Configuration"]
        # (moto's CloudFormation drops a function's Layers; test_templates checks both are attached.)
        assert (config["Handler"], config["Runtime"]) == (handler, "python3.12")


def test_the_rest_api_routes_are_deployed(deployment):
    apigateway = deployment.client("apigateway")
    api = next(a for a in apigateway.get_rest_apis()["items"] if a["name"] == "itcdk-api")
    resources = apigateway.get_resources(restApiId=api["id"], limit=500)["items"]
    methods = {(verb, r["path"]) for r in resources for verb in r.get("resourceMethods", {})}
    assert methods == {
        ("GET", "/health"),
        ("GET", "/recommend/{user_id}"),
        ("GET", "/items/{item_id}/similar"),
        ("POST", "/items"),
        ("POST", "/events"),
        ("PATCH", "/items/{item_id}"),
        ("DELETE", "/items/{item_id}"),
    }
    env = deployment.client("lambda").get_function(FunctionName="itcdk-api")["Configuration"]["Environment"]["Variables"]
    assert env["RTREC_REQUIRE_API_KEYS"] == "true"
    # moto skips the API keys (their Refs resolve to "None" there); the value is still JSON the app can parse.
    roles = json.loads(env["RTREC_API_KEY_ROLES"])
    assert isinstance(roles, dict)
    assert ["admin", "events", "read"] in roles.values()


def test_the_report_names_what_moto_skips(deployment):
    report = deployment.report
    by_stack = {s.name: s for s in report.stacks}
    assert set(by_stack) == {f"itcdk-{s}" for s in ("data", "streaming", "serving", "training", "drift", "monitoring")}
    assert by_stack["itcdk-data"].created["AWS::DynamoDB::Table"] == len(TABLES)
    assert by_stack["itcdk-streaming"].created["AWS::Lambda::EventSourceMapping"] == 1
    assert by_stack["itcdk-data"].skipped["AWS::S3::BucketPolicy"] == len(BUCKETS) + 1
    assert by_stack["itcdk-serving"].skipped["AWS::ApiGateway::UsagePlan"] == 3  # one per API key
    assert by_stack["itcdk-serving"].skipped["AWS::ApiGateway::ApiKey"] == 3
    assert by_stack["itcdk-monitoring"].skipped["AWS::CloudWatch::Alarm"] >= 4
    assert "itcdk-search" in report.left_out
    assert report.bootstrapped
    assert report.seconds["total"] < 120
    assert any("skipped" in line for line in report.summary())


def test_deploying_over_names_the_embedded_cloud_provisioned_is_refused(deployment):
    clash = CdkDeployer(
        deployment.cloud.endpoint_url,
        base_env=os.environ,
        python=sys.executable,
        prefix=PROVISIONED.prefix,
        log=lambda _: None,
        echo_cli=False,
    )
    with pytest.raises(InvalidInputError, match="already exist"):
        clash.check_conflicts()
