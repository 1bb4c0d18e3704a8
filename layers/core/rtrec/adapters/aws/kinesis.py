"""KinesisEventStream: user events and impressions onto the Kinesis stream, partition key = user id."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.domain.events import StreamMessage, encode_record
from rtrec.errors import DependencyError, InvalidInputError

PUT_RECORDS_LIMIT = 500  # records per PutRecords call
PUT_RECORDS_BYTES = 5 * 1024 * 1024  # payload per PutRecords call
RECORD_BYTES = 1024 * 1024  # one record, data + partition key


class KinesisEventStream:
    """EventStream over Kinesis PutRecords. A call can succeed for some records and fail for others
    (throttling per shard): only the failed ones are sent again, with backoff, up to `max_rounds`."""

    def __init__(self, stream_name: str, client: Any = None, *, endpoint_url: str | None = None,
                 region: str = "us-east-1", max_rounds: int = 6, sleep: Callable[[float], None] = time.sleep) -> None:
        self.stream_name = stream_name
        self._client = client if client is not None else aws_client("kinesis", endpoint_url, region)
        self._max_rounds = max_rounds
        self._sleep = sleep

    def put(self, messages: Sequence[StreamMessage]) -> int:
        """Write every message or raise DependencyError saying how many could not be written."""
        entries = [{"Data": encode_record(m), "PartitionKey": m.user_id} for m in messages]
        for entry in entries:
            if len(entry["Data"]) + len(entry["PartitionKey"].encode()) > RECORD_BYTES:
                raise InvalidInputError(f"a record of {len(entry['Data']):,} bytes exceeds Kinesis' 1 MiB limit")
        for chunk in _chunks(entries):
            self._put_chunk(chunk)
        return len(entries)

    def put_raw(self, records: Sequence[tuple[str, bytes]]) -> int:
        """Put (partition key, data) records as they are, e.g. dead-lettered records sent back for replay."""
        for chunk in _chunks([{"Data": data, "PartitionKey": key} for key, data in records]):
            self._put_chunk(chunk)
        return len(records)

    def _put_chunk(self, pending: list[dict[str, Any]]) -> None:
        for attempt in range(self._max_rounds):
            with translate_aws_errors(f"writing {len(pending)} records to Kinesis stream {self.stream_name}"):
                response = self._client.put_records(StreamName=self.stream_name, Records=pending)
            if not response.get("FailedRecordCount"):
                return
            pending = [entry for entry, result in zip(pending, response["Records"]) if "ErrorCode" in result]
            self._sleep(min(0.05 * 2**attempt, 2.0))
        raise DependencyError(
            f"writing to Kinesis stream {self.stream_name}: {len(pending)} records still failing after "
            f"{self._max_rounds} attempts (throttled?)"
        )


def _chunks(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        entry_size = len(entry["Data"]) + len(entry["PartitionKey"].encode())
        if len(chunks[-1]) == PUT_RECORDS_LIMIT or size + entry_size > PUT_RECORDS_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry_size
    return [c for c in chunks if c]
