"""Streaming: the Kinesis events stream and the `stream_consumer` Lambda behind its event source mapping.

The mapping mirrors the embedded cloud's local one (`rtrec/local/event_source.py`): in-order batches per shard,
ReportBatchItemFailures (the handler reports the first failed record), retries, then the failed record's metadata
to the dead-letter queue (the on-failure destination), beside the poison records the handler sends there itself.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_kinesis as kinesis
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from constructs import Construct

from infra_cdk.config import InfraConfig
from infra_cdk.stacks.common import (
    S3_PUT_FINDINGS,
    S3_READ_FINDINGS,
    RtrecFunction,
    RuntimeLayers,
    resource_finding,
    suppress,
)
from infra_cdk.stacks.refs import Refs
from rtrec.adapters.aws.s3 import RANKER_STATE_PREFIX
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.resources import COUNTERFACTUAL_BUCKET, EVENTS_DLQ, EVENTS_STREAM, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

BATCH_SIZE = 500  # the consumer reads/writes profiles 100/25 at a time: bigger batches, fewer calls per event
MAX_BATCHING_WINDOW = Duration.seconds(1)
RETRY_ATTEMPTS = 3  # as the local event source mapping: after 3 failed deliveries the record goes to the DLQ
# One concurrent batch per shard: the consumer's per-shard watermarks and the online learner's position need the
# shard's records in order, which a parallelization factor above 1 would split across concurrent batches.
PARALLELIZATION_FACTOR = 1


class StreamingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        names = config.names
        refs = Refs(self, "Refs", config=config)
        spec = EVENTS_STREAM
        self.stream = kinesis.Stream(
            self, "EventsStream",
            stream_name=names.stream(spec),
            shard_count=spec.shard_count,
            retention_period=Duration.hours(spec.retention_hours),
            stream_mode=kinesis.StreamMode.PROVISIONED,
            encryption=kinesis.StreamEncryption.MANAGED,
        )

        layers = RuntimeLayers(self, "Layers", config=config)
        self.consumer = RtrecFunction(
            self, "StreamConsumer", config=config, name="stream-consumer", handler="stream_consumer.handler.handler",
            description="Kinesis batches -> features, item stats, online ranker, counterfactual log",
            layers=layers, memory_mb=1024, timeout=Duration.minutes(2),
            environment={"POWERTOOLS_SERVICE_NAME": CONSUMER_SERVICE},
        )
        fn, role = self.consumer.function, self.consumer.role

        # What the handler calls, and nothing else.
        refs.table(USER_FEATURES).grant_read_write_data(role)  # BatchGetItem / BatchWriteItem of profiles
        refs.table(ITEM_FEATURES).grant_read_write_data(role)  # watermarks, UpdateItem ADD of item stats
        refs.bucket(COUNTERFACTUAL_BUCKET).grant_put(role)  # impressions/, events/, joined/ (one object per batch)
        models = refs.bucket(MODELS_BUCKET)
        models.grant_read(role, f"{RANKER_STATE_PREFIX}*")  # the online ranker's state, one object per shard
        models.grant_put(role, f"{RANKER_STATE_PREFIX}*")
        dlq = refs.queue(EVENTS_DLQ)
        dlq.grant_send_messages(role)  # poison records, with the reason

        fn.add_event_source(sources.KinesisEventSource(
            self.stream,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=BATCH_SIZE,
            max_batching_window=MAX_BATCHING_WINDOW,
            bisect_batch_on_error=True,
            retry_attempts=RETRY_ATTEMPTS,
            max_record_age=Duration.hours(spec.retention_hours),
            parallelization_factor=PARALLELIZATION_FACTOR,
            report_batch_item_failures=True,
            on_failure=sources.SqsDlq(dlq),
        ))
        suppress(role, "AwsSolutions-IAM5",
                 "CDK's S3 grant action groups (GetObject*, GetBucket*, List*, Abort*) on two objects sets only: every "
                 "object of the counterfactual-log bucket (the handler writes impressions/, events/ and joined/ "
                 f"objects under dated keys) and the online ranker's state under '{RANKER_STATE_PREFIX}' of the "
                 "models bucket",
                 applies_to=[*S3_READ_FINDINGS, *S3_PUT_FINDINGS,
                             resource_finding(self, refs.bucket(COUNTERFACTUAL_BUCKET).arn_for_objects("*")),
                             resource_finding(self, models.arn_for_objects(f"{RANKER_STATE_PREFIX}*"))])
