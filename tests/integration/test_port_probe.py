"""The embedded cloud's port probe: a socket connected to itself is not a listener (loopback only, no cloud)."""

from __future__ import annotations

import socket

from rtrec_local.cloud import _connected_to_a_listener, _port_in_use, free_port


def test_a_socket_connected_to_itself_is_not_a_listener():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.settimeout(2)
        assert sock.connect_ex(("127.0.0.1", port)) == 0  # TCP simultaneous open: connected, nobody listening
        assert not _connected_to_a_listener(sock)


def test_a_listener_is_found_and_a_free_port_is_not():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert _port_in_use("127.0.0.1", port)
    assert not _port_in_use("127.0.0.1", free_port())


def test_a_probe_never_keeps_a_server_from_binding_the_port():
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # as a probe that picked the port as its source
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Node's servers do
            server.bind(("127.0.0.1", port))
            server.listen()
