"""`rtrec demo drift`: the self-correcting loop, end to end, on a running local stack.

Phases, all through the API (a recommendation request before each event, the event naming its slate):
1. stationary: MovieLens interactions of a late period, in time order (a prequential replay);
2. drift: the same users turn to one genre: each clicks an item of that genre they have not seen, chosen by
   the items' popularity within the genre. It goes on until a retrained model is in production (or a time
   limit), then for `after_events` more, so the hit rate before and after the new model can be compared.
Meanwhile the stack's scheduler runs the drift check (which starts retraining on the offline store, ending as
the shadow candidate) and the promotion gate. The demo only watches: the drift reports, the shadow candidate
and the production version, and prints the timeline.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from rtrec_local.replay import ReplayEvent, replay


def genre_events(dataset: Any, users: list[str], genre: str, n: int, start_timestamp: int, seed: int = 0) -> list[ReplayEvent]:
    """`n` clicks (ratings of 5) of `users`, in turn, on items of `genre` each has not interacted with."""
    items = dataset.items
    in_genre = items[items["genres"].map(lambda g: genre in g)]
    if in_genre.empty:
        raise ValueError(f"no item has genre {genre!r}")
    counts = dataset.interactions["item_index"].value_counts()
    weights = in_genre["item_index"].map(counts).fillna(0.0).to_numpy() + 1.0
    candidates = in_genre["item_id"].astype(str).to_numpy()
    user_ids = dataset.users["user_id"].astype(str).to_numpy()
    item_ids = dataset.items["item_id"].astype(str).to_numpy()
    seen: dict[str, set[str]] = {u: set() for u in users}
    inter = dataset.interactions
    for u, i in zip(user_ids[inter["user_index"].to_numpy()], item_ids[inter["item_index"].to_numpy()]):
        if u in seen:
            seen[u].add(i)
    rng = np.random.default_rng(seed)
    out: list[ReplayEvent] = []
    for k in range(n):
        user = users[k % len(users)]
        p = np.array([0.0 if c in seen[user] else w for c, w in zip(candidates, weights)])
        if p.sum() <= 0:
            continue
        item = str(rng.choice(candidates, p=p / p.sum()))
        seen[user].add(item)
        out.append(ReplayEvent(user, item, 5.0, start_timestamp + 60 * k))
    return out


@dataclass
class Timeline:
    started: float = field(default_factory=time.monotonic)
    marks: list[tuple[float, str, int]] = field(default_factory=list)  # (seconds, what, events sent so far)

    def mark(self, what: str, events: int) -> None:
        self.marks.append((time.monotonic() - self.started, what, events))

    def at(self, prefix: str) -> tuple[float, int] | None:
        for seconds, what, events in self.marks:
            if what.startswith(prefix):
                return seconds, events
        return None


@dataclass
class Observed:
    production: str | None
    shadow: str | None
    drifted_reports: int
    first_drift: dict[str, Any] | None
    retraining: dict[str, Any] | None


def observe(api_url: str, reports: Callable[[], list[dict[str, Any]]], since: float) -> Observed:
    health = httpx.get(f"{api_url}/health", timeout=10).json()
    fresh = [r for r in reports() if float(r.get("generated_at", 0)) >= since]
    drifted = [r for r in fresh if r.get("drifted")]
    started = [r for r in fresh if (r.get("trigger") or {}).get("started")]
    return Observed(
        health.get("model_version"),
        health.get("shadow_version"),
        len(drifted),
        drifted[0] if drifted else None,
        (started[0]["trigger"] if started else None),
    )


@dataclass
class PhaseResult:
    name: str
    events: int
    hits: int

    @property
    def hit_rate(self) -> float:
        return self.hits / self.events if self.events else 0.0


def run_demo(
    api_url: str,
    stationary: list[ReplayEvent],
    drifted: list[ReplayEvent],
    *,
    rate: float,
    reports: Callable[[], list[dict[str, Any]]],
    say: Callable[[str], None],
    chunk: int = 50,
    after_events: int = 300,
    max_seconds: float = 1800.0,
) -> tuple[Timeline, list[PhaseResult]]:
    """Drive the phases (see the module docstring) and watch the loop; returns the timeline and each phase's HR."""
    timeline, results = Timeline(), []
    wall_start = time.time()
    first = observe(api_url, reports, wall_start)
    say(f"production model {first.production}; stationary phase: {len(stationary)} events at {rate:g}/s")
    run_id = uuid.uuid4().hex[:8]
    result = replay(stationary, api_url, "live", run_id=f"{run_id}s", rate=rate, show_progress=False)
    results.append(PhaseResult("stationary", result.events, result.hits))
    quiet = observe(api_url, reports, wall_start)
    timeline.mark(
        f"stationary phase done: HR@10 {result.hit_rate:.4f}, {quiet.drifted_reports} drifted reports (false alarms)",
        len(stationary),
    )
    say(timeline.marks[-1][1])

    drift_start = time.time()
    timeline.mark("drift starts (users turn to one genre)", len(stationary))
    sent = hits_before = events_before = hits_after = events_after = 0
    promoted_at_events: int | None = None
    seen_drift = seen_job = seen_shadow = False
    before_version = first.production
    position = 0
    while position < len(drifted):
        batch = drifted[position : position + chunk]
        position += len(batch)
        r = replay(batch, api_url, "live", run_id=f"{run_id}d{position}", rate=rate, show_progress=False)
        sent += r.events
        if promoted_at_events is None:
            hits_before, events_before = hits_before + r.hits, events_before + r.events
        else:
            hits_after, events_after = hits_after + r.hits, events_after + r.events
        now = observe(api_url, reports, drift_start)
        total = len(stationary) + sent
        if not seen_drift and now.first_drift is not None:
            seen_drift = True
            timeline.mark(f"drift detected: {'; '.join(now.first_drift.get('reasons', []))[:160]}", total)
            say(timeline.marks[-1][1])
        if not seen_job and now.retraining is not None:
            seen_job = True
            timeline.mark(f"retraining job started: {now.retraining.get('job_name')}", total)
            say(timeline.marks[-1][1])
        if not seen_shadow and now.shadow and now.shadow != before_version:
            seen_shadow = True
            timeline.mark(f"retrained version {now.shadow} registered (staging) and scored in shadow", total)
            say(timeline.marks[-1][1])
        if promoted_at_events is None and now.production != before_version:
            promoted_at_events = sent
            timeline.mark(f"version {now.production} promoted by the gate and serving", total)
            say(timeline.marks[-1][1])
        if promoted_at_events is not None and sent - promoted_at_events >= after_events:
            break
        if time.time() - drift_start > max_seconds:
            timeline.mark(f"time limit ({max_seconds:.0f} s) reached before the loop closed", total)
            say(timeline.marks[-1][1])
            break
    results.append(PhaseResult("drift, before the new model", events_before, hits_before))
    results.append(PhaseResult("drift, after the new model", events_after, hits_after))
    return timeline, results
