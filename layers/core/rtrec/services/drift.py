"""The drift check: is live traffic still what the production model was trained for, and do its rewards hold?

Each scheduled run reads what the stream logged since the last run, and compares:
- **features** of the positive events in a rolling window (the last `window_events`) with the production model's
  training snapshot (its item catalog: each item's genres and time-decayed popularity at training time):
  `genre` (categorical) and `item_popularity` (numeric: log1p of the training popularity of the items users choose;
  it falls when users turn to niche or new items);
- **scores**: the relevance of the top slot of the slates production served, in the rolling window, against the
  first `window_events` slates that model served (its own reference, taken once per version);
- **reward**: whether each served slate was rewarded, in serving order, through Page-Hinkley and ADWIN detectors
  whose state carries over between runs (reset when a new version serves).
A drifted feature or a detector's signal starts retraining through the RetrainTrigger (cool-down, single job).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rtrec.domain.drift import (
    Adwin,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    PageHinkley,
    feature_drift,
    reward_drift,
)
from rtrec.domain.events import UserEvent
from rtrec.domain.model_files import ENCODER, ITEM_CATALOG
from rtrec.domain.online import LabeledImpression
from rtrec.errors import RtrecError
from rtrec.monitoring.telemetry import Telemetry
from rtrec.ports import Metrics, ModelFiles
from rtrec.services.retrain import RetrainTrigger, TriggerOutcome

NEW_ITEM = "(new item)"
# MovieLens' late period against a model's training snapshot, one check per 1,800 events (tests/bench/
# bench_drift_replay.py): the genres' Jensen-Shannon distance has a median of 0.070 and reaches 0.112, so the
# statistics module's 0.1 raised 0.65 false alarms an hour; 0.15 keeps clear of that noise.
DEFAULT_THRESHOLDS = DriftThresholds(js_distance=0.15)
RELEVANCE = 1  # the relevance column of RANKER_FEATURES


@dataclass(frozen=True)
class TrainingSnapshot:
    """What the production model was trained on, as the drift check compares it: from its item catalog."""

    version: str
    item_ids: np.ndarray
    genres: tuple[str, ...]
    genre_mask: np.ndarray
    popularity: np.ndarray
    # Derived in __post_init__: item id -> row, and one reference draw per (sample, seed) (the snapshot never changes).
    _row: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)
    _references: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_row", {str(i): r for r, i in enumerate(self.item_ids.tolist())})

    def rows(self, item_ids: list[str]) -> np.ndarray:
        row = self._row
        return np.array([row.get(i, -1) for i in item_ids], dtype=np.int64)

    def genre_counts(self, rows: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
        """Each genre's (weighted) count over `rows` (-1: an item the model never saw, counted as NEW_ITEM)."""
        weights = np.ones(len(rows)) if weights is None else weights
        known = rows >= 0
        counts = {NEW_ITEM: float(weights[~known].sum())}
        masks = self.genre_mask[rows[known]]
        for bit, genre in enumerate(self.genres):
            counts[genre] = float(weights[known][(masks >> bit) & 1 == 1].sum())
        return counts

    def reference(self, sample: int = 5_000, seed: int = 0) -> dict[str, Any]:
        """The training side: genre shares and popularity over interactions (items weighted by their decayed
        interaction count), with the reference's total scaled to `sample` observations."""
        cached = self._references.get((sample, seed))
        if cached is None:
            weights = np.clip(self.popularity, 0.0, None)
            total = float(weights.sum())
            if total <= 0:
                raise ValueError(f"model {self.version}'s catalog has no popularity to build a drift reference from")
            rows = np.arange(len(weights))
            genre = {k: v * sample / total for k, v in self.genre_counts(rows, weights).items()}
            drawn = np.random.default_rng(seed).choice(rows, size=sample, p=weights / total)
            cached = {"genre": genre, "item_popularity": np.log1p(weights[drawn])}
            self._references[(sample, seed)] = cached
        return dict(cached)  # the caller adds its own features to the mapping

    def live(self, item_ids: list[str]) -> dict[str, Any]:
        rows = self.rows(item_ids)
        popularity = np.where(rows >= 0, self.popularity[np.maximum(rows, 0)], 0.0)
        return {"genre": self.genre_counts(rows), "item_popularity": np.log1p(np.clip(popularity, 0.0, None))}


