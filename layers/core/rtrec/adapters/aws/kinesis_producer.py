"""KinesisImpressionProducer: impressions onto Kinesis off the request path, batched as the Kinesis Producer Library
aggregates (the ImpressionQueue port).

`offer` encodes the impression and appends it to a bounded in-memory buffer (records and bytes), and returns: no
network call on the request path. A sender sends the buffer with PutRecords (at most 500 records / 5 MiB a call)
once it holds a full call's worth or its oldest record has waited `linger_s`; only the records Kinesis refused are
sent again, with exponential backoff, and they go back to the head of the buffer, so an outage keeps them there
(bounded) until it ends. A full buffer never blocks: it drops the oldest record (or the newest: `overflow`) and
counts it (`ImpressionsDropped`). `flush(timeout_s)` drains synchronously; `close(timeout_s)` flushes, stops the
sender and counts what is left as dropped.

The sender is a daemon thread (uvicorn), or none at all (`background=False`, Lambda: the runtime freezes threads
between invocations, so the handler flushes at the end of each invocation instead). Memory is bounded by
`max_records` / `max_bytes` plus the one call in flight.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rtrec.adapters.aws.kinesis import (
    PUT_RECORDS_BYTES,
    PUT_RECORDS_LIMIT,
    KinesisEventStream,
    entry_bytes,
    record_entry,
)
from rtrec.domain.events import StreamMessage
from rtrec.errors import InvalidInputError
from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry

Overflow = Literal["drop_oldest", "drop_newest"]


@dataclass(frozen=True)
class ProducerStats:
    """Counters since start: what is buffered now, what was sent, dropped and re-sent, and PutRecords calls made."""

    queued: int
    queued_bytes: int
    in_flight: int
    sent: int
    dropped: int
    resent: int
    put_calls: int
    failed_calls: int


@dataclass
class _Record:
    entry: dict[str, Any]
    size: int
    enqueued_at: float


class KinesisImpressionProducer:
    """The ImpressionQueue port over a KinesisEventStream's single PutRecords calls."""

    def __init__(
        self,
        stream: KinesisEventStream,
        *,
        max_records: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
        linger_s: float = 0.05,
        batch_records: int = PUT_RECORDS_LIMIT,
        overflow: Overflow = "drop_oldest",
        background: bool = True,
        telemetry: Telemetry = NO_TELEMETRY,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= batch_records <= PUT_RECORDS_LIMIT:
            raise ValueError(f"batch_records must be 1 to {PUT_RECORDS_LIMIT}, got {batch_records}")
        if max_records < 1 or max_bytes < 1 or linger_s < 0:
            raise ValueError("max_records and max_bytes must be positive, linger_s not negative")
        self._stream = stream
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._linger = linger_s
        self._batch_records = batch_records
        self._overflow = overflow
        self._background = background
        self._telemetry = telemetry
        self._backoff = backoff_s
        self._max_backoff = max_backoff_s
        self._clock = clock
        self._queue: deque[_Record] = deque()
        self._bytes = 0
        self._cond = threading.Condition(threading.Lock())  # guards the buffer and the counters
        self._send_lock = threading.Lock()  # one PutRecords round at a time (the thread, or a flush)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._failures = 0  # consecutive failed rounds, for the backoff
        self._retry_at = 0.0
        self._in_flight = 0
        self._sent = self._dropped = self._resent = self._put_calls = self._failed_calls = 0

    # -- the request path --------------------------------------------------------------------------------------

    def offer(self, message: StreamMessage) -> bool:
        """Queue `message` without blocking; False when it, or an older record to make room, was dropped."""
        try:
            entry = record_entry(message)
        except InvalidInputError:  # over Kinesis' 1 MiB per record: it could never be sent
            self._count_dropped(1)
            return False
        record = _Record(entry, entry_bytes(entry), self._clock())
        with self._cond:
            if (
                self._closed
                or record.size > self._max_bytes
                or (self._overflow == "drop_newest" and self._over_bounds(1, record.size))
            ):
                dropped, accepted = 1, False
            else:
                dropped = 0
                while self._queue and self._over_bounds(1, record.size):
                    self._bytes -= self._queue.popleft().size
                    dropped += 1
                self._queue.append(record)
                self._bytes += record.size
                accepted = dropped == 0
                if len(self._queue) == 1 or self._call_is_full():
                    self._cond.notify()
            self._dropped += dropped
            if self._background and self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="impression-producer", daemon=True)
                self._thread.start()
        if dropped:
            self._telemetry.impressions_dropped(dropped)
        return accepted

    # -- draining ----------------------------------------------------------------------------------------------

    def flush(self, timeout_s: float) -> int:
        """Send every buffered record, re-sending refused ones with backoff, for at most `timeout_s` (a call already
        under way is not interrupted); the number of records still buffered (kept for a later flush)."""
        deadline = self._clock() + timeout_s
        try:
            while True:
                with self._cond:
                    pending, in_flight, retry_at = len(self._queue), self._in_flight, self._retry_at
                if not pending and not in_flight:
                    return 0
                now = self._clock()
                if now >= deadline or (pending and retry_at >= deadline):
                    return pending + in_flight
                if pending and retry_at > now:
                    time.sleep(retry_at - now)
                    continue
                self._send_round(timeout_s=deadline - now)  # waits for the thread's call in flight, if any
        finally:
            self._telemetry.impression_queue(self.depth)

    def close(self, timeout_s: float) -> int:
        """Stop the sender, flush for at most `timeout_s`, and count what is left as dropped (returned). Later
        offers are dropped and counted."""
        deadline = self._clock() + timeout_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=max(0.0, deadline - self._clock()))
        self.flush(max(0.0, deadline - self._clock()))
        with self._cond:
            self._closed = True
            left = len(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._dropped += left
        if left:
            self._telemetry.impressions_dropped(left)
        self._telemetry.impression_queue(0)
        return left

    @property
    def depth(self) -> int:
        """Records buffered or in a PutRecords call now."""
        with self._cond:
            return len(self._queue) + self._in_flight

    def stats(self) -> ProducerStats:
        with self._cond:
            return ProducerStats(
                len(self._queue),
                self._bytes,
                self._in_flight,
                self._sent,
                self._dropped,
                self._resent,
                self._put_calls,
                self._failed_calls,
            )

    # -- the sender --------------------------------------------------------------------------------------------

    def _run(self) -> None:
        """The background sender: a round when a call's worth is buffered or the oldest record has lingered."""
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = self._clock()
                    if not self._queue:
                        self._cond.wait()
                        continue
                    due = (
                        self._retry_at
                        if self._call_is_full()
                        else max(self._queue[0].enqueued_at + self._linger, self._retry_at)
                    )
                    if now >= due:
                        break
                    self._cond.wait(due - now)
            self._send_round()
            self._telemetry.impression_queue(self.depth)

    def _send_round(self, timeout_s: float | None = None) -> None:
        """One PutRecords call of the buffer's head; refused records go back to the head, and the next round waits
        out the backoff."""
        if not self._send_lock.acquire(timeout=-1 if timeout_s is None else max(0.0, timeout_s)):
            return
        try:
            with self._cond:
                batch = self._take()
                self._in_flight = len(batch)
            if not batch:
                return
            try:
                refused = self._stream.put_records_once([r.entry for r in batch])
                failed_call = False
            except Exception:  # any error: the stream is down (DependencyError) or worse: keep them, retry
                refused, failed_call = list(range(len(batch))), True
            with self._cond:
                self._in_flight = 0
                self._put_calls += 1
                self._failed_calls += int(failed_call)
                self._sent += len(batch) - len(refused)
                dropped = 0
                if refused:
                    back = [batch[n] for n in refused]
                    self._resent += len(back)
                    self._queue.extendleft(reversed(back))
                    self._bytes += sum(r.size for r in back)
                    dropped = self._trim()
                    self._dropped += dropped
                    self._failures += 1
                    self._retry_at = self._clock() + min(self._backoff * 2 ** (self._failures - 1), self._max_backoff)
                else:
                    self._failures = 0
                    self._retry_at = 0.0
            if dropped:
                self._telemetry.impressions_dropped(dropped)
        finally:
            self._send_lock.release()

    def _take(self) -> list[_Record]:
        """The buffer's head, up to one PutRecords call (records and bytes); caller holds the lock."""
        batch: list[_Record] = []
        size = 0
        while self._queue and len(batch) < self._batch_records and size + self._queue[0].size <= PUT_RECORDS_BYTES:
            record = self._queue.popleft()
            batch.append(record)
            size += record.size
        self._bytes -= size
        return batch

    def _trim(self) -> int:
        """Drop records (per `overflow`) until the buffer is within its bounds again; caller holds the lock."""
        dropped = 0
        while self._queue and self._over_bounds(0, 0):
            record = self._queue.popleft() if self._overflow == "drop_oldest" else self._queue.pop()
            self._bytes -= record.size
            dropped += 1
        return dropped

    def _over_bounds(self, records: int, size: int) -> bool:
        return len(self._queue) + records > self._max_records or self._bytes + size > self._max_bytes

    def _call_is_full(self) -> bool:
        return len(self._queue) >= self._batch_records or self._bytes >= PUT_RECORDS_BYTES

    def _count_dropped(self, count: int) -> None:
        with self._cond:
            self._dropped += count
        self._telemetry.impressions_dropped(count)
