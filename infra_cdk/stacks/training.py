"""Training: the SageMaker execution role the retraining job runs as, the ECR repository of the training image,
and, as an option, a SageMaker-managed MLflow tracking server (the registry that governs promotion).

The job is `python -m training.job` in the training image (SageMaker's container contract: SM_MODEL_DIR,
SM_CHANNEL_TRAIN); its training data is the offline store, its output goes to the models bucket (`jobs/`), runs
and model versions go to MLflow. torch lives in that image only, never in a Lambda.

The execution role may write the job's output, version folders and MLflow artifacts, never the production or shadow
pointer: promotion (`rtrec promote`, with an operator's credentials) is the only writer of those, so a job cannot
bypass the promotion gate.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra_cdk.config import (
    InfraConfig,
    mlflow_server_name,
    sagemaker_role_name,
    search_domain_name,
    training_repository_name,
)
from infra_cdk.stacks.common import (
    MODEL_KEYS,
    S3_DELETE_FINDINGS,
    S3_PUT_FINDINGS,
    S3_READ_FINDINGS,
    grant_s3,
    resource_finding,
    suppress,
)
from infra_cdk.stacks.refs import Refs
from rtrec.adapters.aws.s3 import DRIFT_REPORTS_PREFIX
from rtrec.resources import COUNTERFACTUAL_BUCKET, MODELS_BUCKET, OFFLINE_STORE_BUCKET

MLFLOW_ARTIFACTS_PREFIX = "mlflow/"
# SageMaker's OutputDataConfig.S3OutputPath of the retraining jobs the drift check starts (functions/drift_check/app.py:
# `s3://<models>/jobs/`); tests/infra checks the two agree.
JOB_OUTPUT_PREFIX = "jobs/"
MLFLOW_VERSION = "3.0"  # the managed server's MLflow minor version; the project's client is mlflow 3.x
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def training_image_uri(stack: Stack, config: InfraConfig) -> str:
    """The image the retraining job runs: `-c training_image_uri=...`, or this stack's repository, tag `latest`."""
    if config.training_image_uri:
        return config.training_image_uri
    return f"{stack.account}.dkr.ecr.{stack.region}.{stack.url_suffix}/{training_repository_name(config)}:latest"


def mlflow_server_arn(stack: Stack, config: InfraConfig) -> str:
    return stack.format_arn(service="sagemaker", resource="mlflow-tracking-server", resource_name=mlflow_server_name(config))


class TrainingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        names = config.names
        refs = Refs(self, "Refs", config=config)
        self.repository = ecr.Repository(
            self,
            "TrainingImages",
            repository_name=training_repository_name(config),
            image_scan_on_push=True,
            image_tag_mutability=ecr.TagMutability.MUTABLE,
            lifecycle_rules=[ecr.LifecycleRule(max_image_count=20)],
            removal_policy=RemovalPolicy.RETAIN if config.retain else RemovalPolicy.DESTROY,
        )

        self.execution_role = iam.Role(
            self,
            "SageMakerExecutionRole",
            role_name=sagemaker_role_name(config),
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="the retraining job: reads the offline store and the logs, writes model artifacts",
        )
        role = self.execution_role
        # Reads: the `train` channel (SageMaker downloads the offline store's objects as the role), the stream's
        # events the job exports from the counterfactual log (training/job.py), and in the models bucket the drift
        # report that triggered the run and the MLflow artifacts it downloads to publish.
        findings = grant_s3(role, refs.bucket(OFFLINE_STORE_BUCKET), read=["*"])
        findings += grant_s3(role, refs.bucket(COUNTERFACTUAL_BUCKET), read=["events/*"])
        models = refs.bucket(MODELS_BUCKET)
        mlflow = [f"{MLFLOW_ARTIFACTS_PREFIX}*"] if config.mlflow_tracking_server else []
        # Writes: SageMaker's job output (`jobs/`), a published version folder (its stale files deleted on a
        # re-publish) and the run's MLflow artifacts. Never a pointer: `models/production.json` and
        # `models/shadow.json` are the promotion's, so a job cannot put its own model in front of users.
        findings += grant_s3(
            role,
            models,
            read=[f"{DRIFT_REPORTS_PREFIX}*", *mlflow],
            write=[f"{JOB_OUTPUT_PREFIX}*", f"{MODEL_KEYS.versions}*", *mlflow],
            delete=[f"{MODEL_KEYS.versions}*"],
            multipart=True,
        )
        self.repository.grant_pull(role)
        log_group = self.format_arn(
            service="logs",
            resource="log-group",
            resource_name=f"{TRAINING_LOG_GROUP}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        findings += ["Resource::*", resource_finding(self, log_group)]
        if config.search:
            domain = refs.arn("es", "domain", search_domain_name(config))
            role.add_to_principal_policy(
                iam.PolicyStatement(  # item vectors into the k-NN index
                    actions=["es:ESHttpGet", "es:ESHttpHead", "es:ESHttpPost", "es:ESHttpPut", "es:ESHttpDelete"],
                    resources=[domain, f"{domain}/*"],
                )
            )
            findings.append(resource_finding(self, f"{domain}/*"))
        # SageMaker writes the job's logs into this log group; it names the streams itself.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_group],
            )
        )
        # The job emits its metrics with PutMetricData, which has no resource-level permissions: a condition
        # limits it to the deployment's namespace.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": names.metrics_namespace}},
            )
        )

        self.tracking_server: sagemaker.CfnMlflowTrackingServer | None = None
        if config.mlflow_tracking_server:
            self._mlflow(config, refs)
            findings.append("Action::sagemaker-mlflow:*")
        suppress(
            role,
            "AwsSolutions-IAM5",
            "object keys made at run time under the prefixes the job uses: it reads every object of the offline "
            "store (its `train` channel), the counterfactual log's 'events/', the models bucket's "
            f"'{DRIFT_REPORTS_PREFIX}' and '{MLFLOW_ARTIFACTS_PREFIX}', and writes only '{JOB_OUTPUT_PREFIX}' "
            f"(SageMaker's output), '{MODEL_KEYS.versions}' (a version folder, stale files deleted) and "
            f"'{MLFLOW_ARTIFACTS_PREFIX}' (s3:GetObject, PutObject, AbortMultipartUpload, DeleteObject only; "
            "never the pointers); SageMaker names the log streams of /aws/sagemaker/TrainingJobs ('...:*'); "
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData support no resource-level permissions "
            "('*'; the latter is limited to the project's namespace by a condition); OpenSearch requests go to "
            "index paths of the one search domain; sagemaker-mlflow:* is the MLflow API on the one tracking server",
            applies_to=findings,
        )
        CfnOutput(self, "ExecutionRoleArn", value=role.role_arn, description="RTREC_SAGEMAKER_ROLE_ARN")
        CfnOutput(self, "TrainingImageUri", value=training_image_uri(self, config), description="RTREC_SAGEMAKER_IMAGE_URI")

    def _mlflow(self, config: InfraConfig, refs: Refs) -> None:
        models_name = config.names.bucket(MODELS_BUCKET)
        models = refs.bucket(MODELS_BUCKET)
        server_role = iam.Role(
            self,
            "MlflowServerRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="the SageMaker MLflow tracking server: its artifact store in the models bucket",
        )
        models.grant_read_write(server_role, f"{MLFLOW_ARTIFACTS_PREFIX}*")
        suppress(
            server_role,
            "AwsSolutions-IAM5",
            f"the tracking server's artifact store is the '{MLFLOW_ARTIFACTS_PREFIX}' prefix of the models bucket; "
            "GetObject*, GetBucket*, List*, DeleteObject* and Abort* are CDK's read/write grant action groups on it "
            "(MLflow deletes the artifacts of deleted runs)",
            applies_to=[
                *S3_READ_FINDINGS,
                *S3_PUT_FINDINGS,
                *S3_DELETE_FINDINGS,
                resource_finding(self, models.arn_for_objects(f"{MLFLOW_ARTIFACTS_PREFIX}*")),
            ],
        )
        self.tracking_server = sagemaker.CfnMlflowTrackingServer(
            self,
            "MlflowTrackingServer",
            tracking_server_name=mlflow_server_name(config),
            artifact_store_uri=f"s3://{models_name}/{MLFLOW_ARTIFACTS_PREFIX.rstrip('/')}",
            role_arn=server_role.role_arn,
            tracking_server_size=config.mlflow_tracking_server_size,
            mlflow_version=MLFLOW_VERSION,
            automatic_model_registration=False,  # the training job registers versions and sets aliases itself
        )
        # The job logs runs and registers versions (aliases `staging`, `production`) on this one server.
        self.execution_role.add_to_policy(
            iam.PolicyStatement(actions=["sagemaker-mlflow:*"], resources=[self.tracking_server.attr_tracking_server_arn])
        )
        CfnOutput(
            self,
            "MlflowTrackingServerArn",
            value=self.tracking_server.attr_tracking_server_arn,
            description="MLFLOW_TRACKING_URI (with the sagemaker-mlflow plugin)",
        )
