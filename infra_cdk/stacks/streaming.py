"""Streaming: the Kinesis events stream and the `stream_consumer` Lambda behind its event source mapping.

The mapping follows the same contract as the embedded cloud's local one (`rtrec_local/event_source.py`):
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
from infra_cdk.stacks.common import RtrecFunction, RuntimeLayers, grant_dynamodb, grant_s3, suppress
from infra_cdk.stacks.refs import Refs
from rtrec.adapters.aws.s3 import RANKER_STATE_PREFIX
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.resources import COUNTERFACTUAL_BUCKET, DEAD_LETTER_BUCKET, EVENTS_DLQ, EVENTS_STREAM, MODELS_BUCKET, USER_FEATURES

BATCH_SIZE = EVENTS_STREAM.consumer_batch_size  # as the local event source mapping
MAX_BATCHING_WINDOW = Duration.seconds(1)
RETRY_ATTEMPTS = 3  # as the local event source mapping's max_attempts (there: deliveries of the record alone)
BISECT_ON_ERROR = True  # as the local mapping: isolate the failing record, apply the good ones around it
# One concurrent batch per shard: the consumer's per-shard watermarks and the online learner's position need the
# shard's records in order, which a parallelization factor above 1 would split across concurrent batches.
PARALLELIZATION_FACTOR = 1
# The counterfactual log's top-level prefixes (S3CounterfactualLog: `<kind>/dt=YYYY-MM-DD/<batch_id>.jsonl`), the only
# keys the consumer writes there; tests/infra checks the adapter's keys against them.
COUNTERFACTUAL_KINDS = ("impressions", "events", "joined")


class StreamingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        names = config.names
        refs = Refs(self, "Refs", config=config)
        spec = EVENTS_STREAM
        self.stream = kinesis.Stream(
            self,
            "EventsStream",
            stream_name=names.stream(spec),
            shard_count=spec.shard_count,
            retention_period=Duration.hours(spec.retention_hours),
            stream_mode=kinesis.StreamMode.PROVISIONED,
            encryption=kinesis.StreamEncryption.MANAGED,
        )

        layers = RuntimeLayers(self, "Layers", config=config)
        self.consumer = RtrecFunction(
            self,
            "StreamConsumer",
            config=config,
            name="stream-consumer",
            handler="stream_consumer.handler.handler",
            description="Kinesis batches -> features, item stats, online ranker, counterfactual log",
            layers=layers,
            memory_mb=1024,
            timeout=Duration.minutes(2),
            environment={"POWERTOOLS_SERVICE_NAME": CONSUMER_SERVICE},
        )
        fn, role = self.consumer.function, self.consumer.role

        # What the handler calls, and nothing else: its profiles (read-modify-write, batch after batch; item
        # statistics live in the ranker's state, so no item-table access), the counterfactual log, the online
        # ranker's state, and the dead letters.
        grant_dynamodb(role, refs.table(USER_FEATURES), "BatchGetItem", "BatchWriteItem")
        findings = grant_s3(
            role,
            refs.bucket(COUNTERFACTUAL_BUCKET),  # one object per batch and kind, dated keys
            write=[f"{kind}/*" for kind in COUNTERFACTUAL_KINDS],
        )
        findings += grant_s3(
            role,
            refs.bucket(MODELS_BUCKET),  # one state object per shard, HEAD + GET + PUT
            read=[f"{RANKER_STATE_PREFIX}*"],
            write=[f"{RANKER_STATE_PREFIX}*"],
        )
        dlq = refs.queue(EVENTS_DLQ)
        dlq.grant_send_messages(role)  # poison records, with the reason (GetQueueUrl: the adapter looks it up)
        dead_letters = refs.bucket(DEAD_LETTER_BUCKET)
        # dead letters too large for SQS, whole ('<source>/<date>/<id>.json'); the DLQ message holds the key
        findings += grant_s3(role, dead_letters, write=["*"])

        fn.add_event_source(
            sources.KinesisEventSource(
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
            )
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            "s3:PutObject (and s3:GetObject on the ranker state) on object keys made at run time, under exactly "
            "the prefixes the handler writes: the counterfactual log's "
            f"{', '.join(f'{k}/' for k in COUNTERFACTUAL_KINDS)} (dated, one object per batch), the online "
            f"ranker's state under '{RANKER_STATE_PREFIX}' of the models bucket (one object per shard; never "
            "the model pointers or versions), and new objects of the dead-letter bucket (one per oversized dead "
            "letter); no action wildcard",
            applies_to=findings,
        )
