"""The drift check over in-memory sources: stationary traffic stays quiet, a genre shift and a reward drop are
found, and a finding starts retraining once per cool-down."""

from __future__ import annotations

import json

import numpy as np

from rtrec.domain.drift import DriftThresholds
from rtrec.domain.events import Impression, UserEvent
from rtrec.domain.online import LabeledImpression
from rtrec.services.drift import NEW_ITEM, DriftMonitor, TrainingSnapshot
from rtrec.services.retrain import RetrainTrigger
from tests.unit.test_retrain_trigger import FakeJobs, MemoryLock

GENRES = ("Action", "Comedy", "Drama", "Horror")
N_ITEMS = 200


def snapshot(version: str = "1") -> TrainingSnapshot:
    rng = np.random.default_rng(0)
    ids = np.array([str(i) for i in range(N_ITEMS)])
    masks = np.array([1 << (i % 4) for i in range(N_ITEMS)], dtype=np.int64)
    masks[masks == 8] = np.where(rng.random(int((masks == 8).sum())) < 0.5, 8, 8 | 1)
    popularity = 100.0 / (1 + np.arange(N_ITEMS)) ** 0.8
    return TrainingSnapshot(version, ids, GENRES, masks, popularity)


class Sources:
    def __init__(self) -> None:
        self.events: list[UserEvent] = []
        self.slates: list[LabeledImpression] = []

    def events_since(self, cursor):
        start = int(cursor or 0)
        return self.events[start:], len(self.events)

    def slates_since(self, cursor):
        start = int(cursor or 0)
        return self.slates[start:], len(self.slates)


class Store:
    def __init__(self) -> None:
        self.state = None
        self.reports: list[dict] = []

    def load_state(self):
        return self.state

    def save_state(self, state):
        self.state = json.loads(json.dumps(state))  # what a round trip through S3 keeps

    def write_report(self, report, key=None):
        if key is not None:
            self.reports[int(key.split("/")[-1].split(".")[0]) - 1] = report
            return key
        self.reports.append(report)
        return f"drift/reports/{len(self.reports)}.json"


class Metrics:
    def __init__(self) -> None:
        self.points: list[tuple] = []

    def put(self, name, value, unit="Count", dimensions=None):
        self.points.append((name, value, dimensions))


def traffic(
    sources: Sources, rng: np.random.Generator, n: int, *, horror: bool = False, hit_rate: float = 0.1, version: str = "1"
) -> None:
    """`n` positive events drawn like the training popularity (or only Horror items), and n slates rewarded at
    `hit_rate`, top-slot relevance around 0.5."""
    snap = snapshot()
    weights = snap.popularity / snap.popularity.sum()
    horror_rows = np.flatnonzero(snap.genre_mask & 8)
    for _ in range(n):
        i = len(sources.events)
        row = int(rng.choice(horror_rows)) if horror else int(rng.choice(N_ITEMS, p=weights))
        sources.events.append(UserEvent(f"e{i}", f"u{i % 97}", str(row), "click", 1_000.0 + i))
        slate = Impression(
            f"r{i}",
            f"u{i % 97}",
            version,
            "two_tower",
            ("1", "2"),
            (0.5, 0.5),
            (1.0, 1.0),
            1_000.0 + i,
            features=((1.0, float(rng.normal(0.5, 0.05))) + (0.0,) * 5,) * 2,
        )
        hit = rng.random() < hit_rate
        sources.slates.append(LabeledImpression(slate, (int(hit), 0), 1_001.0 + i))


def monitor(sources, store, trigger=None, metrics=None) -> DriftMonitor:
    return DriftMonitor(
        sources, store, snapshot, trigger, metrics, window_events=1_000, thresholds=DriftThresholds(min_samples=200)
    )


