"""`rtrec demo`: scenarios that run the whole loop end to end and print what happened."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from rtrec.data.movielens import load_movielens
from rtrec.services.seed import user_profiles
from rtrec.settings import ApiSettings, AwsSettings
from rtrec_local.cli.keys import is_loopback
from rtrec_local.cli.seed import seed_cloud
from rtrec_local.cli.stack import (
    bootstrap_model,
    production_version,
    start_api_thread,
    start_cloud,
    start_scheduler,
    start_stream_consumer,
)
from rtrec_local.cli.utils import aws_adapters, exit_on_error, fail, local_settings, say

if TYPE_CHECKING:
    import uvicorn

    from rtrec_local.event_source import KinesisEventSourceMapping
    from rtrec_local.scheduler import LocalScheduler

app = typer.Typer(help="Scenarios that run the whole loop end to end and print what happened.", no_args_is_help=True)


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@app.command("drift")
def demo_drift(
    state_dir: Annotated[Path, typer.Option(help="the demo's own state (registry, buckets), apart from make run's")] = Path(
        ".rtrec-demo"
    ),
    cloud_port: Annotated[int, typer.Option(help="the demo's embedded cloud")] = 4577,
    api_port: Annotated[int, typer.Option(help="the demo's API")] = 8077,
    genre: Annotated[str, typer.Option(help="the genre users turn to when the drift starts")] = "Horror",
    stationary_events: Annotated[int, typer.Option(min=100, help="events before the drift")] = 600,
    drift_events: Annotated[int, typer.Option(min=100, help="at most this many events after it")] = 6000,
    after_events: Annotated[int, typer.Option(min=0, help="events sent after the new model serves")] = 300,
    rate: Annotated[float, typer.Option(min=0.5, help="events per second")] = 8.0,
    epochs: Annotated[int, typer.Option(min=1, help="epochs of the first model and of the retrained one")] = 3,
    check_seconds: Annotated[float, typer.Option(min=1, help="drift check and promotion gate interval")] = 15.0,
    window_events: Annotated[int, typer.Option(min=100, help="the drift check's rolling window")] = 500,
    min_slates: Annotated[int, typer.Option(min=1, help="shadow-scored slates the gate waits for")] = 150,
    max_minutes: Annotated[float, typer.Option(min=1, help="give up when the loop has not closed by then")] = 30.0,
) -> None:
    """The injected-drift scenario end to end, on a stack of its own: a first model, stationary traffic, then users
    turning to one genre; the drift check finds it, retrains on the offline store, the retrained model is scored in
    shadow, the promotion gate (offline metrics + off-policy estimate) lets it serve. Prints the timeline."""
    from rtrec_local.drift_demo import genre_events, run_demo
    from rtrec_local.replay import late_events

    local = local_settings(cloud_port=cloud_port, api_port=api_port, state_dir=state_dir)
    with exit_on_error():
        cloud = start_cloud(local)
    consumer: KinesisEventSourceMapping | None = None
    scheduler: LocalScheduler | None = None
    server: uvicorn.Server | None = None
    try:
        with exit_on_error(ValueError):
            settings = AwsSettings(endpoint_url=cloud.endpoint_url)
            seed_cloud(settings, local)
            consumer = start_stream_consumer(cloud.endpoint_url)
            if production_version(settings) is None:
                say(f"no model in production yet: training a first one ({epochs} epochs), then promoting it")
                bootstrap_model(cloud.endpoint_url, local, epochs).join()
                if production_version(settings) is None:
                    raise fail("the first model could not be trained or promoted (see the [bootstrap] lines)", code=1)
            aws = aws_adapters(settings)
            aws.drift_store().clear()  # the windows and detectors start from this run's traffic
            retrain = {"epochs": str(epochs), "protocols": "recbole", "baselines": "false", "threads": "1"}
            demo_settings = ApiSettings(
                endpoint_url=cloud.endpoint_url,
                model_poll_seconds=2.0,
                catalog_sync_seconds=2.0,
                require_api_keys=not is_loopback(local.api_host),
            )  # the demo's load sends no key
            server, _ = start_api_thread(demo_settings, local.api_host, local.api_port)
            api_url = f"http://{local.api_host}:{local.api_port}"
            scheduler = start_scheduler(
                cloud.endpoint_url,
                local,
                check_seconds,
                check_seconds,
                retrain,
                3600.0,
                window_events=window_events,
                min_slates=min_slates,
            )
            data = load_movielens(local.dataset, local.data_cache_dir)
            late, cut = late_events(data, 0.9, None)
            # Spread over the whole late period, so the stationary traffic comes from many users, as live traffic does
            # (the first few hundred late events belong to a couple of dozen users, whose tastes are not the
            # population's).
            stationary = late[:: max(1, len(late) // stationary_events)][:stationary_events]
            users = sorted({e.user_id for e in stationary})
            shifted = genre_events(data, users, genre, drift_events, int(stationary[-1].timestamp) + 60)
            aws.feature_store().put_users(p for p in user_profiles(data, until=cut) if p.user_id in set(users))
            for sig in (signal.SIGINT, signal.SIGTERM):  # a background job ignores SIGINT unless told otherwise
                signal.signal(sig, _interrupt)
            reports = aws.drift_reports()
            timeline, phases = run_demo(
                api_url,
                stationary,
                shifted,
                rate=rate,
                reports=lambda: reports.read_all()[0],
                say=say,
                after_events=after_events,
                max_seconds=max_minutes * 60,
            )
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    finally:
        if scheduler is not None:
            scheduler.stop()
        if server is not None:
            server.should_exit = True
        if consumer is not None:
            consumer.stop()
        say("saving state and stopping the demo's embedded cloud")
        cloud.stop()
    typer.echo("\n| t (s) | events | what |\n|---|---|---|")
    for seconds, what, events in timeline.marks:
        typer.echo(f"| {seconds:.0f} | {events:,} | {what} |")
    typer.echo("\n| phase | events | HR@10 |\n|---|---|---|")
    for phase in phases:
        typer.echo(f"| {phase.name} | {phase.events:,} | {phase.hit_rate:.4f} |")
    start, detected = timeline.at("drift starts"), timeline.at("drift detected")
    serving = timeline.at("version ")
    if start and detected:
        say(f"detection delay: {detected[1] - start[1]:,} events, {detected[0] - start[0]:.0f} s")
    if start and serving:
        say(f"drift start to the retrained model serving: {serving[0] - start[0]:.0f} s ({serving[1] - start[1]:,} events)")
