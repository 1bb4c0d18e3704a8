"""KinesisEventSourceMapping: the local stand-in for Lambda's Kinesis event source mapping.

Why it exists: in AWS the Lambda service polls the stream and invokes `stream_consumer`; locally there
is no Lambda service (moto server cannot invoke functions without Docker), so this poller reads the
embedded cloud's Kinesis stream and calls the handler function in-process with the same event.

What it emulates of the AWS event source mapping (ESM):
- every shard is read in order, one batch at a time per shard (`BatchSize`), starting at TRIM_HORIZON
  or LATEST when the consumer has no checkpoint, else AFTER_SEQUENCE_NUMBER of the checkpoint, which is
  kept per (consumer, shard) in a DynamoDB table so a restart resumes where it stopped;
- the event is the one Lambda sends (`Records[].kinesis` with base64 data, eventID, eventSourceARN, ...),
  with a small Lambda context object;
- `ReportBatchItemFailures`: the checkpoint moves to just before the lowest reported sequence number and
  delivery resumes at that record; an unknown or empty itemIdentifier, or a handler that raises, fails the
  whole batch; an empty list or None is complete success;
- `MaximumRetryAttempts` + on-failure destination: after `max_attempts` failed deliveries of the same
  record, that record goes to the SQS dead-letter queue with the reason and the shard moves past it;
  without a DLQ it retries forever (an accepted event is never dropped);
- resharding: shards are re-listed every ~30 s (and at once when a closed shard is drained), and a child
  shard is read only after its parents are drained, as Lambda does.

What it does not: no parallelization factor (one batch in flight per shard), no bisect on error, no
tumbling windows, no batching window (MaximumBatchingWindowInSeconds), no MaximumRecordAgeInSeconds,
no enhanced fan-out consumers, no event filtering, no leases: two mappings with the same consumer
name would both read every shard. Unlike AWS, which sends only batch metadata to the on-failure
destination and skips the whole failing batch, this sends the one failing record itself (replayable)
and re-delivers the records after it.

One thread, round-robin over the shards (not one thread per shard): in AWS concurrent shards run in
separate execution environments, which threads of one process cannot emulate; a single warm container
handles one event at a time, so the in-process handler (module-level state such as the online ranker)
never sees two invocations at once and needs no locks. Each round gives every due shard at most one
batch, so a hot shard cannot starve the others; with the moto server in the same process (GIL, 2 cores)
more threads would add little throughput.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.errors import DependencyError

logger = logging.getLogger(__name__)

Handler = Callable[[dict, Any], "dict | None"]
StartingPosition = Literal["TRIM_HORIZON", "LATEST"]

LOCAL_ACCOUNT = "123456789012"  # moto's default account, also what AWS's sample events show
INVOKE_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/rtrec-local"
PARTIAL_FAILURE_REASON = "reported in batchItemFailures"
_MAX_BATCH_SIZE = 10_000  # Kinesis GetRecords limit
_MAX_BACKOFF_S = 5.0
_FUNCTION_TIMEOUT_S = 60.0
# Errors after which a shard iterator cannot be reused; any other failure keeps it (an iterator is a position).
_ITERATOR_INVALIDATING = {"ExpiredIteratorException", "InvalidArgumentException", "ResourceNotFoundException"}


class LocalLambdaContext:
    """The part of Lambda's context object that handlers and Powertools read."""

    def __init__(self, function_name: str, region: str, *, memory_limit_in_mb: int = 512,
                 timeout_s: float = _FUNCTION_TIMEOUT_S) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{LOCAL_ACCOUNT}:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class _Shard:
    """What the mapping knows about one shard; only the poller thread mutates it."""

    shard_id: str
    parents: tuple[str, ...] = ()
    closed: bool = False
    loaded: bool = False  # checkpoint read from the table
    position: str | None = None  # last sequence number handled (processed, or sent to the DLQ)
    checkpointed: str | None = None  # last sequence number stored in the table
    iterator: str | None = None
    retry_from: str | None = None  # the next iterator starts AT this sequence number (re-delivery)
    fail_seq: str | None = None  # first failed record of the latest failed delivery, and its count
    fail_attempts: int = 0
    dead_letter: dict[str, Any] | None = None  # DLQ message waiting to be sent
    finished: bool = False
    next_poll_at: float = 0.0
    errors_in_row: int = 0
    caught_up_at: float | None = None  # start of the last poll that found nothing new
    millis_behind: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"delivered": 0, "processed": 0, "failed_deliveries": 0,
                                                           "to_dlq": 0})


