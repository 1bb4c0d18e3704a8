"""The drift check's training snapshot, decoded from the production version's published files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from rtrec.domain.model_files import ENCODER, ITEM_CATALOG
from rtrec.domain.promotion import ProductionPointer
from rtrec.errors import RtrecError
from rtrec.services.drift import ProductionSnapshot


class PublishedFiles:
    """The ModelFiles port over dicts: the production pointer and each version's files; counts file reads."""

    def __init__(self) -> None:
        self.production: str | None = None
        self.files: dict[tuple[str, str], bytes] = {}
        self.reads = 0

    def publish(self, version: str, item_ids: list[str], genre_mask: list[int], genres: list[str]) -> None:
        body = io.BytesIO()
        np.savez(
            body,
            item_ids=np.array(item_ids),
            genre_mask=np.array(genre_mask, dtype=np.int64),
            popularity=np.linspace(1.0, 0.0, len(item_ids)),
        )
        self.files[(version, ITEM_CATALOG)] = body.getvalue()
        self.files[(version, ENCODER)] = json.dumps({"genres": genres}).encode()
        self.production = version

    def read_pointer(self, role: str = "production") -> ProductionPointer | None:
        if self.production is None:
            return None
        return ProductionPointer(
            "rtrec-two-tower", self.production, "run", f"models/versions/{self.production}/", 0, {}, "test"
        )

    def read_file(self, version: str, name: str) -> bytes | None:
        self.reads += 1
        return self.files.get((version, name))


def test_no_production_model_means_no_snapshot():
    assert ProductionSnapshot(PublishedFiles())() is None


def test_the_snapshot_is_the_production_versions_catalog_read_once_per_version():
    files = PublishedFiles()
    files.publish("1", ["10", "20", "30"], [0b01, 0b10, 0b11], ["Comedy", "Drama"])
    snapshot = ProductionSnapshot(files)
    first = snapshot()
    assert first is not None
    assert first.version == "1"
    assert first.item_ids.tolist() == ["10", "20", "30"]
    assert first.genres == ("Comedy", "Drama")
    assert first.genre_mask.tolist() == [1, 2, 3]
    assert first.popularity[0] == 1.0
    assert snapshot() is first
    assert files.reads == 2
    files.publish("2", ["10", "40"], [0b10, 0b01], ["Drama", "Comedy"])
    second = snapshot()
    assert second is not None
    assert second.version == "2"
    assert second.genres == ("Drama", "Comedy")
    assert files.reads == 4


def test_a_version_without_its_catalog_is_an_error_that_names_it():
    files = PublishedFiles()
    files.publish("3", ["10"], [1], ["Comedy"])
    del files.files[("3", ITEM_CATALOG)]
    with pytest.raises(RtrecError, match=f"version 3 lacks {ITEM_CATALOG}"):
        ProductionSnapshot(files)()
