"""Prequential replay: MovieLens interactions of a late period sent through the running API in time order.

Before each event the replay asks for the user's recommendations (k=10) and counts a hit when the
event's item is among them (online hit rate, HR@10); then, in `live` mode, it posts the event to
`POST /events`, so the consumer updates the user's history before their next request. In `frozen`
mode nothing is posted: the same model with the features as they were at the start. The difference
is what real-time feature updates are worth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import httpx
from tqdm import tqdm

from rtrec.errors import DependencyError

Mode = Literal["frozen", "live"]


@dataclass(frozen=True)
class ReplayEvent:
    user_id: str
    item_id: str
    rating: float
    timestamp: int



@dataclass(frozen=True)
class ReplayResult:
    mode: Mode
    events: int
    hits: int
    errors: int
    seconds: float
    strategies: dict[str, int]

    @property
    def hit_rate(self) -> float:
        return self.hits / self.events if self.events else 0.0


def late_events(dataset, from_fraction: float, limit: int | None) -> tuple[list[ReplayEvent], int]:
    """The interactions after the `from_fraction` quantile of time, oldest first, and that cut (unix s)."""
    inter = dataset.interactions  # sorted by timestamp
    start = int(len(inter) * from_fraction)
    cut = int(inter["timestamp"].iloc[start])
    late = inter[inter["timestamp"] >= cut]
    if limit:
        late = late.iloc[:limit]
    users = dataset.users["user_id"].to_numpy()
    items = dataset.items["item_id"].to_numpy()
    events = [ReplayEvent(str(users[u]), str(items[i]), float(r), int(t)) for u, i, r, t in zip(
        late["user_index"].to_numpy(), late["item_index"].to_numpy(), late["rating"].to_numpy(),
        late["timestamp"].to_numpy())]
    return events, cut


def _paced(events: list[ReplayEvent], rate: float | None) -> Iterator[ReplayEvent]:
    started = time.monotonic()
    for n, event in enumerate(events):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield event


def replay(events: list[ReplayEvent], api_url: str, mode: Mode, *, run_id: str, rate: float | None = None, k: int = 10,
           show_progress: bool = True) -> ReplayResult:
    """Send `events` through the API (see the module docstring); returns the online HR@k. Event ids carry
    `run_id`, so a second replay of the same interactions is not taken for re-delivered events."""
    hits = errors = 0
    strategies: dict[str, int] = {}
    started = time.monotonic()
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            raise DependencyError(f"the API at {api_url} does not answer /health ({exc}); start it with `make run`") from exc
        bar = tqdm(_paced(events, rate), total=len(events), desc=f"replay ({mode})", unit="event",
                   disable=not show_progress, mininterval=1.0)
        for n, event in enumerate(bar):
            response = client.get(f"/recommend/{event.user_id}", params={"k": k})
            if response.status_code != 200:
                errors += 1
            else:
                body = response.json()
                strategies[body["strategy"]] = strategies.get(body["strategy"], 0) + 1
                hits += event.item_id in {r["item_id"] for r in body["recommendations"]}
            if mode == "live":
                posted = client.post("/events", json={"events": [{
                    "event_id": f"replay-{run_id}-{n}", "user_id": event.user_id, "item_id": event.item_id, "type": "rating",
                    "value": event.rating, "timestamp": event.timestamp}]})
                errors += posted.status_code != 202
            bar.set_postfix(hr=f"{hits / max(bar.n, 1):.3f}", refresh=False)
    return ReplayResult(mode, len(events), hits, errors, time.monotonic() - started, strategies)