def _seq(value: str) -> int:
    """Kinesis sequence numbers are decimal strings of up to 128 bits; compare them as integers."""
    return int(value)


def _error_code(exc: BaseException) -> str:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class KinesisEventSourceMapping:
    """Polls every shard of `stream_name` and invokes `handler(event, context)` with Lambda's Kinesis event."""

    def __init__(
        self,
        stream_name: str,
        handler: Handler,
        *,
        checkpoint_table: str,
        dlq_url: str | None,
        consumer_name: str = "stream-consumer",
        batch_size: int = 100,
        max_attempts: int = 3,
        poll_interval_s: float = 0.2,
        starting_position: StartingPosition = "TRIM_HORIZON",
        kinesis_client: Any = None,
        dynamodb_client: Any = None,
        sqs_client: Any = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        on_progress: Callable[[str], None] | None = None,
        shard_refresh_s: float = 30.0,
        progress_interval_s: float = 10.0,
    ) -> None:
        if not 1 <= batch_size <= _MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be within 1..{_MAX_BATCH_SIZE}, got {batch_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"starting_position must be TRIM_HORIZON or LATEST, got {starting_position!r}")
        self.stream_name = stream_name
        self.handler = handler
        self.checkpoint_table = checkpoint_table
        self.dlq_url = dlq_url
        self.consumer_name = consumer_name
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.poll_interval_s = poll_interval_s
        self.starting_position = starting_position
        self.region = region
        self.on_progress = on_progress
        self.shard_refresh_s = shard_refresh_s
        self.progress_interval_s = progress_interval_s
        self._kinesis = kinesis_client if kinesis_client is not None else aws_client("kinesis", endpoint_url, region)
        self._dynamodb = dynamodb_client if dynamodb_client is not None else aws_client("dynamodb", endpoint_url, region)
        self._sqs = sqs_client if sqs_client is not None or dlq_url is None else aws_client("sqs", endpoint_url, region)

        self.stream_arn: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._listed_at: float | None = None  # monotonic time of the last successful list_shards
        self._relist_now = True
        self._setup_next_at = 0.0
        self._setup_errors = 0
        self._counts = {"batches": 0, "transient_errors": 0, "handler_errors": 0}
        self._lock = threading.Lock()  # guards _shards' membership and the snapshot in stats()
        self._round_lock = threading.Lock()  # one poll round at a time (background thread or run_until_idle)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped_clean = True
        self._window_started = time.monotonic()
        self._window_records = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Poll in a background thread until stop(). A thread still finishing a stop() that timed out is
        waited for, so there is never more than one poller."""
        if self._thread is not None and self._thread.is_alive():
            if not self._stop.is_set():
                return
            self._thread.join()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"esm-{self.consumer_name}", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Finish the batch in flight, store pending checkpoints, join. False if that took longer than timeout_s or a
        checkpoint could not be stored (those records are then delivered again by the next mapping, never lost)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
            if thread.is_alive():
                # Keep the reference: the thread stops after its batch, and start() must not add a second poller.
                logger.warning("event source mapping %s did not stop within %.1fs", self.consumer_name, timeout_s)
                return False
            self._thread = None
            return self._stopped_clean
        with self._round_lock:
            return self._flush_all()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> KinesisEventSourceMapping:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run_until_idle(self, timeout_s: float = 30.0) -> bool:
        """Process until every shard has been polled since this call and had no new records; True if it got there.

        In the caller's thread when the mapping is not started (handy in tests); otherwise waits for the
        background thread. Returns False at the timeout, e.g. while a record keeps failing and there is no DLQ.
        """
        since = time.monotonic()
        deadline = since + timeout_s
        if self.running:
            with self._changed:
                while not self._idle_since(since):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or not self.running:
                        return self._idle_since(since)
                    self._changed.wait(min(remaining, 0.5))
            return True
        if self._thread is not None:  # a stopping background thread: let it finish first
            self._thread.join()
            self._thread = None
        self._stop.clear()  # a stop() from another thread ends this loop early
        while time.monotonic() < deadline and not self._stop.is_set():
            with self._round_lock:
                self._round()
            if self._idle_since(since):
                return True
            self._sleep_until_due(deadline)
        return self._idle_since(since)

    drain = run_until_idle

    def stats(self) -> dict[str, Any]:
        """Counters for tests, the CLI and progress lines; lag is Kinesis's MillisBehindLatest (records lag is not cheap)."""
        with self._lock:
            shards = list(self._shards.values())
            totals = dict(self._counts)
        per_shard = {
            s.shard_id: {
                "checkpoint": s.checkpointed,
                "position": s.position,
                "state": "finished" if s.finished else ("waiting_for_parent" if not self._parents_done(s) else "reading"),
                "millis_behind_latest": s.millis_behind,
                **s.counts,
            }
            for s in sorted(shards, key=lambda s: s.shard_id)
        }
        behind = [s.millis_behind for s in shards if s.millis_behind is not None and not s.finished]
        return {
            "stream": self.stream_name,
            "consumer": self.consumer_name,
            "records_delivered": sum(s.counts["delivered"] for s in shards),
            "records_processed": sum(s.counts["processed"] for s in shards),
            "batches": totals["batches"],
            "failed_deliveries": sum(s.counts["failed_deliveries"] for s in shards),
            "records_to_dlq": sum(s.counts["to_dlq"] for s in shards),
            "handler_errors": totals["handler_errors"],
            "transient_errors": totals["transient_errors"],
            "millis_behind_latest": max(behind) if behind else None,
            "shards": per_shard,
        }

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._round_lock:
                try:
                    self._round()
                except Exception:  # a bug must not kill the poller; the next round tries again
                    logger.exception("event source mapping %s: round failed", self.consumer_name)
                    self._stop.wait(self.poll_interval_s)
            self._sleep_until_due(None)
        with self._round_lock:
            self._stopped_clean = self._flush_all()
        with self._changed:
            self._changed.notify_all()

    def _sleep_until_due(self, deadline: float | None) -> None:
        now = time.monotonic()
        due = [s.next_poll_at for s in self._active_shards()]
        due.append(self._setup_next_at if self._needs_listing(now) else now + self.poll_interval_s)
        wake = min(due)
        if deadline is not None:
            wake = min(wake, deadline)
        if wake > now:
            self._stop.wait(min(wake - now, 1.0))

    def _round(self) -> None:
        """List shards when due, then give every due shard one poll."""
        now = time.monotonic()
        if self._needs_listing(now) and now >= self._setup_next_at:
            self._list_shards()
        for shard in self._active_shards():
            if self._stop.is_set():
                break
            if shard.next_poll_at <= time.monotonic():
                try:
                    self._poll(shard)
                except Exception:
                    logger.exception("event source mapping %s: polling %s failed", self.consumer_name, shard.shard_id)
                    self._back_off(shard)
                with self._changed:
                    self._changed.notify_all()
        self._report_progress()

    def _needs_listing(self, now: float) -> bool:
        return self._relist_now or self._listed_at is None or now - self._listed_at >= self.shard_refresh_s

    def _active_shards(self) -> list[_Shard]:
        with self._lock:
            shards = sorted(self._shards.values(), key=lambda s: s.shard_id)
        return [s for s in shards if not s.finished and self._parents_done(s)]

    def _parents_done(self, shard: _Shard) -> bool:
        """A child shard is read only after its parents are drained (or gone past retention)."""
        return all(p not in self._shards or self._shards[p].finished for p in shard.parents)

    def _idle_since(self, since: float) -> bool:
        """Every readable shard was polled at or after `since` and found nothing new (a child shard waiting for
        its open parents cannot be read, so it does not count)."""
        if self._listed_at is None:
            return False
        return all(
            s.caught_up_at is not None and s.caught_up_at >= since and s.dead_letter is None
            and s.position == s.checkpointed
            for s in self._active_shards()
        )

    # ------------------------------------------------------------------ shards

    def _list_shards(self) -> None:
        try:
            if self.stream_arn is None:
                with translate_aws_errors(f"describing stream {self.stream_name}"):
                    summary = self._kinesis.describe_stream_summary(StreamName=self.stream_name)
                self.stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
            listed: list[dict[str, Any]] = []
            kwargs: dict[str, Any] = {"StreamName": self.stream_name}
            while True:
                with translate_aws_errors(f"listing shards of {self.stream_name}"):
                    page = self._kinesis.list_shards(**kwargs)
                listed.extend(page.get("Shards", []))
                token = page.get("NextToken")
                if not token:
                    break
                kwargs = {"NextToken": token}
        except DependencyError as exc:
            self._setup_errors += 1
            self._count("transient_errors")
            self._setup_next_at = time.monotonic() + self._backoff_delay(self._setup_errors)
            logger.warning("event source mapping %s: %s (retrying)", self.consumer_name, exc)
            return
        self._setup_errors = 0
        with self._lock:
            for raw in listed:
                shard_id = raw["ShardId"]
                closed = "EndingSequenceNumber" in raw.get("SequenceNumberRange", {})
                known = self._shards.get(shard_id)
                if known is None:
                    parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p)
                    self._shards[shard_id] = _Shard(shard_id, parents=parents, closed=closed)
                else:
                    known.closed = known.closed or closed
        self._listed_at = time.monotonic()
        self._relist_now = False

    # ------------------------------------------------------------------ one poll of one shard

    def _poll(self, shard: _Shard) -> None:
        started = time.monotonic()
        try:
            if not shard.loaded:
                self._load_checkpoint(shard)
            self._flush(shard)
            if shard.iterator is None:
                shard.iterator = self._new_iterator(shard)
            try:
                with translate_aws_errors(f"reading {shard.shard_id} of {self.stream_name}"):
                    response = self._kinesis.get_records(ShardIterator=shard.iterator, Limit=self.batch_size)
            except DependencyError as exc:
                if _error_code(exc) in _ITERATOR_INVALIDATING:
                    shard.iterator = None
                raise
        except DependencyError as exc:
            self._count("transient_errors")
            logger.warning("event source mapping %s: %s (retrying %s)", self.consumer_name, exc, shard.shard_id)
            self._back_off(shard)
            return
        shard.errors_in_row = 0
        records = response.get("Records") or []
        shard.millis_behind = response.get("MillisBehindLatest")
        shard.iterator = response.get("NextShardIterator")
        if not records:
            self._on_empty(shard, started)
            return
        shard.caught_up_at = None
        self._deliver(shard, records)
        try:
            self._flush(shard)
        except DependencyError as exc:
            self._count("transient_errors")
            logger.warning("event source mapping %s: %s (retrying %s)", self.consumer_name, exc, shard.shard_id)
            self._back_off(shard)

    def _on_empty(self, shard: _Shard, started: float) -> None:
        # AWS ends a drained closed shard with a null NextShardIterator; moto keeps handing out iterators,
        # so an empty read of a shard listed as closed, with nothing behind, also counts as drained.
        if shard.iterator is None or (shard.closed and not shard.millis_behind):
            shard.finished = True
            self._relist_now = True  # its children, if any, are listed now
            logger.info("event source mapping %s: %s drained", self.consumer_name, shard.shard_id)
            return
        if not shard.millis_behind:
            shard.caught_up_at = started
        shard.next_poll_at = time.monotonic() + self.poll_interval_s

    def _deliver(self, shard: _Shard, records: list[dict[str, Any]]) -> None:
        """Invoke the handler with one batch and move the position, failure count and DLQ state accordingly."""
        event_records = [self._event_record(shard.shard_id, r) for r in records]
        failed_index, reason = self._invoke({"Records": event_records})
        self._count("batches")
        shard.counts["delivered"] += len(records)
        ok = len(records) if failed_index is None else failed_index
        if ok:
            shard.position = event_records[ok - 1]["kinesis"]["sequenceNumber"]
            shard.counts["processed"] += ok
            with self._lock:
                self._window_records += ok
        if failed_index is None:
            shard.retry_from = shard.fail_seq = None
            shard.fail_attempts = 0
            shard.next_poll_at = time.monotonic()
            return
        failed = event_records[failed_index]
        seq = failed["kinesis"]["sequenceNumber"]
        shard.counts["failed_deliveries"] += 1
        shard.fail_attempts = shard.fail_attempts + 1 if shard.fail_seq == seq else 1
        shard.fail_seq = seq
        shard.retry_from = seq
        shard.iterator = None  # re-deliver from the failed record: a new iterator AT_SEQUENCE_NUMBER
        logger.warning("event source mapping %s: %s record %s failed (attempt %d/%d): %s", self.consumer_name,
                       shard.shard_id, seq, shard.fail_attempts, self.max_attempts, reason)
        if shard.fail_attempts >= self.max_attempts and self.dlq_url is not None:
            shard.dead_letter = {
                "record": failed,
                "shard_id": shard.shard_id,
                "sequence_number": seq,
                "attempts": shard.fail_attempts,
                "reason": reason,
                "stream": self.stream_name,
                "consumer": self.consumer_name,
            }
            shard.next_poll_at = time.monotonic()
        else:
            shard.next_poll_at = time.monotonic() + self._backoff_delay(shard.fail_attempts)

    def _invoke(self, event: dict[str, Any]) -> tuple[int | None, str]:
        """Call the handler; the index of the first record to re-deliver (None: all succeeded) and why."""
        context = LocalLambdaContext(self.consumer_name, self.region)
        try:
            response = self.handler(event, context)
        except Exception as exc:
            self._count("handler_errors")
            logger.warning("event source mapping %s: handler raised", self.consumer_name, exc_info=True)
            return 0, f"{type(exc).__name__}: {exc}"
        if not response:
            return None, ""
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return None, ""
        index = {r["kinesis"]["sequenceNumber"]: i for i, r in enumerate(event["Records"])}
        positions = []
        for failure in failures:
            item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not item or item not in index:
                return 0, f"invalid batchItemFailures entry {failure!r}: whole batch failed"
            positions.append(index[item])
        return min(positions), PARTIAL_FAILURE_REASON

    def _event_record(self, shard_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """One element of Records[] exactly as Lambda builds it from a GetRecords record."""
        arrival = record.get("ApproximateArrivalTimestamp")
        seq = record["SequenceNumber"]
        return {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": record["PartitionKey"],
                "sequenceNumber": seq,
                "data": base64.b64encode(record["Data"]).decode("ascii"),
                "approximateArrivalTimestamp": arrival.timestamp() if hasattr(arrival, "timestamp") else float(arrival or 0),
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": f"{shard_id}:{seq}",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": INVOKE_ROLE_ARN,
            "awsRegion": self.region,
            "eventSourceARN": self.stream_arn,
        }

    # ------------------------------------------------------------------ checkpoints, DLQ, iterators

    def _load_checkpoint(self, shard: _Shard) -> None:
        with translate_aws_errors(f"reading checkpoint of {shard.shard_id} from {self.checkpoint_table}"):
            response = self._dynamodb.get_item(
                TableName=self.checkpoint_table,
                Key={"consumer": {"S": self.consumer_name}, "shard_id": {"S": shard.shard_id}},
                ConsistentRead=True,
            )
        item = response.get("Item")
        shard.position = shard.checkpointed = item["sequence_number"]["S"] if item else None
        shard.loaded = True

    def _new_iterator(self, shard: _Shard) -> str:
        kwargs: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard.shard_id}
        if shard.retry_from is not None:
            kwargs.update(ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=shard.retry_from)
        elif shard.position is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=shard.position)
        else:
            kwargs.update(ShardIteratorType=self.starting_position)
        with translate_aws_errors(f"getting an iterator for {shard.shard_id} of {self.stream_name}"):
            return self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    def _flush(self, shard: _Shard) -> None:
        """Send a pending dead letter, then store the checkpoint; raises DependencyError so the poll backs off."""
        if shard.dead_letter is not None:
            letter = shard.dead_letter
            with translate_aws_errors(f"sending {shard.shard_id} record {letter['sequence_number']} to the DLQ"):
                self._sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(letter, default=str))
            logger.warning("event source mapping %s: %s record %s sent to the DLQ after %d attempts",
                           self.consumer_name, shard.shard_id, letter["sequence_number"], letter["attempts"])
            shard.counts["to_dlq"] += 1
            shard.dead_letter = None
            shard.position = letter["sequence_number"]
            shard.retry_from = shard.fail_seq = None
            shard.fail_attempts = 0
            shard.iterator = None  # resume AFTER the dead-lettered record
        if shard.position is not None and shard.position != shard.checkpointed:
            with translate_aws_errors(f"storing checkpoint of {shard.shard_id} in {self.checkpoint_table}"):
                self._dynamodb.put_item(
                    TableName=self.checkpoint_table,
                    Item={
                        "consumer": {"S": self.consumer_name},
                        "shard_id": {"S": shard.shard_id},
                        "sequence_number": {"S": shard.position},
                        "updated_at": {"N": f"{time.time():.3f}"},
                    },
                )
            shard.checkpointed = shard.position

    def _flush_all(self) -> bool:
        clean = True
        with self._lock:
            shards = list(self._shards.values())
        for shard in shards:
            try:
                self._flush(shard)
            except DependencyError as exc:
                clean = False
                logger.warning("event source mapping %s: %s at shutdown; it will be re-delivered", self.consumer_name, exc)
        return clean

    # ------------------------------------------------------------------ backoff, counters, progress

    def _backoff_delay(self, failures: int) -> float:
        return min(self.poll_interval_s * 2 ** max(failures - 1, 0), _MAX_BACKOFF_S)

    def _back_off(self, shard: _Shard) -> None:
        shard.errors_in_row += 1
        shard.caught_up_at = None
        shard.next_poll_at = time.monotonic() + self._backoff_delay(shard.errors_in_row)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _report_progress(self) -> None:
        now = time.monotonic()
        elapsed = now - self._window_started
        if elapsed < self.progress_interval_s:
            return
        with self._lock:
            records, self._window_records = self._window_records, 0
        self._window_started = now
        if not records or self.on_progress is None:
            return
        stats = self.stats()
        behind = stats["millis_behind_latest"]
        line = (
            f"{self.consumer_name} <- {self.stream_name}: {records:,} records in {elapsed:.0f}s "
            f"({records / elapsed:,.1f} records/s), {stats['records_processed']:,} in all, "
            f"{stats['failed_deliveries']} failed deliveries, {stats['records_to_dlq']} to DLQ"
            + (f", {behind} ms behind" if behind else "")
        )
        try:
            self.on_progress(line)
        except Exception:
            logger.exception("event source mapping %s: on_progress failed", self.consumer_name)
