"""Data: the DynamoDB tables, S3 buckets and the SQS dead-letter queue of `rtrec.resources`.

Names, key schemas, TTL attributes, shard counts and retention come from `rtrec.resources` through
`ResourceNames`, exactly as the embedded cloud's `Provisioner` creates them (tests/infra checks both agree).
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra_cdk.config import InfraConfig
from infra_cdk.stacks.common import removal_policy, suppress
from rtrec.resources import BUCKETS, COUNTERFACTUAL_BUCKET, EVENTS_DLQ, OFFLINE_STORE_BUCKET, TABLES, BucketSpec, KeyAttribute

ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER, "B": dynamodb.AttributeType.BINARY}


def _attribute(key: KeyAttribute) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=ATTRIBUTE_TYPES[key.type])


class DataStack(Stack):
    """Tables (on-demand, point-in-time recovery), buckets (encrypted, private, TLS only, access-logged) and the
    dead-letter queue (encrypted, TLS only)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        names = config.names
        removal = removal_policy(config)

        self.tables: dict[str, dynamodb.Table] = {}
        for spec in TABLES:
            self.tables[spec.logical_name] = dynamodb.Table(
                self,
                _camel(spec.logical_name) + "Table",
                table_name=names.table(spec),
                partition_key=_attribute(spec.partition_key),
                sort_key=_attribute(spec.sort_key) if spec.sort_key else None,
                time_to_live_attribute=spec.ttl_attribute,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,  # as Provisioner: spiky, stream-driven load
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                deletion_protection=config.retain,
                removal_policy=removal,
            )

        # Server access logs of the data buckets: a bucket of its own (not a project resource: nothing reads it).
        self.access_logs = s3.Bucket(
            self,
            "AccessLogsBucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal,
        )
        suppress(
            self.access_logs,
            "AwsSolutions-S1",
            "this is the server-access-log destination of the data buckets; logging it into itself would loop",
        )

        self.buckets: dict[str, s3.Bucket] = {}
        for spec in BUCKETS:
            name = names.bucket(spec)
            self.buckets[spec.logical_name] = s3.Bucket(
                self,
                _camel(spec.logical_name) + "Bucket",
                bucket_name=name,
                encryption=s3.BucketEncryption.S3_MANAGED,
                block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
                enforce_ssl=True,
                object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
                versioned=spec.persistent,  # models, logs and the offline store survive a bad overwrite
                lifecycle_rules=_lifecycle(spec),
                server_access_logs_bucket=self.access_logs,
                server_access_logs_prefix=f"{name}/",
                removal_policy=removal,
            )

        spec = EVENTS_DLQ
        self.dlq = sqs.Queue(
            self,
            "EventsDlq",
            queue_name=names.queue(spec),
            retention_period=Duration.seconds(spec.message_retention_seconds),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            removal_policy=removal,
        )
        suppress(
            self.dlq,
            "AwsSolutions-SQS3",
            "this queue is itself the dead-letter queue: the stream consumer sends poison records to it and the "
            "Kinesis event source mapping's on-failure destination is it; `rtrec dlq redrive` replays it",
        )

    def table(self, logical_name: str) -> dynamodb.Table:
        return self.tables[logical_name]

    def bucket(self, logical_name: str) -> s3.Bucket:
        return self.buckets[logical_name]


def _lifecycle(spec: BucketSpec) -> list[s3.LifecycleRule]:
    """Old object versions expire; the append-only logs move to infrequent access after a month."""
    rules = [
        s3.LifecycleRule(
            id="expire-noncurrent",
            noncurrent_version_expiration=Duration.days(30),
            abort_incomplete_multipart_upload_after=Duration.days(7),
        )
    ]
    if spec in (COUNTERFACTUAL_BUCKET, OFFLINE_STORE_BUCKET):
        rules.append(
            s3.LifecycleRule(
                id="infrequent-access",
                transitions=[
                    s3.Transition(storage_class=s3.StorageClass.INFREQUENT_ACCESS, transition_after=Duration.days(30))
                ],
            )
        )
    return rules


def _camel(logical_name: str) -> str:
    return "".join(part.capitalize() for part in logical_name.split("-"))