class ProductionSnapshot:
    """The production model's training snapshot, decoded from its published item catalog (ITEM_CATALOG: item ids,
    genre masks, popularity) and encoder (the genre mask's bit order); read once per production version."""

    def __init__(self, files: ModelFiles) -> None:
        self._files = files
        self._cached: TrainingSnapshot | None = None

    def __call__(self) -> TrainingSnapshot | None:
        pointer = self._files.read_pointer()
        if pointer is None:
            return None
        if self._cached is not None and self._cached.version == pointer.version:
            return self._cached
        raw, encoder = (self._files.read_file(pointer.version, name) for name in (ITEM_CATALOG, ENCODER))
        if raw is None or encoder is None:
            raise RtrecError(
                f"model version {pointer.version} lacks {ITEM_CATALOG} or {ENCODER}: no training snapshot to compare with"
            )
        genres = tuple(json.loads(encoder).get("genres", ()))
        with np.load(io.BytesIO(raw), allow_pickle=False) as columns:
            snapshot = TrainingSnapshot(
                pointer.version, columns["item_ids"], genres, columns["genre_mask"], columns["popularity"]
            )
        self._cached = snapshot
        return snapshot


# A source's position in what it logged, kept in the monitor's state (JSON) and otherwise opaque to it: 0.0 before
# the first read; the S3 sources' is the newest arrival time and the keys read at exactly that time.
SourceCursor = float | dict[str, Any]


class DriftSources(Protocol):
    """What the stream logged (the counterfactual-logs bucket), newest since a cursor (the source's own)."""

    def events_since(self, cursor: SourceCursor) -> tuple[list[UserEvent], SourceCursor]: ...

    def slates_since(self, cursor: SourceCursor) -> tuple[list[LabeledImpression], SourceCursor]: ...


class DriftRunLog(Protocol):
    """Where each report is also recorded for people (MLflow); best effort, S3 is the record of reference."""

    def log(self, report: dict[str, Any], key: str) -> str: ...


class DriftStore(Protocol):
    def load_state(self) -> dict[str, Any] | None: ...

    def save_state(self, state: dict[str, Any]) -> None: ...

    def write_report(self, report: dict[str, Any], key: str | None = None) -> str:
        """Store a report (under `key`, replacing it, when given); returns where (its key)."""


@dataclass
class DriftState:
    """Carried between runs (JSON): the cursors, the rolling windows and the reward detectors."""

    events_cursor: SourceCursor = 0.0
    slates_cursor: SourceCursor = 0.0
    recent_items: list[str] = field(default_factory=list)
    version: str | None = None  # the production version the windows below belong to
    score_reference: list[float] = field(default_factory=list)
    recent_scores: list[float] = field(default_factory=list)
    detectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any] | None) -> DriftState:
        if not body:
            return cls()
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class DriftOutcome:
    report: dict[str, Any]
    report_key: str
    trigger: TriggerOutcome | None  # None: nothing drifted


