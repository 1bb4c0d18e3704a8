"""Prequential replay: MovieLens interactions of a late period sent through the running API in time order.

Before each event the replay asks for the user's recommendations (k=10) and counts a hit when the
event's item is among them (online hit rate, HR@10). Three modes:

- `frozen`: nothing is posted: the same model with the features as they were at the start;
- `live`: each event is posted to `POST /events` (naming the slate it answers, as a client attributes a
  click), so the consumer updates the user's history before their next request; ranked without the
  online ranker (`online_ranker=false`);
- `ranker`: as `live`, with the online ranker's score in the ranking: it learns from the rewards of the
  replay's own slates as they happen (the caller starts it from nothing).

The differences are what real-time features, and then the online ranker, are worth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import httpx
from tqdm import tqdm

from rtrec.errors import DependencyError

if TYPE_CHECKING:
    from rtrec.data.movielens import MovieLens

Mode = Literal["frozen", "live", "ranker"]
MODES: tuple[str, ...] = ("frozen", "live", "ranker")


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
    ranked_online: int = 0  # responses the online ranker took part in

    @property
    def hit_rate(self) -> float:
        return self.hits / self.events if self.events else 0.0


def late_events(dataset: MovieLens, from_fraction: float, limit: int | None) -> tuple[list[ReplayEvent], int]:
    """The interactions after the `from_fraction` quantile of time, oldest first, and that cut (unix s)."""
    inter = dataset.interactions  # sorted by timestamp
    start = int(len(inter) * from_fraction)
    cut = int(inter["timestamp"].iloc[start])
    late = inter[inter["timestamp"] >= cut]
    if limit:
        late = late.iloc[:limit]
    users = dataset.users["user_id"].to_numpy()
    items = dataset.items["item_id"].to_numpy()
    events = [
        ReplayEvent(str(users[u]), str(items[i]), float(r), int(t))
        for u, i, r, t in zip(
            late["user_index"].to_numpy(),
            late["item_index"].to_numpy(),
            late["rating"].to_numpy(),
            late["timestamp"].to_numpy(),
        )
    ]
    return events, cut


def _paced(events: list[ReplayEvent], rate: float | None) -> Iterator[ReplayEvent]:
    started = time.monotonic()
    for n, event in enumerate(events):
        if rate:
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield event


def replay(
    events: list[ReplayEvent],
    api_url: str,
    mode: Mode,
    *,
    run_id: str,
    rate: float | None = None,
    k: int = 10,
    show_progress: bool = True,
    api_key: str | None = None,
) -> ReplayResult:
    """Send `events` through the API (see the module docstring); returns the online HR@k. Event ids carry
    `run_id`, so a second replay of the same interactions is not taken for re-delivered events."""
    hits = errors = ranked_online = 0
    strategies: dict[str, int] = {}
    started = time.monotonic()
    headers = {"X-Api-Key": api_key} if api_key else None
    with httpx.Client(base_url=api_url, timeout=10.0, headers=headers) as client:
        try:
            client.get("/health").raise_for_status()
        except httpx.HTTPError as exc:
            raise DependencyError(f"the API at {api_url} does not answer /health ({exc}); start it with `make run`") from exc
        bar = tqdm(
            _paced(events, rate),
            total=len(events),
            desc=f"replay ({mode})",
            unit="event",
            disable=not show_progress,
            mininterval=1.0,
        )
        for n, event in enumerate(bar):
            response = client.get(
                f"/recommend/{event.user_id}", params={"k": k, "online_ranker": str(mode == "ranker").lower()}
            )
            request_id = None
            if response.status_code != 200:
                errors += 1
            else:
                body = response.json()
                request_id = body["request_id"]
                strategies[body["strategy"]] = strategies.get(body["strategy"], 0) + 1
                ranked_online += bool(body.get("online_ranker"))
                hits += event.item_id in {r["item_id"] for r in body["recommendations"]}
            if mode != "frozen":
                posted = client.post(
                    "/events",
                    json={
                        "events": [
                            {
                                "event_id": f"replay-{run_id}-{n}",
                                "user_id": event.user_id,
                                "item_id": event.item_id,
                                "type": "rating",
                                "value": event.rating,
                                "timestamp": event.timestamp,
                                "request_id": request_id,
                            }
                        ]
                    },
                )
                errors += posted.status_code != 202
            bar.set_postfix(hr=f"{hits / max(bar.n, 1):.3f}", refresh=False)
    return ReplayResult(mode, len(events), hits, errors, time.monotonic() - started, strategies, ranked_online)
