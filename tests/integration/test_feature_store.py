from __future__ import annotations

from dataclasses import replace

import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.s3 import S3PopularityStore
from rtrec.domain.models import ItemFeatures, PopularItems, ScoredItem, UserProfile
from rtrec.errors import DependencyError
from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES

pytestmark = pytest.mark.integration


@pytest.fixture
def store(cloud, names) -> DynamoFeatureStore:
    return DynamoFeatureStore(names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)


def test_user_round_trip_keeps_every_field(store):
    user = UserProfile(
        "u-42",
        age=25,
        gender="F",
        occupation="writer",
        zip_prefix="94",
        history=("3", "1", "2"),
        interaction_count=3,
        last_seen=1_000_000,
    )
    assert store.put_users([user]) == 1
    assert store.get_user("u-42") == user


def test_a_profile_with_only_an_id_round_trips(store):
    store.put_users([UserProfile("bare")])
    assert store.get_user("bare") == UserProfile("bare")


def test_missing_user_is_none(store):
    assert store.get_user("nobody-at-all") is None


def test_batches_larger_than_dynamodb_limits(store):
    items = [
        ItemFeatures(
            f"i{n}",
            f"Title {n}",
            year=1990 + n % 10,
            genres=("Drama", "War"),
            interaction_count=n,
            popularity=n / 3,
            original_id=f"orig {n}",
        )
        for n in range(260)
    ]
    assert store.put_items(items) == 260
    fetched = store.get_items([f"i{n}" for n in range(260)] + ["i0", "missing"])
    assert len(fetched) == 260
    assert fetched["i7"] == items[7]


def test_an_unreachable_table_is_a_dependency_error(cloud):
    broken = DynamoFeatureStore("no-such-users", "no-such-items", endpoint_url=cloud.endpoint_url)
    with pytest.raises(DependencyError, match="ResourceNotFoundException"):
        broken.get_user("u1")
    with pytest.raises(DependencyError):
        broken.ping()


def test_popularity_snapshot_round_trip(cloud, names):
    store = S3PopularityStore(names.bucket(MODELS_BUCKET), key="test/popularity.json", endpoint_url=cloud.endpoint_url)
    assert store.load() is None
    popular = PopularItems((ScoredItem("a", 2.5), ScoredItem("b", 1.0)), generated_at=123, half_life_days=90, source="test")
    store.save(popular)
    assert store.load() == popular


def test_a_corrupt_snapshot_is_a_dependency_error(cloud, names, client):
    client("s3").put_object(Bucket=names.bucket(MODELS_BUCKET), Key="test/corrupt.json", Body=b"{not json")
    store = S3PopularityStore(names.bucket(MODELS_BUCKET), key="test/corrupt.json", endpoint_url=cloud.endpoint_url)
    with pytest.raises(DependencyError, match="not a valid popularity snapshot"):
        store.load()


def test_metrics_reach_cloudwatch(cloud, names, client):
    from rtrec.adapters.aws.cloudwatch import CloudWatchMetrics

    CloudWatchMetrics(names.metrics_namespace, endpoint_url=cloud.endpoint_url).put(
        "CatalogItems", 3883, dimensions={"Dataset": "ml-1m"}
    )
    listed = client("cloudwatch").list_metrics(Namespace=names.metrics_namespace)["Metrics"]
    assert {
        "MetricName": "CatalogItems",
        "Dimensions": [{"Name": "Dataset", "Value": "ml-1m"}],
        "Namespace": names.metrics_namespace,
    } in [{k: m[k] for k in ("MetricName", "Dimensions", "Namespace")} for m in listed]


@pytest.mark.parametrize("kind", ["dynamodb", "in-memory fake"])
def test_one_item_write_keeps_its_state_and_replaces_the_item(store, kind):
    """The admin API's single-item write (PutItem): deactivated and deleted states round-trip, a later write of the
    item replaces them. The in-memory fake the unit tests use is held to the same behaviour."""
    from rtrec.adapters.memory import InMemoryFeatureStore

    target = store if kind == "dynamodb" else InMemoryFeatureStore()
    item = ItemFeatures("admin-1", "Title", year=2001, genres=("Drama",), promoted=True, created_at=1_700_000_000)
    target.put_item(replace(item, active=False))
    assert target.get_items(["admin-1"])["admin-1"] == replace(item, active=False)
    target.put_item(replace(item, active=False, deleted_at=1_800_000_000))
    assert target.get_items(["admin-1"])["admin-1"].deleted_at == 1_800_000_000
    target.put_item(item)
    assert target.get_items(["admin-1"])["admin-1"] == item
