"""S3RankerStateStore against the embedded cloud: a state is read again only when its object changed."""

from __future__ import annotations

import pytest

from rtrec.adapters.aws.s3 import S3RankerStateStore
from rtrec.domain.models import ItemStatsDelta
from rtrec.domain.online import RankerShardState
from rtrec.resources import MODELS_BUCKET

pytestmark = pytest.mark.integration


@pytest.fixture
def stores(names, client, request):
    prefix = f"online/ranker-test/{request.node.name}/"
    made = [S3RankerStateStore(names.bucket(MODELS_BUCKET), prefix, client=client("s3")) for _ in range(2)]
    yield made
    made[0].clear()


def test_a_consumer_gets_back_the_state_it_saved_unless_another_one_wrote_after_it(stores):
    mine, other = stores
    state = RankerShardState("shard-0", learned_through=10)
    mine.save(state)
    assert mine.load("shard-0") is state  # unchanged in S3: no read, no parse
    mine.save(state)
    theirs = other.load("shard-0")
    assert theirs is not state
    assert theirs.learned_through == 10
    theirs.learned_through = 20
    theirs.count("7", ItemStatsDelta(impressions=1))
    other.save(theirs)
    again = mine.load("shard-0")  # the object changed since mine saved it: read again
    assert again is not state
    assert again.learned_through == 20
    assert again.stats_of("7").impressions == 1


def test_a_state_loaded_and_not_saved_is_read_again(stores):
    mine, _ = stores
    state = RankerShardState("shard-0", learned_through=10)
    mine.save(state)
    lent = mine.load("shard-0")
    lent.learned_through = 99  # a batch that failed after changing it, before saving
    again = mine.load("shard-0")
    assert again is not lent
    assert again.learned_through == 10


def test_load_all_shares_unchanged_states_and_reads_changed_and_new_ones(stores):
    writer, reader = stores
    for shard in ("shard-0", "shard-1"):
        writer.save(RankerShardState(shard, learned_through=1))
    first = {s.shard_id: s for s in reader.load_all()}
    second = {s.shard_id: s for s in reader.load_all()}
    assert set(first) == {"shard-0", "shard-1"}
    assert all(second[k] is first[k] for k in first)
    writer.save(RankerShardState("shard-1", learned_through=2))
    writer.save(RankerShardState("shard-2", learned_through=3))
    third = {s.shard_id: s for s in reader.load_all()}
    assert third["shard-0"] is first["shard-0"]
    assert third["shard-1"] is not first["shard-1"]
    assert third["shard-1"].learned_through == 2
    assert third["shard-2"].learned_through == 3
    assert reader.restart_positions() == 3
    assert {s.shard_id: s.learned_through for s in reader.load_all()} == {f"shard-{n}": -1 for n in range(3)}
