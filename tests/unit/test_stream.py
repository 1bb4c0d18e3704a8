"""Stream records, ingestion and the consumer's effects, over in-memory ports."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from rtrec.adapters.memory import InMemoryCounterfactualLog, InMemoryEventStream, InMemoryFeatureStore
from rtrec.domain.events import Impression, UserEvent, decode_record, encode_record
from rtrec.domain.models import PROFILE_HISTORY_LIMIT, UserProfile
from rtrec.domain.popularity import decay_mass, popularity_at
from rtrec.errors import DependencyError, InvalidInputError
from rtrec.services.stream import IngestService, StreamConsumer, updated_profile
from tests.unit.serving_world import make_world

NOW = 1_700_000_000.0


def event(n: int = 1, type_: str = "click", user: str = "u1", item: str = "7", **kwargs) -> UserEvent:
    return UserEvent(event_id=f"e{n}", user_id=user, item_id=item, type=type_, timestamp=NOW + n, **kwargs)


def test_records_round_trip():
    impression = Impression("r1", "u1", "3", "two_tower", ("1", "2"), (0.5, 1.0), (0.9, 0.8), NOW)
    for message in (event(value=None), event(2, "rating", value=4.0, request_id="r1"), impression):
        assert decode_record(encode_record(message)) == message


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"kind": "other"}', "kind must be"),
    (b'{"kind": "event", "type": "like"}', "type must be one of"),
    (b'{"kind": "event", "type": "click", "event_id": "e", "user_id": "", "item_id": "i", "timestamp": 1}', "user_id"),
    (b'{"kind": "event", "type": "click", "event_id": "e", "user_id": "u", "item_id": "i", "timestamp": "x"}',
     "timestamp"),
    (b'{"kind": "impression", "request_id": "r", "user_id": "u", "strategy": "s", "items": ["a"], '
     b'"propensities": [0], "scores": [1], "timestamp": 1}', "propensities"),
])
def test_malformed_records_are_rejected_with_the_reason(raw, reason):
    with pytest.raises(InvalidInputError, match=reason):
        decode_record(raw)


def test_positive_events_move_the_item_to_the_end_of_the_history():
    profile = UserProfile("u1", history=("1", "7", "2"), interaction_count=3, last_seen=int(NOW))
    after = updated_profile(profile, event(5))
    assert after.history == ("1", "2", "7") and after.interaction_count == 4 and after.last_seen == int(NOW) + 5
    viewed = updated_profile(profile, event(6, "view", item="9"))
    assert viewed.history == profile.history and viewed.interaction_count == 3
    low = updated_profile(profile, event(7, "rating", item="9", value=2.0))
    assert "9" not in low.history


def test_history_keeps_the_most_recent_items():
    profile = UserProfile("u1", history=tuple(str(i) for i in range(PROFILE_HISTORY_LIMIT)))
    after = updated_profile(profile, event(item="new"))
    assert len(after.history) == PROFILE_HISTORY_LIMIT and after.history[-1] == "new" and after.history[0] == "1"


def test_consumer_updates_profile_item_stats_and_counts_impressions():
    features = InMemoryFeatureStore()
    consumer = StreamConsumer(features, features, InMemoryCounterfactualLog(), half_life_days=90)
    consumer.apply_batch("s0", [(1, event(1, item="7")), (2, event(2, "view", item="8"))])
    consumer.apply_batch("s0", [(3, Impression("r1", "u1", "1", "two_tower", ("7", "8", "7"), (1.0,) * 3, (1, 1, 1), NOW))])
    assert features.users["u1"].history == ("7",)
    assert features.item_stats["7"].clicks == 1 and features.item_stats["7"].interactions == 1
    assert features.item_stats["7"].impressions == 1 and features.item_stats["8"].impressions == 1
    assert features.item_stats["8"].interactions == 0
    assert popularity_at(features.item_stats["7"].popularity_mass, NOW + 1, 90) == pytest.approx(1.0)


def test_a_batch_delivered_again_changes_nothing_and_a_duplicate_event_id_is_ignored():
    features = InMemoryFeatureStore()
    consumer = StreamConsumer(features, features, InMemoryCounterfactualLog())
    batch = [(1, event(1, item="7")), (2, event(2, item="8"))]
    consumer.apply_batch("s0", batch)
    plan = consumer.apply_batch("s0", batch)  # delivered again
    assert plan.profiles == {} and [a.kind for _, a in plan.applied] == ["event", "event"]
    retried = consumer.apply_batch("s0", [(3, event(1, item="7"))])  # the client sent e1 again: a new record
    assert [a.kind for _, a in retried.applied] == ["duplicate"] and retried.deltas == {}
    assert features.users["u1"].interaction_count == 2 and features.users["u1"].history == ("7", "8")
    assert features.item_stats["7"].clicks == 1 and features.item_stats["8"].clicks == 1


def test_stats_written_before_a_failure_are_not_added_again_when_the_batch_comes_back():
    class FailingOnce(InMemoryFeatureStore):
        def __init__(self) -> None:
            super().__init__()
            self.fail = True

        def add_item_stats_once(self, shard_id, deltas):
            if self.fail:  # the profile is written, the stats are not
                self.fail = False
                raise DependencyError("throttled")
            return super().add_item_stats_once(shard_id, deltas)

    features = FailingOnce()
    consumer = StreamConsumer(features, features, InMemoryCounterfactualLog())
    batch = [(1, event(1, item="7")), (2, Impression("r1", "u1", "1", "two_tower", ("7", "9"), (1.0,) * 2, (1, 1), NOW))]
    with pytest.raises(DependencyError):
        consumer.apply_batch("s0", batch)
    assert features.users["u1"].history == ("7",) and features.item_stats == {}
    consumer.apply_batch("s0", batch)
    consumer.apply_batch("s0", batch)
    assert features.users["u1"].interaction_count == 1
    assert features.item_stats["7"].clicks == 1 and features.item_stats["7"].impressions == 1
    assert features.item_stats["9"].impressions == 1


def test_a_message_that_cannot_be_applied_is_reported_and_the_rest_goes_on():
    features = InMemoryFeatureStore()
    consumer = StreamConsumer(features, features, InMemoryCounterfactualLog())
    broken = Impression("r1", "u1", "1", "two_tower", ("7",), (1.0,), (1.0,), NOW)
    object.__setattr__(broken, "items", None)  # a bug's stand-in: applying it raises
    plan = consumer.apply_batch("s0", [(1, broken), (2, event(2, item="8"))])
    assert [seq for seq, _ in plan.failed] == [1] and "TypeError" in plan.failed[0][1]
    assert features.users["u1"].history == ("8",)


def test_popularity_mass_decays_by_half_per_half_life():
    assert popularity_at(decay_mass(NOW, 30), NOW + 30 * 86_400, 30) == pytest.approx(0.5)
    assert popularity_at(decay_mass(NOW, 30) + decay_mass(NOW + 10, 30), NOW + 10, 30) == pytest.approx(2.0, rel=1e-5)


def test_ingest_validates_the_batch():
    service = IngestService(InMemoryEventStream(), clock=lambda: NOW)
    assert service.ingest([event(1), event(2)]) == 2
    with pytest.raises(InvalidInputError, match="more than once"):
        service.ingest([event(1), event(1)])
    with pytest.raises(InvalidInputError, match="future"):
        service.ingest([UserEvent("late", "u", "i", "click", NOW + 3 * 86_400)])
    with pytest.raises(InvalidInputError, match="no events"):
        service.ingest([])


@pytest.fixture
def api():
    world = make_world()
    stream = InMemoryEventStream()
    services = Services(recommender=world.recommender(), catalog=world.catalog_service,
                        ingest=IngestService(stream, clock=lambda: NOW))
    return TestClient(create_app(services)), stream


def test_post_events_puts_them_on_the_stream(api):
    client, stream = api
    body = {"events": [{"event_id": "a", "user_id": "u1", "item_id": "7", "type": "click", "timestamp": NOW},
                       {"event_id": "b", "user_id": "u1", "item_id": "7", "type": "rating", "value": 4,
                        "timestamp": NOW, "request_id": "r1"}]}
    response = client.post("/events", json=body)
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    assert [m.event_id for m in stream.messages] == ["a", "b"]


@pytest.mark.parametrize(("body", "where"), [
    ({"events": []}, "events"),
    ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "like", "timestamp": 1}]}, "type"),
    ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "rating", "timestamp": 1}]}, "value"),
    ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "click"}]}, "timestamp"),
    ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "click", "timestamp": 1, "x": 1}]}, "x"),
])
def test_bad_events_are_422_with_the_field(api, body, where):
    client, stream = api
    response = client.post("/events", json=body)
    assert response.status_code == 422 and where in json.dumps(response.json()["detail"])
    assert stream.messages == []


def test_each_recommendation_logs_its_impression(api):
    client, stream = api
    body = client.get("/recommend/u1", params={"k": 4}).json()
    impression = stream.messages[-1]
    assert isinstance(impression, Impression) and impression.request_id == body["request_id"]
    assert list(impression.items) == [r["item_id"] for r in body["recommendations"]]
    assert list(impression.propensities) == [r["propensity"] for r in body["recommendations"]]
