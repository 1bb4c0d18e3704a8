"""The ports the services need, as Protocols. Adapters are named <Tech><Port>."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rtrec.domain.events import StreamMessage
from rtrec.domain.models import ItemFeatures, PopularItems, UserProfile
from rtrec.domain.online import LabeledImpression, RankerShardState
from rtrec.domain.promotion import ProductionPointer

if TYPE_CHECKING:
    import numpy as np

    from rtrec.domain.encoder import FeatureEncoder


class FeatureStore(Protocol):
    """Online user and item features (DynamoDB in AWS and locally)."""

    def get_user(self, user_id: str) -> UserProfile | None: ...

    def get_users(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        """The profiles that exist among `user_ids` (one batched read)."""

    def put_users(self, users: Iterable[UserProfile]) -> int: ...

    def get_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]: ...

    def put_items(self, items: Iterable[ItemFeatures]) -> int: ...

    def put_item(self, item: ItemFeatures) -> None:
        """Write one item with a single-item write (DynamoDB PutItem): the admin API's only write, so its role
        needs no batch write, which could also delete."""

    def ping(self) -> None:
        """Raise DependencyError when the store cannot be reached."""


class PopularityStore(Protocol):
    """Where the current popular-items snapshot is published and read."""

    def load(self) -> PopularItems | None: ...

    def save(self, popular: PopularItems) -> None: ...


class Metrics(Protocol):
    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None: ...


class VectorIndex(Protocol):
    """Approximate nearest-neighbour search over L2-normalised item vectors (inner product = cosine).

    Implementations: FaissVectorIndex (embedded, local default), OpenSearchVectorIndex (AWS).
    """

    @property
    def dimension(self) -> int: ...

    def __len__(self) -> int: ...

    def upsert(self, item_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add or replace the vectors of `item_ids` (a new item enters the index at once)."""

    def search(self, query: np.ndarray, k: int, exclude: set[str] | None = None) -> list[tuple[str, float]]:
        """The `k` best (item_id, score) for one query vector, best first, skipping `exclude`."""


class ModelPointers(Protocol):
    """The pointers half of ModelStore: what a service that only reads or withdraws a pointer needs."""

    def read_pointer(self, role: str = "production") -> ProductionPointer | None:
        """The current pointer of `role`, None when there is none (nothing promoted, no shadow candidate)."""

    def delete_pointer(self, role: str) -> None:
        """Remove the pointer of `role` (a shadow candidate that was promoted or withdrawn)."""


class ModelStore(ModelPointers, Protocol):
    """Where promoted model folders and the production pointer live (the models bucket)."""

    def publish(self, version: str, model_dir: Path) -> str:
        """Upload every file of `model_dir` for `version`; returns the prefix the files are under."""

    def write_pointer(self, pointer: ProductionPointer, role: str = "production") -> None:
        """Replace the pointer of `role` ("production" or "shadow") in one write (readers see the old or the
        new one, never a mix)."""

    def download(self, version: str, target_dir: Path) -> Path:
        """Fetch the files of a published `version` into `target_dir`; returns it."""


class ModelFiles(Protocol):
    """One file of a published model version, and which version production is (the drift check's view of the
    model store)."""

    def read_pointer(self, role: str = "production") -> ProductionPointer | None: ...

    def read_file(self, version: str, name: str) -> bytes | None:
        """The file's bytes; None when the version lacks it."""
        ...


class Towers(Protocol):
    """The production user and item towers (ONNX Runtime in serving), fed by the shared encoder."""

    encoder: FeatureEncoder

    def user_vectors(self, users: Sequence[UserProfile], *, with_id: bool = True) -> np.ndarray: ...

    def item_vectors(self, items: Sequence[ItemFeatures], *, with_id: bool = True) -> np.ndarray: ...


class CatalogAdditions(Protocol):
    """The durable, shared record of items added or updated through the admin API after training.

    Every serving instance applies it to the model it serves, so an item added on one instance is
    recommended by all of them, and re-embedded by the next model's item tower after a promotion."""

    def save(self, item: ItemFeatures) -> str:
        """Store the item; returns its version tag (changes on every save)."""

    def changed(self, known: dict[str, str]) -> list[tuple[ItemFeatures, str]]:
        """Items whose version tag differs from `known[item_id]` (or that are missing from it)."""


