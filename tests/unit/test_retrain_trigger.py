"""The retraining trigger: one job per cool-down, never a second beside a running one."""

from __future__ import annotations

import pytest

from rtrec.services.retrain import RETRAIN_LOCK, RetrainTrigger


class MemoryLock:
    def __init__(self) -> None:
        self.held: dict[str, tuple[str, float]] = {}

    def acquire(self, name: str, owner: str, now: float, ttl_seconds: float, note: str = "") -> bool:
        held = self.held.get(name)
        if held is not None and held[1] > now:
            return False
        self.held[name] = (owner, now + ttl_seconds)
        return True

    def release(self, name: str, owner: str) -> bool:  # pragma: no cover - not used by the trigger
        return self.held.pop(name, None) is not None


class FakeJobs:
    def __init__(self) -> None:
        self.started: list[tuple[str, dict, dict]] = []
        self.running: set[str] = set()

    def start(self, name: str, hyperparameters, tags) -> str:
        self.started.append((name, dict(hyperparameters), dict(tags)))
        self.running.add(name)
        return name

    def in_progress(self, prefix: str) -> list[str]:
        return sorted(n for n in self.running if n.startswith(prefix))


def test_one_job_per_cool_down_and_none_beside_a_running_one():
    clock = [1_000_000.0]
    lock, jobs = MemoryLock(), FakeJobs()
    trigger = RetrainTrigger(lock, jobs, cooldown_seconds=600, hyperparameters={"epochs": "3"}, clock=lambda: clock[0])
    first = trigger.maybe_start("drift/reports/a.json", ["genre: js 0.3 > 0.1"])
    assert first.started
    assert first.job_name.startswith("rtrec-retrain-")
    name, hps, tags = jobs.started[0]
    assert hps == {"epochs": "3"}
    assert tags["trigger"] == "drift"
    assert tags["drift_report"] == "drift/reports/a.json"
    assert "genre" in tags["drift_reasons"]
    assert lock.held[RETRAIN_LOCK][0] == name

    clock[0] += 60
    second = trigger.maybe_start("drift/reports/b.json", ["x"])
    assert not second.started
    assert "still running" in second.reason
    jobs.running.clear()  # the job finished, but the cool-down still holds
    third = trigger.maybe_start("drift/reports/c.json", ["x"])
    assert not third.started
    assert "cool-down" in third.reason
    clock[0] += 600
    fourth = trigger.maybe_start("drift/reports/d.json", ["x"])
    assert fourth.started
    assert len(jobs.started) == 2


def test_a_cool_down_must_be_positive():
    with pytest.raises(ValueError, match="cooldown_seconds must be positive"):
        RetrainTrigger(MemoryLock(), FakeJobs(), cooldown_seconds=0)
