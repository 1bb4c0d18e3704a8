"""`rtrec replay`: prequential replay of the data set's late interactions through the running API."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, cast

import typer

from rtrec.data.movielens import load_movielens
from rtrec.services.seed import user_profiles
from rtrec_local.cli.keys import client_api_key
from rtrec_local.cli.utils import (
    ApiKeyOption,
    DatasetOption,
    EndpointOption,
    aws_adapters,
    aws_settings,
    exit_on_error,
    fail,
    local_settings,
    say,
)


def replay_command(
    endpoint_url: EndpointOption = "http://localhost:4566",
    api_url: Annotated[str, typer.Option(help="the running API")] = "http://127.0.0.1:8000",
    dataset: DatasetOption = "ml-1m",
    from_fraction: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="replay the interactions after this quantile of time")
    ] = 0.9,
    limit: Annotated[int, typer.Option(min=1, help="at most this many events")] = 3000,
    rate: Annotated[
        float,
        typer.Option(min=0.1, help="events per second (the local consumer keeps up with about 6, plus as many impressions)"),
    ] = 6.0,
    mode: Annotated[str, typer.Option(help="frozen, live, ranker, or all (the three in turn, with the lifts)")] = "all",
    settle_seconds: Annotated[
        float, typer.Option(min=0, help="wait this long after a live replay for the consumer to catch up")
    ] = 3.0,
    api_key: ApiKeyOption = None,
) -> None:
    """Prequential replay through the running API (`make run`): online HR@10 with frozen features, with
    real-time history updates, and with those plus the online ranker. Each run first resets the replayed
    users' profiles to their state at the cut and the online ranker to nothing learned."""
    from rtrec_local.replay import MODES, Mode, late_events, replay

    if mode not in (*MODES, "all"):
        raise fail(f"--mode must be one of {', '.join(MODES)} or all, got {mode!r}")
    settings = aws_settings(endpoint_url)
    local = local_settings(dataset=dataset)
    with exit_on_error():
        data = load_movielens(local.dataset, local.data_cache_dir)
        events, cut = late_events(data, from_fraction, limit)
        users = {e.user_id for e in events}
        aws = aws_adapters(settings)
        features = aws.feature_store()
        at_cut = [p for p in user_profiles(data, until=cut) if p.user_id in users]
        say(
            f"{len(events):,} events of {len(users):,} users from {time.strftime('%Y-%m-%d', time.gmtime(cut))} "
            f"at {rate:g}/s; profiles reset to that date before each run"
        )
        ranker_states = aws.ranker_state_store()
        results = []
        for run_mode in MODES if mode == "all" else (mode,):
            features.put_users(at_cut)
            ranker_states.clear()
            results.append(
                replay(
                    events,
                    api_url,
                    cast(Mode, run_mode),
                    run_id=uuid.uuid4().hex[:8],
                    rate=rate,
                    api_key=client_api_key(api_key),
                )
            )
            if run_mode != "frozen":
                time.sleep(settle_seconds)
        features.put_users(p for p in user_profiles(data) if p.user_id in users)  # back to the full history
    typer.echo("| mode | events | HR@10 | errors | events/s | ranked online | strategies |")
    typer.echo("|---|---|---|---|---|---|---|")
    for r in results:
        typer.echo(
            f"| {r.mode} | {r.events:,} | {r.hit_rate:.4f} | {r.errors} | {r.events / r.seconds:.1f} | "
            f"{r.ranked_online:,} | {', '.join(f'{k} {v}' for k, v in sorted(r.strategies.items()))} |"
        )
    by_mode = {r.mode: r for r in results}
    for arm, base, what in (
        ("live", "frozen", "real-time history updates"),
        ("ranker", "live", "the online ranker on top of them"),
    ):
        if arm in by_mode and base in by_mode and by_mode[base].hit_rate > 0:
            a, b = by_mode[arm].hit_rate, by_mode[base].hit_rate
            say(f"{what}: HR@10 {a:.4f} vs {b:.4f} ({(a / b - 1) * 100:+.1f}%)")
