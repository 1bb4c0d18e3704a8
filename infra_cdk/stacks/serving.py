"""Serving: the `api` Lambda (FastAPI + Mangum) behind an API Gateway REST API with the Lambda proxy integration.

REST (v1), not HTTP APIs (v2): it has API keys and usage plans (and LocalStack Community emulates it). The read
routes are open; `POST /events` and the admin route `POST /items` need an API key (`X-Api-Key`) and are throttled
per key by a usage plan; the stage throttles everything.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.config import API_STAGE, InfraConfig, rest_api_name, search_domain_name
from infra_cdk.stacks.common import (
    S3_PUT_FINDINGS,
    S3_READ_FINDINGS,
    RtrecFunction,
    RuntimeLayers,
    removal_policy,
    resource_finding,
    retention,
    suppress,
)
from infra_cdk.stacks.refs import Refs
from rtrec.adapters.aws.s3 import CATALOG_ADDITIONS_PREFIX
from rtrec.monitoring.catalog import API_SERVICE
from rtrec.resources import EVENTS_STREAM, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

# (method, path, needs an API key): every route of functions/api/app.py that AWS serves.
ROUTES: tuple[tuple[str, str, bool], ...] = (
    ("GET", "/health", False),
    ("GET", "/recommend/{user_id}", False),
    ("GET", "/items/{item_id}/similar", False),
    ("POST", "/items", True),  # admin: add or update an item
    ("POST", "/events", True),  # ingest
)


class ServingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        refs = Refs(self, "Refs", config=config)
        layers = RuntimeLayers(self, "Layers", config=config)
        self.api_function = RtrecFunction(
            self, "Api", config=config, name="api", handler="api.handler.handler",
            description="GET /recommend, /items/{id}/similar, /health; POST /events, /items",
            layers=layers, memory_mb=2048, timeout=Duration.seconds(29),  # API Gateway's integration limit
            ephemeral_storage_mb=2048,  # model folders are downloaded to /tmp
            environment={"RTREC_MODEL_CACHE_DIR": "/tmp/rtrec-models", "POWERTOOLS_SERVICE_NAME": API_SERVICE},
        )
        fn, role = self.api_function.function, self.api_function.role
        refs.table(USER_FEATURES).grant_read_data(role)  # one profile read per request
        refs.table(ITEM_FEATURES).grant_read_write_data(role)  # catalog reads; POST /items writes the item
        models = refs.bucket(MODELS_BUCKET)
        models.grant_read(role)  # production pointer, model folders, popularity, online ranker state, additions
        models.grant_put(role, f"{CATALOG_ADDITIONS_PREFIX}*")  # POST /items records the new item there
        refs.stream(EVENTS_STREAM).grant_write(role)  # POST /events and every slate's impression (PutRecords)
        findings = [*S3_READ_FINDINGS, *S3_PUT_FINDINGS, resource_finding(self, models.arn_for_objects("*")),
                    resource_finding(self, models.arn_for_objects(f"{CATALOG_ADDITIONS_PREFIX}*"))]
        if config.search:
            domain = refs.arn("es", "domain", search_domain_name(config))
            role.add_to_principal_policy(iam.PolicyStatement(  # k-NN queries (OpenSearchVectorIndex)
                actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"], resources=[domain, f"{domain}/*"]))
            findings.append(resource_finding(self, f"{domain}/*"))
        suppress(role, "AwsSolutions-IAM5",
                 "the API reads any object of the models bucket (the production pointer names a versioned model "
                 f"folder) and writes only under '{CATALOG_ADDITIONS_PREFIX}' (CDK's S3 grant action groups "
                 "GetObject*, GetBucket*, List*, Abort* on that one bucket); OpenSearch requests go to index paths "
                 "under the one search domain ('domain/<name>/*')",
                 applies_to=findings)

        access_logs = logs.LogGroup(self, "AccessLogs", retention=retention(config.log_retention_days),
                                    removal_policy=removal_policy(config))
        self.api = apigw.RestApi(
            self, "RestApi",
            rest_api_name=rest_api_name(config),
            description="rtrec: real-time recommendations",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            deploy_options=apigw.StageOptions(
                stage_name=API_STAGE,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies (user events) stay out of the logs
                metrics_enabled=True,
                tracing_enabled=True,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=False, http_method=True, ip=True, protocol=True, request_time=True, resource_path=True,
                    response_length=True, status=True, user=False),
            ),
        )
        suppress(self.api, "AwsSolutions-IAM4",
                 "API Gateway's account-level CloudWatch role uses AWS's managed AmazonAPIGatewayPushToCloudWatchLogs "
                 "policy, the documented way to let the service write execution and access logs",
                 applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"])
        suppress(self.api, "AwsSolutions-APIG2",
                 "API Gateway checks the path parameters; request bodies are validated by the app's pydantic models, "
                 "which answer 422 with the failing field through the API's one error mapping (a second, API Gateway "
                 "model would answer 400 in another format)")
        suppress(self.api, "AwsSolutions-APIG3",
                 "no WAFv2 web ACL by default: a web ACL is an account-level choice (managed rule groups, pricing); "
                 "the stage and the usage plan throttle, and writes need an API key. Associate one with the stage "
                 "where the API is exposed to untrusted traffic at scale")
        validator = self.api.add_request_validator(
            "PathValidator", request_validator_name="path-parameters", validate_request_parameters=True,
            validate_request_body=False)  # bodies are validated by the app (pydantic), with its one error mapping

        integration = apigw.LambdaIntegration(fn, proxy=True)
        self.methods: dict[tuple[str, str], apigw.Method] = {}
        for method, path, keyed in ROUTES:
            resource = self.api.root.resource_for_path(path)
            parameters = {f"method.request.path.{p.strip('{}')}": True
                          for p in path.split("/") if p.startswith("{")}
            self.methods[(method, path)] = resource.add_method(
                method, integration, api_key_required=keyed, request_validator=validator,
                request_parameters=parameters or None)
        suppress(self.api, "AwsSolutions-APIG4",
                 "the read routes (recommendations, similar items, health) are public by design, like a storefront; "
                 "the write routes (POST /events, POST /items) require an API key and a usage plan")
        suppress(self.api, "AwsSolutions-COG4",
                 "end users are anonymous or identified by the client's own user id; there is no Cognito user pool. "
                 "Writes are guarded by API keys")

        self.ingest_key = self.api.add_api_key("IngestKey", api_key_name=f"{config.prefix}-ingest",
                                               description="POST /events and POST /items")
        plan = self.api.add_usage_plan(
            "IngestPlan", name=f"{config.prefix}-ingest",
            throttle=apigw.ThrottleSettings(rate_limit=config.ingest_rate_limit, burst_limit=config.ingest_burst_limit),
            quota=apigw.QuotaSettings(limit=config.ingest_quota_per_day, period=apigw.Period.DAY),
        )
        plan.add_api_key(self.ingest_key)
        plan.add_api_stage(stage=self.api.deployment_stage)

        CfnOutput(self, "ApiUrl", value=self.api.url, description="the API's base URL")
        CfnOutput(self, "IngestKeyId", value=self.ingest_key.key_id,
                  description="aws apigateway get-api-key --include-value --api-key <id>")
