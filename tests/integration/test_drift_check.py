"""The drift_check Lambda against the embedded cloud: the scheduled event in, the training snapshot from the
models bucket, the stream's logs from the counterfactual-logs bucket, the report and state back to S3, and the
retraining trigger's cool-down lock in DynamoDB."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from functions.drift_check.app import build_handler
from rtrec.adapters.aws.json_reports import S3JsonReports
from rtrec.adapters.aws.locks import DynamoLock
from rtrec.adapters.aws.model_store import S3ModelStore
from rtrec.adapters.aws.provision import Provisioner
from rtrec.adapters.aws.s3 import S3CounterfactualLog
from rtrec.domain.catalog import catalog_columns
from rtrec.domain.events import UserEvent
from rtrec.domain.model_files import ENCODER, ITEM_CATALOG
from rtrec.domain.models import ItemFeatures
from rtrec.domain.promotion import ProductionPointer
from rtrec.resources import COUNTERFACTUAL_BUCKET, LOCKS, MODELS_BUCKET, ResourceNames
from rtrec.services.retrain import RETRAIN_LOCK
from rtrec.settings import DriftSettings
from tests.unit.test_retrain_trigger import FakeJobs

pytestmark = pytest.mark.integration

EVENT = json.loads((Path(__file__).parents[1] / "events" / "eventbridge_scheduled_drift_check.json").read_text())
GENRES = ["Action", "Comedy", "Drama", "Horror"]
ITEMS = [ItemFeatures(str(i), f"Item {i}", genres=(GENRES[i % 4],), popularity=100.0 / (1 + i)) for i in range(80)]


@pytest.fixture(scope="module")
def world(cloud):
    names = ResourceNames(prefix=f"idrift{uuid.uuid4().hex[:6]}")
    Provisioner(names, endpoint_url=cloud.endpoint_url, region=cloud.region).provision()
    store = S3ModelStore(names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
    columns = io.BytesIO()
    np.savez(columns, **catalog_columns(ITEMS, GENRES))
    client = store._client
    client.put_object(Bucket=store.bucket, Key=store.version_prefix("1") + ITEM_CATALOG, Body=columns.getvalue())
    client.put_object(
        Bucket=store.bucket, Key=store.version_prefix("1") + ENCODER, Body=json.dumps({"genres": GENRES}).encode()
    )
    store.write_pointer(ProductionPointer("m", "1", "run", store.version_prefix("1"), 0, {}, "test"))
    return names


def events(n: int, rng: np.random.Generator, only_genre: int | None = None, start: int = 0) -> list[UserEvent]:
    weights = np.array([i.popularity for i in ITEMS])
    rows = np.arange(len(ITEMS)) if only_genre is None else np.arange(only_genre, len(ITEMS), 4)
    p = weights[rows] / weights[rows].sum()
    return [UserEvent(f"e{start + i}", f"u{i % 50}", str(int(rng.choice(rows, p=p))), "click", 1_000.0 + i) for i in range(n)]


def test_the_scheduled_check_reports_drift_once_and_starts_one_retraining_job(cloud, world):
    settings = DriftSettings(
        endpoint_url=cloud.endpoint_url, resource_prefix=world.prefix, retrain_cooldown_seconds=3600, drift_window_events=500
    )
    jobs = FakeJobs()
    handler = build_handler(settings, jobs=jobs)
    log = S3CounterfactualLog(world.bucket(COUNTERFACTUAL_BUCKET), endpoint_url=cloud.endpoint_url)
    rng = np.random.default_rng(0)

    log.write_batch("b1", events(600, rng))
    quiet = handler(EVENT, None)
    assert not quiet["drifted"]
    assert quiet["model_version"] == "1"
    assert quiet["window"]["new_events"] == 600
    assert "retraining" not in quiet

    log.write_batch("b2", events(600, rng, only_genre=3, start=600))  # every click on a Horror item
    found = handler(EVENT, None)
    assert found["drifted"]
    assert any(r.startswith("genre:") for r in found["reasons"])
    assert found["window"]["new_events"] == 600  # only what arrived since the last run
    assert found["retraining"]["started"]
    assert len(jobs.started) == 1
    assert jobs.started[0][2]["drift_report"] == found["report"]

    again = handler(EVENT, None)
    assert again["window"]["new_events"] == 0
    assert not again["retraining"]["started"]
    assert len(jobs.started) == 1
    holder = DynamoLock(world.table(LOCKS), endpoint_url=cloud.endpoint_url).holder(RETRAIN_LOCK)
    assert holder is not None
    assert holder.owner == jobs.started[0][0]
    assert holder.note == found["report"]

    reports, skipped = S3JsonReports(world.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url).read_all()
    assert skipped == []
    assert [r["drifted"] for r in reports] == [False, True, True]
    assert reports[1]["trigger"]["started"]
    assert reports[1]["trigger"]["job_name"] == jobs.started[0][0]
    genre = next(f for f in reports[1]["features"] if f["name"] == "genre")
    assert genre["statistic"] == "js_distance"
    assert genre["value"] > genre["threshold"]
