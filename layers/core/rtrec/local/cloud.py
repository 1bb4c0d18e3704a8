"""EmbeddedCloud: moto server on loopback, provisioned from rtrec.resources and re-seeded from the state folder."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from rtrec.adapters.aws.clients import aws_client
from rtrec.adapters.aws.provision import Provisioner, ProvisionReport
from rtrec.errors import DependencyError
from rtrec.local.state import LocalState
from rtrec.resources import ResourceNames


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class EmbeddedCloud:
    """Starts moto server in a thread of this process.

    The endpoint is `http://localhost:PORT` (what LocalStack tools expect); moto keeps everything
    in memory, so persistent buckets are restored from `state` at start and saved back at stop.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 4566,
        names: ResourceNames | None = None,
        region: str = "us-east-1",
        state: LocalState | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.names = names or ResourceNames()
        self.region = region
        self.state = state
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://localhost:{self.port}"

    def client(self, service: str) -> Any:
        return aws_client(service, self.endpoint_url, self.region)

    def start(self) -> ProvisionReport:
        """Start the server, create every resource, restore persisted objects. Returns what was created."""
        from moto.server import ThreadedMotoServer

        if self.port == 0:
            self.port = free_port(self.host)
        elif _port_in_use(self.host, self.port):
            raise DependencyError(
                f"port {self.port} on {self.host} is already in use (LocalStack or another `rtrec cloud up`?); "
                f"stop it or choose another port with --cloud-port / RTREC_CLOUD_PORT"
            )
        # moto logs every request through werkzeug; keep the console for the project's own lines.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        self._server.start()
        self._wait_ready()
        report = Provisioner(self.names, endpoint_url=self.endpoint_url, region=self.region).provision()
        if self.state is not None:
            self.state.restore_buckets(self.client("s3"), self.names)
            # The stream is new (moto keeps nothing), and its sequence numbers start again at 1: the online
            # ranker keeps what it learned but must not skip the new stream's records as already learned.
            from rtrec.adapters.aws.s3 import S3RankerStateStore
            from rtrec.resources import MODELS_BUCKET

            S3RankerStateStore(self.names.bucket(MODELS_BUCKET), client=self.client("s3")).restart_positions()
        return report

    def stop(self, *, save_state: bool = True) -> None:
        if self._server is None:
            return
        try:
            if save_state and self.state is not None:
                self.state.save_buckets(self.client("s3"), self.names)
        finally:
            self._server.stop()
            self._server = None

    def _wait_ready(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _port_in_use(self.host, self.port):
                return
            time.sleep(0.05)
        raise DependencyError(f"moto server did not start on {self.host}:{self.port} within {timeout_s:.0f}s")

    def __enter__(self) -> EmbeddedCloud:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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
