"""How profiles are stored in DynamoDB: id lists as JSON strings, the pending slate as its stream record."""

from __future__ import annotations

from rtrec.adapters.aws.dynamo import _from_attribute_map, _to_attribute_map, user_from_record, user_to_record
from rtrec.domain.events import Impression
from rtrec.domain.models import UserProfile


def test_a_profile_survives_the_round_trip_through_attribute_maps():
    slate = Impression("r1", "u1", "2", "two_tower", ("a", "b"), (0.5, 0.25), (0.9, 0.8), 1e9,
                       ((1.0, 0.5, 0, 0, 0, 0, 0), (1.0, 0.4, 0, 0, 0, 0, 0)))
    profile = UserProfile("u1", age=30, gender="F", history=("3", "1 2", 'q"x'), interaction_count=3, last_seen=7,
                          recent_event_ids=("e1@5",), pending_impression=slate, early_rewards=("r0 a",))
    attributes = _to_attribute_map(user_to_record(profile))
    assert attributes["history"] == {"S": '["3","1 2","q\\"x"]'}  # one string, not a list of 3
    assert user_from_record(_from_attribute_map(attributes)) == profile


def test_profiles_written_with_dynamodb_lists_still_read():
    record = {"user_id": "u1", "history": ["3", "1"], "recent_event_ids": ["e1"], "interaction_count": 2}
    profile = user_from_record(record)
    assert profile.history == ("3", "1") and profile.recent_event_ids == ("e1",) and profile.early_rewards == ()


def test_an_empty_profile_stores_no_empty_attributes():
    attributes = _to_attribute_map(user_to_record(UserProfile("u1")))
    assert set(attributes) == {"user_id", "interaction_count"}
