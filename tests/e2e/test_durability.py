"""Nothing accepted is lost: events answered 202, then `rtrec run` stopped with Ctrl-C or killed with -9, then
started again; every event is applied exactly once, what the stream taught survives, seeding keeps it."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import httpx
import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec_local.cloud import free_port
from tests.e2e.test_local_stack import start, wait_for

pytestmark = pytest.mark.e2e

USERS = [str(u) for u in range(1, 21)]  # ml-100k users, seeded with their ratings
NEW_USER = "e2e-durable-new-user"  # in no data set: the stream alone knows them
EVENTS = 2_000


def run_args(cloud_port: int, api_port: int) -> list[str]:
    return [
        "run",
        "--cloud-port",
        str(cloud_port),
        "--api-port",
        str(api_port),
        "--dataset",
        "ml-100k",
        "--no-bootstrap",
        "--drift-check-seconds",
        "0",
        "--promote-check-seconds",
        "0",
    ]


def clicks(run_id: str) -> list[dict]:
    rng = random.Random(7)
    users = [*USERS, NEW_USER]
    now = time.time()
    return [
        {
            "event_id": f"{run_id}-{n}",
            "user_id": users[n % len(users)],
            "item_id": str(rng.randint(1, 1682)),
            "type": "click",
            "timestamp": now + n * 0.001,
        }
        for n in range(EVENTS)
    ]


def post_all(base: str, events: list[dict]) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        for start_at in range(0, len(events), 500):
            response = client.post("/events", json={"events": events[start_at : start_at + 500]})
            assert response.status_code == 202, response.text


def counts(features: DynamoFeatureStore) -> dict[str, int]:
    profiles = features.get_users([*USERS, NEW_USER])
    return {u: profiles[u].interaction_count if u in profiles else 0 for u in [*USERS, NEW_USER]}


def expected_counts(before: dict[str, int], events: list[dict]) -> dict[str, int]:
    after = dict(before)
    for event in events:
        after[event["user_id"]] += 1
    return after


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_events_accepted_before_a_stop_are_applied_exactly_once_after_the_restart(tmp_path: Path, how: str):
    state_dir = tmp_path / "state"
    cloud_port, api_port = free_port(), free_port()
    base = f"http://127.0.0.1:{api_port}"
    features = DynamoFeatureStore("rtrec-user-features", "rtrec-item-features", endpoint_url=f"http://localhost:{cloud_port}")
    log = tmp_path / "run.log"
    process = start(run_args(cloud_port, api_port), state_dir, log)
    events = clicks(how)
    try:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, "rtrec run", process, log)
        before = counts(features)
        assert before[NEW_USER] == 0
        assert all(before[u] > 0 for u in USERS)
        post_all(base, events)
    finally:
        if how == "sigint":
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0, log.read_text()
        else:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    if how == "sigint":
        assert "draining the stream" in log.read_text()

    # Started again on the same ports and state: seeding keeps what the stream wrote, the rest of the stream is
    # consumed from the checkpoints, and nothing is applied twice.
    log = tmp_path / "run-again.log"
    process = start(run_args(cloud_port, api_port), state_dir, log)
    try:
        wait_for(lambda: httpx.get(f"{base}/health").status_code == 200, "rtrec run again", process, log)
        assert "seeded before" in log.read_text()
        want = expected_counts(before, events)
        wait_for(lambda: counts(features) == want, "every accepted event applied", process, log, timeout_s=120)
        # The client sends everything again: nothing changes (exactly once without a window).
        post_all(base, events)
        marker = {
            "event_id": f"{how}-marker",
            "user_id": NEW_USER,
            "item_id": "1",
            "type": "click",
            "timestamp": time.time() + 10,
        }
        post_all(base, [marker])
        want[NEW_USER] += 1
        wait_for(lambda: counts(features) == want, "the marker after the re-sent events", process, log, timeout_s=60)
        new_user = features.get_user(NEW_USER)
        assert new_user is not None
        assert new_user.history[-1] == "1"
        # What the stream taught serves the new user: they are no cold start any more.
        slate = httpx.get(f"{base}/recommend/{NEW_USER}").json()
        assert slate["cold_start"] is False, slate
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
