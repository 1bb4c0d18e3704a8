"""The API under uvicorn (`rtrec run`, `rtrec serve`): bounded connections, as API Gateway bounds them in AWS.

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but it has no timeout for a request's
headers: a client that sends half a request line and then nothing holds its connection (and a file descriptor)
for as long as it likes, and 500 of them hold 500 (slowloris). `HeaderTimeoutProtocol` closes a connection whose
request headers have not all arrived within `HEADER_TIMEOUT_S` of its first byte (or of the connection), and
`limit_concurrency` answers 503 above a number of open connections and tasks rather than queueing without bound.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_TIMEOUT_S = 5
MAX_CONCURRENCY = 1000


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(  # type: ignore[override]  # as uvicorn's own: asyncio.Protocol's is a BaseTransport
        self, transport: asyncio.Transport
    ) -> None:
        self._header_deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API, with the bounds above."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=HeaderTimeoutProtocol,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT_S,
        limit_concurrency=MAX_CONCURRENCY,
        **options,
    )
