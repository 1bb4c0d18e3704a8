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
- `BisectBatchOnFunctionError`: a batch that fails is retried once from its failed record as it is (a
  partial failure resumes there, a passing glitch clears); when it fails again at the same record it is
  split, the first half delivered alone, then the rest, and so on until the failing record is delivered
  alone. The records before it are applied in order on the way;
- `MaximumRetryAttempts` + on-failure destination: a record that fails `max_attempts` times delivered
  alone goes to the dead-letter queue (`SqsDeadLetterQueue`: by reference through S3 when too large for
  SQS) with a short reason, and the shard moves past it; without a DLQ it retries forever (an accepted
  event is never dropped). A failed DLQ send is retried, never skipped;
- systemic failures: a handler raising `DependencyError` (a store or the DLQ down or throttled) gets the
  same batch again with capped exponential backoff, forever: no bisect, no dead letters (every record
  would be bad while the store is down). The shard shows `stalled` with the reason meanwhile;
- lag, visible even while a batch keeps failing: per shard the iterator age (age of the oldest record of
  the batch just delivered, growing while it is retried), MillisBehindLatest, consecutive failures,
  stalled-since and the last error (`stats()`; `/health` in `rtrec run`; local metrics when given a sink);
- resharding: shards are re-listed every ~30 s (and at once when a closed shard is drained), and a child
  shard is read only after its parents are drained, as Lambda does.

A batching window (`batching_window_s`, as MaximumBatchingWindowInSeconds): after a batch smaller than the
batch size, the shard is read again only once the window has passed, so a trickle of records arrives in batches
of a window's worth rather than one by one, each paying the handler's per-batch reads and writes.

What it does not: no parallelization factor (one batch in flight per shard), no tumbling windows, no
MaximumRecordAgeInSeconds, no enhanced fan-out
consumers, no event filtering, no leases: two mappings with the same consumer name would both read every
shard. Unlike AWS, which sends only batch metadata to the on-failure destination (the records stay in the
stream until retention ends), this sends the one failing record itself (replayable by `rtrec dlq
redrive`) and goes on with the records after it.

One thread, round-robin over the shards (not one thread per shard): in AWS concurrent shards run in
separate execution environments, which threads of one process cannot emulate; a single warm container
handles one event at a time, so the in-process handler (module-level state such as the online ranker)
never sees two invocations at once and needs no locks. Each round gives every due shard at most one
batch, so a hot shard cannot starve the others; with the moto server in the same process (GIL, 2 cores)
more threads would add little throughput.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.adapters.aws.sqs import SqsDeadLetterQueue
from rtrec.errors import DependencyError, short_reason
from rtrec.ports import DeadLetterQueue

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], "dict[str, Any] | None"]
StartingPosition = Literal["TRIM_HORIZON", "LATEST"]

LOCAL_ACCOUNT = "123456789012"  # moto's default account, also what AWS's sample events show
INVOKE_ROLE_ARN = f"arn:aws:iam::{LOCAL_ACCOUNT}:role/rtrec-local"
PARTIAL_FAILURE_REASON = "reported in batchItemFailures"
DLQ_SOURCE = "event_source_mapping"
_MAX_BATCH_SIZE = 10_000  # Kinesis GetRecords limit
_MAX_BACKOFF_S = 5.0
_FUNCTION_TIMEOUT_S = 60.0
# Errors after which a shard iterator cannot be reused; any other failure keeps it (an iterator is a position).
_ITERATOR_INVALIDATING = {"ExpiredIteratorException", "InvalidArgumentException", "ResourceNotFoundException"}


