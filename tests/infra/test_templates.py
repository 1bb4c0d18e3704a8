"""The synthesized CloudFormation: names and key schemas from rtrec.resources, data protection, the event source
mapping, the API's keys and throttles, search, training, drift, monitoring, layers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtrec.adapters.aws.provision import _table_definition
from rtrec.monitoring.catalog import ALARMS, PANELS
from rtrec.resources import BUCKETS, EVENTS_DLQ, EVENTS_STREAM, MODELS_BUCKET, QUEUES, STREAMS, TABLES, ResourceNames

ROOT = Path(__file__).resolve().parents[2]

NAMES = ResourceNames()  # the app's default prefix, the embedded cloud's default too


def one(resources: dict) -> dict:
    assert len(resources) == 1, list(resources)
    return next(iter(resources.values()))["Properties"]


def by_property(resources: dict, key: str) -> dict:
    return {r["Properties"][key]: r["Properties"] for r in resources.values() if key in r["Properties"]}


def test_tables_are_those_the_embedded_cloud_provisions(synth):
    tables = by_property(synth.resources("Data", "AWS::DynamoDB::Table"), "TableName")
    assert set(tables) == {NAMES.table(spec) for spec in TABLES}
    for spec in TABLES:
        props, provisioned = tables[NAMES.table(spec)], _table_definition(NAMES.table(spec), spec)
        assert props["KeySchema"] == provisioned["KeySchema"]
        assert props["AttributeDefinitions"] == provisioned["AttributeDefinitions"]
        assert props["BillingMode"] == provisioned["BillingMode"]
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props.get("TimeToLiveSpecification") == (
            {"AttributeName": spec.ttl_attribute, "Enabled": True} if spec.ttl_attribute else None)


def test_stream_and_queue_are_those_the_embedded_cloud_provisions(synth):
    streams = by_property(synth.resources("Streaming", "AWS::Kinesis::Stream"), "Name")
    assert set(streams) == {NAMES.stream(s) for s in STREAMS}
    stream = streams[NAMES.stream(EVENTS_STREAM)]
    assert stream["ShardCount"] == EVENTS_STREAM.shard_count
    assert stream["RetentionPeriodHours"] == EVENTS_STREAM.retention_hours
    assert stream["StreamEncryption"]["EncryptionType"] == "KMS"

    queues = by_property(synth.resources("Data", "AWS::SQS::Queue"), "QueueName")
    assert set(queues) == {NAMES.queue(q) for q in QUEUES}
    dlq = queues[NAMES.queue(EVENTS_DLQ)]
    assert dlq["MessageRetentionPeriod"] == EVENTS_DLQ.message_retention_seconds
    assert dlq["SqsManagedSseEnabled"] is True


def test_buckets_are_named_from_resources_encrypted_private_and_tls_only(synth):
    buckets = synth.resources("Data", "AWS::S3::Bucket")
    named = by_property(buckets, "BucketName")
    assert set(named) == {NAMES.bucket(b) for b in BUCKETS}
    assert len(buckets) == len(BUCKETS) + 1  # + the server-access-log bucket
    for props in (r["Properties"] for r in buckets.values()):
        assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "AES256"}
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    for props in named.values():
        assert "LoggingConfiguration" in props and props["VersioningConfiguration"] == {"Status": "Enabled"}
    policies = synth.resources("Data", "AWS::S3::BucketPolicy")
    assert len(policies) == len(buckets)
    for policy in policies.values():
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)


def test_tables_and_buckets_are_kept_when_a_stack_is_deleted(synth):
    for kind in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SQS::Queue"):
        for resource in synth.resources("Data", kind).values():
            assert resource["DeletionPolicy"] == "Retain", kind


def test_event_source_mapping_reports_partial_failures_retries_and_dead_letters(synth):
    mapping = one(synth.resources("Streaming", "AWS::Lambda::EventSourceMapping"))
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["BisectBatchOnFunctionError"] is True
    assert mapping["MaximumRetryAttempts"] == 3
    assert mapping["BatchSize"] == 500
    assert mapping["ParallelizationFactor"] == 1
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["MaximumRecordAgeInSeconds"] == EVENTS_STREAM.retention_hours * 3600
    destination = json.dumps(mapping["DestinationConfig"]["OnFailure"]["Destination"])
    assert f":{NAMES.queue(EVENTS_DLQ)}" in destination
    stream = next(iter(synth.resources("Streaming", "AWS::Kinesis::Stream")))
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [stream, "Arn"]}


@pytest.mark.parametrize(("stack", "handler"), [("Serving", "api.handler.handler"),
                                                ("Streaming", "stream_consumer.handler.handler"),
                                                ("Drift", "drift_check.handler.handler")])
def test_functions_run_the_handlers_on_both_layers(synth, stack, handler):
    function = one(synth.resources(stack, "AWS::Lambda::Function"))
    assert function["Handler"] == handler
    assert (ROOT / "functions" / handler.split(".")[0] / "handler.py").is_file()
    assert function["Runtime"] == "python3.12"
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["Environment"]["Variables"]["RTREC_PREFIX"] == "rtrec"
    assert "AWS_ENDPOINT_URL" not in function["Environment"]["Variables"]  # unset: the real AWS endpoints
    assert len(function["Layers"]) == 2
    layers = synth.resources(stack, "AWS::Lambda::LayerVersion")
    assert {tuple(r["Properties"]["CompatibleRuntimes"]) for r in layers.values()} == {("python3.12",)}


def test_core_layer_holds_the_rtrec_package_under_python(synth):
    package = synth.core_layer_dir / "python" / "rtrec"
    assert (package / "resources.py").read_text() == (ROOT / "layers/core/rtrec/resources.py").read_text()
    assert not list(package.rglob("__pycache__"))


def _api_methods(synth) -> dict[tuple[str, str], dict]:
    """(HTTP method, path) -> method properties, the path rebuilt from the API's resources."""
    resources = synth.resources("Serving", "AWS::ApiGateway::Resource")

    def path(ref) -> str:
        if isinstance(ref, dict) and "Ref" in ref:
            props = resources[ref["Ref"]]["Properties"]
            return f"{path(props['ParentId'])}/{props['PathPart']}"
        return ""  # the root resource (Fn::GetAtt RootResourceId)

    return {(m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
            for m in synth.resources("Serving", "AWS::ApiGateway::Method").values()}


def test_api_routes_proxy_to_lambda_and_keys_guard_the_writes(synth):
    methods = _api_methods(synth)
    assert set(methods) == {("GET", "/health"), ("GET", "/recommend/{user_id}"), ("GET", "/items/{item_id}/similar"),
                            ("POST", "/items"), ("POST", "/events")}
    for (verb, route), props in methods.items():
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert props.get("ApiKeyRequired", False) is (verb == "POST"), route
    assert methods[("GET", "/recommend/{user_id}")]["RequestParameters"] == {"method.request.path.user_id": True}


def test_api_stage_and_usage_plan_throttle(synth):
    stage = one(synth.resources("Serving", "AWS::ApiGateway::Stage"))
    settings = stage["MethodSettings"][0]
    assert settings["ThrottlingRateLimit"] == 200 and settings["ThrottlingBurstLimit"] == 400
    assert stage["TracingEnabled"] is True and "AccessLogSetting" in stage
    plan = one(synth.resources("Serving", "AWS::ApiGateway::UsagePlan"))
    assert plan["Throttle"] == {"BurstLimit": 200, "RateLimit": 100}
    assert plan["Quota"] == {"Limit": 5_000_000, "Period": "DAY"}
    assert len(plan["ApiStages"]) == 1
    assert len(synth.resources("Serving", "AWS::ApiGateway::ApiKey")) == 1
    assert len(synth.resources("Serving", "AWS::ApiGateway::UsagePlanKey")) == 1


def test_search_domain_has_fine_grained_access_control_and_encryption(synth):
    domain = one(synth.resources("Search", "AWS::OpenSearchService::Domain"))
    assert domain["EngineVersion"].startswith("OpenSearch_2.")
    security = domain["AdvancedSecurityOptions"]
    assert security["Enabled"] is True and security["InternalUserDatabaseEnabled"] is False
    assert "MasterUserARN" in security["MasterUserOptions"]
    assert domain["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert domain["EncryptionAtRestOptions"] == {"Enabled": True}
    assert domain["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert domain["ClusterConfig"]["ZoneAwarenessEnabled"] is True
    assert set(domain["LogPublishingOptions"]) == {"ES_APPLICATION_LOGS", "SEARCH_SLOW_LOGS", "INDEX_SLOW_LOGS"}
    principals = [s["Principal"] for s in domain["AccessPolicies"]["Statement"]]
    assert all(p != "*" and p.get("AWS") != "*" for p in principals)  # never anonymous


def test_training_role_and_mlflow_tracking_server(synth):
    roles = synth.resources("Training", "AWS::IAM::Role")
    trusted = [r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"] for r in roles.values()]
    assert trusted == ["sagemaker.amazonaws.com"] * 2  # execution role, MLflow server role
    server = one(synth.resources("Training", "AWS::SageMaker::MlflowTrackingServer"))
    assert server["ArtifactStoreUri"] == f"s3://{NAMES.bucket(MODELS_BUCKET)}/mlflow"
    assert server["TrackingServerName"] == "rtrec-mlflow"
    assert len(synth.resources("Training", "AWS::ECR::Repository")) == 1


def test_drift_check_runs_on_a_schedule_and_can_start_retraining(synth):
    rule = one(synth.resources("Drift", "AWS::Events::Rule"))
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    assert rule["Targets"][0]["RetryPolicy"]["MaximumRetryAttempts"] == 2
    env = one(synth.resources("Drift", "AWS::Lambda::Function"))["Environment"]["Variables"]
    assert "role/rtrec-sagemaker-execution" in json.dumps(env["RTREC_SAGEMAKER_ROLE_ARN"])
    assert "rtrec-training:latest" in json.dumps(env["RTREC_SAGEMAKER_IMAGE_URI"])
    assert "mlflow-tracking-server/rtrec-mlflow" in json.dumps(env["RTREC_MLFLOW_TRACKING_URI"])
    statements = one(synth.resources("Drift", "AWS::IAM::Policy"))["PolicyDocument"]["Statement"]
    pass_role = [s for s in statements if s["Action"] == "iam:PassRole"]
    assert pass_role and pass_role[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_monitoring_builds_the_catalog_dashboard_and_alarms(synth):
    alarms = by_property(synth.resources("Monitoring", "AWS::CloudWatch::Alarm"), "AlarmName")
    assert {f"rtrec-{spec.name}" for spec in ALARMS} <= set(alarms)
    assert {"rtrec-api-gateway-5xx", "rtrec-dlq-messages", "rtrec-stream-consumer-errors"} <= set(alarms)
    assert len(alarms) == len(ALARMS) + 4 + 2 * 3  # + API 5xx, DLQ, stream throttles, consumer Lambda IteratorAge;
    # errors/throttles per function
    lambda_age = alarms["rtrec-stream-consumer-lambda-iterator-age"]  # moves while a shard is stuck (failed batches)
    assert lambda_age["Namespace"] == "AWS/Lambda" and lambda_age["MetricName"] == "IteratorAge"
    assert lambda_age["Statistic"] == "Maximum" and lambda_age["Threshold"] == 60_000
    topic = next(iter(synth.resources("Monitoring", "AWS::SNS::Topic")))
    assert all(a["AlarmActions"] == [{"Ref": topic}] for a in alarms.values())
    latency = alarms["rtrec-recommend-latency-p99"]
    assert latency["Namespace"] == "rtrec" and latency["ExtendedStatistic"] == "p99" and latency["Threshold"] == 250
    body = json.dumps(one(synth.resources("Monitoring", "AWS::CloudWatch::Dashboard"))["DashboardBody"])
    for panel in PANELS:
        assert json.dumps(panel.title)[1:-1] in body, panel.title


def test_stacks_address_each_other_by_name_not_by_export(synth):
    for stack, template in synth.templates.items():
        text = json.dumps(template)
        assert "Fn::ImportValue" not in text and "Fn::GetStackOutput" not in text, stack
        assert not any("Export" in o for o in template.get("Outputs", {}).values()), stack


def test_the_lambda_code_asset_is_the_functions_folder(synth):
    manifest = json.loads(Path(synth.stacks.serving.node.root.outdir, "Serving.assets.json").read_text())
    sources = {Path(a["source"]["path"]).name for a in manifest["files"].values()}
    assert any(s.startswith("asset.") for s in sources)
    function = one(synth.resources("Serving", "AWS::Lambda::Function"))
    key = function["Code"]["S3Key"]
    asset = Path(synth.stacks.serving.node.root.outdir, f"asset.{key.split('.')[0]}")
    assert (asset / "api" / "handler.py").is_file() and (asset / "stream_consumer" / "handler.py").is_file()
    assert not list(asset.rglob("__pycache__")) and not (asset / "training").exists()
