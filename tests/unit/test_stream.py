"""Stream records, ingestion and the consumer's effects, over in-memory ports."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from functions.api.app import Services, create_app
from functions.stream_consumer.app import ConsumerHandler, dead_letter_reason
from rtrec.adapters.memory import (
    InMemoryCounterfactualLog,
    InMemoryDeadLetterQueue,
    InMemoryEventStream,
    InMemoryFeatureStore,
    InMemoryRankerStateStore,
)
from rtrec.domain.events import Impression, UserEvent, decode_record, encode_record
from rtrec.domain.models import PROFILE_HISTORY_LIMIT, ItemStatsDelta, UserProfile
from rtrec.domain.popularity import decay_mass, popularity_at
from rtrec.errors import DependencyError, InvalidInputError
from rtrec.services.online import ItemStatsReader, OnlineLearner
from rtrec.services.stream import BatchPlan, IngestService, StreamConsumer, StreamRecord, updated_profile
from tests.unit.serving_world import make_world

NOW = 1_700_000_000.0


def event(n: int = 1, type_: str = "click", user: str = "u1", item: str = "7", **kwargs) -> UserEvent:
    return UserEvent(event_id=f"e{n}", user_id=user, item_id=item, type=type_, timestamp=NOW + n, **kwargs)


def test_records_round_trip():
    impression = Impression("r1", "u1", "3", "two_tower", ("1", "2"), (0.5, 1.0), (0.9, 0.8), NOW)
    for message in (event(value=None), event(2, "rating", value=4.0, request_id="r1"), impression):
        assert decode_record(encode_record(message)) == message


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"kind": "other"}', "kind must be"),
        (b'{"kind": "event", "type": "like"}', "type must be one of"),
        (b'{"kind": "event", "type": "click", "event_id": "e", "user_id": "", "item_id": "i", "timestamp": 1}', "user_id"),
        (b'{"kind": "event", "type": "click", "event_id": "e", "user_id": "u", "item_id": "i", "timestamp": "x"}', "timestamp"),
        (
            b'{"kind": "impression", "request_id": "r", "user_id": "u", "strategy": "s", "items": ["a"], '
            b'"propensities": [0], "scores": [1], "timestamp": 1}',
            "propensities",
        ),
    ],
)
def test_malformed_records_are_rejected_with_the_reason(raw, reason):
    with pytest.raises(InvalidInputError, match=reason):
        decode_record(raw)


def test_an_impressions_features_round_trip_as_floats_and_the_caller_with_them():
    impression = Impression(
        "r1",
        "u1",
        "3",
        "two_tower",
        ("1", "2"),
        (0.5, 1.0),
        (0.9, 0.8),
        NOW,
        features=((1.0, 0.25, 3.0), (1.0, -0.5, 0.0)),
        caller="events",
    )
    assert decode_record(encode_record(impression)) == impression
    body = json.loads(encode_record(impression))
    body["features"] = [[1, 2, 3], [4, 5, 6]]  # JSON integers are numbers too
    assert decode_record(json.dumps(body).encode()).features == ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))


@pytest.mark.parametrize(
    "features",
    [
        [[1.0, 2.0]],  # one row for two items
        [[1.0, 2.0], [1.0]],  # rows of different lengths
        [[1.0, True], [1.0, 2.0]],  # a boolean is not a number here
        [[1.0, "2"], [1.0, 2.0]],  # nor a string that looks like one
        [[1.0, None], [1.0, 2.0]],
        [[1.0, [2.0]], [1.0, 2.0]],
        [1.0, 2.0],
        {"a": 1},
    ],
)
def test_an_impression_with_features_that_are_not_rows_of_finite_numbers_is_poison(features):
    body = json.loads(encode_record(Impression("r1", "u1", "3", "two_tower", ("1", "2"), (0.5, 1.0), (0.9, 0.8), NOW)))
    body["features"] = features
    with pytest.raises(InvalidInputError, match="feature"):
        decode_record(json.dumps(body).encode())


def test_positive_events_move_the_item_to_the_end_of_the_history():
    profile = UserProfile("u1", history=("1", "7", "2"), interaction_count=3, last_seen=int(NOW))
    after = updated_profile(profile, event(5))
    assert after.history == ("1", "2", "7")
    assert after.interaction_count == 4
    assert after.last_seen == int(NOW) + 5
    viewed = updated_profile(profile, event(6, "view", item="9"))
    assert viewed.history == profile.history
    assert viewed.interaction_count == 3
    low = updated_profile(profile, event(7, "rating", item="9", value=2.0))
    assert "9" not in low.history


def test_history_keeps_the_most_recent_items():
    profile = UserProfile("u1", history=tuple(str(i) for i in range(PROFILE_HISTORY_LIMIT)))
    after = updated_profile(profile, event(item="new"))
    assert len(after.history) == PROFILE_HISTORY_LIMIT
    assert after.history[-1] == "new"
    assert after.history[0] == "1"


# -- the consumer: profiles and the shard state's item statistics, exactly once ------------------------------

BIG = 10**55  # Kinesis sequence numbers have up to 56 digits


class Faults:
    """Counts the stores' writes and fails the one numbered `at` (a crash between two writes)."""

    def __init__(self) -> None:
        self.at: int | None = None
        self.writes = 0

    def tick(self, what: str) -> None:
        if self.at is not None and self.writes == self.at:
            self.at = None
            raise DependencyError(f"injected failure before {what}")
        self.writes += 1


