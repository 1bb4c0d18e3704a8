"""In-memory fakes of the ports, for unit tests only (never the local default)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rtrec.domain.models import ItemFeatures, PopularItems, UserProfile


class InMemoryFeatureStore:
    def __init__(self) -> None:
        self.users: dict[str, UserProfile] = {}
        self.items: dict[str, ItemFeatures] = {}
        self.user_reads = 0

    def get_user(self, user_id: str) -> UserProfile | None:
        self.user_reads += 1
        return self.users.get(user_id)

    def put_users(self, users: Iterable[UserProfile]) -> int:
        count = 0
        for user in users:
            self.users[user.user_id] = user
            count += 1
        return count

    def get_items(self, item_ids: Sequence[str]) -> dict[str, ItemFeatures]:
        return {i: self.items[i] for i in item_ids if i in self.items}

    def put_items(self, items: Iterable[ItemFeatures]) -> int:
        count = 0
        for item in items:
            self.items[item.item_id] = item
            count += 1
        return count

    def ping(self) -> None:
        return None


class InMemoryPopularityStore:
    def __init__(self, popular: PopularItems | None = None) -> None:
        self.popular = popular
        self.loads = 0

    def load(self) -> PopularItems | None:
        self.loads += 1
        return self.popular

    def save(self, popular: PopularItems) -> None:
        self.popular = popular
