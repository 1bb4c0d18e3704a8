"""The one definition of the project's cloud resources.

The embedded cloud provisions from this module and the CDK app (infra_cdk/) builds its stacks
from it, so a table name, key schema, stream or bucket cannot differ between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

AttributeType = Literal["S", "N", "B"]


@dataclass(frozen=True)
class KeyAttribute:
    name: str
    type: AttributeType = "S"


@dataclass(frozen=True)
class TableSpec:
    logical_name: str
    partition_key: KeyAttribute
    sort_key: KeyAttribute | None = None
    ttl_attribute: str | None = None
    purpose: str = ""


@dataclass(frozen=True)
class StreamSpec:
    logical_name: str
    shard_count: int
    retention_hours: int = 24
    purpose: str = ""
    # Records per consumer invocation at most (the event source mapping's BatchSize, in AWS and locally): the
    # consumer reads and writes profiles 100 and 25 at a time and the shard state once a batch, so a batch that
    # fills under load costs fewer calls per record; a caught-up stream still delivers what is there at once.
    consumer_batch_size: int = 500


@dataclass(frozen=True)
class BucketSpec:
    logical_name: str
    # Survives a restart of the embedded cloud (moto keeps nothing on disk): snapshotted to the
    # local state folder on shutdown and re-seeded from it at start.
    persistent: bool
    purpose: str = ""


@dataclass(frozen=True)
class QueueSpec:
    logical_name: str
    message_retention_seconds: int = 14 * 24 * 3600
    purpose: str = ""


USER_FEATURES = TableSpec(
    "user-features",
    KeyAttribute("user_id"),
    purpose="user profile: demographics, recent-items history, counts, last seen",
)
ITEM_FEATURES = TableSpec(
    "item-features",
    KeyAttribute("item_id"),
    purpose="item features and stats: title, year, genres, popularity",
)
LOCKS = TableSpec(
    "locks",
    KeyAttribute("lock_name"),
    ttl_attribute="expires_at",
    purpose="cool-down and single-run locks (conditional writes with expiry)",
)
STREAM_CHECKPOINTS = TableSpec(
    "stream-checkpoints",
    KeyAttribute("consumer"),
    sort_key=KeyAttribute("shard_id"),
    purpose="local event source mapping: last processed sequence number per shard",
)
TABLES: tuple[TableSpec, ...] = (USER_FEATURES, ITEM_FEATURES, LOCKS, STREAM_CHECKPOINTS)

EVENTS_STREAM = StreamSpec("events", shard_count=2, purpose="user events: views, clicks, purchases, ratings")
STREAMS: tuple[StreamSpec, ...] = (EVENTS_STREAM,)

MODELS_BUCKET = BucketSpec("models", persistent=True, purpose="ONNX towers, item index, production pointer")
COUNTERFACTUAL_BUCKET = BucketSpec(
    "counterfactual-logs", persistent=True, purpose="impressions, propensities and rewards for OPE"
)
OFFLINE_STORE_BUCKET = BucketSpec("offline-store", persistent=True, purpose="the raw event log for retraining")
DEAD_LETTER_BUCKET = BucketSpec(
    "dead-letters",
    persistent=True,
    purpose="dead letters too large for SQS, whole (the raw record included); the DLQ message holds their key",
)
BUCKETS: tuple[BucketSpec, ...] = (MODELS_BUCKET, COUNTERFACTUAL_BUCKET, OFFLINE_STORE_BUCKET, DEAD_LETTER_BUCKET)

EVENTS_DLQ = QueueSpec("events-dlq", purpose="stream records that failed processing, with the reason; replayable")
QUEUES: tuple[QueueSpec, ...] = (EVENTS_DLQ,)

METRICS_NAMESPACE = "rtrec"


@dataclass(frozen=True)
class ResourceNames:
    """Physical names for one deployment: `prefix` separates environments; bucket names also carry
    `bucket_suffix` (e.g. account and region in AWS) because S3 names are global."""

    prefix: str = "rtrec"
    bucket_suffix: str = ""

    def table(self, spec: TableSpec) -> str:
        return f"{self.prefix}-{spec.logical_name}"

    def stream(self, spec: StreamSpec) -> str:
        return f"{self.prefix}-{spec.logical_name}"

    def bucket(self, spec: BucketSpec) -> str:
        suffix = f"-{self.bucket_suffix}" if self.bucket_suffix else ""
        return f"{self.prefix}-{spec.logical_name}{suffix}".lower()

    def queue(self, spec: QueueSpec) -> str:
        return f"{self.prefix}-{spec.logical_name}"

    @property
    def metrics_namespace(self) -> str:
        return METRICS_NAMESPACE if self.prefix == "rtrec" else f"{METRICS_NAMESPACE}/{self.prefix}"