class LocalLambdaContext:
    """The part of Lambda's context object that handlers and Powertools read."""

    def __init__(
        self, function_name: str, region: str, *, memory_limit_in_mb: int = 512, timeout_s: float = _FUNCTION_TIMEOUT_S
    ) -> None:
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
    fail_seq: str | None = None  # first failed record of the latest failed delivery
    fail_attempts: int = 0  # failed deliveries of fail_seq alone
    window: int | None = None  # at most this many records in the next delivery (bisection); None: batch_size
    suspect_left: int | None = None  # records left of the range being bisected
    dead_letter: dict[str, Any] | None = None  # DLQ message waiting to be sent
    finished: bool = False
    next_poll_at: float = 0.0
    errors_in_row: int = 0  # failed reads, checkpoints and DLQ sends in a row
    failures_in_row: int = 0  # failed deliveries in a row (record-level or systemic)
    systemic_in_row: int = 0  # of which the handler raised DependencyError
    stalled_since: float | None = None  # wall clock of the first failure of the current streak
    last_error: str | None = None
    head_arrival: float | None = None  # arrival time of the oldest record of the batch last delivered
    iterator_age_ms: float | None = None
    caught_up_at: float | None = None  # start of the last poll that found nothing new
    millis_behind: int | None = None
    counts: dict[str, int] = field(
        default_factory=lambda: {
            "delivered": 0,
            "processed": 0,
            "failed_deliveries": 0,
            "to_dlq": 0,
            "bisections": 0,
            "systemic_failures": 0,
        }
    )

    @property
    def stuck(self) -> bool:
        return self.stalled_since is not None


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
        batching_window_s: float = 0.0,
        starting_position: StartingPosition = "TRIM_HORIZON",
        kinesis_client: Any = None,
        dynamodb_client: Any = None,
        sqs_client: Any = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        on_progress: Callable[[str], None] | None = None,
        shard_refresh_s: float = 30.0,
        progress_interval_s: float = 10.0,
        dead_letter_queue: DeadLetterQueue | None = None,
        dead_letter_bucket: str | None = None,
        s3_client: Any = None,
        max_backoff_s: float = _MAX_BACKOFF_S,
        metrics: Any = None,
    ) -> None:
        """`dead_letter_queue` (any DeadLetterQueue) or `dlq_url` (SQS, with `dead_letter_bucket` for letters too
        large for SQS) enables dead-lettering; `metrics` (a Metrics sink) gets the local lag and failure metrics."""
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
        if batching_window_s < 0:
            raise ValueError(f"batching_window_s must not be negative, got {batching_window_s}")
        self.batching_window_s = batching_window_s
        self.starting_position = starting_position
        self.region = region
        self.on_progress = on_progress
        self.shard_refresh_s = shard_refresh_s
        self.progress_interval_s = progress_interval_s
        self.max_backoff_s = max_backoff_s
        self._kinesis = kinesis_client if kinesis_client is not None else aws_client("kinesis", endpoint_url, region)
        self._dynamodb = dynamodb_client if dynamodb_client is not None else aws_client("dynamodb", endpoint_url, region)
        self._dlq: DeadLetterQueue | None = dead_letter_queue
        if self._dlq is None and dlq_url is not None:
            self._dlq = SqsDeadLetterQueue(
                client=sqs_client if sqs_client is not None else aws_client("sqs", endpoint_url, region),
                queue_url=dlq_url,
                bucket=dead_letter_bucket,
                s3_client=s3_client,
                endpoint_url=endpoint_url,
                region=region,
            )
        self._metrics = metrics
        if metrics is not None and hasattr(metrics, "watch"):  # read at scrape time: they move while a shard is stuck
            metrics.watch("MappingIteratorAge", lambda: self.stats()["iterator_age_ms"])
            metrics.watch("MappingStalledShards", lambda: len(self.stats()["stalled_shards"]))

        self.stream_arn: str | None = None
        self._shards: dict[str, _Shard] = {}
        self._listed_at: float | None = None  # monotonic time of the last successful list_shards
        self._relist_now = True
        self._setup_next_at = 0.0
        self._setup_errors = 0
        self._counts = {"batches": 0, "transient_errors": 0, "handler_errors": 0, "failed_batches": 0}
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
        """Counters and lag for tests, the CLI, /health and progress lines.

        Per shard: iterator age (age of the oldest record of the batch last delivered; live, growing, while a
        batch keeps failing; 0 once caught up), Kinesis' MillisBehindLatest, consecutive failures, stalled-since
        (epoch seconds) and the last error. Totals: batches, records, failed_batches, dead_lettered, bisections,
        and lag_seconds (the larger of the two lags, max over shards)."""
        with self._lock:
            shards = list(self._shards.values())
            totals = dict(self._counts)
        now = time.time()
        per_shard: dict[str, dict[str, Any]] = {}
        for s in sorted(shards, key=lambda s: s.shard_id):
            per_shard[s.shard_id] = {
                "checkpoint": s.checkpointed,
                "position": s.position,
                "state": self._state(s),
                "iterator_age_ms": self._iterator_age_ms(s, now),
                "millis_behind_latest": s.millis_behind,
                "consecutive_failures": s.failures_in_row + s.errors_in_row,
                "stalled_since": s.stalled_since,
                "last_error": s.last_error,
                **s.counts,
            }
        live = [v for s, v in zip(sorted(shards, key=lambda s: s.shard_id), per_shard.values()) if not s.finished]
        behind = [v["millis_behind_latest"] for v in live if v["millis_behind_latest"] is not None]
        ages = [v["iterator_age_ms"] for v in live if v["iterator_age_ms"] is not None]
        lags = [*behind, *ages]
        processed = sum(s.counts["processed"] for s in shards)
        failed = sum(s.counts["failed_deliveries"] for s in shards)
        to_dlq = sum(s.counts["to_dlq"] for s in shards)
        return {
            "stream": self.stream_name,
            "consumer": self.consumer_name,
            "batches": totals["batches"],
            "records": processed,
            "failed_batches": failed,
            "dead_lettered": to_dlq,
            "bisections": sum(s.counts["bisections"] for s in shards),
            "systemic_failures": sum(s.counts["systemic_failures"] for s in shards),
            "records_delivered": sum(s.counts["delivered"] for s in shards),
            "records_processed": processed,
            "failed_deliveries": failed,
            "records_to_dlq": to_dlq,
            "handler_errors": totals["handler_errors"],
            "transient_errors": totals["transient_errors"],
            "millis_behind_latest": max(behind) if behind else None,
            "iterator_age_ms": max(ages) if ages else None,
            "lag_seconds": max(lags) / 1000.0 if lags else None,
            "stalled_shards": {sid: v["last_error"] for sid, v in per_shard.items() if v["stalled_since"] is not None},
            "shards": per_shard,
        }

    def _state(self, shard: _Shard) -> str:
        if shard.finished:
            return "finished"
        if not self._parents_done(shard):
            return "waiting_for_parent"
        if shard.stuck:  # systemic (a dependency down) vs one record being isolated and retried
            return "stalled" if shard.systemic_in_row or shard.errors_in_row else "retrying"
        return "reading"

    @staticmethod
    def _iterator_age_ms(shard: _Shard, now: float) -> float | None:
        if shard.head_arrival is None:
            return None
        if shard.stuck or shard.dead_letter is not None:  # the batch is still waiting: its age keeps growing
            return max(0.0, (now - shard.head_arrival) * 1000.0)
        if shard.caught_up_at is not None:
            return 0.0
        return shard.iterator_age_ms

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
                except Exception as exc:
                    logger.exception("event source mapping %s: polling %s failed", self.consumer_name, shard.shard_id)
                    self._back_off(shard, f"{type(exc).__name__}: {exc}")
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
            s.caught_up_at is not None and s.caught_up_at >= since and s.dead_letter is None and s.position == s.checkpointed
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
                    response = self._kinesis.get_records(ShardIterator=shard.iterator, Limit=shard.window or self.batch_size)
            except DependencyError as exc:
                if _error_code(exc) in _ITERATOR_INVALIDATING:
                    shard.iterator = None
                raise
        except DependencyError as exc:
            self._count("transient_errors")
            logger.warning("event source mapping %s: %s (retrying %s)", self.consumer_name, exc, shard.shard_id)
            self._back_off(shard, str(exc))
            return
        shard.errors_in_row = 0
        if not shard.failures_in_row and shard.dead_letter is None:
            shard.stalled_since = None
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
            self._back_off(shard, str(exc))

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
        """Invoke the handler with one batch and move the position, failure, bisection and DLQ state accordingly."""
        event_records = [self._event_record(shard.shard_id, r) for r in records]
        shard.head_arrival = event_records[0]["kinesis"]["approximateArrivalTimestamp"] or None
        shard.iterator_age_ms = (
            max(0.0, (time.time() - shard.head_arrival) * 1000.0) if shard.head_arrival is not None else None
        )
        failed_index, reason, systemic = self._invoke({"Records": event_records})
        self._count("batches")
        shard.counts["delivered"] += len(records)
        if systemic:
            self._systemic_failure(shard, event_records, reason)
            return
        shard.systemic_in_row = 0
        ok = len(records) if failed_index is None else failed_index
        if ok:
            shard.position = event_records[ok - 1]["kinesis"]["sequenceNumber"]
            shard.counts["processed"] += ok
            with self._lock:
                self._window_records += ok
            if shard.suspect_left is not None:
                shard.suspect_left -= ok
        if failed_index is None:
            self._succeeded(shard, full=len(records) >= (shard.window or self.batch_size))
            return
        self._record_failure(shard, event_records, failed_index, reason)

    def _succeeded(self, shard: _Shard, *, full: bool = True) -> None:
        shard.retry_from = shard.fail_seq = None
        shard.fail_attempts = shard.failures_in_row = 0
        shard.stalled_since = shard.last_error = None
        if shard.suspect_left is not None and shard.suspect_left > 0:
            shard.window = shard.suspect_left  # bisection: the first half passed, now the rest of the range
        else:
            shard.window = shard.suspect_left = None
        # A batch that was not full caught up with the shard: the next one gathers for the batching window.
        wait = 0.0 if full or shard.window is not None else self.batching_window_s
        shard.next_poll_at = time.monotonic() + wait

    def _systemic_failure(self, shard: _Shard, event_records: list[dict[str, Any]], reason: str) -> None:
        """A dependency is down: the same batch again, later; the records are not to blame."""
        shard.counts["failed_deliveries"] += 1
        shard.counts["systemic_failures"] += 1
        self._failed_metric()
        shard.systemic_in_row += 1
        self._mark_failing(shard, reason)
        shard.retry_from = event_records[0]["kinesis"]["sequenceNumber"]
        shard.window = len(event_records)  # the same records, however many arrived since
        shard.iterator = None
        delay = self._backoff_delay(shard.systemic_in_row)
        logger.warning(
            "event source mapping %s: %s stalled (%d in a row, next try in %.2fs): %s",
            self.consumer_name,
            shard.shard_id,
            shard.systemic_in_row,
            delay,
            reason,
        )
        shard.next_poll_at = time.monotonic() + delay

    def _record_failure(self, shard: _Shard, event_records: list[dict[str, Any]], failed_index: int, reason: str) -> None:
        """Retry from the failed record: as it is once, then bisected until it is alone, then to the DLQ."""
        failed = event_records[failed_index]
        seq = failed["kinesis"]["sequenceNumber"]
        rest = len(event_records) - failed_index
        again = shard.fail_seq == seq
        shard.counts["failed_deliveries"] += 1
        self._failed_metric()
        self._mark_failing(shard, reason)
        if not again:
            shard.fail_attempts = 0
        shard.fail_seq = seq
        shard.retry_from = seq
        shard.iterator = None  # re-deliver from the failed record: a new iterator AT_SEQUENCE_NUMBER
        delay = 0.0
        if len(event_records) == 1:
            shard.fail_attempts += 1  # only a delivery of the record alone counts toward max_attempts
            logger.warning(
                "event source mapping %s: %s record %s failed alone (attempt %d/%d): %s",
                self.consumer_name,
                shard.shard_id,
                seq,
                shard.fail_attempts,
                self.max_attempts,
                reason,
            )
            if shard.fail_attempts >= self.max_attempts and self._dlq is not None:
                shard.dead_letter = {
                    "reason": short_reason(reason),
                    "source": DLQ_SOURCE,
                    "event_id": failed["eventID"],
                    "stream": self.stream_name,
                    "consumer": self.consumer_name,
                    "shard_id": shard.shard_id,
                    "sequence_number": seq,
                    "attempts": shard.fail_attempts,
                    "record": failed,
                }
            else:
                delay = self._backoff_delay(shard.fail_attempts)
        elif rest > 1 and not again and shard.suspect_left is None:
            # First failure here: once more as it is (a partial failure resumes at the record, a glitch clears).
            shard.window = rest
            delay = self._backoff_delay(1)
        else:
            # Failed again (or inside a range being bisected, or the last record of its batch): split.
            shard.window = max(1, (rest + 1) // 2)
            shard.suspect_left = rest
            shard.counts["bisections"] += 1
            logger.warning(
                "event source mapping %s: %s bisecting at %s: %d of %d records next",
                self.consumer_name,
                shard.shard_id,
                seq,
                shard.window,
                rest,
            )
        shard.next_poll_at = time.monotonic() + delay

    def _mark_failing(self, shard: _Shard, reason: str) -> None:
        shard.failures_in_row += 1
        shard.last_error = short_reason(reason)
        if shard.stalled_since is None:
            shard.stalled_since = time.time()

    def _failed_metric(self) -> None:
        self._count("failed_batches")
        if self._metrics is not None:
            try:
                self._metrics.put("MappingFailedBatches", 1, "Count")
            except Exception:  # metrics never stop the consumer
                logger.exception("event source mapping %s: metric failed", self.consumer_name)

    def _invoke(self, event: dict[str, Any]) -> tuple[int | None, str, bool]:
        """Call the handler: the index of the first record to re-deliver (None: all succeeded), why, and whether
        the failure is systemic (the handler raised DependencyError: a dependency, not a record, failed)."""
        context = LocalLambdaContext(self.consumer_name, self.region)
        try:
            response = self.handler(event, context)
        except DependencyError as exc:
            self._count("handler_errors")
            logger.warning("event source mapping %s: handler raised a dependency error: %s", self.consumer_name, exc)
            return 0, f"{type(exc).__name__}: {exc}", True
        except Exception as exc:
            self._count("handler_errors")
            logger.warning("event source mapping %s: handler raised", self.consumer_name, exc_info=True)
            return 0, f"{type(exc).__name__}: {exc}", False
        if not response:
            return None, "", False
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return None, "", False
        index = {r["kinesis"]["sequenceNumber"]: i for i, r in enumerate(event["Records"])}
        positions = []
        for failure in failures:
            item = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if not item or item not in index:
                return 0, short_reason(f"invalid batchItemFailures entry {failure!r}: whole batch failed"), False
            positions.append(index[item])
        return min(positions), PARTIAL_FAILURE_REASON, False

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
                "approximateArrivalTimestamp": arrival.timestamp() if isinstance(arrival, datetime) else float(arrival or 0),
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
            iterator: str = self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        return iterator

    def _flush(self, shard: _Shard) -> None:
        """Send a pending dead letter, then store the checkpoint; raises DependencyError so the poll backs off."""
        if shard.dead_letter is not None and self._dlq is not None:
            letter = shard.dead_letter
            try:
                self._dlq.send(letter)  # by reference when too large for SQS
            except DependencyError:
                raise
            except Exception as exc:  # a DLQ adapter's bug or an untranslated error: systemic too, never skip
                raise DependencyError(
                    f"sending {shard.shard_id} record {letter['sequence_number']} to the DLQ "
                    f"failed: {type(exc).__name__}: {exc}"
                ) from exc
            logger.warning(
                "event source mapping %s: %s record %s sent to the DLQ after %d attempts",
                self.consumer_name,
                shard.shard_id,
                letter["sequence_number"],
                letter["attempts"],
            )
            shard.counts["to_dlq"] += 1
            shard.dead_letter = None
            shard.position = letter["sequence_number"]
            shard.retry_from = shard.fail_seq = None
            shard.fail_attempts = shard.failures_in_row = shard.errors_in_row = 0
            shard.stalled_since = shard.last_error = None
            if shard.suspect_left is not None:
                shard.suspect_left -= 1
            if shard.suspect_left is not None and shard.suspect_left > 0:
                shard.window = shard.suspect_left  # the rest of the bisected range, whole
            else:
                shard.window = shard.suspect_left = None
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
        return min(self.poll_interval_s * 2.0 ** min(max(failures - 1, 0), 30), self.max_backoff_s)

    def _back_off(self, shard: _Shard, reason: str = "") -> None:
        shard.errors_in_row += 1
        shard.caught_up_at = None
        shard.last_error = short_reason(reason) if reason else shard.last_error
        if shard.stalled_since is None:
            shard.stalled_since = time.time()
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
        if self.on_progress is None:
            return
        stats = self.stats()
        if not records and not stats["stalled_shards"]:  # a stuck shard is reported even when nothing moves
            return
        behind = stats["millis_behind_latest"]
        line = (
            f"{self.consumer_name} <- {self.stream_name}: {records:,} records in {elapsed:.0f}s "
            f"({records / elapsed:,.1f} records/s), {stats['records_processed']:,} in all, "
            f"{stats['failed_deliveries']} failed deliveries, {stats['records_to_dlq']} to DLQ"
            + (f", {behind} ms behind" if behind else "")
            + "".join(f"; {shard} stalled: {error}" for shard, error in stats["stalled_shards"].items())
        )
        try:
            self.on_progress(line)
        except Exception:
            logger.exception("event source mapping %s: on_progress failed", self.consumer_name)