class FaultyFeatures(InMemoryFeatureStore):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def put_users(self, users):  # one write per profile: a failure may fall between any two of them
        count = 0
        for user in users:
            self.faults.tick("a profile write")
            count += super().put_users([user])
        return count


class FaultyLog(InMemoryCounterfactualLog):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def write_batch(self, batch_id, messages):
        self.faults.tick("the log")
        super().write_batch(batch_id, messages)

    def write_joined(self, batch_id, slates):
        self.faults.tick("the joined log")
        super().write_joined(batch_id, slates)


class FaultyStates(InMemoryRankerStateStore):
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults
        self.gets = self.puts = 0

    def load(self, shard_id):
        self.gets += 1
        return super().load(shard_id)

    def save(self, state):
        self.faults.tick("the shard state")
        self.puts += 1
        super().save(state)


class World:
    """The consumer over in-memory ports, with faults injectable between any two writes."""

    def __init__(self, *, retention: float = 86_400.0, limit: int = 4096) -> None:
        self.faults = Faults()
        self.features = FaultyFeatures(self.faults)
        self.log = FaultyLog(self.faults)
        self.states = FaultyStates(self.faults)
        self.consumer = StreamConsumer(
            self.features,
            self.log,
            half_life_days=90,
            dedup_retention_seconds=retention,
            dedup_limit=limit,
            learner=OnlineLearner(self.states, self.log),
        )

    def apply(self, shard: str, records) -> BatchPlan:
        return self.consumer.apply_batch(shard, records)

    def stats(self, item: str) -> ItemStatsDelta:
        return ItemStatsReader(self.states).get(item)


def rec(seq: int, message, arrived: float | None = None) -> StreamRecord:
    return StreamRecord(seq, message, NOW + seq % 10**6 if arrived is None else arrived)


def shown(request_id: str, items: tuple[str, ...], user: str = "u1", at: float = NOW, featured: bool = False) -> Impression:
    features = tuple((1.0, 0.5 - 0.1 * n, 0, 0, 0, 0, 0) for n in range(len(items))) if featured else ()
    return Impression(request_id, user, "1", "two_tower", items, (1.0,) * len(items), (1.0,) * len(items), at, features)


