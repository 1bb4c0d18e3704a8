"""The drift check on replayed MovieLens traffic, offline (no stack): false alarms on the stationary late period,
and the detection delay after an injected genre shift.

The DriftMonitor runs exactly as the Lambda does, over in-memory sources fed with the replayed events: the late
period's positive ratings in time order (the replay `rtrec replay` sends), one check per `--run-events` events
(1,800 = one 5-minute schedule at 6 events/s). The reference is a trained model's catalog (its training snapshot).
Feature drift only: the reward detectors need served slates (see the e2e demo, `rtrec demo drift`).

    .venv/bin/python tests/bench/bench_drift_replay.py [--model-dir .rtrec/jobs/<job>/model]
"""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import numpy as np
from benchkit import ROOT

from rtrec.data.movielens import load_movielens
from rtrec.domain.events import UserEvent
from rtrec.services.drift import DriftMonitor, TrainingSnapshot
from rtrec_local.drift_demo import genre_events
from rtrec_local.replay import late_events
from tests.unit.test_drift_monitor import Sources, Store  # the unit tests' in-memory ports


def snapshot_from(model_dir: Path) -> TrainingSnapshot:
    genres = tuple(json.loads((model_dir / "encoder.json").read_text())["genres"])
    with np.load(io.BytesIO((model_dir / "item_catalog.npz").read_bytes())) as columns:
        return TrainingSnapshot("bench", columns["item_ids"], genres, columns["genre_mask"], columns["popularity"])


def as_events(replayed, offset: int = 0) -> list[UserEvent]:
    return [
        UserEvent(f"b{offset + n}", e.user_id, e.item_id, "rating", float(e.timestamp), e.rating)
        for n, e in enumerate(replayed)
    ]


def run(snapshot: TrainingSnapshot, events: list[UserEvent], run_events: int, window: int) -> list[dict]:
    sources, store = Sources(), Store()
    monitor = DriftMonitor(sources, store, lambda: snapshot, None, window_events=window)
    for start in range(0, len(events), run_events):
        sources.events.extend(events[start : start + run_events])
        monitor.run()
    return store.reports


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "rtrec")
    parser.add_argument("--run-events", type=int, default=1800, help="events between two checks")
    parser.add_argument("--window", type=int, default=2000, help="the check's rolling window of positive events")
    parser.add_argument("--rate", type=float, default=6.0, help="events per second, to turn events into hours")
    parser.add_argument("--genre", default="Horror")
    args = parser.parse_args()
    model_dir = (
        args.model_dir
        or max((ROOT / ".rtrec" / "jobs").glob("*/model/item_catalog.npz"), key=lambda p: p.stat().st_mtime).parent
    )
    snapshot = snapshot_from(model_dir)
    data = load_movielens("ml-1m", args.cache)
    stationary, _ = late_events(data, 0.9, None)
    positive = [e for e in stationary if e.rating >= 3]
    print(
        f"reference: {model_dir}; late period: {len(stationary):,} events ({len(positive):,} positive), "
        f"one check per {args.run_events:,} events, window {args.window:,}"
    )

    started = time.perf_counter()
    reports = run(snapshot, as_events(stationary), args.run_events, args.window)
    seconds = time.perf_counter() - started
    hours = len(stationary) / args.rate / 3600
    alarms = [r for r in reports if r["drifted"]]
    by_feature: dict[str, int] = {}
    for report in alarms:
        for reason in report["reasons"]:
            by_feature[reason.split(":")[0]] = by_feature.get(reason.split(":")[0], 0) + 1
    values = {f["name"]: [] for f in reports[-1]["features"]}
    for report in reports:
        for f in report["features"]:
            if f.get("value") is not None:
                values[f["name"]].append(f["value"])
    print(
        f"stationary: {len(reports)} checks over {hours:.1f} h of traffic at {args.rate:g}/s: "
        f"{len(alarms)} alarms ({len(alarms) / hours:.2f} per hour), by feature {by_feature}; "
        f"{seconds / len(reports) * 1000:.0f} ms per check"
    )
    for name, series in values.items():
        if series:
            print(f"  {name}: median {np.median(series):.4f}, max {np.max(series):.4f}")

    users = sorted({e.user_id for e in stationary[:3000]})
    for lead in (3000, 6000):
        before = as_events(stationary[:lead])
        shifted = as_events(genre_events(data, users, args.genre, 4000, int(stationary[lead - 1].timestamp) + 60), offset=10**6)
        step = 100
        reports = run(snapshot, before + shifted, step, args.window)
        first_before = next((i for i, r in enumerate(reports[: lead // step]) if r["drifted"]), None)
        first_after = next((i for i, r in enumerate(reports) if i >= lead // step and r["drifted"]), None)
        delay = (first_after + 1) * step - lead if first_after is not None else None
        reasons = reports[first_after]["reasons"] if first_after is not None else []
        print(
            f"injected shift to {args.genre} after {lead:,} events: alarm before the shift: "
            f"{'none' if first_before is None else f'at check {first_before}'}; detected {delay} events after it "
            f"({delay / args.rate:.0f} s at {args.rate:g}/s, checks every {step} events): {'; '.join(reasons)[:200]}"
            if delay is not None
            else f"injected shift after {lead:,} events: not detected in 4,000 events"
        )


if __name__ == "__main__":
    main()
