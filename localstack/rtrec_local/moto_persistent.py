"""moto server in a process of its own, with its SQS backend kept on disk.

    python -m rtrec_local.moto_persistent --port 4599 --sqs-state DIR

moto keeps everything in memory. For what the embedded cloud still runs on moto (SQS, CloudWatch, IAM, STS,
CloudFormation, SageMaker, ...), SQS is the one whose data must survive a restart (the dead-letter queue): after
every SQS request that may change it (and every few seconds, for changes made by time, such as visibility
timeouts running out) its backend state is pickled to `DIR/sqs.pickle` atomically (temporary file, fsync,
rename), before the response goes out, and loaded at start. This is how LocalStack persists its moto backends.

The process exits when its standard input closes: the supervisor (rtrec_local.cloud) holds the other end, so
the server never outlives it, even when the supervisor is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("rtrec_local.moto_persistent")

# SQS actions that never change a queue; every other SQS request is followed by a save.
READ_ONLY_SQS_ACTIONS = frozenset(
    {
        "ListQueues",
        "GetQueueUrl",
        "GetQueueAttributes",
        "ListQueueTags",
        "ListDeadLetterSourceQueues",
        "ListMessageMoveTasks",
    }
)
STATE_FILE = "sqs.pickle"


class _Pickler(pickle.Pickler):
    """moto's queues hold a threading.Condition (and locks): pickled as a new one."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, threading.Condition):
            return threading.Condition, ()
        if isinstance(obj, type(threading.RLock())):
            return threading.RLock, ()
        if isinstance(obj, type(threading.Lock())):
            return threading.Lock, ()
        return NotImplemented


class SqsState:
    """Saves and loads moto's SQS backends (every account and region that has been used)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / STATE_FILE
        self._lock = threading.Lock()
        self._dirty = False
        self._last: bytes | None = None

    def _snapshot(self) -> bytes:
        from moto.sqs.models import sqs_backends

        backends = {account: dict(regions.items()) for account, regions in list(sqs_backends.items())}
        for attempt in range(10):  # a request thread may change a dict while it is pickled: take it again
            try:
                buffer = io.BytesIO()
                _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(backends)
                return buffer.getvalue()
            except RuntimeError:
                if attempt == 9:
                    raise
                time.sleep(0.001)
        raise AssertionError("unreachable")

    def mark_dirty(self) -> None:
        self._dirty = True

    def save(self, *, only_if_changed: bool = False) -> None:
        with self._lock:
            self._dirty = False
            data = self._snapshot()
            if only_if_changed and data == self._last:
                return
            self._last = data
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{STATE_FILE}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def save_if_dirty(self) -> None:
        self.save(only_if_changed=not self._dirty)

    def load(self) -> int:
        """Put the saved backends back into moto; returns how many queues came back."""
        from moto.sqs.models import sqs_backends

        if not self.path.is_file():
            return 0
        try:
            backends = pickle.loads(self.path.read_bytes())
        except Exception as exc:
            broken = self.path.with_name(f"{STATE_FILE}.broken-{int(time.time())}")
            os.replace(self.path, broken)
            log.warning("SQS state %s could not be read (%s); moved to %s, starting empty", self.path, exc, broken)
            return 0
        self._last = self.path.read_bytes()
        queues = 0
        for account, regions in backends.items():
            for region, backend in regions.items():
                sqs_backends[account][region] = backend
                queues += len(getattr(backend, "queues", {}))
        return queues


def _sqs_action(environ: dict[str, Any], body: bytes) -> str | None:
    """The SQS action of a request, or None when the request is not for SQS."""
    target: str = environ.get("HTTP_X_AMZ_TARGET", "")
    if target.startswith("AmazonSQS."):
        return target.split(".", 1)[1]
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "/sqs/aws4_request" not in auth and "sqs" not in environ.get("HTTP_HOST", "").split(".")[0]:
        return None
    from urllib.parse import parse_qs

    query = parse_qs(environ.get("QUERY_STRING", ""))
    form = parse_qs(body.decode("utf-8", "replace")) if body else {}
    action = (form.get("Action") or query.get("Action") or [""])[0]
    return action or "Unknown"


class PersistingApp:
    """WSGI middleware: after an SQS request that may change state, save before answering."""

    def __init__(self, app: Any, state: SqsState) -> None:
        self.app = app
        self.state = state

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        action = _sqs_action(environ, body)
        if action is None or action in READ_ONLY_SQS_ACTIONS:
            return self.app(environ, start_response)
        result = self.app(environ, start_response)
        try:
            chunks = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        try:
            self.state.save()
        except Exception:
            self.state.mark_dirty()
            log.exception("saving the SQS state failed")
        return chunks


def _exit_when_stdin_closes() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except Exception:
        pass
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sqs-state", type=Path, required=True, help="folder for the SQS state")
    parser.add_argument("--save-seconds", type=float, default=2.0, help="periodic save interval")
    parser.add_argument("--watch-stdin", action="store_true", help="exit when standard input closes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[moto %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    state = SqsState(args.sqs_state)
    queues = state.load()
    if queues:
        log.info("restored %d SQS queue(s) from %s", queues, state.path)
    app = PersistingApp(DomainDispatcherApplication(create_backend_app), state)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, name="stdin-watchdog", daemon=True).start()

    def periodic() -> None:
        while True:
            time.sleep(args.save_seconds)
            try:
                state.save_if_dirty()  # visibility timeouts and retention change queues without a request
            except Exception:
                log.exception("periodic SQS save failed")

    threading.Thread(target=periodic, name="sqs-saver", daemon=True).start()
    import signal

    def terminate(*_: Any) -> None:
        try:
            state.save()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    server.serve_forever()


if __name__ == "__main__":
    main()
