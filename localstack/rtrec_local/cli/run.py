"""`rtrec serve` (the API against a running cloud) and `rtrec run` (the whole system on this machine)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer

from rtrec.settings import ApiSettings, AwsSettings
from rtrec_local.cli.keys import with_local_keys
from rtrec_local.cli.seed import seed_cloud
from rtrec_local.cli.stack import (
    bootstrap_model,
    local_telemetry,
    production_version,
    serve_until_interrupted,
    start_cloud,
    start_scheduler,
)
from rtrec_local.cli.utils import (
    DatasetOption,
    EndpointOption,
    RequireKeysOption,
    StateDirOption,
    exit_on_error,
    local_settings,
    say,
)

if TYPE_CHECKING:
    from rtrec_local.consumer_process import ConsumerProcess
    from rtrec_local.scheduler import LocalScheduler


def serve(
    endpoint_url: EndpointOption = None,
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8000")] = None,
    require_api_keys: RequireKeysOption = False,
) -> None:
    """Serve the API with uvicorn against an already running cloud (embedded, LocalStack or AWS)."""
    local = local_settings(api_host=host, api_port=port)
    with exit_on_error(ValueError):
        settings = ApiSettings(endpoint_url=endpoint_url) if endpoint_url else ApiSettings()
    serve_until_interrupted(with_local_keys(settings, local, require=require_api_keys), local.api_host, local.api_port)


def run(
    cloud_port: Annotated[int | None, typer.Option(help="embedded cloud port, default 4566")] = None,
    api_port: Annotated[int | None, typer.Option(help="API port, default 8000")] = None,
    state_dir: StateDirOption = None,
    dataset: DatasetOption = "ml-1m",
    bootstrap: Annotated[
        bool,
        typer.Option(
            "--bootstrap/--no-bootstrap",
            help="when no model is in production yet, train and promote a first one "
            "in the background (popular items are served meanwhile)",
        ),
    ] = True,
    bootstrap_epochs: Annotated[int, typer.Option(min=1, help="epochs of the bootstrap model")] = 4,
    model_poll_seconds: Annotated[
        float, typer.Option(min=0.1, help="how often the API checks for a newly promoted model")
    ] = 5.0,
    drift_check_seconds: Annotated[float, typer.Option(min=0, help="how often the drift check runs (0: never)")] = 300.0,
    promote_check_seconds: Annotated[
        float, typer.Option(min=0, help="how often the promotion gate judges a shadow candidate (0: never)")
    ] = 60.0,
    retrain_epochs: Annotated[int, typer.Option(min=1, help="epochs of a retraining job the drift check starts")] = 4,
    retrain_cooldown_seconds: Annotated[
        float, typer.Option(min=1, help="after a retraining trigger, no other starts for this long")
    ] = 6 * 3600.0,
    drain_seconds: Annotated[
        float,
        typer.Option(
            min=0,
            help="on Ctrl-C, let the stream consumer catch up for at most this long (a second Ctrl-C skips it; "
            "what is left is consumed at the next start)",
        ),
    ] = 30.0,
    impression_log_lines: Annotated[
        bool,
        typer.Option(
            "--impression-log-lines/--no-impression-log-lines",
            help="print each slate as an `impression` JSON line (the counterfactual log in S3 keeps them either way)",
        ),
    ] = False,
    require_api_keys: RequireKeysOption = False,
) -> None:
    """The whole system on this machine: embedded cloud, data seeded, a model in production, API served.
    Ctrl-C stops it all."""
    local = local_settings(cloud_port=cloud_port, api_port=api_port, state_dir=state_dir, dataset=dataset)
    telemetry = local_telemetry(consumer_apart=True)
    with exit_on_error():
        cloud = start_cloud(local)
    consumer: ConsumerProcess | None = None
    scheduler: LocalScheduler | None = None
    try:
        with exit_on_error():
            from rtrec_local.consumer_process import ConsumerProcess

            aws = AwsSettings(endpoint_url=cloud.endpoint_url)
            seed_cloud(aws, local)
            # In a process of its own, as Lambda runs it: beside the API's request threads it got a tenth of its speed.
            consumer = ConsumerProcess(
                cloud.endpoint_url,
                local.state_dir.resolve() / "consumer-status.json",
                say=say,
                drain_seconds=drain_seconds,
                routes=cloud.client_routes,
            ).start()
            include = getattr(telemetry.sink, "include", None)  # PrometheusMetrics' (the monitoring extra)
            if include is not None:
                include(consumer.metrics_text)
            retrain = {"epochs": str(retrain_epochs), "protocols": "recbole", "baselines": "false", "threads": "1"}
            scheduler = start_scheduler(
                cloud.endpoint_url, local, drift_check_seconds, promote_check_seconds, retrain, retrain_cooldown_seconds
            )
            version = production_version(aws)
            if version is not None:
                say(f"production model: version {version}")
            elif bootstrap:
                say(
                    f"no model in production yet: training a first one on {dataset} in the background "
                    f"({bootstrap_epochs} epochs); popular items are served until it is promoted"
                )
                bootstrap_model(cloud.endpoint_url, local, bootstrap_epochs)
            else:
                say("no model in production yet: serving popular items (make train && make promote to add one)")
            api_settings = with_local_keys(
                ApiSettings(
                    endpoint_url=cloud.endpoint_url,
                    model_poll_seconds=model_poll_seconds,
                    catalog_sync_seconds=model_poll_seconds,
                    impression_log_lines=impression_log_lines,
                ),
                local,
                require=require_api_keys,
            )
            interrupts = serve_until_interrupted(api_settings, local.api_host, local.api_port, consumer_status=consumer.stats)
            if scheduler is not None:
                scheduler.stop()
                scheduler = None
            if interrupts is not None and not interrupts.forced.is_set():
                consumer.drain_and_stop(interrupts.forced)
    finally:
        stopped = time.monotonic()
        if scheduler is not None:
            scheduler.stop()
        if consumer is not None:
            consumer.stop()
        say("stopping the embedded cloud")
        cloud.stop()
        say(f"stopped in {time.monotonic() - stopped:.1f} s")