def test_consumer_updates_profile_and_the_shard_states_item_stats():
    world = World()
    world.apply("s0", [rec(1, event(1, item="7")), rec(2, event(2, "view", item="8"))])
    world.apply("s0", [rec(3, shown("r1", ("7", "8", "7")))])
    assert world.features.users["u1"].history == ("7",)
    seven, eight = world.stats("7"), world.stats("8")
    assert (seven.clicks, seven.interactions, seven.impressions) == (1, 1, 1)
    assert (eight.clicks, eight.interactions, eight.impressions) == (0, 0, 1)
    assert popularity_at(seven.popularity_mass, NOW + 1, 90) == pytest.approx(1.0)
    assert world.states.load("s0").item_stats["7"] == [1, 1, 1, pytest.approx(seven.popularity_mass)]


def test_a_batch_delivered_again_whole_or_in_part_changes_nothing():
    world = World()
    batch = [rec(BIG + n, event(n, item=str(n % 3), user=f"u{n % 2}")) for n in range(1, 9)]
    batch.insert(4, rec(BIG + 100, shown("r1", ("0", "1"), user="u0")))
    world.apply("s0", batch)
    before = (dict(world.features.users), ItemStatsReader(world.states).many())
    plan = world.apply("s0", batch)  # whole
    assert plan.profiles == {}
    assert {a.kind for _, a in plan.applied} == {"redelivered"}
    world.apply("s0", batch[3:6])  # a part of it
    world.apply("s0", batch[:2])
    assert (dict(world.features.users), ItemStatsReader(world.states).many()) == before
    assert world.features.users["u0"].interaction_count == 4
    assert world.stats("0").impressions == 1


def test_sequence_numbers_compare_as_integers_not_strings():
    world = World()
    world.apply("s0", [rec(9 * 10**54, event(1, item="a"))])  # 55 digits, then 56: "1..." < "9..." as strings
    world.apply("s0", [rec(10**55, event(2, item="b"))])
    assert world.features.users["u1"].history == ("a", "b")
    assert world.stats("b").clicks == 1
    assert world.features.users["u1"].applied_on("s0") == 10**55


def test_a_client_retry_after_more_than_1000_messages_is_a_no_op():
    world = World()
    world.apply("s0", [rec(1, event(1, item="7"))])
    between = []
    for n in range(2, 1302):  # 1,300 messages of the same user between: slates and other clicks
        slate = shown(f"r{n}", tuple(str(i) for i in range(n % 50, n % 50 + 10)))
        between.append(rec(n, slate) if n % 2 else rec(n, event(n, item=f"x{n}")))
    for start in range(0, len(between), 100):
        world.apply("s0", between[start : start + 100])
    retried = world.apply("s0", [rec(5000, event(1, item="7"))])  # the client sent e1 again: a new record
    assert [a.kind for _, a in retried.applied] == ["duplicate"]
    assert retried.profiles == {}
    profile = world.features.users["u1"]
    assert profile.interaction_count == 1 + 650
    assert profile.history.count("7") == 1
    assert world.stats("7").clicks == 1
    assert world.stats("7").interactions == 1


def test_impressions_do_not_use_the_users_dedup_budget_and_a_resent_slate_is_a_no_op():
    world = World(limit=8)
    world.apply("s0", [rec(1, event(1, item="7"))])
    world.apply("s0", [rec(n, shown(f"r{n}", ("1", "2"))) for n in range(2, 1100)])
    assert len(world.features.users["u1"].seen_events) == 16  # one entry: e1's
    again = world.apply("s0", [rec(1200, event(1, item="7")), rec(1201, shown("r1099", ("1", "2")))])
    assert [a.kind for _, a in again.applied] == ["duplicate", "duplicate"]
    assert world.stats("7").clicks == 1
    assert world.stats("1").impressions == 1098
    # the bound, documented: beyond `limit` client events the oldest are forgotten (and counted as evicted)
    plan = world.apply("s0", [rec(1300 + n, event(100 + n, item=f"y{n}")) for n in range(8)])
    assert plan.evicted == 1
    assert world.apply("s0", [rec(1400, event(1, item="7"))]).applied[0][1].kind == "event"


