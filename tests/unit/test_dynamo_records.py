"""How profiles are stored in DynamoDB: id lists as JSON strings, the pending slate as its stream record, the
exactly-once marks (per-shard watermarks as strings, the packed dedup set as binary), and the old format."""

from __future__ import annotations

from rtrec.adapters.aws.dynamo import _from_attribute_map, _to_attribute_map, user_from_record, user_to_record
from rtrec.domain.events import Impression
from rtrec.domain.models import (
    LEGACY_ARRIVAL,
    EarlyReward,
    RecentSlate,
    SeenEvents,
    UserProfile,
    event_fingerprint,
    record_fingerprint,
)


def test_a_profile_survives_the_round_trip_through_attribute_maps():
    slate = Impression(
        "r1",
        "u1",
        "2",
        "two_tower",
        ("a", "b"),
        (0.5, 0.25),
        (0.9, 0.8),
        1e9,
        ((1.0, 0.5, 0, 0, 0, 0, 0), (1.0, 0.4, 0, 0, 0, 0, 0)),
    )
    seen = SeenEvents()
    seen.add("e1", 10**55 + 7, 1.7e9)
    profile = UserProfile(
        "u1",
        age=30,
        gender="F",
        history=("3", "1 2", 'q"x'),
        interaction_count=3,
        last_seen=7,
        applied_through=(("s-1", 10**55 + 7), ("s-0", 5)),
        seen_events=seen.pack(),
        recent_slates=(RecentSlate("r 1", 0x0BADCAFE),),
        pending_impression=slate,
        early_rewards=(EarlyReward("r0", "a b"),),
    )
    attributes = _to_attribute_map(user_to_record(profile))
    assert attributes["history"] == {"S": '["3","1 2","q\\"x"]'}  # one string, not a list of 3
    # the slates and early rewards keep their stored format: one string per entry
    assert attributes["recent_slates"] == {"S": '["r 1 0badcafe"]'}
    assert attributes["early_rewards"] == {"S": '["r0 a b"]'}
    assert attributes["seen_events"] == {"B": seen.pack()}
    assert len(seen.pack()) == 16
    assert str(10**55 + 7) in attributes["applied_through"]["S"]  # 56 digits: a string, not a DynamoDB number
    again = user_from_record(_from_attribute_map(attributes))
    assert again == profile
    assert again.applied_on("s-1") == 10**55 + 7
    assert again.applied_on("s-9") == -1


def test_profiles_written_with_dynamodb_lists_still_read():
    record = {"user_id": "u1", "history": ["3", "1"], "recent_event_ids": ["e1"], "interaction_count": 2}
    profile = user_from_record(record)
    assert profile.history == ("3", "1")
    assert profile.early_rewards == ()
    assert SeenEvents(profile.seen_events).entries == {event_fingerprint("e1"): (0, LEGACY_ARRIVAL)}


def test_old_marks_become_dedup_entries_and_recent_slates():
    profile = user_from_record({"user_id": "u1", "recent_event_ids": '["e1@5", "impression:r1@6", "e@x@9"]'})
    seen = SeenEvents(profile.seen_events)
    assert seen.first_applied_by("e1", 2e9) == record_fingerprint(5)  # kept until stamped by its first use
    assert seen.first_applied_by("e@x", 2e9) == record_fingerprint(9)
    assert profile.recent_slates == (RecentSlate("r1", record_fingerprint(6)),)
    assert profile.applied_through == ()


def test_slates_and_early_rewards_stored_as_strings_read_as_typed_entries():
    """Profiles already in the table hold "request_id fingerprint" and "request_id item_id" strings."""
    profile = user_from_record(
        {"user_id": "u1", "recent_slates": '["r 1 0badcafe", "r2 00000007"]', "early_rewards": '["r0 a b", "r3 9"]'}
    )
    assert profile.recent_slates == (RecentSlate("r 1", 0x0BADCAFE), RecentSlate("r2", 7))
    assert profile.early_rewards == (EarlyReward("r0", "a b"), EarlyReward("r3", "9"))
    assert user_to_record(profile)["recent_slates"] == '["r 1 0badcafe","r2 00000007"]'
    assert user_to_record(profile)["early_rewards"] == '["r0 a b","r3 9"]'


def test_an_empty_profile_stores_no_empty_attributes():
    attributes = _to_attribute_map(user_to_record(UserProfile("u1")))
    assert set(attributes) == {"user_id", "interaction_count"}


class RecordingDynamo:
    """A DynamoDB client that records the reads it gets and finds nothing."""

    def __init__(self) -> None:
        self.reads: list[dict] = []

    def batch_get_item(self, RequestItems: dict) -> dict:
        self.reads.append(RequestItems)
        return {"Responses": {}}

    def get_item(self, **kwargs) -> dict:
        self.reads.append(kwargs)
        return {}


def test_the_stream_consumer_reads_profiles_strongly_consistent_and_serving_does_not():
    from functions.stream_consumer.app import build_handler
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.settings import ConsumerSettings

    client = RecordingDynamo()
    handler = build_handler(ConsumerSettings(endpoint_url="http://localhost:1", resource_prefix="tt"), dynamodb_client=client)
    handler.consumer._features.get_users(["u1"])
    handler.consumer._features.get_user("u1")
    assert [r.get("ConsistentRead") or r["tt-user-features"].get("ConsistentRead") for r in client.reads] == [True, True]

    plain = RecordingDynamo()
    DynamoFeatureStore("users", "items", client=plain).get_users(["u1"])
    assert "ConsistentRead" not in plain.reads[0]["users"]


def test_the_attribute_map_shortcuts_write_and_read_what_the_sdks_serializer_does():
    from decimal import Decimal

    from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

    from rtrec.adapters.aws.dynamo import _from_attribute_map, _to_attribute_map

    record = {
        "s": "text",
        "empty_s": "",
        "i": 42,
        "neg": -7,
        "big": 10**30,
        "f": 0.1,
        "b": True,
        "raw": b"\x00\x01",
        "l": ["a", 1],
        "none": None,
        "nothing": [],
    }
    sdk = TypeSerializer()
    expected = {
        k: sdk.serialize(Decimal(repr(v)) if isinstance(v, float) else v)
        for k, v in record.items()
        if v is not None and v != []
    }
    assert _to_attribute_map(record) == expected
    sdk_read = TypeDeserializer()
    assert _from_attribute_map(expected) == {k: sdk_read.deserialize(v) for k, v in expected.items()}
