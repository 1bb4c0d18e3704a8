"""The ports the services need, as Protocols. Adapters are named <Tech><Port>."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from rtrec.domain.models import ItemFeatures, PopularItems, UserProfile


class FeatureStore(Protocol):
    """Online user and item features (DynamoDB in AWS and locally)."""

    def get_user(self, user_id: str) -> UserProfile | None: ...

    def put_users(self, users: Iterable[UserProfile]) -> int: ...

    def get_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]: ...

    def put_items(self, items: Iterable[ItemFeatures]) -> int: ...

    def ping(self) -> None:
        """Raise DependencyError when the store cannot be reached."""


class PopularityStore(Protocol):
    """Where the current popular-items snapshot is published and read."""

    def load(self) -> PopularItems | None: ...

    def save(self, popular: PopularItems) -> None: ...


class Metrics(Protocol):
    def put(self, name: str, value: float, unit: str = "Count", dimensions: dict[str, str] | None = None) -> None: ...
