"""EmbeddedCloud: the local cloud on one port (LocalStack's 4566), provisioned from rtrec.resources.

Two backends:

- `durable` (the default): emulators that keep their state on disk, each in a process of its own, supervised
  from here: dynalite (DynamoDB, LevelDB), kinesalite (Kinesis, LevelDB; sequence numbers and records survive),
  s3rver (S3, files) and moto server for everything else (SQS, CloudWatch, IAM, STS, CloudFormation, SageMaker,
  ...; its SQS backend pickled to disk after every change by rtrec_local.moto_persistent). A Node router
  (localstack/emulators/router.js) on the public port sends each request to its service's emulator, so one
  endpoint serves the SDKs, the AWS CLI and awslocal; each emulator also answers on a port of its own
  (`service_endpoints`, `<cloud dir>/endpoints.json`, for `AWS_ENDPOINT_URL_DYNAMODB` and friends).
  State: `<state>/cloud/{dynamodb,kinesis,s3,sqs}` (a temporary folder, removed at stop, without a state).
  A watcher thread reports an emulator that exits and restarts it; the children exit when this process goes
  away, even by SIGKILL (each watches its standard input, whose other end only this process holds), and they
  run in a session of their own so that a Ctrl-C in the terminal reaches only this process, which stops them
  after it has drained what it must.
- `moto`: moto server in a thread of this process, memory only (as before; kept for side-by-side benchmarks and
  for `cdk deploy`, whose CloudFormation creates its resources inside moto). Persistent buckets are restored
  from `state` at start and saved back at stop.

The entry points choose the backend, the emulators' folder and the Node binary from LocalSettings
(`RTREC_CLOUD_BACKEND`, `RTREC_EMULATORS_DIR`, `RTREC_NODE`); this module reads no environment.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.provision import Provisioner, ProvisionReport
from rtrec.errors import DependencyError
from rtrec.resources import ResourceNames
from rtrec_local.state import LocalState

log = logging.getLogger("rtrec_local.cloud")

Backend = Literal["durable", "moto"]
BACKENDS: tuple[str, ...] = ("durable", "moto")
REPO_ROOT = Path(__file__).resolve().parents[2]
EMULATORS_DIR = REPO_ROOT / "localstack" / "emulators"
NODE_SERVICES = ("dynamodb", "kinesis", "s3")  # emulator.js serves these; moto the rest
STATE_FOLDERS = {"dynamodb": "dynamodb", "kinesis": "kinesis", "s3": "s3", "moto": "sqs"}
MOTO_ROUTED = ("sqs", "cloudwatch")  # what the system itself calls on moto (the router sends moto the rest too)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    """Something listens on the port. The probe sets SO_REUSEADDR, so it never keeps a server from binding the port,
    and a connection to itself does not count (see `_connected_to_a_listener`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0 and _connected_to_a_listener(sock)


def _connected_to_a_listener(sock: socket.socket) -> bool:
    """False for a socket connected to itself. Connecting to a free port in the ephemeral range can pick that very
    port as the source and succeed with nobody listening (TCP simultaneous open); a probe polling an emulator that was
    still starting then took the port from it (EADDRINUSE) and reported it up."""
    try:
        return bool(sock.getsockname() != sock.getpeername())
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not _port_in_use(host, port)


def cloud_dir(state_root: Path) -> Path:
    """Where the durable backend keeps its emulators' state for a state folder."""
    return state_root / "cloud"


@dataclass
class _Child:
    name: str  # dynamodb | kinesis | s3 | moto | router
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    restarts: list[float] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class EmbeddedCloud:
    """The local cloud on `http://localhost:PORT` (what LocalStack tools expect); see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4566,
        names: ResourceNames | None = None,
        region: str = "us-east-1",
        state: LocalState | None = None,
        backend: Backend = "durable",
        state_dir: Path | None = None,
        log_line: Callable[[str], None] | None = None,
        restart_crashed: bool = True,
        emulators_dir: Path | None = None,
        node: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.names = names or ResourceNames()
        self.region = region
        self.state = state
        if backend not in BACKENDS:
            raise DependencyError(f"unknown cloud backend {backend!r}; one of {', '.join(BACKENDS)}")
        self.backend: Backend = backend
        self._emulators_dir = emulators_dir or EMULATORS_DIR
        self._node = node
        # durable: where the emulators keep their state
        self._state_dir = state_dir if state_dir is not None else (cloud_dir(state.root) if state is not None else None)
        self._temp_dir: str | None = None
        self._log = log_line or (lambda message: log.warning("%s", message))
        self._restart_crashed = restart_crashed
        self._children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._child_lock = threading.Lock()
        self._server: Any = None  # moto backend
        self.crashes: list[str] = []  # "<name> exited with <code>", for tests and status lines
        self.start_seconds: float | None = None
        self._fixed_ports = port != 0

    # -- what callers use --------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://localhost:{self.port}"

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint_url, self.region)

    @property
    def state_dir(self) -> Path | None:
        """The durable backend's state folder (None for moto)."""
        return self._state_dir if self.backend == "durable" else None

    @property
    def service_endpoints(self) -> dict[str, str]:
        """Each emulator's own endpoint (durable backend): dynamodb, kinesis, s3, and `moto` for the rest."""
        return {name: f"http://127.0.0.1:{child.port}" for name, child in self._children.items() if name != "router"}

    @property
    def client_routes(self) -> dict[str, str]:
        """Per boto3 service name, the endpoint the system's own clients use (route_services): each emulator
        directly, past the router; empty for moto, which has one port."""
        own = self.service_endpoints
        if not own:
            return {}
        routes = {service: own[service] for service in NODE_SERVICES if service in own}
        if "moto" in own:
            routes.update({service: own["moto"] for service in MOTO_ROUTED})
        return routes

    def pids(self) -> dict[str, int | None]:
        return {name: child.pid for name, child in self._children.items()}

    def describe(self) -> str:
        if self.backend == "moto":
            return f"embedded cloud (moto server, in this process, memory only) at {self.endpoint_url}"
        ports = ", ".join(f"{name} :{child.port}" for name, child in self._children.items() if name != "router")
        return (
            f"embedded cloud (dynalite, kinesalite, s3rver, moto; state on disk in {self._state_dir}) at "
            f"{self.endpoint_url}; emulators: {ports}"
        )

    def start(self) -> ProvisionReport:
        """Start the emulators, create every missing resource. Returns what was created."""
        started = time.monotonic()
        self._fixed_ports = self.port != 0
        if self.port == 0:
            self.port = free_port(self.host)
        elif _port_in_use(self.host, self.port):
            raise DependencyError(
                f"port {self.port} on {self.host} is already in use (LocalStack or another `rtrec cloud up`?); "
                f"stop it or choose another port with --cloud-port / RTREC_CLOUD_PORT"
            )
        if self.backend == "moto":
            report = self._start_moto_thread()
        else:
            try:
                self._start_children()
                report = Provisioner(self.names, endpoint_url=self.endpoint_url, region=self.region, log=self._log).provision()
            except BaseException:
                self._stop_children()
                raise
            self._watcher = threading.Thread(target=self._watch, name="cloud-supervisor", daemon=True)
            self._watcher.start()
        self.start_seconds = time.monotonic() - started
        return report

    def stop(self, *, save_state: bool = True) -> None:
        if self.backend == "moto":
            self._stop_moto_thread(save_state=save_state)
            return
        self._stop_children()

    def __enter__(self) -> EmbeddedCloud:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- moto in a thread (memory only) ------------------------------------------------------------------------

    def _start_moto_thread(self) -> ProvisionReport:
        from moto.server import ThreadedMotoServer

        # moto logs every request through werkzeug; keep the console for the project's own lines.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self._wait_port(self.host, self.port, "moto server", timeout_s=15.0)
        report = Provisioner(self.names, endpoint_url=self.endpoint_url, region=self.region).provision()
        if self.state is not None:
            self.state.restore_buckets(self.client("s3"), self.names)
            # The stream is new (moto keeps nothing), and its sequence numbers start again at 1: the online
            # ranker keeps what it learned but must not skip the new stream's records as already learned.
            from rtrec.adapters.aws.factory import AwsAdapters

            AwsAdapters(self.names, endpoint_url=self.endpoint_url, region=self.region).ranker_state_store().restart_positions()
        return report

    def _stop_moto_thread(self, *, save_state: bool) -> None:
        if self._server is None:
            return
        try:
            if save_state and self.state is not None:
                self.state.save_buckets(self.client("s3"), self.names)
        finally:
            self._server.stop()
            self._server = None

    # -- the durable emulators, supervised ---------------------------------------------------------------------

    def _emulator_ports(self) -> dict[str, int]:
        """The public port + 1..4 for dynamodb, kinesis, s3, moto when free (predictable next to 4566: 4567-4570),
        else any free port; all free ports when the public one was chosen at random (port=0)."""
        names = ("dynamodb", "kinesis", "s3", "moto")
        ports: dict[str, int] = {}
        for offset, name in enumerate(names, start=1):
            wanted = self.port + offset
            if self._fixed_ports:
                if wanted <= 65535 and _port_free("127.0.0.1", wanted):
                    ports[name] = wanted
                    continue
                self._log(f"embedded cloud: port {wanted} for {name} is taken; using a free one")
            ports[name] = free_port("127.0.0.1")
        return ports

    def _start_children(self) -> None:
        node = self._node or shutil.which("node")
        emulators = self._emulators_dir
        if node is None:
            raise DependencyError(
                "node not found: the durable local cloud runs its emulators on Node.js 20+; "
                "install it, or use the in-memory moto cloud (RTREC_CLOUD_BACKEND=moto)"
            )
        missing = [pkg for pkg in ("dynalite", "kinesalite", "s3rver") if not (emulators / "node_modules" / pkg).is_dir()]
        if missing:
            raise DependencyError(
                f"the local emulators are not installed ({', '.join(missing)} missing in "
                f"{emulators}/node_modules): run `make emulators`"
            )
        if self._state_dir is None:
            self._temp_dir = tempfile.mkdtemp(prefix="rtrec-cloud-")
            self._state_dir = Path(self._temp_dir)
        root = self._state_dir.resolve()
        (root / "logs").mkdir(parents=True, exist_ok=True)
        ports = self._emulator_ports()
        self._stopping.clear()
        children: list[_Child] = []
        for name in NODE_SERVICES:
            children.append(
                _Child(
                    name,
                    [
                        node,
                        str(emulators / "emulator.js"),
                        name,
                        "--port",
                        str(ports[name]),
                        "--host",
                        "127.0.0.1",
                        "--path",
                        str(root / STATE_FOLDERS[name]),
                        "--watch-stdin",
                    ],
                    ports[name],
                    root / "logs" / f"{name}.log",
                )
            )
        children.append(
            _Child(
                "moto",
                [
                    sys.executable,
                    "-m",
                    "rtrec_local.moto_persistent",
                    "--port",
                    str(ports["moto"]),
                    "--sqs-state",
                    str(root / STATE_FOLDERS["moto"]),
                    "--watch-stdin",
                ],
                ports["moto"],
                root / "logs" / "moto.log",
            )
        )
        routes = [arg for name in NODE_SERVICES for arg in ("--route", f"{name}=127.0.0.1:{ports[name]}")]
        children.append(
            _Child(
                "router",
                [
                    node,
                    str(emulators / "router.js"),
                    "--port",
                    str(self.port),
                    "--host",
                    self.host,
                    *routes,
                    "--default",
                    f"127.0.0.1:{ports['moto']}",
                    "--watch-stdin",
                ],
                self.port,
                root / "logs" / "router.log",
            )
        )
        for child in children:
            self._children[child.name] = child
            self._spawn(child)
        for child in children:
            self._wait_child(child)
        (root / "endpoints.json").write_text(
            json.dumps({"endpoint_url": self.endpoint_url, **self.service_endpoints}, indent=2) + "\n"
        )

    def _spawn(self, child: _Child) -> None:
        if child.log_file is None or child.log_file.closed:
            child.log_file = open(child.log_path, "ab")  # noqa: SIM115 - kept open for the child's life
        child.proc = subprocess.Popen(
            child.argv,
            stdin=subprocess.PIPE,
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=str(self._emulators_dir),
        )

    def _wait_child(self, child: _Child, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        host = self.host if child.name == "router" else "127.0.0.1"
        while time.monotonic() < deadline:
            assert child.proc is not None
            code = child.proc.poll()
            if code is not None:
                raise DependencyError(
                    f"the {child.name} emulator exited with {code} at start; its log {child.log_path} ends: {self._tail(child)}"
                )
            if _port_in_use(host, child.port):
                return
            time.sleep(0.02)
        raise DependencyError(
            f"the {child.name} emulator did not answer on port {child.port} within "
            f"{timeout_s:.0f}s; its log {child.log_path} ends: {self._tail(child)}"
        )

    @staticmethod
    def _tail(child: _Child, lines: int = 5) -> str:
        try:
            return " | ".join(child.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _watch(self) -> None:
        while not self._stopping.wait(0.25):
            for child in list(self._children.values()):
                if self._stopping.is_set():
                    return
                proc = child.proc
                if proc is None or proc.poll() is None:
                    continue
                with self._child_lock:
                    if self._stopping.is_set():
                        return
                    self._restart(child, proc.returncode)

    def _restart(self, child: _Child, code: int) -> None:
        what = f"{child.name} exited with {code}"
        self.crashes.append(what)
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60.0]
        if not self._restart_crashed or len(child.restarts) >= 5:
            self._log(
                f"embedded cloud: the {child.name} emulator (pid {child.pid}) exited with {code}; "
                f"{'not restarting' if not self._restart_crashed else 'it crashed 5 times in a minute, given up'}"
                f" (log: {child.log_path}: {self._tail(child)})"
            )
            child.proc = None
            return
        child.restarts.append(now)
        self._log(
            f"embedded cloud: the {child.name} emulator (pid {child.pid}) exited with {code}; restarting it "
            f"(log: {child.log_path})"
        )
        try:
            self._spawn(child)
            self._wait_child(child)
            self._log(f"embedded cloud: the {child.name} emulator is back (pid {child.pid}, port {child.port})")
        except DependencyError as exc:
            self._log(f"embedded cloud: restarting {child.name} failed: {exc}")

    def _stop_children(self) -> None:
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=35)
        self._watcher = None
        with self._child_lock:
            order = ["router", "moto", *NODE_SERVICES]
            children = [self._children[n] for n in order if n in self._children]
            for child in children:
                if child.proc is not None and child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5.0
            for child in children:
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait(timeout=5)
                if child.proc.stdin is not None:
                    with contextlib.suppress(OSError):
                        child.proc.stdin.close()
                if child.log_file is not None:
                    child.log_file.close()
            self._children.clear()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
            self._state_dir = None

    def _wait_port(self, host: str, port: int, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _port_in_use(host, port):
                return
            time.sleep(0.05)
        raise DependencyError(f"{what} did not start on {host}:{port} within {timeout_s:.0f}s")


def reset_cloud_state(state_root: Path) -> list[Path]:
    """Delete the durable cloud's state (and the moto backend's saved buckets) under a state folder; keeps MLflow.
    Returns what was deleted."""
    removed = []
    for path in (cloud_dir(state_root), state_root / "s3"):
        if path.exists():
            shutil.rmtree(path)
            removed.append(path)
    return removed


def wait_for_endpoint(endpoint_url: str, timeout_s: float = 10.0) -> None:
    """Block until something answers at `endpoint_url`'s host and port."""
    from urllib.parse import urlparse

    parsed = urlparse(endpoint_url)
    host = parsed.hostname or "localhost"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _port_in_use(host, port):
            return
        time.sleep(0.1)
    raise DependencyError(f"nothing answers at {endpoint_url}; start it with `rtrec cloud up`")


port_in_use = _port_in_use