def test_stationary_traffic_raises_no_alarm_over_many_runs():
    sources, store, jobs = Sources(), Store(), FakeJobs()
    check = monitor(sources, store, RetrainTrigger(MemoryLock(), jobs, cooldown_seconds=60), Metrics())
    rng = np.random.default_rng(1)
    for _ in range(10):
        traffic(sources, rng, 400)
        outcome = check.run()
        assert not outcome.report["drifted"], outcome.report["reasons"]
    assert not jobs.started
    features = {f["name"]: f for f in store.reports[-1]["features"]}
    assert set(features) == {"genre", "item_popularity", "score", "reward_page_hinkley", "reward_adwin"}
    assert features["genre"]["statistic"] == "js_distance"
    assert features["item_popularity"]["statistic"] == "psi"
    assert store.state["runs"] == 10
    assert len(store.state["recent_items"]) == 1_000


def test_a_genre_shift_is_found_and_starts_one_retraining_job():
    sources, store, jobs, metrics = Sources(), Store(), FakeJobs(), Metrics()
    check = monitor(sources, store, RetrainTrigger(MemoryLock(), jobs, cooldown_seconds=3600), metrics)
    rng = np.random.default_rng(2)
    traffic(sources, rng, 1_000)
    assert not check.run().report["drifted"]
    traffic(sources, rng, 600, horror=True)
    outcome = check.run()
    assert outcome.report["drifted"]
    assert any(r.startswith("genre:") for r in outcome.report["reasons"])
    assert outcome.trigger.started
    assert len(jobs.started) == 1
    assert jobs.started[0][2]["drift_report"] == outcome.report_key
    again = check.run()  # still drifted, but the job runs and the cool-down holds
    assert again.trigger is not None
    assert not again.trigger.started
    assert len(jobs.started) == 1
    assert any(name == "RetrainingRuns" for name, _, _ in metrics.points)
    assert any(name == "DriftScore" and (dims or {}).get("Feature") == "genre" for name, _, dims in metrics.points)


def test_a_reward_drop_is_signalled_by_the_detectors_carried_between_runs():
    sources, store = Sources(), Store()
    check = monitor(sources, store)
    rng = np.random.default_rng(3)
    for _ in range(5):
        traffic(sources, rng, 1_000, hit_rate=0.10)
        assert not check.run().report["drifted"]
    traffic(sources, rng, 4_000, hit_rate=0.02)
    outcome = check.run()
    assert outcome.report["drifted"]
    assert any(r.startswith("reward_") for r in outcome.report["reasons"])


def test_a_new_production_version_starts_its_own_score_reference_and_detectors():
    sources, store = Sources(), Store()
    check = monitor(sources, store)
    rng = np.random.default_rng(4)
    traffic(sources, rng, 300)
    check.run()
    assert store.state["version"] == "1"
    assert len(store.state["score_reference"]) == 300
    check._snapshot = lambda: snapshot("2")
    traffic(sources, rng, 100, version="2")
    check.run()
    assert store.state["version"] == "2"
    assert len(store.state["score_reference"]) == 100


def test_items_the_model_never_saw_count_as_new_and_without_a_model_nothing_is_judged():
    snap = snapshot()
    live = snap.live(["0", "999", "nope"])
    assert live["genre"][NEW_ITEM] == 2
    assert live["item_popularity"].tolist()[1:] == [0.0, 0.0]
    sources, store = Sources(), Store()
    traffic(sources, np.random.default_rng(5), 50)
    outcome = DriftMonitor(sources, store, lambda: None, None).run()
    assert not outcome.report["drifted"]
    assert "no production model" in outcome.report["note"]


def test_each_report_goes_to_the_run_log_and_its_failure_never_fails_the_check():
    from rtrec.errors import DependencyError

    class RunLog:
        def __init__(self, fail: bool) -> None:
            self.fail, self.logged = fail, []

        def log(self, report, key):
            if self.fail:
                raise DependencyError("mlflow is down")
            self.logged.append(key)
            return f"run-{len(self.logged)}"

    sources, store = Sources(), Store()
    traffic(sources, np.random.default_rng(6), 300)
    good = RunLog(fail=False)
    outcome = DriftMonitor(sources, store, snapshot, None, run_log=good).run()
    assert good.logged == [outcome.report_key]
    assert outcome.report["mlflow_run_id"] == "run-1"
    failing = DriftMonitor(sources, Store(), snapshot, None, run_log=RunLog(fail=True)).run()
    assert "mlflow is down" in failing.report["mlflow_error"]
