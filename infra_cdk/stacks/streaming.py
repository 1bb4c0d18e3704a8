"""Streaming: the Kinesis events stream and the `stream_consumer` Lambda behind its event source mapping.

The mapping follows the same contract as the embedded cloud's local one (`rtrec/local/event_source.py`):
in-order batches per shard; ReportBatchItemFailures (a record-level failure the handler cannot dead-letter
itself comes back from that record); BisectBatchOnFunctionError (a failing batch is split until the bad record
is alone, the good ones around it applied); RETRY_ATTEMPTS retries, then the on-failure destination. The handler
dead-letters the poison it recognises (malformed, unappliable) itself, whole, through `SqsDeadLetterQueue`: by
reference (the record in the dead-letter bucket, its key in the message) when too large for SQS. On a systemic
failure (a store or the DLQ down or throttled) it raises `DependencyError`.

What AWS does differently from the local mapping:
- the on-failure destination gets batch metadata only (shard, sequence-number range, the reason), not the
  records: `rtrec dlq redrive` cannot replay such an entry, whose records must be read from the stream by
  sequence number before retention ends; hence the handler dead-letters what it can whole, itself;
- a raising handler uses up the retries too: after RETRY_ATTEMPTS (and bisection down to one record) a batch
  that keeps raising on a systemic failure goes to the on-failure destination as metadata, where the local
  mapping retries a systemic failure forever. RETRY_ATTEMPTS and MAX_RECORD_AGE bound that window: retries
  are spaced by the Lambda service, and the `stream-consumer-lambda-iterator-age` alarm fires long before;
- retries count per (bisected) batch, and splitting does not count toward them; locally a record is
  dead-lettered after RETRY_ATTEMPTS failed deliveries of it alone.
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
from rtrec.resources import (
    COUNTERFACTUAL_BUCKET,
    DEAD_LETTER_BUCKET,
    EVENTS_DLQ,
    EVENTS_STREAM,
    ITEM_FEATURES,
    MODELS_BUCKET,
    USER_FEATURES,
)

BATCH_SIZE = EVENTS_STREAM.consumer_batch_size  # as the local event source mapping
MAX_BATCHING_WINDOW = Duration.seconds(1)
RETRY_ATTEMPTS = 3  # as the local event source mapping's max_attempts (there: deliveries of the record alone)
BISECT_ON_ERROR = True  # as the local mapping: isolate the failing record, apply the good ones around it
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
        dead_letters = refs.bucket(DEAD_LETTER_BUCKET)
        dead_letters.grant_put(role)  # dead letters too large for SQS, whole; the DLQ message holds the key

        fn.add_event_source(sources.KinesisEventSource(
            self.stream,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=BATCH_SIZE,
            max_batching_window=MAX_BATCHING_WINDOW,
            bisect_batch_on_error=BISECT_ON_ERROR,
            retry_attempts=RETRY_ATTEMPTS,
            # A record is never older than the stream's retention; past it the record is gone from the stream either
            # way, and Lambda sends its metadata to the on-failure destination instead of retrying a trimmed record.
            max_record_age=Duration.hours(spec.retention_hours),
            parallelization_factor=PARALLELIZATION_FACTOR,
            report_batch_item_failures=True,
            on_failure=sources.SqsDlq(dlq),  # metadata only (see the module docstring)
        ))
        suppress(role, "AwsSolutions-IAM5",
                 "CDK's S3 grant action groups (GetObject*, GetBucket*, List*, Abort*) on two objects sets only: every "
                 "object of the counterfactual-log bucket (the handler writes impressions/, events/ and joined/ "
                 f"objects under dated keys), the online ranker's state under '{RANKER_STATE_PREFIX}' of the "
                 "models bucket, and new objects of the dead-letter bucket (one per oversized dead letter)",
                 applies_to=[*S3_READ_FINDINGS, *S3_PUT_FINDINGS,
                             resource_finding(self, refs.bucket(COUNTERFACTUAL_BUCKET).arn_for_objects("*")),
                             resource_finding(self, dead_letters.arn_for_objects("*")),
                             resource_finding(self, models.arn_for_objects(f"{RANKER_STATE_PREFIX}*"))])
