"""The `stream_consumer` Lambda: Kinesis batches into features, item statistics and the counterfactual log.

Per batch: decode every record (a record that does not decode is poison: it goes to the dead-letter
queue with the reason and counts as processed), write the batch's messages to the counterfactual log,
then apply each message exactly once in effect (Powertools idempotency keyed by event_id, stored in
the idempotency table). A record whose apply fails is reported in `batchItemFailures`, so the event
source mapping re-delivers from it; after its retries it lands in the dead-letter queue there. Last,
the online learner learns from the records before the first failure: the slates they resolved (joined
with their rewards, also written to the counterfactual log) and their positive events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

from rtrec.domain.events import StreamMessage, decode_message, decode_record, message_to_dict
from rtrec.errors import InvalidInputError
from rtrec.ports import DeadLetterQueue
from rtrec.services.online import LearnerConfig, OnlineLearner
from rtrec.services.stream import Applied, StreamConsumer
from rtrec.settings import ConsumerSettings

logger = Logger(service="rtrec-stream-consumer")


@dataclass
class ConsumerHandler:
    consumer: StreamConsumer
    dlq: DeadLetterQueue
    apply_once: Callable[..., Any]
    processor: BatchProcessor
    config: IdempotencyConfig
    learner: OnlineLearner | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.config.register_lambda_context(context)
        records = [KinesisStreamRecord(r) for r in event.get("Records", [])]
        decoded: dict[str, StreamMessage] = {}
        applied: dict[str, Applied] = {}
        for record in records:
            try:
                decoded[record.kinesis.sequence_number] = decode_record(record.kinesis.data_as_bytes())
            except (InvalidInputError, ValueError) as exc:  # ValueError: the data is not valid base64
                self._dead_letter(record, str(exc))
        if not records:
            return {"batchItemFailures": []}
        first, last = records[0], records[-1]
        shard = first.event_id.split(":", 1)[0]
        batch_id = f"{shard}-{first.kinesis.sequence_number}-{last.kinesis.sequence_number}"
        self.consumer.log_batch(batch_id, list(decoded.values()))

        def record_handler(record: KinesisStreamRecord) -> None:
            sequence_number = record.kinesis.sequence_number
            message = decoded.get(sequence_number)
            if message is not None:  # poison records were dead-lettered above
                applied[sequence_number] = Applied.from_dict(self.apply_once(message=message_to_dict(message)))

        response = process_partial_response(event=event, record_handler=record_handler, processor=self.processor,
                                            context=context)
        if self.learner is not None:
            failed = [int(f["itemIdentifier"]) for f in response.get("batchItemFailures", [])]
            before = min(failed) if failed else None
            learned = self.learner.learn_batch(shard, batch_id, [
                (int(seq), a) for seq, a in applied.items() if before is None or int(seq) < before])
            if learned.slates:
                logger.debug("online ranker learned", extra={"slates": learned.slates, "examples": learned.examples,
                                                             "total_examples": learned.total_examples})
        return response

    def _dead_letter(self, record: KinesisStreamRecord, reason: str) -> None:
        logger.warning("poison record to the dead-letter queue", extra={"sequence_number": record.kinesis.sequence_number,
                                                                        "reason": reason})
        self.dlq.send({"reason": f"malformed record: {reason}", "source": "stream_consumer",
                       "event_id": record.event_id, "record": record.raw_event})


def build_handler(settings: ConsumerSettings, *, dynamodb_client: Any = None) -> ConsumerHandler:
    """Wire the AWS adapters named by `settings`; the handler is built once per Lambda container."""
    from rtrec.adapters.aws.clients import aws_client
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3CounterfactualLog, S3RankerStateStore
    from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
    from rtrec.resources import COUNTERFACTUAL_BUCKET, EVENTS_DLQ, IDEMPOTENCY, ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

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
    persistence = DynamoDBPersistenceLayer(table_name=names.table(IDEMPOTENCY), boto3_client=dynamodb)
    config = IdempotencyConfig(event_key_jmespath="event_id", expires_after_seconds=settings.idempotency_ttl_seconds,
                               raise_on_no_idempotency_key=True)

    @idempotent_function(data_keyword_argument="message", persistence_store=persistence, config=config)
    def apply_once(message: dict[str, Any]) -> dict[str, Any]:
        return consumer.apply(decode_message(message)).to_dict()

    return ConsumerHandler(consumer, SqsDeadLetterQueue(names.queue(EVENTS_DLQ), **aws), apply_once,
                           # Every failed record is reported in batchItemFailures, even when all of them failed, instead of
                           # failing the invocation: the event source mapping retries from the first one either way.
                           BatchProcessor(event_type=EventType.KinesisDataStreams, raise_on_entire_batch_failure=False),
                           config, learner)