class DriftMonitor:
    def __init__(
        self,
        sources: DriftSources,
        store: DriftStore,
        snapshot: Callable[[], TrainingSnapshot | None],
        trigger: RetrainTrigger | None,
        metrics: Metrics | None = None,
        *,
        thresholds: DriftThresholds | None = None,
        window_events: int = 2_000,
        clock: Callable[[], float] = time.time,
        run_log: DriftRunLog | None = None,
    ) -> None:
        if window_events < 1:
            raise ValueError("window_events must be at least 1")
        self._sources = sources
        self._store = store
        self._snapshot = snapshot
        self._trigger = trigger
        self._metrics = metrics
        self.thresholds = thresholds or DEFAULT_THRESHOLDS
        self.window_events = window_events
        self._clock = clock
        self._run_log = run_log

    def run(self) -> DriftOutcome:
        now = self._clock()
        state = DriftState.from_dict(self._store.load_state())
        snapshot = self._snapshot()
        events, state.events_cursor = self._sources.events_since(state.events_cursor)
        slates, state.slates_cursor = self._sources.slates_since(state.slates_cursor)
        positives = sorted((e for e in events if e.is_positive), key=lambda e: e.timestamp)
        state.recent_items = (state.recent_items + [e.item_id for e in positives])[-self.window_events :]

        version = snapshot.version if snapshot is not None else None
        if version != state.version:  # a new model serves: its own score reference, fresh reward detectors
            state.version, state.score_reference, state.recent_scores, state.detectors = version, [], [], {}
        served = [s for s in sorted(slates, key=lambda s: s.slate.timestamp) if s.slate.model_version == version]
        scores = [s.slate.features[0][RELEVANCE] for s in served if s.slate.strategy == "two_tower" and s.slate.features]
        room = self.window_events - len(state.score_reference)
        state.score_reference += scores[: max(room, 0)]
        state.recent_scores = (state.recent_scores + scores[max(room, 0) :])[-self.window_events :]

        report = DriftReport()
        if snapshot is not None:
            reference, live = snapshot.reference(), snapshot.live(state.recent_items)
            reference["score"], live["score"] = np.asarray(state.score_reference), np.asarray(state.recent_scores)
            # A window is judged once it is half full (and holds min_samples events; an event counts once per genre
            # of its item): the genres of a few hundred events differ from the reference by chance alone.
            if len(state.recent_items) < max(self.thresholds.min_samples, self.window_events // 2):
                live["genre"], live["item_popularity"] = {}, np.empty(0)
            empty = [name for name in reference if _size(reference[name]) == 0 or _size(live[name]) == 0]
            judged = [name for name in reference if name not in empty]
            report = feature_drift(
                {n: reference[n] for n in judged},
                {n: live[n] for n in judged},
                self.thresholds,
                kinds={"genre": "categorical"} if "genre" in judged else None,
            )
            report = report.merged(
                *(
                    FeatureDrift(
                        name,
                        "numeric" if name != "genre" else "categorical",
                        {},
                        {},
                        False,
                        n_reference=_size(reference[name]),
                        n_live=_size(live[name]),
                        note="not judged: nothing logged on one side yet",
                    )
                    for name in empty
                )
            )
            rewards = [float(sum(s.rewards) > 0) for s in served]
            # each detector's state as saved, or a fresh one with the thresholds' settings
            detectors: dict[
                str, tuple[Callable[[Mapping[str, Any]], PageHinkley | Adwin], Callable[[], PageHinkley | Adwin]]
            ] = {
                "reward_page_hinkley": (PageHinkley.from_dict, self.thresholds.page_hinkley),
                "reward_adwin": (Adwin.from_dict, self.thresholds.adwin),
            }
            results = []
            for name, (restored, fresh) in detectors.items():
                saved = state.detectors.get(name)
                detector = restored(saved) if saved else fresh()
                results.append(reward_drift(name, detector, rewards))
                state.detectors[name] = detector.to_dict()
            report = report.merged(*results)
        state.runs += 1
        body = {
            "generated_at": now,
            "model_version": version,
            "run": state.runs,
            "drifted": report.drifted,
            "reasons": report.reasons,
            "features": [_flat(f.to_dict()) for f in report.features],
            "window": {"events": len(state.recent_items), "new_events": len(events), "new_slates": len(served)},
            "note": None if snapshot is not None else "no production model: nothing to compare with",
        }
        outcome_trigger = None
        key = self._store.write_report(body)
        if report.drifted and self._trigger is not None:
            # The job is tagged with the report's key, so the report is written first, then again with the outcome.
            outcome_trigger = self._trigger.maybe_start(key, report.reasons)
            body["trigger"] = dict(outcome_trigger.__dict__)
            self._store.write_report(body, key)
        self._store.save_state(state.to_dict())
        self._publish(body, outcome_trigger)
        if self._run_log is not None:
            try:
                body["mlflow_run_id"] = self._run_log.log(body, key)
            except RtrecError as exc:
                body["mlflow_error"] = str(exc)
        return DriftOutcome(body, key, outcome_trigger)

    def _publish(self, body: dict[str, Any], trigger: TriggerOutcome | None) -> None:
        telemetry = Telemetry(self._metrics)
        telemetry.drift_check(body)
        if trigger is not None and trigger.started:
            telemetry.retraining_run()


def _size(values: Any) -> int:
    return int(sum(values.values())) if isinstance(values, Mapping) else int(np.size(values))


def _flat(feature: dict[str, Any]) -> dict[str, Any]:
    """A feature's verdict with its headline statistic as `statistic`/`value`/`threshold` (for plots and alarms)."""
    stats, limits = feature["statistics"], feature["thresholds"]
    for name, limit in (("psi", "psi"), ("js_distance", "js_distance"), ("estimate", None)):
        if name in stats:
            return {**feature, "statistic": name, "value": stats[name], "threshold": limits.get(limit) if limit else None}
    return {**feature, "statistic": None, "value": None, "threshold": None}
