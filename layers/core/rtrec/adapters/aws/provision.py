"""Create the project's resources from rtrec.resources against any AWS endpoint, idempotently.

Used by the embedded cloud and by `rtrec cloud provision` against LocalStack; in AWS the CDK app
creates the same resources from the same definitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.errors import translate_aws_errors
from rtrec.errors import DependencyError
from rtrec.resources import BUCKETS, QUEUES, STREAMS, TABLES, ResourceNames, TableSpec


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _table_definition(name: str, spec: TableSpec) -> dict[str, Any]:
    keys = [{"AttributeName": spec.partition_key.name, "KeyType": "HASH"}]
    attributes = [{"AttributeName": spec.partition_key.name, "AttributeType": spec.partition_key.type}]
    if spec.sort_key is not None:
        keys.append({"AttributeName": spec.sort_key.name, "KeyType": "RANGE"})
        attributes.append({"AttributeName": spec.sort_key.name, "AttributeType": spec.sort_key.type})
    return {
        "TableName": name,
        "KeySchema": keys,
        "AttributeDefinitions": attributes,
        "BillingMode": "PAY_PER_REQUEST",
    }


class Provisioner:
    def __init__(
        self,
        names: ResourceNames,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        clients: dict[str, Any] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.names = names
        self._log = log or logging.getLogger(__name__).warning
        self.region = region
        clients = clients or {}
        self._dynamodb = clients.get("dynamodb") or aws_client("dynamodb", endpoint_url, region)
        self._kinesis = clients.get("kinesis") or aws_client("kinesis", endpoint_url, region)
        self._s3 = clients.get("s3") or aws_client("s3", endpoint_url, region)
        self._sqs = clients.get("sqs") or aws_client("sqs", endpoint_url, region)

    def provision(self) -> ProvisionReport:
        report = ProvisionReport()
        with translate_aws_errors("provisioning"):
            self._tables(report)
            self._streams(report)
            self._buckets(report)
            self._queues(report)
        return report

    def _tables(self, report: ProvisionReport) -> None:
        existing = {n for page in self._dynamodb.get_paginator("list_tables").paginate() for n in page.get("TableNames", [])}
        for spec in TABLES:
            name = self.names.table(spec)
            if name in existing:
                report.existing.append(f"dynamodb:{name}")
                continue
            self._dynamodb.create_table(**_table_definition(name, spec))
            self._dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
            if spec.ttl_attribute:
                self._time_to_live(name, spec.ttl_attribute)
            report.created.append(f"dynamodb:{name}")

    def _time_to_live(self, table: str, attribute: str) -> None:
        """Expiry on `attribute`; an emulator without UpdateTimeToLive (dynalite) gets a log line instead: nothing
        the project does depends on the deletion (readers of expiring items check the attribute themselves)."""
        try:
            self._dynamodb.update_time_to_live(
                TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute}
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code not in ("UnknownOperationException", "NotImplemented", "InvalidAction"):
                raise
            self._log(
                f"dynamodb:{table}: this endpoint has no UpdateTimeToLive ({code}); items expire by "
                f"'{attribute}' only where readers check it"
            )

    def _streams(self, report: ProvisionReport) -> None:
        for spec in STREAMS:
            name = self.names.stream(spec)
            # Asked by name: ListStreams pages 10 names at a time, and moto's pages carry no token to go on with.
            if self._stream_exists(name):
                report.existing.append(f"kinesis:{name}")
                continue
            self._kinesis.create_stream(StreamName=name, ShardCount=spec.shard_count)
            self._wait_stream_active(name)
            report.created.append(f"kinesis:{name}")

    def _stream_exists(self, name: str) -> bool:
        try:
            self._kinesis.describe_stream_summary(StreamName=name)
        except self._kinesis.exceptions.ResourceNotFoundException:
            return False
        return True

    def _wait_stream_active(self, name: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self._kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
            if status == "ACTIVE":
                return
            time.sleep(0.2)
        raise DependencyError(f"kinesis stream {name} did not become ACTIVE within {timeout_s:.0f}s")

    def _buckets(self, report: ProvisionReport) -> None:
        existing = {b["Name"] for b in self._s3.list_buckets().get("Buckets", [])}
        for spec in BUCKETS:
            name = self.names.bucket(spec)
            if name in existing:
                report.existing.append(f"s3:{name}")
                continue
            kwargs: dict[str, Any] = {"Bucket": name}
            if self.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            self._s3.create_bucket(**kwargs)
            report.created.append(f"s3:{name}")

    def _queues(self, report: ProvisionReport) -> None:
        existing = {
            url.rsplit("/", 1)[-1]
            for page in self._sqs.get_paginator("list_queues").paginate()
            for url in page.get("QueueUrls", [])
        }
        for spec in QUEUES:
            name = self.names.queue(spec)
            if name in existing:
                report.existing.append(f"sqs:{name}")
                continue
            self._sqs.create_queue(QueueName=name, Attributes={"MessageRetentionPeriod": str(spec.message_retention_seconds)})
            report.created.append(f"sqs:{name}")