def test_the_dedup_set_expires_by_the_records_arrival_time():
    world = World(retention=3600.0)
    world.apply("s0", [rec(1, event(1, item="7"), arrived=NOW)])
    within = world.apply("s0", [rec(2, event(1, item="7"), arrived=NOW + 3600)])
    assert within.applied[0][1].kind == "duplicate"
    world.apply("s0", [rec(3, event(3, item="8"), arrived=NOW + 7201)])  # expires e1 (deterministically)
    after = world.apply("s0", [rec(4, event(1, item="7"), arrived=NOW + 7202)])
    assert after.applied[0][1].kind == "event"
    assert world.stats("7").clicks == 2
    assert len(world.features.users["u1"].seen_events) == 32  # e3 and e1 (again); the first e1 is gone


def test_a_profile_of_the_old_format_still_loads_and_keeps_its_marks():
    from rtrec.adapters.aws.dynamo import user_from_record

    world = World()
    old = user_from_record(
        {"user_id": "u1", "history": '["7"]', "interaction_count": 1, "recent_event_ids": '["e1@5", "impression:r1@6"]'}
    )
    world.features.put_users([old])
    plan = world.apply(
        "s0",
        [
            rec(5, event(1, item="7")),
            rec(6, shown("r1", ("7",))),
            rec(9, event(1, item="7")),
            rec(10, shown("r1", ("7",))),
            rec(11, event(2, item="8")),
        ],
    )
    assert [a.kind for _, a in plan.applied] == ["redelivered", "duplicate", "duplicate", "duplicate", "event"]
    profile = world.features.users["u1"]
    assert profile.interaction_count == 2
    assert profile.history == ("7", "8")
    assert profile.applied_on("s0") == 11
    assert world.stats("8").clicks == 1
    assert world.stats("7").impressions == 0


def test_store_calls_per_batch_do_not_grow_with_slate_size():
    calls = {}
    for slate_size in (10, 50):
        world = World()
        reads = []
        get_users = world.features.get_users
        world.features.get_users = lambda ids, _g=get_users, _reads=reads: _reads.append(1) or _g(ids)  # type: ignore[method-assign]
        records = [
            rec(n, shown(f"r{n}", tuple(f"i{(n + k) % 3700}" for k in range(slate_size)), user=f"u{n % 40}"))
            for n in range(1, 91)
        ] + [rec(100 + n, event(n, item=f"i{n}", user=f"u{n}")) for n in range(10)]
        world.apply("s0", records)
        calls[slate_size] = (
            len(reads),
            world.states.gets,
            world.states.puts,
            len(world.log.batches),
            len(world.log.joined),
            world.faults.writes,
        )
    assert calls[10] == calls[50] == (1, 1, 1, 1, 1, 3 + 40)  # 40 profiles: 2 BatchWriteItems of 25 in DynamoDB


def _learned(state) -> tuple:
    return state.learner.examples, state.impressions, state.clicks, state.trend_counts(), state.learned_through


