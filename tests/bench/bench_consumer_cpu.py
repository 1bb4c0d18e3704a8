"""The stream consumer's own CPU cost, with no AWS calls at all (issue 5's anchor: 5,000 events/s in one process).

`functions.stream_consumer.app.ConsumerHandler` with in-memory ports, except that profiles go through the same
DynamoDB attribute-map (de)serialisation as `DynamoFeatureStore` (`user_to_record` -> `_to_attribute_map` on write,
`_from_attribute_map` -> `user_from_record` on read), since that is the consumer's own work in AWS too. Kinesis
events are built as the event source mapping builds them: `--batches` batches of 100 records over `--users` users
with 20-400 item histories, 90% ratings and 10% impressions of 10 items with their ranking features. Rounds
alternate between the code as it is (orjson for stream records and profile id lists) and the same code with the
standard json module in orjson's place, and print events/s per round, the medians and their ratio. Nothing asserts;
pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import time
from collections.abc import Iterable

from benchkit import machine, table

from functions.stream_consumer.app import ConsumerHandler
from rtrec.adapters.aws.dynamo import _from_attribute_map, _to_attribute_map, user_from_record, user_to_record
from rtrec.adapters.memory import (
    InMemoryCounterfactualLog,
    InMemoryDeadLetterQueue,
    InMemoryFeatureStore,
    InMemoryRankerStateStore,
)
from rtrec.domain.events import Impression, UserEvent, encode_record
from rtrec.domain.models import UserProfile
from rtrec.services.online import OnlineLearner
from rtrec.services.stream import StreamConsumer

FEATURES = (1.0, 0.5, 0.3, 0.0, 0.0, 0.1, 0.2)


class StdlibJson:
    """orjson's two calls, done by the json module (what the consumer used before orjson)."""

    @staticmethod
    def dumps(value: object) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    @staticmethod
    def loads(data: bytes | str) -> object:
        return json.loads(data)


class AttributeMapFeatureStore(InMemoryFeatureStore):
    """Profiles kept as DynamoDB attribute maps: every read and write pays what DynamoFeatureStore's do."""

    def __init__(self) -> None:
        super().__init__()
        self.stored: dict[str, dict] = {}

    def put_users(self, users: Iterable[UserProfile]) -> int:
        count = 0
        for user in users:
            self.stored[user.user_id] = _to_attribute_map(user_to_record(user))
            count += 1
        return count

    def get_users(self, user_ids: Iterable[str]) -> dict[str, UserProfile]:
        return {u: user_from_record(_from_attribute_map(self.stored[u])) for u in user_ids if u in self.stored}


def batch(rng: random.Random, users: list[str], sequence: list[int]) -> dict:
    records = []
    for n in range(100):
        user = rng.choice(users)
        sequence[0] += 1
        if n % 10 == 0:
            message = Impression(
                f"r{sequence[0]}",
                user,
                "1",
                "two_tower",
                tuple(str(rng.randrange(3000)) for _ in range(10)),
                (0.3,) * 10,
                (0.5,) * 10,
                time.time(),
                (FEATURES,) * 10,
            )
        else:
            message = UserEvent(f"e{sequence[0]}", user, str(rng.randrange(3000)), "rating", time.time(), 4.0)
        seq = f"{sequence[0]:056d}"
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": user,
                    "sequenceNumber": seq,
                    "data": base64.b64encode(encode_record(message)).decode(),
                    "approximateArrivalTimestamp": time.time(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"shardId-000000000000:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/x",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/bench",
            }
        )
    return {"Records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"# Stream consumer, own CPU cost (no AWS calls)\n\n{machine()}\n", flush=True)
    rng = random.Random(0)
    store = AttributeMapFeatureStore()
    users = [f"u{i}" for i in range(args.users)]
    store.put_users(
        UserProfile(u, age=30, history=tuple(str(rng.randrange(3000)) for _ in range(rng.randrange(20, 400)))) for u in users
    )
    log = InMemoryCounterfactualLog()
    handler = ConsumerHandler(
        StreamConsumer(store, log), InMemoryDeadLetterQueue(), OnlineLearner(InMemoryRankerStateStore(), log)
    )
    sequence = [0]
    handler(batch(rng, users, sequence), None)  # warm-up
    import orjson

    import rtrec.adapters.aws.dynamo as dynamo_module
    import rtrec.domain.events as events_module

    rates: dict[str, list[float]] = {"orjson (as shipped)": [], "json module": []}
    for round_ in range(args.rounds):
        for name, codec in (("orjson (as shipped)", orjson), ("json module", StdlibJson)):
            events_module.orjson = dynamo_module.orjson = codec  # type: ignore[assignment]
            batches = [batch(rng, users, sequence) for _ in range(args.batches)]
            started = time.perf_counter()
            for event in batches:
                handler(event, None)
            rates[name].append(100 * args.batches / (time.perf_counter() - started))
            print(f"round {round_ + 1}/{args.rounds}, {name}: {rates[name][-1]:,.0f} events/s", flush=True)
    events_module.orjson = dynamo_module.orjson = orjson  # type: ignore[assignment]
    print()
    print(
        table(
            ["codec", "events/s, median of rounds", "of the 5,000 events/s anchor"],
            [
                [name, f"{statistics.median(values):,.0f}", f"{statistics.median(values) / 5000:.2f}x"]
                for name, values in rates.items()
            ],
        )
    )
    ratio = statistics.median(rates["orjson (as shipped)"]) / statistics.median(rates["json module"])
    print(f"\norjson / json module: {ratio:.2f}x")


if __name__ == "__main__":
    main()
