"""SqsDeadLetterQueue: records that cannot be processed, with the reason, kept for replay.

A dead letter of any size: SQS takes at most 256 KiB a message, and a dead-lettered Kinesis record can be 1 MiB
(1.33 MiB once base64-encoded in the Lambda event). A body whose JSON is larger than `MAX_INLINE_BYTES` is
written whole to the dead-letter bucket (`<source>/<date>/<id>.json`, the raw record included) and the SQS
message carries a reference instead: `{by_reference, reason, source, event_id, sequence_number, size, s3_bucket,
s3_key}` plus the body's other short fields. Reasons are cut to `MAX_REASON_CHARS` either way, so a reason that
repeats a huge field cannot make a message too large. `receive` resolves references; `receive_with_handles`
exposes them (the CLI shows the key and size), `resolve` reads one, and `delete` removes the S3 object only after
the message is gone, so a message never points at a deleted object.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.errors import DependencyError, short_reason
from rtrec.resources import DEAD_LETTER_BUCKET, EVENTS_DLQ, ResourceNames

MAX_INLINE_BYTES = 200 * 1024  # of UTF-8 JSON: well under SQS's 256 KiB with the message's attributes
_MAX_META_CHARS = 512  # a body field longer than this stays in S3 only
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def is_reference(body: dict[str, Any]) -> bool:
    return bool(body.get("by_reference")) and "s3_key" in body and "s3_bucket" in body


class SqsDeadLetterQueue:
    """The DeadLetterQueue port over SQS, with S3 for the letters SQS cannot hold."""

    def __init__(
        self,
        queue_name: str | None = None,
        client: Any = None,
        *,
        queue_url: str | None = None,
        bucket: str | None = None,
        s3_client: Any = None,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        if queue_name is None and queue_url is None:
            raise ValueError("a queue name or URL is needed")
        self.queue_name = queue_name or str(queue_url).rstrip("/").rsplit("/", 1)[-1]
        self.bucket = bucket
        self._client = client if client is not None else aws_client("sqs", endpoint_url, region)
        self._s3 = s3_client
        self._endpoint_url, self._region = endpoint_url, region
        self._url: str | None = queue_url

    @classmethod
    def for_names(
        cls,
        names: ResourceNames,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        client: Any = None,
        s3_client: Any = None,
    ) -> SqsDeadLetterQueue:
        """The events DLQ of a deployment, with its dead-letter bucket."""
        return cls(
            names.queue(EVENTS_DLQ),
            client,
            bucket=names.bucket(DEAD_LETTER_BUCKET),
            s3_client=s3_client,
            endpoint_url=endpoint_url,
            region=region,
        )

    @property
    def url(self) -> str:
        if self._url is None:
            with translate_aws_errors(f"looking up SQS queue {self.queue_name}"):
                self._url = self._client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = aws_client("s3", self._endpoint_url, self._region)
        return self._s3

    # -- writing -------------------------------------------------------------------------------------------------

    def send(self, body: dict[str, Any]) -> None:
        """Send `body` (its reason shortened); by reference when too large. Any SDK failure is a DependencyError."""
        letter = dict(body)
        if "reason" in letter:
            letter["reason"] = short_reason(letter["reason"])
        text = json.dumps(letter, default=str)
        size = len(text.encode("utf-8"))
        if size > MAX_INLINE_BYTES:
            text = json.dumps(self._store(letter, text, size), default=str)
        with translate_aws_errors(f"sending to SQS queue {self.queue_name}"):
            self._client.send_message(QueueUrl=self.url, MessageBody=text)

    def _store(self, letter: dict[str, Any], text: str, size: int) -> dict[str, Any]:
        """Write the whole letter to S3; the reference message that replaces it."""
        if self.bucket is None:
            raise DependencyError(
                f"a dead letter of {size:,} bytes is over the SQS limit and queue {self.queue_name} "
                "has no dead-letter bucket (SqsDeadLetterQueue.for_names sets one)"
            )
        source = _ID_UNSAFE.sub("-", str(letter.get("source") or "unknown"))
        ident = letter.get("event_id") or letter.get("sequence_number") or "record"
        key = (
            f"{source}/{dt.datetime.now(dt.UTC):%Y-%m-%d}/"
            f"{_ID_UNSAFE.sub('-', str(ident))[:200]}-{uuid.uuid4().hex[:12]}.json"
        )  # unique: one object per message
        with translate_aws_errors(f"writing dead letter s3://{self.bucket}/{key}"):
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=text.encode("utf-8"), ContentType="application/json")
        meta = {
            k: v
            for k, v in letter.items()
            if k != "record"
            and (v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= _MAX_META_CHARS))
        }
        return {**meta, "by_reference": True, "size": size, "s3_bucket": self.bucket, "s3_key": key}

    # -- reading -------------------------------------------------------------------------------------------------

    def receive(self, max_messages: int = 10, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """Messages currently visible (for tests and inspection), references resolved; they are not deleted."""
        return [self.resolve(body) for body, _ in self.receive_with_handles(max_messages, wait_seconds)]

    def receive_with_handles(
        self, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[tuple[dict[str, Any], str]]:
        """Visible messages as sent (references not resolved) with their receipt handles (to delete once handled)."""
        extra = {"VisibilityTimeout": visibility_timeout} if visibility_timeout is not None else {}
        with translate_aws_errors(f"receiving from SQS queue {self.queue_name}"):
            response = self._client.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=max_messages, WaitTimeSeconds=wait_seconds, **extra
            )
        return [(json.loads(m["Body"]), m["ReceiptHandle"]) for m in response.get("Messages", [])]

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole letter: `body` itself, or the S3 object it refers to (with the reference fields kept)."""
        if not is_reference(body):
            return body
        bucket, key = body["s3_bucket"], body["s3_key"]
        with translate_aws_errors(f"reading dead letter s3://{bucket}/{key}"):
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            whole = json.loads(data)
        except ValueError as exc:
            raise DependencyError(f"dead letter s3://{bucket}/{key} is not JSON: {exc}") from exc
        return {**whole, "by_reference": True, "size": body.get("size"), "s3_bucket": bucket, "s3_key": key}

    def delete(self, receipt_handle: str, body: dict[str, Any] | None = None) -> None:
        """Delete a message; when `body` is a reference, its S3 object too, after the message."""
        with translate_aws_errors(f"deleting from SQS queue {self.queue_name}"):
            self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)
        if body is not None and is_reference(body):
            with translate_aws_errors(f"deleting dead letter s3://{body['s3_bucket']}/{body['s3_key']}"):
                self.s3.delete_object(Bucket=body["s3_bucket"], Key=body["s3_key"])
