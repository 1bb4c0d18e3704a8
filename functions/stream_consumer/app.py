"""The `stream_consumer` Lambda: Kinesis batches into user profiles, the shard's state (item statistics and
the online ranker) and the counterfactual log.

The handler parses the event (decodes every record, keeping the ones that do not decode as poison), calls
`StreamConsumer.process_batch`, which owns the order of the steps (plan, dead letters, log, learn, commit; see
there), and maps its outcome:
- success, a poison record dead-lettered on the way included: `{"batchItemFailures": []}`;
- a poison record the DLQ would not take (a failure other than DependencyError): the records before it are
  committed and it is reported in `batchItemFailures`, so the event source mapping bisects and dead-letters
  that one record after its retries, and the shard moves on;
- a systemic failure (a store or the DLQ throttling, down or unreachable: DependencyError): raised, so the
  mapping retries the whole batch with backoff and dead-letters nothing for it. Every step is safe to repeat.
Per batch: the log PUT, the shard state's GET and PUT, the joined slates' PUT, one BatchGetItem per 100 users
and one BatchWriteItem per 25: no call per item shown.

Dead-letter reasons are one line of at most MAX_REASON_CHARS that never repeat the payload (values quoted in a
validation message are cut out); the DLQ adapter keeps the raw Kinesis record, by reference when it is too
large for SQS.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import KinesisStreamRecord

from rtrec.domain.events import decode_record
from rtrec.errors import DependencyError, InvalidInputError, short_reason
from rtrec.monitoring.catalog import CONSUMER_SERVICE
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry
from rtrec.ports import DeadLetterQueue
from rtrec.services.online import LearnerConfig, OnlineLearner
from rtrec.services.stream import StreamConsumer, StreamRecord
from rtrec.settings import ConsumerSettings

logger = Logger(service=CONSUMER_SERVICE)

# What a validation message quotes of its input: ", got 'xxx'" (rtrec.domain.events), "input_value=..." and
# "[type=..., input_value=..., input_type=...]" (pydantic).
_QUOTED_INPUT = re.compile(r",?\s*\bgot\s.*?(?=;|$)|,?\s*input_value=.*?(?=, input_type=|\]|$)|,?\s*input_type=\w+")


def dead_letter_reason(reason: str) -> str:
    """One line of at most MAX_REASON_CHARS saying why, without the values the message quoted."""
    return short_reason(_QUOTED_INPUT.sub("", " ".join(str(reason)[:4096].split())).strip())


@dataclass
class ConsumerHandler:
    consumer: StreamConsumer
    dlq: DeadLetterQueue
    learner: OnlineLearner | None = None
    telemetry: Telemetry = field(default=NO_TELEMETRY)

    def __post_init__(self) -> None:
        if self.learner is not None and self.consumer.learner is None:
            self.consumer.learner = self.learner

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = [KinesisStreamRecord(r) for r in event.get("Records", [])]
        if not records:
            return {"batchItemFailures": []}
        # Lambda's IteratorAge: how old the batch's oldest record is when the handler takes it (the consumer's lag).
        arrived = [float(a) for r in records if (a := r.raw_event.get("kinesis", {}).get("approximateArrivalTimestamp"))]
        iterator_age_ms = (time.time() - min(arrived)) * 1000.0 if arrived else None
        by_sequence = {int(r.kinesis.sequence_number): r for r in records}
        parsed = [_parsed(seq, record) for seq, record in by_sequence.items()]
        first = records[0]
        # Sequence numbers order the records of one shard of one stream: the profiles' watermarks and the shard
        # state are kept per stream and shard. (A stream created again under the same name numbers its records
        # from the start; the states' positions must then go too, as the embedded cloud's do on a restart.)
        stream = first.event_source_arn.rsplit("/", 1)[-1]
        shard = f"{stream}-{first.event_id.split(':', 1)[0]}"
        dead: list[int] = []

        def dead_letter(seq: int, reason: str) -> None:
            self._dead_letter(by_sequence[seq], reason)
            dead.append(seq)

        try:
            outcome = self.consumer.process_batch(shard, parsed, dead_letter)
        except DependencyError as exc:
            logger.warning(
                "batch failed on a dependency; raised for the whole batch to be retried",
                extra={"shard": shard, "first": first.kinesis.sequence_number, "error": dead_letter_reason(str(exc))},
            )
            self.telemetry.consumer_batch(
                records=len(records), failed=True, dead_lettered=len(dead), iterator_age_ms=iterator_age_ms
            )
            raise
        resolved = [slate for _, applied in outcome.plan.applied for slate in applied.resolved]
        learned = outcome.learned
        if learned is not None and learned.slates:
            logger.debug(
                "online ranker learned",
                extra={"slates": learned.slates, "examples": learned.examples, "total_examples": learned.total_examples},
            )
        if outcome.plan.evicted:
            logger.warning(
                "dedup entries forgotten before their retention (a user above the bound)",
                extra={"shard": shard, "evicted": outcome.plan.evicted},
            )
        self.telemetry.consumer_batch(
            records=len(records),
            failed=outcome.retry_from is not None,
            dead_lettered=len(dead),
            iterator_age_ms=iterator_age_ms,
            slates=len(resolved),
            rewards=sum(sum(slate.rewards) for slate in resolved),
            examples=learned.examples if learned is not None else 0,
        )
        if outcome.retry_from is not None:
            logger.warning(
                "a poison record could not be dead-lettered; reported for the mapping to isolate",
                extra={"shard": shard, "sequence_number": str(outcome.retry_from)},
            )
            return {"batchItemFailures": [{"itemIdentifier": by_sequence[outcome.retry_from].kinesis.sequence_number}]}
        return {"batchItemFailures": []}

    def _dead_letter(self, record: KinesisStreamRecord, reason: str) -> None:
        reason = dead_letter_reason(reason)
        logger.warning(
            "record to the dead-letter queue", extra={"sequence_number": record.kinesis.sequence_number, "reason": reason}
        )
        self.dlq.send(
            {
                "reason": reason,
                "source": "stream_consumer",
                "event_id": record.event_id,
                "sequence_number": record.kinesis.sequence_number,
                "record": record.raw_event,
            }
        )


def _parsed(seq: int, record: KinesisStreamRecord) -> StreamRecord:
    """The record decoded, or (poison) why it does not decode."""
    arrived = record.raw_event.get("kinesis", {}).get("approximateArrivalTimestamp")
    arrived_at = float(arrived) if arrived is not None else None
    try:
        return StreamRecord(seq, decode_record(record.kinesis.data_as_bytes()), arrived_at)
    except (InvalidInputError, ValueError) as exc:  # ValueError: the data is not valid base64
        return StreamRecord(seq, None, arrived_at, dead_letter_reason(str(exc)))


def build_handler(
    settings: ConsumerSettings, *, dynamodb_client: Any = None, telemetry: Telemetry = NO_TELEMETRY
) -> ConsumerHandler:
    """Wire the AWS adapters named by `settings`; the handler is built once per Lambda container. `telemetry`
    receives each batch's metrics (EMF in Lambda, Prometheus in `rtrec run`)."""
    from rtrec.adapters.aws.factory import AwsAdapters  # here: the handler's tests load no SDK

    aws = AwsAdapters.from_settings(settings, clients=None if dynamodb_client is None else {"dynamodb": dynamodb_client})
    features = aws.feature_store(consistent_profile_reads=True)  # read-modify-write, batch after batch
    log = aws.counterfactual_log()
    learner = OnlineLearner(
        aws.ranker_state_store(),
        log,
        LearnerConfig(
            alpha=settings.ranker_alpha,
            l1=settings.ranker_l1,
            l2=settings.ranker_l2,
            trend_half_life_days=settings.trend_half_life_days,
        ),
    )
    consumer = StreamConsumer(
        features,
        log,
        half_life_days=settings.popularity_half_life_days,
        reward_window_seconds=settings.reward_window_seconds,
        dedup_retention_seconds=settings.dedup_retention_seconds,
        dedup_limit=settings.dedup_max_events_per_user,
        learner=learner,
    )
    return ConsumerHandler(consumer, aws.dead_letter_queue(), telemetry=telemetry)
