"""Serving: the `api` Lambda (FastAPI + Mangum) behind an API Gateway REST API with the Lambda proxy integration.

REST (v1), not HTTP APIs (v2): it has API keys and usage plans (and LocalStack Community emulates it). Every data
route needs an API key (`X-Api-Key`); only `GET /health` is open. There is one key per role, each in its own usage
plan (throttle and daily quota per key), and the stage throttles everything:

    key `<prefix>-read`    roles read                 a client that shows recommendations
    key `<prefix>-events`  roles events, read         a client app that shows recommendations and sends events
    key `<prefix>-admin`   roles admin, events, read  the catalog's administration

API Gateway only checks that the request carries a key of one of the stage's usage plans: it cannot limit a key to
some methods. The Lambda decides: `RTREC_API_KEY_ROLES` maps each key's id (`requestContext.identity.apiKeyId` of
the proxy event) to its roles, and `RTREC_REQUIRE_API_KEYS=true` makes a request without a known key a 401 there
too. ROUTES names the role each route needs (the app enforces it).
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, Fn, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.config import API_KEY_ROLES, API_STAGE, InfraConfig, rest_api_name, search_domain_name
from infra_cdk.stacks.common import (
    MODEL_KEYS,
    RtrecFunction,
    RuntimeLayers,
    grant_dynamodb,
    grant_s3,
    removal_policy,
    resource_finding,
    retention,
    suppress,
)
from infra_cdk.stacks.refs import Refs
from rtrec.adapters.aws.s3 import CATALOG_ADDITIONS_PREFIX, POPULARITY_KEY, RANKER_STATE_PREFIX
from rtrec.domain.access import ROLE_GRANTS, Role
from rtrec.monitoring.catalog import API_SERVICE
from rtrec.resources import EVENTS_STREAM, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

# (method, path, the role the app requires; None: open, no API key): every route of functions/api/app.py that AWS
# serves. API Gateway requires a key on every route with a role.
ROUTES: tuple[tuple[str, str, str | None], ...] = (
    ("GET", "/health", None),  # states only, for load balancers and probes
    ("GET", "/recommend/{user_id}", "read"),  # the slate is logged as an impression only for an events key
    ("GET", "/items/{item_id}/similar", "read"),
    ("POST", "/events", "events"),
    ("POST", "/items", "admin"),  # add or update an item
    ("PATCH", "/items/{item_id}", "admin"),  # {"active": bool}: activate or deactivate an item
    ("DELETE", "/items/{item_id}", "admin"),  # tombstone an item (a write to the item table, never a DeleteItem)
)
# The API keys (`<prefix>-<name>`) and the roles each grants, as the app grants them to its local keys; their usage
# plans' limits are `<name>_key_*` in config.
API_KEYS: dict[str, tuple[str, ...]] = {name: tuple(sorted(r.value for r in ROLE_GRANTS[Role(name)])) for name in API_KEY_ROLES}
# What the API does in DynamoDB: a profile read per request, DescribeTable for /health; catalog reads (model loads,
# the admin routes) and the admin routes' writes of one item (PutItem of the whole item, deactivation and tombstones
# included). Never DeleteItem, and never BatchWriteItem, whose DeleteRequest deletes as well.
USER_TABLE_ACTIONS = ("GetItem", "DescribeTable")
ITEM_TABLE_ACTIONS = ("BatchGetItem", "PutItem")


def key_roles_json(key_ids: dict[str, str]) -> str:
    """RTREC_API_KEY_ROLES: `{"<key id>": ["read"], ...}` as one CloudFormation string, the ids being Refs of the
    ApiKey resources (tokens): each id is spliced in with Fn::Join between literal JSON."""
    parts: list[str] = []
    for i, (name, key_id) in enumerate(key_ids.items()):
        parts += ["{" if i == 0 else ",", '"', key_id, '":' + json.dumps(sorted(API_KEYS[name]), separators=(",", ":"))]
    return Fn.join("", [*parts, "}"])


class ServingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        refs = Refs(self, "Refs", config=config)
        # The keys first: the function's environment names them. Standalone keys (no StageKeys, which would make a
        # key depend on the stage, hence on the methods and the function: a cycle); the usage plans bind them.
        self.api_keys: dict[str, apigw.ApiKey] = {
            name: apigw.ApiKey(
                self,
                f"{name.capitalize()}Key",
                api_key_name=f"{config.prefix}-{name}",
                description=f"roles: {', '.join(sorted(roles))}",
            )
            for name, roles in API_KEYS.items()
        }
        layers = RuntimeLayers(self, "Layers", config=config)
        self.api_function = RtrecFunction(
            self,
            "Api",
            config=config,
            name="api",
            handler="api.handler.handler",
            description="GET /recommend, /items/{id}/similar, /health; POST /events, /items; PATCH, DELETE /items/{id}",
            layers=layers,
            memory_mb=2048,
            timeout=Duration.seconds(29),  # API Gateway's integration limit
            ephemeral_storage_mb=2048,  # model folders are downloaded to /tmp
            environment={
                "RTREC_MODEL_CACHE_DIR": "/tmp/rtrec-models",
                "POWERTOOLS_SERVICE_NAME": API_SERVICE,
                "RTREC_REQUIRE_API_KEYS": "true",
                "RTREC_API_KEY_ROLES": key_roles_json({n: k.key_id for n, k in self.api_keys.items()}),
            },
        )
        fn, role = self.api_function.function, self.api_function.role
        grant_dynamodb(role, refs.table(USER_FEATURES), *USER_TABLE_ACTIONS)
        grant_dynamodb(role, refs.table(ITEM_FEATURES), *ITEM_TABLE_ACTIONS)
        models = refs.bucket(MODELS_BUCKET)
        findings = grant_s3(
            role,
            models,
            # the pointers and the versions they name, popularity, the online ranker's state, the catalog's additions
            read=[
                *MODEL_KEYS.pointers.values(),
                f"{MODEL_KEYS.versions}*",
                POPULARITY_KEY,
                f"{RANKER_STATE_PREFIX}*",
                f"{CATALOG_ADDITIONS_PREFIX}*",
            ],
            write=[f"{CATALOG_ADDITIONS_PREFIX}*"],
        )  # the admin routes record each change there (every instance syncs)
        role.add_to_principal_policy(
            iam.PolicyStatement(  # POST /events and every slate's impression
                actions=["kinesis:PutRecords"], resources=[refs.stream(EVENTS_STREAM).stream_arn]
            )
        )
        if config.search:
            domain = refs.arn("es", "domain", search_domain_name(config))
            role.add_to_principal_policy(
                iam.PolicyStatement(  # k-NN queries (OpenSearchVectorIndex)
                    actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost"], resources=[domain, f"{domain}/*"]
                )
            )
            findings.append(resource_finding(self, f"{domain}/*"))
        suppress(
            role,
            "AwsSolutions-IAM5",
            f"object keys under the prefixes the API reads in the models bucket: '{MODEL_KEYS.versions}' (the "
            f"version folder a pointer names), '{RANKER_STATE_PREFIX}' (one state per shard) and "
            f"'{CATALOG_ADDITIONS_PREFIX}' (one object per item, the only prefix it writes); s3:GetObject and "
            "s3:PutObject only, no action wildcard. OpenSearch requests go to index paths under the one search "
            "domain ('domain/<name>/*')",
            applies_to=findings,
        )

        access_logs = logs.LogGroup(
            self, "AccessLogs", retention=retention(config.log_retention_days), removal_policy=removal_policy(config)
        )
        self.api = apigw.RestApi(
            self,
            "RestApi",
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
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        suppress(
            self.api,
            "AwsSolutions-IAM4",
            "API Gateway's account-level CloudWatch role uses AWS's managed AmazonAPIGatewayPushToCloudWatchLogs "
            "policy, the documented way to let the service write execution and access logs",
            applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"],
        )
        suppress(
            self.api,
            "AwsSolutions-APIG2",
            "API Gateway checks the path parameters; request bodies are validated by the app's pydantic models, "
            "which answer 422 with the failing field through the API's one error mapping (a second, API Gateway "
            "model would answer 400 in another format)",
        )
        suppress(
            self.api,
            "AwsSolutions-APIG3",
            "no WAFv2 web ACL by default: a web ACL is an account-level choice (managed rule groups, pricing); "
            "the stage and each key's usage plan throttle, and every data route needs an API key. Associate one "
            "with the stage where the API is exposed to untrusted traffic at scale",
        )
        validator = self.api.add_request_validator(
            "PathValidator",
            request_validator_name="path-parameters",
            validate_request_parameters=True,
            validate_request_body=False,
        )  # bodies are validated by the app (pydantic), with its one error mapping

        integration = apigw.LambdaIntegration(fn, proxy=True)
        self.methods: dict[tuple[str, str], apigw.Method] = {}
        for method, path, needs in ROUTES:
            resource = self.api.root.resource_for_path(path)
            parameters = {f"method.request.path.{p.strip('{}')}": True for p in path.split("/") if p.startswith("{")}
            self.methods[(method, path)] = resource.add_method(
                method,
                integration,
                api_key_required=needs is not None,
                request_validator=validator,
                request_parameters=parameters or None,
            )
        suppress(
            self.api,
            "AwsSolutions-APIG4",
            "every data route requires an API key of a usage plan (one key per role: read, events, admin), and "
            "the API Lambda authorizes the key's roles per route (RTREC_API_KEY_ROLES); only GET /health is "
            "open, and it shows states, no data. API keys identify client applications, not end users: no "
            "IAM or Cognito authorizer",
        )
        suppress(
            self.api,
            "AwsSolutions-COG4",
            "callers are client applications identified by their API key (read, events or admin role, checked "
            "by API Gateway and by the Lambda); end users are identified by the client's own user id, and "
            "there is no Cognito user pool",
        )

        for name, key in self.api_keys.items():
            rate, burst, quota = config.key_limits(name)
            plan = self.api.add_usage_plan(
                f"{name.capitalize()}Plan",
                name=f"{config.prefix}-{name}",
                description=f"the {config.prefix}-{name} API key: roles {', '.join(sorted(API_KEYS[name]))}",
                throttle=apigw.ThrottleSettings(rate_limit=rate, burst_limit=burst),
                quota=apigw.QuotaSettings(limit=quota, period=apigw.Period.DAY),
            )
            plan.add_api_key(key)
            plan.add_api_stage(stage=self.api.deployment_stage)

        CfnOutput(self, "ApiUrl", value=self.api.url, description="the API's base URL")
        for name, key in self.api_keys.items():
            CfnOutput(
                self,
                f"{name.capitalize()}KeyId",
                value=key.key_id,
                description=f"the id of API key {config.prefix}-{name} (roles "
                f"{', '.join(sorted(API_KEYS[name]))}); its value, for X-Api-Key: aws apigateway "
                "get-api-key --include-value --query value --output text --api-key <this id>",
            )
