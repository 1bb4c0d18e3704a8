"""Shared fixtures: the data cache (filled by `make data`), sample Lambda events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtrec.settings import LocalSettings

EVENTS_DIR = Path(__file__).parent / "events"


@pytest.fixture(scope="session")
def data_cache_dir() -> Path:
    """The wheel cache that `make data` / `rtrec data fetch` fills; tests never download."""
    return LocalSettings().data_cache_dir


@pytest.fixture
def lambda_event():
    def load(name: str) -> dict:
        return json.loads((EVENTS_DIR / name).read_text())

    return load
