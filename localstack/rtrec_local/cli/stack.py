"""The running pieces the long-lived commands (`rtrec run`, `serve`, `cloud up`, `demo drift`) put together: the
embedded cloud, the API on a thread, the stream consumer, the local scheduler (drift check, promotion gate) and the
first model's training in the background."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtrec.settings import ApiSettings, AwsSettings, LocalSettings
from rtrec_local.cli.models import PromotionResult
from rtrec_local.cli.utils import aws_adapters, fail, say
from rtrec_local.scheduler import LocalScheduler, ScheduledTask, scheduled_event
from rtrec_local.shutdown import Interrupts
from rtrec_local.state import LocalState

if TYPE_CHECKING:
    import uvicorn

    from rtrec.adapters.mlflow.drift_runs import MlflowDriftRuns
    from rtrec.monitoring.telemetry import Telemetry
    from rtrec_local.cloud import EmbeddedCloud
    from rtrec_local.event_source import KinesisEventSourceMapping
    from rtrec_local.jobs import LocalTrainingJobs

# `python -m` of this package: the subprocesses that train and promote (this serving process never imports torch or
# mlflow) run the same `rtrec` as the parent.
RTREC = [sys.executable, "-m", "rtrec_local.cli"]


def start_cloud(local: LocalSettings) -> EmbeddedCloud:
    """The embedded cloud on `local`'s port and state folder, started and provisioned; this process's AWS clients
    then talk to its emulators directly."""
    from rtrec.adapters.aws.clients import route_services
    from rtrec_local.cloud import EmbeddedCloud

    state = LocalState(local.state_dir.resolve()).ensure()
    cloud = EmbeddedCloud(
        host=local.cloud_host,
        port=local.cloud_port,
        names=AwsSettings().names,
        state=state,
        backend=local.cloud_backend,
        emulators_dir=local.emulators_dir,
        node=local.node,
    )
    report = cloud.start()
    route_services(cloud.endpoint_url, cloud.client_routes)  # this process's clients skip the router
    engines = "dynalite, kinesalite, s3rver and moto, on disk" if cloud.backend == "durable" else "moto, in memory"
    say(f"embedded cloud ({engines}) listening at {cloud.endpoint_url}")
    say(f"provisioned: {', '.join(report.created) or 'nothing new'}; state folder: {state.root}")
    return cloud


def wait_for_interrupt(until_dead: threading.Thread | None = None) -> Interrupts:
    """Block until SIGINT/SIGTERM (or until `until_dead` stops); returns the Interrupts, which keep counting (a
    second Ctrl-C sets `forced`)."""
    interrupts = Interrupts(say).install()
    interrupts.wait(until_dead)
    return interrupts


_TELEMETRY: list[Telemetry] = []


def local_telemetry(*, consumer_apart: bool = False) -> Telemetry:
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


def start_api_thread(
    settings: ApiSettings, host: str, port: int, **app_options: Any
) -> tuple[uvicorn.Server, threading.Thread]:
    """The API under uvicorn on a daemon thread, started. uvicorn re-raises the signal it caught after shutting
    down, which would skip the caller's cleanup: in a thread it installs no signal handlers, the caller owns them."""
    import uvicorn

    from functions.api.app import build_services, create_app
    from functions.api.server import server_config

    api = create_app(build_services(settings, telemetry=local_telemetry()), telemetry=local_telemetry(), **app_options)
    server = uvicorn.Server(server_config(api, host, port))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not thread.is_alive():
        raise fail(f"the API could not start on {host}:{port} (is the port in use? choose one with --api-port)")
    return server, thread


def serve_until_interrupted(settings: ApiSettings, host: str, port: int, **app_options: Any) -> Interrupts:
    """Run the API until Ctrl-C or SIGTERM, then stop it (its shutdown flushes the buffered impressions) and
    return the Interrupts, so callers can drain and stop the rest (a second Ctrl-C sets `forced`)."""
    server, thread = start_api_thread(settings, host, port, **app_options)
    say(f"API on http://{host}:{port}  (Swagger UI: http://{host}:{port}/docs)")
    say(f"try: curl http://{host}:{port}/recommend/1")
    say("press Ctrl-C to stop")
    interrupts = wait_for_interrupt(thread)
    server.should_exit = True
    thread.join(timeout=10)
    return interrupts


def start_stream_consumer(endpoint_url: str) -> KinesisEventSourceMapping:
    """The stream consumer in this process (`rtrec cloud up`, the drift demo), its metrics in this process's
    registry; `rtrec run` runs it in a process of its own (rtrec_local.consumer_process)."""
    from rtrec_local.consumer_process import start_stream_consumer as start

    mapping: KinesisEventSourceMapping = start(endpoint_url, local_telemetry(), say)
    return mapping


def production_version(settings: AwsSettings) -> str | None:
    """The version the production pointer names (None: no model promoted yet)."""
    pointer = aws_adapters(settings).model_store().read_pointer()
    return pointer.version if pointer is not None else None