@pytest.mark.parametrize("partial", [False, True])
def test_a_failure_between_any_two_writes_then_redelivery_counts_each_record_once(partial):
    def batches():
        first = [
            rec(1, event(1, item="a")),
            rec(2, shown("r1", ("a", "b"), featured=True)),
            rec(3, event(3, item="b", user="u2", request_id="r1")),
        ]
        second = [
            rec(10, shown("r2", ("a", "c"), featured=True)),
            rec(11, event(11, item="c", request_id="r2")),
            rec(12, event(1, item="a")),
            rec(13, shown("r3", ("b", "c"), user="u2", featured=True)),
            rec(14, event(14, item="b", user="u3")),
            rec(15, event(15, "view", item="c", user="u4")),
            rec(16, shown("r4", ("a", "b"), user="u2", featured=True)),
        ]
        return first, second

    first, second = batches()
    clean = World()
    clean.apply("s0", first)
    clean.apply("s0", second)
    writes = clean.faults.writes - 5  # the second batch's writes (the first made 5)
    expected = (
        {u: (p.interaction_count, p.history) for u, p in clean.features.users.items()},
        ItemStatsReader(clean.states).many(),
        _learned(clean.states.load("s0")),
    )
    assert writes >= 6
    for at in range(writes):
        world = World()
        world.apply("s0", first)
        world.faults.at = world.faults.writes + at
        with pytest.raises(DependencyError):
            world.apply("s0", second)
        if partial:  # as a bisecting mapping does: the first half again, then the rest
            world.apply("s0", second[:3])
            world.apply("s0", second[3:])
        else:
            world.apply("s0", second)
        world.apply("s0", second)  # and once more after it worked
        got = (
            {u: (p.interaction_count, p.history) for u, p in world.features.users.items()},
            ItemStatsReader(world.states).many(),
            _learned(world.states.load("s0")),
        )
        assert got == expected, at
    assert expected[1]["a"].clicks == 1
    assert expected[1]["a"].impressions == 3
    assert expected[0]["u1"][0] == 2
    assert expected[2][0] == 6
    assert expected[2][2] == {"c": 1}


def test_random_crashes_and_redeliveries_count_each_event_once_across_a_shard_split():
    import random

    for seed in range(25):
        rng = random.Random(seed)
        users, items = [f"u{n}" for n in range(8)], [f"i{n}" for n in range(12)]
        messages: list = []
        sent: list = []  # client events that may be re-sent
        for n in range(260):
            user = rng.choice(users)
            roll = rng.random()
            if roll < 0.35:
                messages.append(shown(f"r{n}", tuple(rng.sample(items, 4)), user=user, at=NOW + n))
            elif roll < 0.45 and sent:
                messages.append(rng.choice(sent))  # a client retry, any number of messages later
            elif roll < 0.5 and (slates := [m for m in messages if isinstance(m, Impression) and m.user_id == user]):
                # the producer re-sending one of the user's last slates (its retries come within seconds; the
                # profile remembers RECENT_SLATES of them)
                messages.append(rng.choice(slates[-3:]))
            else:
                kind = rng.choice(["click", "click", "view", "purchase"])
                e = UserEvent(f"e{n}", user, rng.choice(items), kind, NOW + n)
                sent.append(e)
                messages.append(e)
        # shard A (users 0-3) splits into A1 halfway; shard B (users 4-7) goes on: each record on one shard
        shards: dict[str, list[StreamRecord]] = {"A": [], "B": [], "A1": []}
        for n, m in enumerate(messages):
            shard = "B" if int(m.user_id[1:]) >= 4 else ("A" if n < 130 else "A1")
            base = {"A": BIG, "B": BIG + 10**40, "A1": 2 * BIG}[shard]
            shards[shard].append(StreamRecord(base + 1000 * n + rng.randint(0, 999), m, NOW + n))
        world = World()
        position = dict.fromkeys(shards, 0)
        while any(position[s] < len(shards[s]) for s in shards):
            open_ = [s for s in shards if position[s] < len(shards[s]) and not (s == "A1" and position["A"] < len(shards["A"]))]
            shard = rng.choice(open_)
            start = position[shard]
            batch = shards[shard][start : start + rng.randint(1, 25)]
            if rng.random() < 0.4:
                world.faults.at = world.faults.writes + rng.randint(0, len(batch) + 3)
            try:
                world.apply(shard, batch)
            except DependencyError:
                continue  # the same records come again (maybe fewer of them)
            world.faults.at = None
            position[shard] += len(batch)
            if rng.random() < 0.2:  # an older range delivered again (a lost checkpoint)
                lo = rng.randint(0, position[shard] - 1)
                world.apply(shard, shards[shard][lo : lo + rng.randint(1, 30)])
        unique_events = {m.event_id: m for m in messages if isinstance(m, UserEvent)}.values()
        unique_slates = {m.request_id: m for m in messages if isinstance(m, Impression)}.values()
        for user in users:
            profile = world.features.users.get(user)
            assert (profile.interaction_count if profile else 0) == sum(
                e.is_positive for e in unique_events if e.user_id == user
            ), (seed, user)
        merged = ItemStatsReader(world.states).many()
        for item in items:
            got = merged.get(item, ItemStatsDelta())
            assert got.clicks == sum(e.item_id == item and e.type == "click" for e in unique_events), (seed, item)
            assert got.interactions == sum(e.item_id == item and e.is_positive for e in unique_events), (seed, item)
            assert got.impressions == sum(item in s.items for s in unique_slates), (seed, item)
            assert got.popularity_mass == pytest.approx(
                sum(decay_mass(e.timestamp, 90) for e in unique_events if e.item_id == item and e.is_positive)
            )
        assert {s.shard_id for s in world.states.load_all()} == {"A", "B", "A1"}  # the child has its own state


