"""The stream consumer in a process of its own (what `rtrec run` starts): it applies the stream, reports its status
and metrics to the parent, comes back after a crash from its checkpoints, and drains before it stops."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rtrec.adapters.aws.dynamo import DynamoFeatureStore
from rtrec.adapters.aws.kinesis import KinesisEventStream
from rtrec.domain.events import UserEvent
from rtrec.resources import EVENTS_STREAM, ITEM_FEATURES, USER_FEATURES, ResourceNames
from rtrec_local.cloud import EmbeddedCloud
from rtrec_local.consumer_process import ConsumerProcess
from rtrec_local.state import LocalState

pytestmark = pytest.mark.integration

NAMES = ResourceNames(prefix="cptest")


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s:.0f} s: {what}")


def clicks(first: int, count: int) -> list[UserEvent]:
    return [UserEvent(f"cp-{n}", "cp-user", str(n), "click", time.time()) for n in range(first, first + count)]


def test_the_consumer_process_applies_reports_restarts_and_drains(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RTREC_PREFIX", NAMES.prefix)  # the child's ConsumerSettings read it
    state = LocalState(tmp_path / "state").ensure()
    lines: list[str] = []
    with EmbeddedCloud(port=0, names=NAMES, state=state, backend="durable") as cloud:
        stream = KinesisEventStream(NAMES.stream(EVENTS_STREAM), endpoint_url=cloud.endpoint_url)
        features = DynamoFeatureStore(NAMES.table(USER_FEATURES), NAMES.table(ITEM_FEATURES), endpoint_url=cloud.endpoint_url)

        def applied() -> int:
            profile = features.get_user("cp-user")
            return profile.interaction_count if profile is not None else 0

        consumer = ConsumerProcess(
            cloud.endpoint_url, tmp_path / "consumer-status.json", say=lines.append, drain_seconds=30
        ).start()
        try:
            stream.put(clicks(0, 20))
            wait_for(lambda: applied() == 20, "20 clicks applied")
            wait_for(lambda: consumer.stats()["records"] >= 20, "the status file reports them")
            assert consumer.stats()["lag_seconds"] is not None
            metrics = consumer.metrics_text().decode()
            assert "rtrec_consumer_records_total" in metrics
            assert "rtrec_requests_total" not in metrics

            first_pid = consumer.pid
            assert first_pid is not None
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: consumer.restarts == 1 and consumer.pid not in (None, first_pid), "a restart")
            assert any("exited with -9; starting it again" in line for line in lines), lines
            stream.put(clicks(20, 10))
            wait_for(lambda: applied() == 30, "10 more after the restart, none twice")

            stream.put(clicks(30, 10))  # still on the stream when the stop begins: the drain applies them
            consumer.drain_and_stop(threading.Event())
            assert consumer.pid is None or not consumer.running
            assert applied() == 40
        finally:
            consumer.stop()
