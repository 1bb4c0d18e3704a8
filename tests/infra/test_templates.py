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
            {"AttributeName": spec.ttl_attribute, "Enabled": True} if spec.ttl_attribute else None
        )


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
            "SSEAlgorithm": "AES256"
        }
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }
    for props in named.values():
        assert "LoggingConfiguration" in props
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
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


@pytest.mark.parametrize(
    ("stack", "handler"),
    [
        ("Serving", "api.handler.handler"),
        ("Streaming", "stream_consumer.handler.handler"),
        ("Drift", "drift_check.handler.handler"),
    ],
)
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

    return {
        (m["Properties"]["HttpMethod"], path(m["Properties"]["ResourceId"])): m["Properties"]
        for m in synth.resources("Serving", "AWS::ApiGateway::Method").values()
    }


DATA_ROUTES = {
    ("GET", "/recommend/{user_id}"),
    ("GET", "/items/{item_id}/similar"),
    ("POST", "/events"),
    ("POST", "/items"),
    ("PATCH", "/items/{item_id}"),
    ("DELETE", "/items/{item_id}"),
}
KEY_ROLES = {"rtrec-read": ["read"], "rtrec-events": ["events", "read"], "rtrec-admin": ["admin", "events", "read"]}


def test_api_routes_proxy_to_lambda_and_every_data_route_needs_a_key(synth):
    methods = _api_methods(synth)
    assert set(methods) == DATA_ROUTES | {("GET", "/health")}
    for route, props in methods.items():
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert props.get("ApiKeyRequired", False) is (route in DATA_ROUTES), route
    assert methods[("GET", "/recommend/{user_id}")]["RequestParameters"] == {"method.request.path.user_id": True}
    for verb in ("PATCH", "DELETE"):
        assert methods[(verb, "/items/{item_id}")]["RequestParameters"] == {"method.request.path.item_id": True}


def _api_keys(synth) -> dict[str, str]:
    """ApiKey logical id -> key name."""
    return {lid: r["Properties"]["Name"] for lid, r in synth.resources("Serving", "AWS::ApiGateway::ApiKey").items()}


def test_api_stage_throttles_and_each_key_has_its_own_usage_plan(synth):
    from infra_cdk.config import InfraConfig

    stage = one(synth.resources("Serving", "AWS::ApiGateway::Stage"))
    settings = stage["MethodSettings"][0]
    assert settings["ThrottlingRateLimit"] == 200
    assert settings["ThrottlingBurstLimit"] == 400
    assert stage["TracingEnabled"] is True
    assert "AccessLogSetting" in stage
    keys = _api_keys(synth)
    assert sorted(keys.values()) == sorted(KEY_ROLES)
    for key in synth.resources("Serving", "AWS::ApiGateway::ApiKey").values():
        assert "StageKeys" not in key["Properties"]  # bound by its usage plan only (no dependency on the stage)
    plans = synth.resources("Serving", "AWS::ApiGateway::UsagePlan")
    bindings = {
        b["Properties"]["UsagePlanId"]["Ref"]: b["Properties"]["KeyId"]["Ref"]
        for b in synth.resources("Serving", "AWS::ApiGateway::UsagePlanKey").values()
    }
    assert len(plans) == 3
    assert set(bindings) == set(plans)
    assert sorted(bindings.values()) == sorted(keys)
    config = InfraConfig()
    limits = set()
    for plan_id, plan in plans.items():
        props, name = plan["Properties"], keys[bindings[plan_id]]
        rate, burst, quota = config.key_limits(name.removeprefix("rtrec-"))
        assert props["UsagePlanName"] == name
        assert props["Throttle"] == {"BurstLimit": burst, "RateLimit": rate}, name
        assert props["Quota"] == {"Limit": quota, "Period": "DAY"}, name
        assert [s["Stage"] for s in props["ApiStages"]] == [
            {"Ref": next(iter(synth.resources("Serving", "AWS::ApiGateway::Stage")))}
        ]
        limits.add((rate, burst, quota))
    assert len(limits) == 3  # each role its own limits


def test_the_api_lambda_maps_each_key_id_to_its_roles_and_requires_keys(synth):
    env = one(synth.resources("Serving", "AWS::Lambda::Function"))["Environment"]["Variables"]
    assert env["RTREC_REQUIRE_API_KEYS"] == "true"
    keys = _api_keys(synth)
    raw = env["RTREC_API_KEY_ROLES"]
    separator, parts = raw["Fn::Join"]
    refs = [p["Ref"] for p in parts if isinstance(p, dict)]
    assert sorted(refs) == sorted(keys)
    assert all(isinstance(p, str) or set(p) == {"Ref"} for p in parts)
    # CloudFormation puts each key's id where its Ref is: the result must be the JSON the app parses.
    text = separator.join(p if isinstance(p, str) else f"id-of-{p['Ref']}" for p in parts)
    roles = json.loads(text)
    assert {keys[key_id.removeprefix("id-of-")]: value for key_id, value in roles.items()} == KEY_ROLES


