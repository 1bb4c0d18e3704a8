"""Dead-lettered stream records sent back to the events stream (`rtrec dlq redrive`), once what failed them is fixed.

The order is what keeps the redrive lossless: a letter's record goes onto the stream first, then the letter is deleted
(and, for a letter kept by reference, its S3 object after the message), so a redrive that stops midway leaves every
record either on the stream or still in the queue (at worst on both, when it stops between the two steps).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtrec.errors import RtrecError
from rtrec.ports import DeadLetters, RawRecords

RECEIVE_BATCH = 10  # SQS's most messages per receive
RECEIVE_VISIBILITY_S = 60  # a received letter stays hidden this long from other readers while it is sent back
FALLBACK_PARTITION_KEY = "redrive"  # for a record that lost its own


@dataclass(frozen=True)
class SkippedLetter:
    """A letter left in the queue: `error` says why its record could not be read (None: it holds no Kinesis record,
    e.g. AWS's on-failure destination, which keeps batch metadata only)."""

    body: dict[str, Any]
    error: str | None = None


@dataclass
class RedriveReport:
    moved: int = 0
    skipped: list[SkippedLetter] = field(default_factory=list)


class RedriveStopped(RtrecError):
    """The queue or the stream failed midway; `report` holds what was done before (those records are on the stream
    and their letters deleted)."""

    def __init__(self, cause: RtrecError, report: RedriveReport) -> None:
        super().__init__(f"{cause} ({report.moved} record(s) were sent back before this)")
        self.report = report


def redrive_dead_letters(
    letters: DeadLetters, stream: RawRecords, limit: int, on_skip: Callable[[SkippedLetter], None] | None = None
) -> RedriveReport:
    """Send at most `limit` letters' records back to the stream, oldest visible first; letters that cannot be sent
    are left in the queue and reported (to `on_skip` too, as they are met). Raises RedriveStopped on a failure of
    the queue or the stream."""
    report = RedriveReport()

    def skip(letter: SkippedLetter) -> None:
        report.skipped.append(letter)
        if on_skip is not None:
            on_skip(letter)

    try:
        while report.moved + len(report.skipped) < limit:
            batch = letters.receive_with_handles(
                min(RECEIVE_BATCH, limit - report.moved - len(report.skipped)), visibility_timeout=RECEIVE_VISIBILITY_S
            )
            if not batch:
                break
            for body, handle in batch:
                try:
                    whole = letters.resolve(body)  # the record from S3 for a by-reference letter
                except RtrecError as exc:
                    skip(SkippedLetter(body, str(exc)))
                    continue
                kinesis = whole.get("record", {}).get("kinesis", {})
                if "data" not in kinesis:
                    skip(SkippedLetter(body))
                    continue
                key = kinesis.get("partitionKey") or FALLBACK_PARTITION_KEY
                stream.put_raw([(key, base64.b64decode(kinesis["data"]))])
                letters.delete(handle, body)  # the message, then its S3 object
                report.moved += 1
    except RtrecError as exc:
        raise RedriveStopped(exc, report) from exc
    return report