def bootstrap_model(endpoint_url: str, local: LocalSettings, epochs: int) -> threading.Thread:
    """Train a first model and promote it, in subprocesses (this serving process never imports torch or
    mlflow), while the API serves popular items; serving picks the model up at its next pointer check."""

    def step(args: list[str]) -> bool:
        command = [*RTREC, *args, "--state-dir", str(local.state_dir)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            if line:
                print(f"[bootstrap] {line}", flush=True)
        return process.wait() == 0

    def work() -> None:
        # Neither the peers' figures nor the item-to-item model (not served yet) matter to a first model: ~1 min less.
        settings = [f"epochs={epochs}", "protocols=recbole", "baselines=false", "threads=1", "item_to_item=false"]
        hps = [arg for setting in settings for arg in ("--hp", setting)]
        trained = step(["train", "--dataset", local.dataset, *hps, "--tag", "trigger=bootstrap"])
        promoted = trained and step(["promote", "--endpoint-url", endpoint_url])
        if promoted:
            say("bootstrap model promoted; the API switches to it at its next pointer check")
        else:
            say("bootstrap training or promotion failed (see the [bootstrap] lines); the API keeps serving popular items")

    thread = threading.Thread(target=work, name="bootstrap-model", daemon=True)
    thread.start()
    return thread


def local_training_jobs(endpoint_url: str, local: LocalSettings) -> LocalTrainingJobs:
    """Retraining jobs as local subprocesses with the training container's contract, learning from the offline
    store (the stream's events in the counterfactual-logs bucket) and ending as the shadow candidate."""
    import os

    from rtrec.resources import COUNTERFACTUAL_BUCKET, MODELS_BUCKET
    from rtrec_local.jobs import LocalJobRunner, LocalTrainingJobs

    state = LocalState(local.state_dir.resolve()).ensure()
    names = AwsSettings(endpoint_url=endpoint_url).names
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint_url,
        "MLFLOW_TRACKING_URI": state.mlflow_tracking_uri,
        "RTREC_EVENTS_BUCKET": names.bucket(COUNTERFACTUAL_BUCKET),
        "RTREC_MODELS_BUCKET": names.bucket(MODELS_BUCKET),
        "RTREC_PUBLISH_SHADOW": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    return LocalTrainingJobs(LocalJobRunner(state.root / "jobs"), {"train": local.data_cache_dir}, env)


def promotion_step(endpoint_url: str, local: LocalSettings, min_slates: int = 200) -> PromotionResult | None:
    """When a shadow candidate is published, ask the promotion gate about it (`rtrec promote` in a subprocess: this
    serving process never imports torch or mlflow) and read back its decision; a candidate the gate turns down for
    good is withdrawn. None: no candidate, or the gate failed (its error is said)."""
    from rtrec.domain.promotion import SHADOW_POINTER

    shadow = aws_adapters(AwsSettings(endpoint_url=endpoint_url)).model_store().read_pointer(SHADOW_POINTER)
    if shadow is None:
        return None
    with tempfile.TemporaryDirectory(prefix="rtrec-promotion-") as folder:
        result_file = Path(folder) / "result.json"
        command = [
            *RTREC,
            "promote",
            "--version",
            shadow.version,
            "--endpoint-url",
            endpoint_url,
            "--state-dir",
            str(local.state_dir),
            "--withdraw-on-reject",
            "--min-slates",
            str(min_slates),
            "--result-file",
            str(result_file),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        result = PromotionResult.from_json(result_file.read_text()) if result_file.exists() else None
    verdict = result.verdict if result is not None else (done.stderr.strip() or "no verdict")[-300:]
    say(f"promotion gate, shadow candidate {shadow.version}: {verdict}")
    return result


def drift_run_log(local: LocalSettings) -> MlflowDriftRuns | None:
    """Each drift report as a run of the local registry's `rtrec-drift` experiment (None without mlflow)."""
    try:
        from rtrec.adapters.mlflow.drift_runs import MlflowDriftRuns
    except ImportError:
        return None
    state = LocalState(local.state_dir.resolve()).ensure()
    state.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    return MlflowDriftRuns(state.mlflow_tracking_uri, artifact_location=state.mlflow_artifacts_dir.resolve().as_uri())


def start_scheduler(
    endpoint_url: str,
    local: LocalSettings,
    drift_seconds: float,
    promote_seconds: float,
    retrain_hyperparameters: dict[str, str],
    cooldown_seconds: float,
    window_events: int = 2000,
    min_slates: int = 200,
) -> LocalScheduler | None:
    """EventBridge's schedules, locally: the drift check (which may start a retraining job) and the promotion
    gate's retries for the shadow candidate (None: both are off)."""
    from functions.drift_check.app import build_handler
    from rtrec.settings import DriftSettings

    tasks = []
    if drift_seconds > 0:
        settings = DriftSettings(
            endpoint_url=endpoint_url,
            retrain_hyperparameters=retrain_hyperparameters,
            retrain_cooldown_seconds=cooldown_seconds,
            drift_window_events=window_events,
        )
        # The local API's /metrics shows the drift scores (Prometheus, the same registry as the API and consumer).
        metrics = local_telemetry().sink
        handler = build_handler(
            settings, jobs=local_training_jobs(endpoint_url, local), metrics=metrics, run_log=drift_run_log(local)
        )

        def drift_check() -> None:
            summary = handler(scheduled_event("rtrec-drift-check"), None)
            line = f"drift check: {'DRIFT: ' + '; '.join(summary['reasons'])[:300] if summary['drifted'] else 'no drift'}"
            if "retraining" in summary:
                line += f"; retraining: {summary['retraining']['reason'][:200]}"
            say(line)

        tasks.append(ScheduledTask("drift-check", drift_seconds, drift_check))
    if promote_seconds > 0:
        tasks.append(ScheduledTask("promotion-gate", promote_seconds, lambda: promotion_step(endpoint_url, local, min_slates)))
    if not tasks:
        return None
    scheduler = LocalScheduler(tasks, on_error=say)
    scheduler.start()
    say(
        f"local scheduler: drift check every {drift_seconds:g} s, promotion gate for a shadow candidate every "
        f"{promote_seconds:g} s (0 = off)"
    )
    return scheduler
