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

    def __init__(
        self,
        stream_name: str,
        client: Any = None,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_rounds: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stream_name = stream_name
        self._client = client if client is not None else aws_client("kinesis", endpoint_url, region)
        self._max_rounds = max_rounds
        self._sleep = sleep

    def put(self, messages: Sequence[StreamMessage]) -> int:
        """Write every message or raise DependencyError saying how many could not be written."""
        entries = [record_entry(m) for m in messages]
        for chunk in _chunks(entries):
            self._put_chunk(chunk)
        return len(entries)

    def put_raw(self, records: Sequence[tuple[str, bytes]]) -> int:
        """Put (partition key, data) records as they are, e.g. dead-lettered records sent back for replay."""
        for chunk in _chunks([{"Data": data, "PartitionKey": key} for key, data in records]):
            self._put_chunk(chunk)
        return len(records)

    def put_records_once(self, entries: list[dict[str, Any]]) -> list[int]:
        """One PutRecords call of at most PUT_RECORDS_LIMIT entries (as `record_entry` makes them): the positions of
        the entries Kinesis refused (throttled or failed per record), for the caller to send again. A failure of
        the whole call raises DependencyError (every entry then still needs sending)."""
        with translate_aws_errors(f"writing {len(entries)} records to Kinesis stream {self.stream_name}"):
            response = self._client.put_records(StreamName=self.stream_name, Records=entries)
        if not response.get("FailedRecordCount"):
            return []
        return [n for n, result in enumerate(response["Records"]) if "ErrorCode" in result]

    def _put_chunk(self, pending: list[dict[str, Any]]) -> None:
        for attempt in range(self._max_rounds):
            refused = self.put_records_once(pending)
            if not refused:
                return
            pending = [pending[n] for n in refused]
            self._sleep(min(0.05 * 2**attempt, 2.0))
        raise DependencyError(
            f"writing to Kinesis stream {self.stream_name}: {len(pending)} records still failing after "
            f"{self._max_rounds} attempts (throttled?)"
        )


def record_entry(message: StreamMessage) -> dict[str, Any]:
    """The PutRecords entry of one message (partition key = user id); InvalidInputError over Kinesis' 1 MiB."""
    entry = {"Data": encode_record(message), "PartitionKey": message.user_id}
    if entry_bytes(entry) > RECORD_BYTES:
        raise InvalidInputError(f"a record of {len(entry['Data']):,} bytes exceeds Kinesis' 1 MiB limit")
    return entry


def entry_bytes(entry: dict[str, Any]) -> int:
    """What an entry counts toward Kinesis' per-record and per-call limits: data plus partition key."""
    return len(entry["Data"]) + len(entry["PartitionKey"].encode())


def _chunks(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        entry_size = entry_bytes(entry)
        if len(chunks[-1]) == PUT_RECORDS_LIMIT or size + entry_size > PUT_RECORDS_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(entry)
        size += entry_size
    return [c for c in chunks if c]