def test_the_key_ids_are_outputs_with_the_command_that_reads_a_value(synth):
    outputs = synth.template("Serving")["Outputs"]
    keys = {name: lid for lid, name in _api_keys(synth).items()}
    assert "IngestKeyId" not in outputs
    for role in ("Read", "Events", "Admin"):
        output = outputs[f"{role}KeyId"]
        assert output["Value"] == {"Ref": keys[f"rtrec-{role.lower()}"]}
        assert "aws apigateway get-api-key --include-value" in output["Description"]


def test_search_domain_has_fine_grained_access_control_and_encryption(synth):
    domain = one(synth.resources("Search", "AWS::OpenSearchService::Domain"))
    assert domain["EngineVersion"].startswith("OpenSearch_2.")
    security = domain["AdvancedSecurityOptions"]
    assert security["Enabled"] is True
    assert security["InternalUserDatabaseEnabled"] is False
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
    assert pass_role
    assert pass_role[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_monitoring_builds_the_catalog_dashboard_and_alarms(synth):
    alarms = by_property(synth.resources("Monitoring", "AWS::CloudWatch::Alarm"), "AlarmName")
    assert {f"rtrec-{spec.name}" for spec in ALARMS} <= set(alarms)
    assert {"rtrec-api-gateway-5xx", "rtrec-dlq-messages", "rtrec-stream-consumer-errors"} <= set(alarms)
    assert len(alarms) == len(ALARMS) + 4 + 2 * 3  # + API 5xx, DLQ, stream throttles, consumer Lambda IteratorAge;
    # errors/throttles per function
    lambda_age = alarms["rtrec-stream-consumer-lambda-iterator-age"]  # moves while a shard is stuck (failed batches)
    assert lambda_age["Namespace"] == "AWS/Lambda"
    assert lambda_age["MetricName"] == "IteratorAge"
    assert lambda_age["Statistic"] == "Maximum"
    assert lambda_age["Threshold"] == 60_000
    topic = next(iter(synth.resources("Monitoring", "AWS::SNS::Topic")))
    assert all(a["AlarmActions"] == [{"Ref": topic}] for a in alarms.values())
    latency = alarms["rtrec-recommend-latency-p99"]
    assert latency["Namespace"] == "rtrec"
    assert latency["ExtendedStatistic"] == "p99"
    assert latency["Threshold"] == 250
    body = json.dumps(one(synth.resources("Monitoring", "AWS::CloudWatch::Dashboard"))["DashboardBody"])
    for panel in PANELS:
        assert json.dumps(panel.title)[1:-1] in body, panel.title


def test_stacks_address_each_other_by_name_not_by_export(synth):
    for stack, template in synth.templates.items():
        text = json.dumps(template)
        assert "Fn::ImportValue" not in text, stack
        assert "Fn::GetStackOutput" not in text, stack
        assert not any("Export" in o for o in template.get("Outputs", {}).values()), stack


def test_the_lambda_code_asset_is_the_functions_folder(synth):
    manifest = json.loads(Path(synth.stacks.serving.node.root.outdir, "Serving.assets.json").read_text())
    sources = {Path(a["source"]["path"]).name for a in manifest["files"].values()}
    assert any(s.startswith("asset.") for s in sources)
    function = one(synth.resources("Serving", "AWS::Lambda::Function"))
    key = function["Code"]["S3Key"]
    asset = Path(synth.stacks.serving.node.root.outdir, f"asset.{key.split('.')[0]}")
    assert (asset / "api" / "handler.py").is_file()
    assert (asset / "stream_consumer" / "handler.py").is_file()
    assert not list(asset.rglob("__pycache__"))
    assert not (asset / "training").exists()


def test_api_gateway_serves_exactly_the_apps_routes_with_the_role_each_requires():
    """ROUTES (what API Gateway exposes) against the FastAPI app itself: the same routes, and a route the app guards
    with a role is keyed at the gateway with that role; an open route stays open in both."""
    from fastapi.routing import iter_route_contexts

    from functions.api.app import Services, create_app, require_admin, require_events, require_read
    from infra_cdk.stacks.serving import ROUTES

    guards = {require_read: "read", require_events: "events", require_admin: "admin"}
    app = create_app(Services(recommender=None))  # type: ignore[arg-type]  # no recommender: only the routes are read
    served: dict[tuple[str, str], str | None] = {}
    for route in iter_route_contexts(app.routes):  # the routes inside the included routers too
        methods, path = getattr(route, "methods", None), getattr(route, "path", "")
        if not methods or path in ("/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue
        roles = {guards[d.call] for d in route.dependant.dependencies if d.call in guards}  # type: ignore[attr-defined]
        for method in methods - {"HEAD"}:
            served[(method, path)] = roles.pop() if roles else None
    assert served == {(method, path): role for method, path, role in ROUTES}
