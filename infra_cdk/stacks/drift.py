"""Drift: an EventBridge schedule invokes the `drift_check` Lambda, which compares live traffic with the production
model's training snapshot, stores a report, and starts a SageMaker retraining job (behind a cool-down lock) when
something drifted."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra_cdk.config import InfraConfig, sagemaker_role_name
from infra_cdk.stacks.common import (
    MODEL_KEYS,
    RtrecFunction,
    RuntimeLayers,
    grant_dynamodb,
    grant_s3,
    resource_finding,
    suppress,
)
from infra_cdk.stacks.refs import Refs
from infra_cdk.stacks.training import mlflow_server_arn, training_image_uri
from rtrec.adapters.aws.s3 import DRIFT_REPORTS_PREFIX, DRIFT_STATE_KEY
from rtrec.monitoring.catalog import DRIFT_SERVICE
from rtrec.resources import COUNTERFACTUAL_BUCKET, LOCKS, MODELS_BUCKET
from rtrec.services.retrain import JOB_PREFIX


class DriftStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        refs = Refs(self, "Refs", config=config)
        execution_role_arn = self.format_arn(
            service="iam", region="", resource="role", resource_name=sagemaker_role_name(config)
        )
        environment = {
            "POWERTOOLS_SERVICE_NAME": DRIFT_SERVICE,
            "RTREC_SAGEMAKER_ROLE_ARN": execution_role_arn,
            "RTREC_SAGEMAKER_IMAGE_URI": training_image_uri(self, config),
        }
        if config.mlflow_tracking_server:
            environment["RTREC_MLFLOW_TRACKING_URI"] = mlflow_server_arn(self, config)
        layers = RuntimeLayers(self, "Layers", config=config)
        self.drift_function = RtrecFunction(
            self,
            "DriftCheck",
            config=config,
            name="drift-check",
            handler="drift_check.handler.handler",
            description="scheduled: feature and reward drift -> report, metrics, retraining",
            layers=layers,
            memory_mb=1024,
            timeout=Duration.minutes(5),
            environment=environment,
        )
        fn, role = self.drift_function.function, self.drift_function.role
        # live traffic since the last check: the counterfactual log's events/ and joined/ objects
        findings = grant_s3(role, refs.bucket(COUNTERFACTUAL_BUCKET), read=["events/*", "joined/*"])
        # the production pointer and its version folder (the training snapshot to compare with); the check's state
        # and reports, the only keys it writes
        findings += grant_s3(
            role,
            refs.bucket(MODELS_BUCKET),
            read=[MODEL_KEYS.production, f"{MODEL_KEYS.versions}*", DRIFT_STATE_KEY],
            write=[DRIFT_STATE_KEY, f"{DRIFT_REPORTS_PREFIX}*"],
        )
        grant_dynamodb(role, refs.table(LOCKS), "PutItem")  # the retraining cool-down: one conditional write

        jobs = self.format_arn(service="sagemaker", resource="training-job", resource_name=f"{JOB_PREFIX}-*")
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["sagemaker:CreateTrainingJob", "sagemaker:AddTags", "sagemaker:DescribeTrainingJob"], resources=[jobs]
            )
        )
        role.add_to_policy(iam.PolicyStatement(actions=["sagemaker:ListTrainingJobs"], resources=["*"]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[execution_role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            f"retraining jobs are named '{JOB_PREFIX}-<UTC time>' when they start, so their ARNs end in '*'; "
            "ListTrainingJobs (is a job already running?) supports no resource-level permissions ('*'); "
            "s3:GetObject on object keys made at run time under the counterfactual log's events/ and joined/ "
            f"and the models bucket's '{MODEL_KEYS.versions}' (the production model's files), s3:PutObject "
            f"only on '{DRIFT_REPORTS_PREFIX}' (one report per run) and the state object",
            applies_to=[*findings, "Resource::*", resource_finding(self, jobs)],
        )

        self.schedule = events.Rule(
            self,
            "Schedule",
            rule_name=f"{config.prefix}-drift-check",
            description="run the drift check",
            schedule=events.Schedule.rate(Duration.minutes(config.drift_schedule_minutes)),
        )
        self.schedule.add_target(
            targets.LambdaFunction(fn, retry_attempts=2, max_event_age=Duration.minutes(max(config.drift_schedule_minutes, 1)))
        )