class EventStream(Protocol):
    """The event stream (Kinesis): user events and impressions, partition key = user id."""

    def put(self, messages: Sequence[StreamMessage]) -> int:
        """Write every message (retrying the failed ones) or raise DependencyError."""


class RawRecords(Protocol):
    """The event stream written record by record as it was (KinesisEventStream): the DLQ redrive's side of it."""

    def put_raw(self, records: Sequence[tuple[str, bytes]]) -> int:
        """Put (partition key, data) records as they are."""


class ImpressionQueue(Protocol):
    """Impressions onto the stream off the request path (KinesisImpressionProducer): buffered, batched, flushed."""

    def offer(self, message: StreamMessage) -> bool:
        """Queue `message` without blocking; False when the full buffer made it drop one (counted)."""

    def flush(self, timeout_s: float) -> int:
        """Send what is buffered, synchronously, for at most `timeout_s`; the number of records still buffered."""

    def close(self, timeout_s: float) -> int:
        """Flush, stop the background sender, and count what could not be sent as dropped; that number."""


class CounterfactualLog(Protocol):
    """Raw impressions and events for off-policy evaluation (S3 JSON lines, partitioned by date)."""

    def write_batch(self, batch_id: str, messages: Sequence[StreamMessage]) -> None:
        """Write one consumer batch; the same batch_id again replaces it (re-delivery is harmless)."""

    def write_joined(self, batch_id: str, slates: Sequence[LabeledImpression]) -> None:
        """Write the slates a batch resolved, joined with their rewards (readers de-duplicate by request_id)."""

    def read_joined(self) -> list[LabeledImpression]:
        """Every joined slate, de-duplicated by request_id, oldest first (off-policy evaluation reads it)."""


class RankerStateStore(Protocol):
    """Each shard's online-ranker state (the models bucket): one writer per shard, read by every server. It holds
    the shard's item statistics too (ItemStatsReader merges them): loaded and saved once per consumer batch."""

    def load(self, shard_id: str) -> RankerShardState | None: ...

    def save(self, state: RankerShardState) -> None: ...

    def load_all(self) -> list[RankerShardState]: ...

    def clear(self) -> int:
        """Forget everything learned (a replay starting over); returns the number of states removed."""


class DeadLetterQueue(Protocol):
    def send(self, body: dict[str, Any]) -> None: ...


class DeadLetters(Protocol):
    """The dead-letter queue as the redrive reads it (SqsDeadLetterQueue)."""

    def receive_with_handles(
        self, max_messages: int = 10, wait_seconds: int = 0, visibility_timeout: int | None = None
    ) -> list[tuple[dict[str, Any], str]]:
        """Visible letters as sent (references not resolved), each with its receipt handle."""

    def resolve(self, body: dict[str, Any]) -> dict[str, Any]:
        """The whole letter: `body`, or the S3 object it refers to."""

    def delete(self, receipt_handle: str, body: dict[str, Any] | None = None) -> None:
        """Delete a letter, then its S3 object when it went by reference."""


class Lock(Protocol):
    """Named locks with expiry (the retraining cool-down): one conditional write decides who holds it."""

    def acquire(self, name: str, owner: str, now: float, ttl_seconds: float, note: str = "") -> bool:
        """Take `name` until now + ttl_seconds unless someone holds it unexpired; True when this call took it."""

    def release(self, name: str, owner: str) -> bool: ...


class TrainingJobs(Protocol):
    """Where retraining runs: SageMaker training jobs in AWS, the local job runner in the embedded cloud."""

    def start(self, name: str, hyperparameters: Mapping[str, str], tags: Mapping[str, str]) -> str:
        """Start a training job named `name`; returns its name (or ARN)."""

    def in_progress(self, prefix: str) -> list[str]:
        """Names of the jobs starting with `prefix` that are still running."""