def test_a_message_that_cannot_be_applied_is_reported_and_the_rest_goes_on():
    world = World()
    broken = shown("r1", ("7",))
    object.__setattr__(broken, "items", None)  # a bug's stand-in: applying it raises
    plan = world.apply("s0", [rec(1, broken), rec(2, event(2, item="8"))])
    assert [seq for seq, _ in plan.failed] == [1]
    assert "TypeError" in plan.failed[0][1]
    assert world.features.users["u1"].history == ("8",)


# -- the handler: poison of any size, systemic failures raised --------------------------------------------------


class Context:
    function_name = "rtrec-stream-consumer"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rtrec-stream-consumer"
    aws_request_id = "utest"


def kinesis_event(records: list[bytes], first: int = 1, shard: str = "shardId-000000000000") -> dict:
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": "u1",
                    "sequenceNumber": str(BIG + first + n),
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": NOW + n,
                },
                "eventSource": "aws:kinesis",
                "eventID": f"{shard}:{BIG + first + n}",
                "eventName": "aws:kinesis:record",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/utest-events",
                "awsRegion": "us-east-1",
            }
            for n, data in enumerate(records)
        ]
    }


class SmallDlq(InMemoryDeadLetterQueue):
    """A DLQ that cannot take a message above SQS's 256 KiB (an adapter without spilling to S3)."""

    def send(self, body: dict) -> None:
        if len(json.dumps(body)) > 256 * 1024:
            raise InvalidInputError("message too large for SQS")
        super().send(body)


def handler_for(world: World, dlq=None) -> ConsumerHandler:
    return ConsumerHandler(world.consumer, dlq if dlq is not None else InMemoryDeadLetterQueue(), world.consumer.learner)


def poisoned_batch() -> tuple[list[bytes], dict[int, str]]:
    """Good clicks with oversized and malformed records between them; the index of each poison and its payload."""
    huge_user = encode_record(event(2, item="x")).replace(b'"u1"', b'"' + b"U" * 300_000 + b'"')
    garbage = b"{" + b"G" * 900_000
    padded = json.dumps({"kind": "other", "pad": "P" * (1024 * 1024 - 40)}).encode()
    records = [
        encode_record(event(1, item="a")),
        huge_user,
        encode_record(event(3, item="b")),
        garbage,
        encode_record(shown("r1", ("a", "b"))),
        padded,
        encode_record(event(4, item="c")),
        b"[1, 2]",
    ]
    return records, {1: "UUUUUUUUUU", 3: "GGGGGGGGGG", 5: "PPPPPPPPPP", 7: "[1, 2]"}


