"""What every compute stack shares: the Lambda function construct (own role, own log group, both layers), the
explicit S3 and DynamoDB grants (exact actions on exact keys and tables), the models bucket's key layout and the
cdk-nag suppression helper."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Size, Stack, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra_cdk.config import InfraConfig
from infra_cdk.layers import FUNCTIONS_DIR, LAMBDA_PYTHON
from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.domain.promotion import POINTER_ROLES, PRODUCTION_POINTER, SHADOW_POINTER

RUNTIME = {"3.12": lambda_.Runtime.PYTHON_3_12}[LAMBDA_PYTHON]
ARCHITECTURE = {"x86_64": lambda_.Architecture.X86_64, "arm64": lambda_.Architecture.ARM_64}
# The code asset: the whole functions/ folder (handlers `api.handler.handler`, ...), caches left out.
CODE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "**/*.pyo"]


def removal_policy(config: InfraConfig) -> RemovalPolicy:
    return RemovalPolicy.RETAIN if config.retain else RemovalPolicy.DESTROY


def suppress(construct: Construct, rule: str, reason: str, applies_to: Sequence[str] | None = None) -> None:
    """Acknowledge one cdk-nag rule on `construct` and its children, with the reason why it does not apply.

    cdk-nag 3 reports each wildcard of a rule separately (`AwsSolutions-IAM5[Resource::*]`): `applies_to` names
    the findings acknowledged, so a new wildcard that nobody justified still fails synth."""
    ids = [f"{rule}[{finding}]" for finding in applies_to] if applies_to else [rule]
    Validations.of(construct).acknowledge(*(Acknowledgment(id=i, reason=reason) for i in ids))


class RuntimeLayers(Construct):
    """The `core` (rtrec) and `runtime` (third-party) layers. Each compute stack makes its own layer versions from
    the same assets (uploaded once): a layer version exported across stacks could not be replaced while imported."""

    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig) -> None:
        super().__init__(scope, construct_id)
        architecture = ARCHITECTURE[config.lambda_architecture]
        self.core = lambda_.LayerVersion(
            self,
            "Core",
            code=lambda_.Code.from_asset(str(config.core_layer_dir), exclude=CODE_EXCLUDE),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description="rtrec core package (layers/core)",
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.runtime = lambda_.LayerVersion(
            self,
            "Runtime",
            code=lambda_.Code.from_asset(str(config.runtime_layer_dir), exclude=CODE_EXCLUDE),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[architecture],
            description="rtrec runtime dependencies (layers/runtime/requirements.txt)",
            removal_policy=RemovalPolicy.DESTROY,
        )

    @property
    def all(self) -> list[lambda_.ILayerVersion]:
        return [self.runtime, self.core]


class RtrecFunction(Construct):
    """One Lambda function: its own role (no managed policies; each stack grants what the handler calls), its own
    log group with a retention, X-Ray tracing (the handlers' Powertools Tracer), both layers."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: InfraConfig,
        name: str,
        handler: str,
        description: str,
        layers: RuntimeLayers,
        memory_mb: int,
        timeout: Duration,
        environment: Mapping[str, str] | None = None,
        ephemeral_storage_mb: int = 512,
    ) -> None:
        super().__init__(scope, construct_id)
        self.function_name = f"{config.prefix}-{name}"
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"/aws/lambda/{self.function_name}",
            retention=retention(config.log_retention_days),
            removal_policy=removal_policy(config),
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{self.function_name} Lambda execution role",
        )
        self.log_group.grant_write(self.role)
        env = {
            "RTREC_PREFIX": config.prefix,
            "RTREC_BUCKET_SUFFIX": config.bucket_suffix,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **(environment or {}),
        }
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=self.function_name,
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE[config.lambda_architecture],
            handler=handler,
            code=lambda_.Code.from_asset(str(FUNCTIONS_DIR), exclude=CODE_EXCLUDE),
            layers=layers.all,
            role=self.role,
            log_group=self.log_group,
            memory_size=memory_mb,
            timeout=timeout,
            ephemeral_storage_size=Size.mebibytes(ephemeral_storage_mb),
            tracing=lambda_.Tracing.ACTIVE,
            environment=env,
        )
        suppress(
            self.function,
            "AwsSolutions-L1",
            "python3.12 on purpose: the runtime layer's wheels (numpy 2.4, onnxruntime 1.32) are built for "
            "CPython 3.12 on Amazon Linux 2023 (infra_cdk/layers.py); the project develops and tests on 3.11, "
            "and a newer runtime needs a layer rebuilt and the suite run on it first",
        )
        # Tracing.ACTIVE adds xray:PutTraceSegments/PutTelemetryRecords on "*" to the role's policy.
        suppress(
            self.role,
            "AwsSolutions-IAM5",
            "X-Ray's PutTraceSegments and PutTelemetryRecords support no resource-level permissions: '*' is "
            "the only resource they accept (the handlers' Powertools Tracer sends one segment per invocation)",
            applies_to=["Resource::*"],
        )


RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}


def retention(days: int) -> logs.RetentionDays:
    if days not in RETENTION:
        raise ValueError(f"log_retention_days must be one of {sorted(RETENTION)}, got {days}")
    return RETENTION[days]


def stack_name(config: InfraConfig, part: str) -> str:
    return f"{config.prefix}-{part}"


# cdk-nag's names for the wildcards in CDK's S3 grants (grant_read: GetObject*, GetBucket*, List*; grant_put:
# Abort*; grant_read_write adds DeleteObject*). Only the MLflow server's artifact store still uses one.
S3_READ_FINDINGS = ("Action::s3:GetObject*", "Action::s3:GetBucket*", "Action::s3:List*")
S3_PUT_FINDINGS = ("Action::s3:Abort*",)
S3_DELETE_FINDINGS = ("Action::s3:DeleteObject*",)


def grant_s3(
    role: iam.IRole,
    bucket: s3.IBucket,
    *,
    read: Sequence[str] = (),
    write: Sequence[str] = (),
    delete: Sequence[str] = (),
    multipart: bool = False,
    list_bucket: bool | None = None,
) -> list[str]:
    """Exactly these S3 permissions on `bucket`, where CDK's grants would add action groups on every object:
    s3:GetObject on the `read` keys, s3:PutObject on `write` (and s3:AbortMultipartUpload with `multipart`, for
    uploads the SDK splits), s3:DeleteObject on `delete`; each a key or a prefix ending in '*'. s3:ListBucket on the
    bucket (by default when reading or deleting): listing a prefix needs it, and without it a missing key reads as
    403 AccessDenied instead of 404 NoSuchKey, which the adapters treat as "not there yet" (a first pointer, a
    first ranker state). Returns cdk-nag's names of the wildcard resources, for the role's IAM5 acknowledgment."""
    if list_bucket is None:
        list_bucket = bool(read or delete)
    if list_bucket:
        role.add_to_principal_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket.bucket_arn]))
    put = ["s3:PutObject", *(["s3:AbortMultipartUpload"] if multipart else [])]
    for actions, keys in ((["s3:GetObject"], read), (put, write), (["s3:DeleteObject"], delete)):
        if keys:
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=actions, resources=[bucket.arn_for_objects(k) for k in keys])
            )
    return [resource_finding(role, bucket.arn_for_objects(k)) for k in dict.fromkeys([*read, *write, *delete]) if "*" in k]


def grant_dynamodb(role: iam.IRole, table: dynamodb.ITable, *actions: str) -> None:
    """Exactly `actions` (`GetItem`, ...) on one table, where CDK's grant_read_write_data adds DeleteItem, Scan
    and the rest."""
    role.add_to_principal_policy(iam.PolicyStatement(actions=[f"dynamodb:{a}" for a in actions], resources=[table.table_arn]))


@dataclass(frozen=True)
class ModelKeys:
    """The models bucket's key layout as S3ModelStore writes it: one pointer object per role (`models/production.json`,
    `models/shadow.json`: what serving follows, written only by promotion) and the version folders."""

    pointers: dict[str, str]
    versions: str  # the prefix of every published version folder, `models/versions/`

    @classmethod
    def of_the_model_store(cls) -> ModelKeys:
        store = S3ModelStore("layout", client=object())  # no SDK call: only its key layout is asked
        return cls({role: store.pointer_key_for(role) for role in POINTER_ROLES}, f"{store.prefix}/versions/")

    @property
    def production(self) -> str:
        return self.pointers[PRODUCTION_POINTER]

    @property
    def shadow(self) -> str:
        return self.pointers[SHADOW_POINTER]


MODEL_KEYS = ModelKeys.of_the_model_store()


def resource_finding(scope: Construct, arn: str) -> str:
    """cdk-nag's name for a wildcard resource `arn` (a token): `Resource::arn:<AWS::Partition>:s3:::name/*` in an
    environment-agnostic stack, `Resource::arn:aws:s3:::name/*` once account and region are known."""
    return "Resource::" + _nag_text(Stack.of(scope).resolve(arn))


def _nag_text(value: Any) -> str:
    """A resolved CloudFormation value as cdk-nag prints it (`{"Ref": "X"}` -> `<X>`, GetAtt -> `<Id.Attr>`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        resource, attribute = value["Fn::GetAtt"]
        return f"<{resource}.{attribute}>"
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_nag_text(part) for part in parts)
    raise ValueError(f"no cdk-nag rendering for {value!r}")
