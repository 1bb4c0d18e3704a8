"""The DLQ redrive (rtrec.services.dead_letters): records back on the stream before their letters are deleted, the
letters it cannot send left in the queue, and how far it got when the queue or the stream fails midway."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any

import pytest

from rtrec.errors import DependencyError
from rtrec.services.dead_letters import RedriveStopped, SkippedLetter, redrive_dead_letters


def letter(event_id: str, data: bytes | None = b"{}", key: str | None = "user-1") -> dict[str, Any]:
    kinesis: dict[str, Any] = {} if data is None else {"data": base64.b64encode(data).decode()}
    if key is not None and data is not None:
        kinesis["partitionKey"] = key
    return {"event_id": event_id, "reason": "boom", "record": {"eventID": event_id, "kinesis": kinesis}}


class Queue:
    """Letters with handles; `unreadable` names letters whose S3 object cannot be read; `log` is every call."""

    def __init__(
        self, bodies: list[dict[str, Any]], unreadable: frozenset[str] = frozenset(), fail_delete_after: int | None = None
    ) -> None:
        self.visible = [(body, f"h-{i}") for i, body in enumerate(bodies)]
        self.unreadable = unreadable
        self.fail_delete_after = fail_delete_after
        self.deleted: list[str] = []
        self.log: list[str] = []
        self.receive_sizes: list[int] = []

    def receive_with_handles(
        self, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[tuple[dict[str, Any], str]]:
        self.receive_sizes.append(max_messages)
        batch, self.visible = self.visible[:max_messages], self.visible[max_messages:]
        return batch

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["event_id"] in self.unreadable:
            raise DependencyError(f"dead letter s3://b/{body['event_id']} is not JSON")
        return body

    def delete(self, receipt_handle: str, body: dict[str, Any] | None = None) -> None:
        if self.fail_delete_after is not None and len(self.deleted) >= self.fail_delete_after:
            raise DependencyError("deleting from SQS queue q failed")
        self.deleted.append(receipt_handle)
        self.log.append(f"delete {receipt_handle}")


class Stream:
    def __init__(self, log: list[str]) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.log = log

    def put_raw(self, records: Sequence[tuple[str, bytes]]) -> int:
        self.records.extend(records)
        self.log.extend(f"put {key}" for key, _ in records)
        return len(records)


def test_each_record_is_on_the_stream_before_its_letter_is_deleted():
    queue = Queue([letter("e1", b'{"a": 1}', key="u1"), letter("e2", b'{"b": 2}', key=None)])
    stream = Stream(queue.log)
    report = redrive_dead_letters(queue, stream, limit=100)
    assert report.moved == 2
    assert report.skipped == []
    assert stream.records == [("u1", b'{"a": 1}'), ("redrive", b'{"b": 2}')]  # a lost partition key gets one
    assert queue.log == ["put u1", "delete h-0", "put redrive", "delete h-1"]


def test_letters_it_cannot_send_stay_in_the_queue_and_are_reported_as_met():
    bodies = [letter("ok"), letter("unreadable"), letter("metadata-only", data=None)]
    queue = Queue(bodies, unreadable=frozenset({"unreadable"}))
    met: list[SkippedLetter] = []
    report = redrive_dead_letters(queue, Stream(queue.log), limit=100, on_skip=met.append)
    assert report.moved == 1
    assert queue.deleted == ["h-0"]
    assert met == report.skipped
    assert [(s.body["event_id"], s.error) for s in report.skipped] == [
        ("unreadable", "dead letter s3://b/unreadable is not JSON"),
        ("metadata-only", None),
    ]


def test_at_most_limit_letters_are_taken_in_batches_of_ten():
    queue = Queue([letter(f"e{i}") for i in range(25)])
    report = redrive_dead_letters(queue, Stream(queue.log), limit=23)
    assert report.moved == 23
    assert queue.receive_sizes == [10, 10, 3]
    assert len(queue.visible) == 2


def test_a_failure_midway_says_how_many_records_were_sent_back_before_it():
    queue = Queue([letter(f"e{i}") for i in range(5)], fail_delete_after=3)
    stream = Stream(queue.log)
    with pytest.raises(RedriveStopped) as stopped:
        redrive_dead_letters(queue, stream, limit=100)
    assert str(stopped.value) == "deleting from SQS queue q failed (3 record(s) were sent back before this)"
    assert stopped.value.report.moved == 3
    assert isinstance(stopped.value.__cause__, DependencyError)
    assert len(stream.records) == 4  # the fourth record is on the stream and its letter still in the queue


def test_letters_as_the_consumer_writes_them_round_trip():
    body = json.loads(json.dumps(letter("e1", b"payload")))
    queue = Queue([body])
    stream = Stream(queue.log)
    assert redrive_dead_letters(queue, stream, limit=1).moved == 1
    assert stream.records == [("user-1", b"payload")]
