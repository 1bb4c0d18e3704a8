"""Shared fixtures: the data cache (filled by `make data`), sample Lambda events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rtrec.settings import LocalSettings

EVENTS_DIR = Path(__file__).parent / "events"
# The API Gateway key ids in the sample events' requestContext.identity, and their roles (RTREC_API_KEY_ROLES).
SAMPLE_API_KEY_ROLES = {"sample-events-key-id": ["events", "read"], "sample-admin-key-id": ["admin", "events", "read"]}


@pytest.fixture(scope="session")
def data_cache_dir() -> Path:
    """The wheel cache that `make data` / `rtrec data fetch` fills; tests never download."""
    return LocalSettings().data_cache_dir


@pytest.fixture
def lambda_event():
    def load(name: str) -> dict:
        return json.loads((EVENTS_DIR / name).read_text())

    return load
