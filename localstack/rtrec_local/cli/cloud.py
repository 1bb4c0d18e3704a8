"""`rtrec cloud`: the embedded local cloud (persistent emulators behind one port): start it, provision an endpoint,
`cdk deploy` to it, reset its state."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rtrec.settings import AwsSettings
from rtrec_local.cli.seed import seed_cloud
from rtrec_local.cli.stack import start_cloud, start_stream_consumer, wait_for_interrupt
from rtrec_local.cli.utils import (
    DatasetOption,
    EndpointOption,
    StateDirOption,
    aws_settings,
    exit_on_error,
    fail,
    local_settings,
    say,
)

if TYPE_CHECKING:
    from rtrec_local.event_source import KinesisEventSourceMapping

app = typer.Typer(help="The embedded local cloud (persistent emulators behind one port).", no_args_is_help=True)


@app.command("provision")
def cloud_provision(endpoint_url: EndpointOption = None) -> None:
    """Create the project's tables, stream, buckets and queue at an endpoint (LocalStack, a running embedded cloud)."""
    from rtrec.adapters.aws.provision import Provisioner

    settings = aws_settings(endpoint_url)
    with exit_on_error():
        report = Provisioner(settings.names, endpoint_url=settings.endpoint_url, region=settings.region).provision()
    say(f"created: {', '.join(report.created) or 'nothing'}; already there: {', '.join(report.existing) or 'nothing'}")


@app.command("deploy")
def cloud_deploy(
    endpoint_url: EndpointOption = None,
    prefix: Annotated[
        str,
        typer.Option(
            help="resource name prefix of the deployed copy (the running cloud already holds its own prefix's resources)"
        ),
    ] = "rtrec-cdk",
    runtime_layer_dir: Annotated[
        Path | None, typer.Option(help="built runtime layer (default: infra_cdk/build/layers/runtime, from `make layers`)")
    ] = None,
) -> None:
    """`cdk deploy` of the CDK app (infra_cdk/) to the embedded cloud or LocalStack; reports what it skipped."""
    import os

    from rtrec_local.deploy import CdkDeployer

    settings = aws_settings(endpoint_url)
    # Never real AWS: there, run `cdk deploy` in infra_cdk/.
    endpoint = settings.endpoint_url or local_settings().endpoint_url
    with exit_on_error(ValueError):
        AwsSettings(resource_prefix=prefix)
        report = CdkDeployer(
            endpoint,
            base_env=dict(os.environ),
            python=sys.executable,
            prefix=prefix,
            region=settings.region,
            runtime_layer_dir=runtime_layer_dir,
            log=say,
        ).run()
    for line in report.summary():
        say(line)
    say(
        f"deployed in {report.seconds['total']:.0f} s; `AWS_ENDPOINT_URL={report.endpoint_url} RTREC_PREFIX={prefix}` "
        "points the project's commands at the deployed copy"
    )


@app.command("reset")
def cloud_reset(
    state_dir: StateDirOption = None,
    port: Annotated[int | None, typer.Option("--port", help="the cloud's port, checked first (default 4566)")] = None,
) -> None:
    """Delete the local cloud's state (tables, stream records and positions, buckets, queues) to start from nothing;
    the MLflow registry stays. Refuses while the cloud answers on its port."""
    from rtrec_local.cloud import cloud_dir, port_in_use, reset_cloud_state

    local = local_settings(state_dir=state_dir, cloud_port=port)
    if port_in_use(local.cloud_host, local.cloud_port):
        raise fail(
            f"the local cloud answers on {local.cloud_host}:{local.cloud_port}; stop it first (Ctrl-C in "
            "`make run` / `make cloud`), then reset"
        )
    root = local.state_dir.resolve()
    removed = reset_cloud_state(root)
    if removed:
        say(f"deleted {', '.join(str(p) for p in removed)}; the next start provisions and seeds from nothing")
    else:
        say(f"nothing to delete: no cloud state in {cloud_dir(root)}")


@app.command("up")
def cloud_up(
    host: Annotated[str | None, typer.Option("--host", help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option("--port", help="default 4566 (LocalStack's port)")] = None,
    state_dir: StateDirOption = None,
    seed_data: Annotated[bool, typer.Option("--seed/--no-seed", help="load the data set into the cloud")] = False,
    stream_consumer: Annotated[
        bool, typer.Option("--consumer/--no-consumer", help="run the stream consumer on the events stream")
    ] = True,
    dataset: DatasetOption = "ml-1m",
) -> None:
    """Start the local cloud (state on disk), provision what is missing; Ctrl-C stops it."""
    local = local_settings(cloud_host=host, cloud_port=port, state_dir=state_dir, dataset=dataset)
    with exit_on_error():
        cloud = start_cloud(local)
    consumer: KinesisEventSourceMapping | None = None
    try:
        with exit_on_error():
            if seed_data:
                seed_cloud(AwsSettings(endpoint_url=cloud.endpoint_url), local)
            if stream_consumer:
                consumer = start_stream_consumer(cloud.endpoint_url)
            say(f"export AWS_ENDPOINT_URL={cloud.endpoint_url}   # then awslocal/cdklocal or the aws CLI work against it")
            say("press Ctrl-C to stop")
            wait_for_interrupt()
    finally:
        if consumer is not None:
            consumer.stop()
        say("saving state and stopping the embedded cloud")
        cloud.stop()
