"""The `stream_consumer` Lambda: Kinesis batches into features, item statistics, the online ranker and the
counterfactual log.

Per batch (one shard's records, in order):
1. decode every record; one that does not decode is poison: it goes to the dead-letter queue with the
   reason and counts as processed;
2. write the batch's raw messages to the counterfactual log (one object per batch; re-delivery overwrites);
3. plan: read the batch's user profiles at once and apply the messages to them in memory (the reward join
   included); a message whose application raises is dead-lettered with the reason;
4. the online learner learns the slates the batch resolved and its positive events (once per record: it
   remembers the last sequence number learned);
5. commit: the changed profiles (BatchWriteItem) and the item statistics (one ADD per item, concurrent,
   conditioned on a per-item, per-shard watermark).
Every step is safe to repeat, so when one fails the whole batch is reported in `batchItemFailures` (from its
first record) and the event source mapping delivers it again; after its retries the first record goes to
the dead-letter queue there. Per batch: one read and one write per 100 and 25 users, one watermark read per
100 items, one update per item touched, instead of the 5-6 calls per event that a per-event idempotency
record, profile read and write and stats update cost.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from rtrec.domain.events import StreamMessage, decode_record
from rtrec.errors import InvalidInputError, RtrecError
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry
from rtrec.ports import DeadLetterQueue
from rtrec.services.online import LearnerConfig, OnlineLearner
from rtrec.services.stream import StreamConsumer
from rtrec.settings import ConsumerSettings

logger = Logger(service=CONSUMER_SERVICE)


@dataclass
class ConsumerHandler:
    consumer: StreamConsumer
    dlq: DeadLetterQueue
    learner: OnlineLearner | None = None
    telemetry: Telemetry = field(default=NO_TELEMETRY)
    _dead_lettered: int = field(default=0, init=False, repr=False)

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = [KinesisStreamRecord(r) for r in event.get("Records", [])]
        if not records:
            return {"batchItemFailures": []}
        self._dead_lettered = 0
        # Lambda's IteratorAge: how old the batch's oldest record is when the handler takes it (the consumer's lag).
        arrived = [float(a) for r in records if (a := r.raw_event.get("kinesis", {}).get("approximateArrivalTimestamp"))]
        iterator_age_ms = (time.time() - min(arrived)) * 1000.0 if arrived else None
        by_sequence = {int(r.kinesis.sequence_number): r for r in records}
        messages: list[tuple[int, StreamMessage]] = []
        for seq, record in by_sequence.items():
            try:
                messages.append((seq, decode_record(record.kinesis.data_as_bytes())))
            except (InvalidInputError, ValueError) as exc:  # ValueError: the data is not valid base64
                self._dead_letter(record, f"malformed record: {exc}")
        first, last = records[0], records[-1]
        # Sequence numbers order the records of one shard of one stream: the watermarks and the learner's
        # position are kept per stream and shard. (A stream created again under the same name numbers its
        # records from the start; its watermarks must then go too, as the embedded cloud's do on a restart.)
        stream = first.event_source_arn.rsplit("/", 1)[-1]
        shard = f"{stream}-{first.event_id.split(':', 1)[0]}"
        batch_id = f"{shard}-{first.kinesis.sequence_number}-{last.kinesis.sequence_number}"
        try:
            self.consumer.log_batch(batch_id, [m for _, m in messages])
            plan = self.consumer.plan(shard, messages)
            for seq, reason in plan.failed:
                self._dead_letter(by_sequence[seq], f"could not be applied: {reason}")
            examples = 0
            if self.learner is not None:
                learned = self.learner.learn_batch(shard, batch_id, plan.applied)
                examples = learned.examples
                if learned.slates:
                    logger.debug("online ranker learned", extra={"slates": learned.slates, "examples": learned.examples,
                                                                 "total_examples": learned.total_examples})
            self.consumer.commit(plan)
        except RtrecError as exc:
            logger.warning("batch failed; reported for re-delivery", extra={"batch_id": batch_id, "error": str(exc)})
            self.telemetry.consumer_batch(records=len(records), failed=True, dead_lettered=self._dead_lettered,
                                          iterator_age_ms=iterator_age_ms)
            return {"batchItemFailures": [{"itemIdentifier": first.kinesis.sequence_number}]}
        resolved = [slate for _, applied in plan.applied for slate in applied.resolved]
        self.telemetry.consumer_batch(records=len(records), failed=False, dead_lettered=self._dead_lettered,
                                      iterator_age_ms=iterator_age_ms, slates=len(resolved),
                                      rewards=sum(sum(slate.rewards) for slate in resolved), examples=examples)
        return {"batchItemFailures": []}

    def _dead_letter(self, record: KinesisStreamRecord, reason: str) -> None:
        self._dead_lettered += 1
        logger.warning("record to the dead-letter queue", extra={"sequence_number": record.kinesis.sequence_number,
                                                                 "reason": reason})
        self.dlq.send({"reason": reason, "source": "stream_consumer", "event_id": record.event_id,
                       "record": record.raw_event})


def build_handler(settings: ConsumerSettings, *, dynamodb_client: Any = None,
                  telemetry: Telemetry = NO_TELEMETRY) -> ConsumerHandler:
    """Wire the AWS adapters named by `settings`; the handler is built once per Lambda container. `telemetry`
    receives each batch's metrics (EMF in Lambda, Prometheus in `rtrec run`)."""
    from rtrec.adapters.aws.clients import aws_client
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3CounterfactualLog, S3RankerStateStore
    from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
    from rtrec.resources import COUNTERFACTUAL_BUCKET, EVENTS_DLQ, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

    names = settings.names
    aws = {"endpoint_url": settings.endpoint_url, "region": settings.region}
    dynamodb = dynamodb_client or aws_client("dynamodb", settings.endpoint_url, settings.region)
    features = DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), client=dynamodb)
    log = S3CounterfactualLog(names.bucket(COUNTERFACTUAL_BUCKET), **aws)
    consumer = StreamConsumer(features, features, log, half_life_days=settings.popularity_half_life_days,
                              reward_window_seconds=settings.reward_window_seconds)
    learner = OnlineLearner(S3RankerStateStore(names.bucket(MODELS_BUCKET), **aws), log, LearnerConfig(
        alpha=settings.ranker_alpha, l1=settings.ranker_l1, l2=settings.ranker_l2,
        trend_half_life_days=settings.trend_half_life_days))
    return ConsumerHandler(consumer, SqsDeadLetterQueue(names.queue(EVENTS_DLQ), **aws), learner, telemetry)
