"""The API's uvicorn server (functions/api/server.py) on loopback: a client that never finishes its request headers
loses its connection (slowloris), one that does is served, and keep-alive still works."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from functions.api.server import HeaderTimeoutProtocol, server_config

HEADER_TIMEOUT_S = 0.5


@pytest.fixture
def server(monkeypatch) -> Iterator[int]:
    monkeypatch.setattr(HeaderTimeoutProtocol, "header_timeout_s", HEADER_TIMEOUT_S)
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    while not running.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    yield port
    running.should_exit = True
    thread.join(timeout=10)


def closed_by_server(conn: socket.socket, within_s: float) -> bool:
    conn.settimeout(within_s)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_partial_headers_lose_the_connection(server):
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert closed_by_server(conn, within_s=HEADER_TIMEOUT_S * 10)


def test_a_connection_that_sends_nothing_is_closed(server):
    with socket.create_connection(("127.0.0.1", server)) as conn:
        assert closed_by_server(conn, within_s=HEADER_TIMEOUT_S * 10)


def test_partial_headers_after_a_served_request_on_a_kept_alive_connection_are_cut_too(server):
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(5)
        assert b'{"pong":"yes"}' in conn.recv(4096)
        conn.sendall(b"GET /ping HTTP/1.1\r\nHo")
        assert closed_by_server(conn, within_s=HEADER_TIMEOUT_S * 4)  # before the 5 s keep-alive timeout


def test_complete_requests_are_served_on_one_connection(server):
    with socket.create_connection(("127.0.0.1", server)) as conn:
        conn.settimeout(5)
        for _ in range(3):
            conn.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(HEADER_TIMEOUT_S * 1.5)  # longer than the header deadline, between requests: not cut
            assert b'{"pong":"yes"}' in conn.recv(4096)
