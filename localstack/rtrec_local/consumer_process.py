"""The local stream consumer in a process of its own, as Lambda runs it apart from the API.

In one process the API's request threads and the consumer share one interpreter lock: under a load of
`GET /recommend` the consumer got 30-45 records/s of the 470 it does alone, and its lag grew for as long as the
load lasted. `rtrec run` therefore starts it as a child (`python -m rtrec_local.consumer_process`):

- the child runs the local event source mapping over the `stream_consumer` handler, and every half second writes its
  status (the mapping's `stats()` and its Prometheus metrics, as text) to a JSON file beside the cloud's state, which
  the parent reads for `/health` and appends to the API's `/metrics`;
- SIGTERM makes it drain (catch up with the stream for at most `--drain-seconds`, a line every 2 s) and exit; SIGINT
  makes it stop at once; it also stops when its standard input closes (the parent is gone, even by SIGKILL). Either
  way nothing accepted is lost: the stream keeps the records and the checkpoints say where to resume;
- the parent reports a child that exits by itself and starts it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rtrec.adapters.aws.clients import route_services
from rtrec.errors import DependencyError

STATUS_INTERVAL_S = 0.5
# The local mapping's batching window: half a second gathers a load's records into batches of dozens (a batch costs
# about seven store calls and 30 ms of the consumer's CPU however small it is; under `make run`'s load, windows of
# 0 and 0.25 s left batches of 2-10 records) and keeps event-to-effect under a second. AWS takes whole seconds
# here; the CDK app sets 1 s (infra_cdk/stacks/streaming.py).
BATCHING_WINDOW_S = 0.5
STALE_AFTER_S = 10.0  # a status older than this: the child is hung or gone


def start_stream_consumer(endpoint_url: str, telemetry: Any, say: Callable[[str], None]) -> Any:
    """The stream_consumer handler driven by the local event source mapping (Lambda's, in AWS), started."""
    from functions.stream_consumer.app import build_handler
    from rtrec.adapters.aws.factory import AwsAdapters
    from rtrec.resources import EVENTS_DLQ, EVENTS_STREAM, STREAM_CHECKPOINTS
    from rtrec.settings import ConsumerSettings
    from rtrec_local.event_source import KinesisEventSourceMapping

    settings = ConsumerSettings(endpoint_url=endpoint_url)
    names = settings.names
    mapping = KinesisEventSourceMapping(
        names.stream(EVENTS_STREAM),
        build_handler(settings, telemetry=telemetry),
        checkpoint_table=names.table(STREAM_CHECKPOINTS),
        dlq_url=None,
        batch_size=EVENTS_STREAM.consumer_batch_size,
        batching_window_s=BATCHING_WINDOW_S,
        dead_letter_queue=AwsAdapters.from_settings(settings).dead_letter_queue(),
        endpoint_url=endpoint_url,
        region=settings.region,
        on_progress=say,
        metrics=telemetry.sink,
    )
    mapping.start()
    sink = telemetry.sink
    if hasattr(sink, "watch"):  # the mapping's lag behind the stream's tip, read at each scrape of /metrics
        sink.watch("ConsumerMillisBehindLatest", lambda: lag_ms(mapping.stats()))
    say(f"stream consumer reading {names.stream(EVENTS_STREAM)} (local event source mapping; DLQ {names.queue(EVENTS_DLQ)})")
    return mapping


def lag_ms(stats: dict[str, Any]) -> float | None:
    """The mapping's lag in milliseconds (behind-latest or iterator age, the larger); None before the first read."""
    lag = stats.get("lag_seconds")
    return None if lag is None else lag * 1000.0


def write_status(path: Path, stats: dict[str, Any], metrics: str) -> None:
    """Replace the status file at once (a reader never sees half of it)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"at": time.time(), "pid": os.getpid(), "stats": stats, "metrics": metrics}, default=str))
    os.replace(partial, path)


class ConsumerProcess:
    """The parent's handle on the child: start, status, metrics, drain, stop, and a restart when it exits."""

    def __init__(
        self,
        endpoint_url: str,
        status_path: Path,
        *,
        say: Callable[[str], None],
        drain_seconds: float = 30.0,
        routes: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.routes = dict(routes or {})  # the child's route_services (each emulator's own endpoint)
        self.status_path = status_path
        self.drain_seconds = drain_seconds
        self._say = say
        self._python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 60.0) -> ConsumerProcess:
        self._spawn(timeout_s)
        self._watcher = threading.Thread(target=self._watch, name="consumer-watcher", daemon=True)
        self._watcher.start()
        return self

    def _spawn(self, timeout_s: float) -> None:
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        self.status_path.unlink(missing_ok=True)
        # Its own session: a Ctrl-C in the terminal reaches only the parent, which drains the child on purpose.
        self._proc = subprocess.Popen(
            [
                self._python,
                "-m",
                "rtrec_local.consumer_process",
                self.endpoint_url,
                str(self.status_path),
                "--drain-seconds",
                str(self.drain_seconds),
                *(f"--route={service}={url}" for service, url in sorted(self.routes.items())),
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self.status_path.exists():
            if self._proc.poll() is not None:
                raise DependencyError(f"the stream consumer exited with {self._proc.returncode} while starting")
            if time.monotonic() > deadline:
                raise DependencyError(f"the stream consumer did not start within {timeout_s:.0f} s")
            time.sleep(0.1)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            proc = self._proc
            if proc is None or proc.poll() is None:
                continue
            if self._stopping.is_set():
                return
            self._say(f"the stream consumer exited with {proc.returncode}; starting it again (it resumes from its checkpoints)")
            self.restarts += 1
            try:
                self._spawn(60.0)
            except DependencyError as exc:
                self._say(f"the stream consumer could not be started again: {exc}")

    def _status(self) -> dict[str, Any]:
        if self._proc is None or self._proc.poll() is not None:
            raise DependencyError("the stream consumer's process is not running")
        try:
            status: dict[str, Any] = json.loads(self.status_path.read_text())
        except (OSError, ValueError) as exc:
            raise DependencyError(f"no status from the stream consumer: {exc}") from exc
        if time.time() - float(status.get("at", 0)) > STALE_AFTER_S:
            raise DependencyError(f"the stream consumer's status is {time.time() - float(status['at']):.0f} s old")
        return status

    def stats(self) -> dict[str, Any]:
        """The mapping's stats() as the child last wrote them (DependencyError when it is gone or hung)."""
        stats: dict[str, Any] = self._status()["stats"]
        return stats

    def metrics_text(self) -> bytes:
        """The child's Prometheus metrics (text format), nothing when it has none to give."""
        try:
            return str(self._status().get("metrics") or "").encode()
        except DependencyError:
            return b""

    def drain_and_stop(self, forced: threading.Event) -> None:
        """SIGTERM: the child drains for at most `drain_seconds` and exits; `forced` (a second Ctrl-C) stops it
        at once."""
        self._stopping.set()
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_seconds + 15.0
        while proc.poll() is None and time.monotonic() < deadline:
            if forced.wait(0.1):
                proc.send_signal(signal.SIGINT)
                break
        self.stop()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop at once (SIGINT, then SIGKILL after `timeout_s`): what is left stays in the stream."""
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


def main(argv: list[str] | None = None) -> int:
    """The child: `python -m rtrec_local.consumer_process ENDPOINT STATUS_FILE [--drain-seconds S]`."""
    import argparse

    from rtrec.monitoring.telemetry import Telemetry
    from rtrec_local.shutdown import Interrupts, drain

    parser = argparse.ArgumentParser(prog="rtrec_local.consumer_process")
    parser.add_argument("endpoint_url")
    parser.add_argument("status_file", type=Path)
    parser.add_argument("--drain-seconds", type=float, default=30.0)
    parser.add_argument(
        "--route",
        action="append",
        default=[],
        metavar="SERVICE=URL",
        help="a service's own endpoint, past the shared one (repeatable)",
    )
    args = parser.parse_args(argv)
    routes = dict(pair.split("=", 1) for pair in args.route)
    if routes:
        route_services(args.endpoint_url, routes)

    def say(message: str) -> None:
        print(f"[rtrec {time.strftime('%H:%M:%S')}] {message}", flush=True)

    try:
        from rtrec.adapters.prometheus import PrometheusMetrics

        metrics: Any = PrometheusMetrics(process_metrics=False, only=consumer_metric)
    except ImportError:  # the monitoring extra is not installed: no /metrics for the consumer either
        metrics = None
    telemetry = Telemetry(metrics)
    mapping = start_stream_consumer(args.endpoint_url, telemetry, say)

    drain_now, stop_now = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: drain_now.set())
    signal.signal(signal.SIGINT, lambda *_: stop_now.set())

    def parent_gone() -> None:
        # The file descriptor, not sys.stdin: a daemon thread blocked inside the buffered reader holds its lock,
        # which aborts the interpreter's shutdown ("could not acquire lock for <stdin>").
        while os.read(sys.stdin.fileno(), 4096):  # b"" at EOF: the parent closed the pipe or died
            pass
        stop_now.set()

    threading.Thread(target=parent_gone, name="parent-watch", daemon=True).start()

    def exposition() -> str:
        return metrics.exposition()[0].decode() if metrics is not None else ""

    while not (drain_now.is_set() or stop_now.is_set()):
        write_status(args.status_file, mapping.stats(), exposition())
        drain_now.wait(STATUS_INTERVAL_S)
    if drain_now.is_set() and not stop_now.is_set():
        interrupts = Interrupts(say)
        interrupts.forced = stop_now  # SIGINT (the parent's second Ctrl-C) or the parent gone: stop draining
        drain(mapping, interrupts, say, timeout_s=args.drain_seconds)
    mapping.stop()
    return 0


def consumer_metric(spec: Any) -> bool:
    """The catalog metrics the consumer's process emits (the handler's and the local mapping's); the API's
    process leaves them out of its own registry, so /metrics shows each family once."""
    from rtrec.monitoring.catalog import CONSUMER_SERVICE, LOCAL_SERVICE

    return spec.service in (CONSUMER_SERVICE, LOCAL_SERVICE)


if __name__ == "__main__":
    raise SystemExit(main())
