"""SqsDeadLetterQueue: records that cannot be processed, with the reason, kept for replay."""

from __future__ import annotations

import json
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors


class SqsDeadLetterQueue:
    def __init__(self, queue_name: str, client: Any = None, *, endpoint_url: str | None = None,
                 region: str = "us-east-1") -> None:
        self.queue_name = queue_name
        self._client = client if client is not None else aws_client("sqs", endpoint_url, region)
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            with translate_aws_errors(f"looking up SQS queue {self.queue_name}"):
                self._url = self._client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._url

    def send(self, body: dict) -> None:
        with translate_aws_errors(f"sending to SQS queue {self.queue_name}"):
            self._client.send_message(QueueUrl=self.url, MessageBody=json.dumps(body, default=str))

    def receive(self, max_messages: int = 10, wait_seconds: int = 0) -> list[dict]:
        """Messages currently visible (for tests and inspection); they are not deleted."""
        return [body for body, _ in self.receive_with_handles(max_messages, wait_seconds)]

    def receive_with_handles(self, max_messages: int = 10, wait_seconds: int = 0,
                             visibility_timeout: int | None = None) -> list[tuple[dict, str]]:
        """Visible messages with their receipt handles (to delete once handled)."""
        extra = {"VisibilityTimeout": visibility_timeout} if visibility_timeout is not None else {}
        with translate_aws_errors(f"receiving from SQS queue {self.queue_name}"):
            response = self._client.receive_message(QueueUrl=self.url, MaxNumberOfMessages=max_messages,
                                                    WaitTimeSeconds=wait_seconds, **extra)
        return [(json.loads(m["Body"]), m["ReceiptHandle"]) for m in response.get("Messages", [])]

    def delete(self, receipt_handle: str) -> None:
        with translate_aws_errors(f"deleting from SQS queue {self.queue_name}"):
            self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt_handle)
