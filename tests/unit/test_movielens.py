"""The loader on the real ML-100K file (from the cache that `make data` fills; no download here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from rtrec.data.movielens import SOURCES, WheelCache, load_movielens
from rtrec.errors import DataUnavailableError, InvalidInputError


@pytest.fixture(scope="module")
def ml100k(data_cache_dir: Path):
    return load_movielens("ml-100k", data_cache_dir, allow_download=False)


def test_ml100k_has_the_published_counts(ml100k):
    assert len(ml100k.interactions) == 100_000
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1_682
    assert set(ml100k.interactions["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_indices_are_dense_and_original_ids_kept(ml100k):
    users, items, inter = ml100k.users, ml100k.items, ml100k.interactions
    assert users["user_index"].tolist() == list(range(943))
    assert items["item_index"].tolist() == list(range(1682))
    assert inter["user_index"].between(0, 942).all()
    assert inter["item_index"].between(0, 1681).all()
    # ML-100K's own ids are kept both as the client id and as the original id.
    toy_story = items[items["original_id"] == "1"].iloc[0]
    assert (toy_story["item_id"], toy_story["title"], toy_story["year"]) == ("1", "Toy Story", 1995)
    assert toy_story["genres"] == ("Animation", "Children's", "Comedy")


def test_user_features_are_parsed(ml100k):
    first = ml100k.users.iloc[0]
    assert (first["user_id"], first["age"], first["gender"], first["occupation"], first["zip_prefix"]) == (
        "1",
        24,
        "M",
        "technician",
        "85",
    )
    assert set(ml100k.users["gender"]) == {"M", "F"}


def test_interactions_are_in_time_order(ml100k):
    assert ml100k.interactions["timestamp"].is_monotonic_increasing
    # The first rating in ML-100K: user 259 rated item 255 at 874724710.
    first = ml100k.interactions.iloc[0]
    assert ml100k.users.loc[first["user_index"], "user_id"] == "259"
    assert ml100k.items.loc[first["item_index"], "item_id"] == "255"
    assert first["timestamp"] == 874724710


def test_unknown_genre_becomes_no_genre(ml100k):
    assert not any("unknown" in genres for genres in ml100k.items["genres"])


def test_summary_and_hash_describe_the_snapshot(ml100k):
    assert "100,000 interactions" in ml100k.summary()
    assert len(ml100k.source_sha256) == 64


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="ml-1m, ml-100k"):
        load_movielens("ml-20m", tmp_path)  # type: ignore[arg-type]


def test_empty_cache_without_download_says_what_to_do(tmp_path):
    with pytest.raises(DataUnavailableError, match="rtrec data fetch"):
        load_movielens("ml-100k", tmp_path, allow_download=False)


def test_unreachable_registry_says_so_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def offline(command, **_kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: Could not find a version (network is unreachable)")

    monkeypatch.setattr(subprocess, "run", offline)
    with pytest.raises(DataUnavailableError, match="registry seems unreachable") as excinfo:
        WheelCache(tmp_path).wheel(SOURCES["ml-1m"])
    assert "network is unreachable" in str(excinfo.value)
    assert list(tmp_path.rglob("*.whl")) == []


def test_a_corrupt_cached_wheel_is_reported(tmp_path):
    (tmp_path / "recbole-1.2.1-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(DataUnavailableError, match="not a valid wheel"):
        load_movielens("ml-100k", tmp_path, allow_download=False)


def test_stream_events_join_the_data_set_once_and_only_for_known_users_and_items(ml100k):
    import pandas as pd

    first = ml100k.interactions.iloc[0]
    user = ml100k.users.loc[ml100k.users["user_index"] == first["user_index"], "user_id"].item()
    item = ml100k.items.loc[ml100k.items["item_index"] == first["item_index"], "item_id"].item()
    unseen = ml100k.items.loc[
        ~ml100k.items["item_index"].isin(
            ml100k.interactions.loc[ml100k.interactions["user_index"] == first["user_index"], "item_index"]
        ),
        "item_id",
    ]
    new_item = str(unseen.iloc[0])
    events = pd.DataFrame(
        [
            {"user_id": user, "item_id": item, "type": "click", "value": None, "timestamp": 2_000_000_000},  # known pair
            {"user_id": user, "item_id": new_item, "type": "click", "value": None, "timestamp": 2_000_000_001},
            {"user_id": user, "item_id": new_item, "type": "purchase", "value": None, "timestamp": 2_000_000_002},
            {"user_id": user, "item_id": "no-such-item", "type": "click", "value": None, "timestamp": 2_000_000_003},
            {"user_id": user, "item_id": new_item, "type": "view", "value": None, "timestamp": 2_000_000_004},
            {"user_id": user, "item_id": new_item, "type": "rating", "value": 1.0, "timestamp": 2_000_000_005},
        ]
    )
    grown, counts = ml100k.with_events(events)
    assert counts == {"events": 6, "not_positive": 2, "unknown": 1, "duplicate": 2, "added": 1}
    assert len(grown.interactions) == len(ml100k.interactions) + 1
    last = grown.interactions.iloc[-1]
    assert last["timestamp"] == 2_000_000_001
    assert last["rating"] == 5.0
    assert ml100k.with_events(pd.DataFrame())[0] is ml100k


def test_the_offline_stores_events_keep_unix_seconds_and_string_ids():
    import json as _json

    from rtrec.domain.events import UserEvent, message_to_dict
    from training.train import read_stream_events

    raw = "".join(
        _json.dumps(message_to_dict(UserEvent(f"e{n}", "007", "0042", "click", 1_046_454_590.0 + n))) + "\n" for n in range(3)
    ).encode()
    frame = read_stream_events(raw)
    assert frame["timestamp"].tolist() == [1_046_454_590, 1_046_454_591, 1_046_454_592]
    assert frame["user_id"].tolist() == ["007"] * 3
    assert frame["item_id"].tolist() == ["0042"] * 3
    assert read_stream_events(b"  \n").empty