def test_oversized_and_malformed_records_are_dead_lettered_shortly_and_the_good_ones_applied_in_order():
    world = World()
    dlq = InMemoryDeadLetterQueue()
    records, poison = poisoned_batch()
    event_ = kinesis_event(records)
    assert handler_for(world, dlq)(event_, Context()) == {"batchItemFailures": []}
    assert world.features.users["u1"].history == ("a", "b", "c")
    assert world.stats("a").impressions == 1
    assert [m["record"]["kinesis"]["sequenceNumber"] for m in dlq.messages] == [
        event_["Records"][i]["kinesis"]["sequenceNumber"] for i in poison
    ]
    for message, payload in zip(dlq.messages, poison.values()):
        assert len(message["reason"]) <= 300, message["reason"][:80]
        assert payload not in message["reason"], message["reason"][:80]
    assert dlq.messages[0]["record"] == event_["Records"][1]  # the raw Kinesis record, whole


def test_a_poison_record_the_dlq_cannot_take_is_reported_and_the_records_before_it_committed():
    world = World()
    records, _ = poisoned_batch()
    event_ = kinesis_event(records)
    handler = handler_for(world, SmallDlq())
    # the 300 KB record is too large for this DLQ: the batch ends there, the click before it is committed
    assert handler(event_, Context()) == {
        "batchItemFailures": [{"itemIdentifier": event_["Records"][1]["kinesis"]["sequenceNumber"]}]
    }
    assert world.features.users["u1"].history == ("a",)
    # the mapping delivers from it again, then (bisected, alone, retries spent) dead-letters it and goes on
    assert handler({"Records": event_["Records"][1:]}, Context())["batchItemFailures"]
    rest = {"Records": event_["Records"][2:]}
    while failures := handler(rest, Context())["batchItemFailures"]:
        failed = failures[0]["itemIdentifier"]
        rest = {"Records": [r for r in rest["Records"] if int(r["kinesis"]["sequenceNumber"]) > int(failed)]}
    assert world.features.users["u1"].history == ("a", "b", "c")
    assert world.stats("b").impressions == 1


def test_a_store_throttle_mid_batch_raises_and_nothing_is_dead_lettered():
    world = World()
    dlq = InMemoryDeadLetterQueue()
    handler = handler_for(world, dlq)
    event_ = kinesis_event([encode_record(event(n, item=str(n), user=f"u{n}")) for n in range(1, 40)])
    world.faults.at = world.faults.writes + 10  # the 8th profile write is throttled
    with pytest.raises(DependencyError):
        handler(event_, Context())
    assert dlq.messages == []
    assert handler(event_, Context()) == {"batchItemFailures": []}
    assert handler(event_, Context()) == {"batchItemFailures": []}
    assert all(world.features.users[f"u{n}"].interaction_count == 1 for n in range(1, 40))
    assert all(world.stats(str(n)).clicks == 1 for n in range(1, 40))


def test_a_dlq_that_is_down_is_a_systemic_failure():
    class DownDlq(InMemoryDeadLetterQueue):
        def send(self, body: dict) -> None:
            raise DependencyError("SQS unreachable")

    world = World()
    event_ = kinesis_event([encode_record(event(1, item="a")), b"not json", encode_record(event(2, item="b"))])
    with pytest.raises(DependencyError):
        handler_for(world, DownDlq())(event_, Context())
    assert world.features.users == {}  # nothing is written before the poison is dead-lettered
    dlq = InMemoryDeadLetterQueue()
    assert handler_for(world, dlq)(event_, Context()) == {"batchItemFailures": []}
    assert world.features.users["u1"].history == ("a", "b")
    assert len(dlq.messages) == 1


@pytest.mark.parametrize(
    ("reason", "kept", "gone"),
    [
        (
            "malformed record: user_id must be a string of 1 to 128 characters, got '" + "x" * 50_000 + "'",
            "user_id must be a string",
            "xxxxx",
        ),
        (
            "could not be applied: 1 validation error for UserEvent\nuser_id\n  String should have at most 128 characters "
            "[type=string_too_long, input_value='" + "y" * 5000 + "', input_type=str]",
            "string_too_long",
            "yyyyy",
        ),
        ("z" * 10_000, "zzz", None),
    ],
)
def test_dead_letter_reasons_are_short_and_never_repeat_the_payload(reason, kept, gone):
    short = dead_letter_reason(reason)
    assert len(short) <= 300
    assert kept in short
    assert "\n" not in short
    assert gone is None or gone not in short


def test_popularity_mass_decays_by_half_per_half_life():
    assert popularity_at(decay_mass(NOW, 30), NOW + 30 * 86_400, 30) == pytest.approx(0.5)
    assert popularity_at(decay_mass(NOW, 30) + decay_mass(NOW + 10, 30), NOW + 10, 30) == pytest.approx(2.0, rel=1e-5)


def test_ingest_validates_the_batch():
    stream = InMemoryEventStream()
    service = IngestService(stream, clock=lambda: NOW)
    assert service.ingest([event(1), event(2)]) == 2
    with pytest.raises(InvalidInputError, match="no events"):
        service.ingest([])


def test_a_repeated_event_id_is_accepted_and_applied_once():
    stream = InMemoryEventStream()
    service = IngestService(stream, clock=lambda: NOW)
    assert service.ingest([event(1), event(1)]) == 2  # put as sent: the consumer's dedup applies the first once
    world = World()
    world.apply("s0", [rec(n + 1, message) for n, message in enumerate(stream.messages)])
    assert world.features.users["u1"].interaction_count == 1
    assert world.stats("7").clicks == 1


def test_an_event_from_a_clock_far_ahead_is_taken_as_happening_now():
    stream = InMemoryEventStream()
    IngestService(stream, clock=lambda: NOW).ingest(
        [UserEvent("late", "u", "i", "click", NOW + 3 * 86_400), UserEvent("soon", "u", "i", "click", NOW + 3_600)]
    )
    assert [m.timestamp for m in stream.messages] == [NOW, NOW + 3_600]


@pytest.fixture
def api():
    world = make_world()
    stream = InMemoryEventStream()
    services = Services(
        recommender=world.recommender(), catalog=world.catalog_service, ingest=IngestService(stream, clock=lambda: NOW)
    )
    return TestClient(create_app(services)), stream


def test_post_events_puts_them_on_the_stream(api):
    client, stream = api
    body = {
        "events": [
            {"event_id": "a", "user_id": "u1", "item_id": "7", "type": "click", "timestamp": NOW},
            {
                "event_id": "b",
                "user_id": "u1",
                "item_id": "7",
                "type": "rating",
                "value": 4,
                "timestamp": NOW,
                "request_id": "r1",
            },
        ]
    }
    response = client.post("/events", json=body)
    assert response.status_code == 202
    assert response.json() == {"accepted": 2}
    assert [m.event_id for m in stream.messages] == ["a", "b"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"events": []}, "events"),
        ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "like", "timestamp": 1}]}, "type"),
        ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "rating", "timestamp": 1}]}, "value"),
        ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "click"}]}, "timestamp"),
        ({"events": [{"event_id": "a", "user_id": "u", "item_id": "i", "type": "click", "timestamp": 1, "x": 1}]}, "x"),
    ],
)
def test_bad_events_are_422_with_the_field(api, body, where):
    client, stream = api
    response = client.post("/events", json=body)
    assert response.status_code == 422
    assert where in json.dumps(response.json()["detail"])
    assert stream.messages == []


def test_each_recommendation_logs_its_impression(api):
    client, stream = api
    body = client.get("/recommend/u1", params={"k": 4}).json()
    impression = stream.messages[-1]
    assert isinstance(impression, Impression)
    assert impression.request_id == body["request_id"]
    assert list(impression.items) == [r["item_id"] for r in body["recommendations"]]
    assert list(impression.propensities) == [r["propensity"] for r in body["recommendations"]]
