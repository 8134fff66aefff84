"""The tunnel, in process: plain relay, half-close, target down, open()."""
import hashlib
import os
import socket

import gevent
import gevent.event
import gevent.socket
from conftest import roundtrip
import pytest

from gbufferevent.server import BuffereventServer
from gbufferevent.tunnel import Tunnel, parse_size


def echo(bev, address):
    while True:
        d = bev.recv(65536)
        if not d:
            break
        bev.sendall(d)


@pytest.fixture
def echo_server():
    server = BuffereventServer(("127.0.0.1", 0), echo)
    server.start()
    yield server.address
    server.stop()


def test_parse_size():
    assert parse_size("512k") == 512_000
    assert parse_size("10M") == 10_000_000
    assert parse_size("1Mi") == 1 << 20
    assert parse_size("2000") == 2000
    assert parse_size("1.5kB/s") == 1500
    for bad in ("", "x", "10q", "0", "-5k"):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_plain_relay_half_close_and_concurrency(echo_server):
    tunnel = Tunnel(echo_server, ("127.0.0.1", 0)).start()
    try:
        payloads = [os.urandom(200_000 + i) for i in range(20)]
        jobs = [gevent.spawn(roundtrip, tunnel.address, p) for p in payloads]
        gevent.joinall(jobs, timeout=60, raise_error=True)
        assert [hashlib.sha256(j.value).digest() for j in jobs] == \
            [hashlib.sha256(p).digest() for p in payloads]
    finally:
        tunnel.stop(grace=1)


def test_target_down_refuses_cleanly_and_keeps_serving(echo_server, caplog):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()
    s.close()
    tunnel = Tunnel(dead, ("127.0.0.1", 0)).start()
    try:
        c = gevent.socket.create_connection(tunnel.address, timeout=10)
        c.settimeout(10)
        try:
            assert c.recv(10) == b""          # closed, no hang ...
        except ConnectionResetError:
            pass                              # ... or reset, as a refused target is
        c.close()
        assert "unreachable" in caplog.text
    finally:
        tunnel.stop(grace=0)


def test_open_in_process_through_pair(echo_server):
    tunnel = Tunnel(echo_server)               # no listener at all
    bev = tunnel.open()
    bev.sendall(b"through my own tunnel\n")
    assert bev.readline() == b"through my own tunnel\n"
    bev.shutdown(socket.SHUT_WR)
    assert bev.recv(10) == b""
    bev.close()


def test_two_tunnels_with_compression_small_and_large(echo_server):
    server_end = Tunnel(echo_server, ("127.0.0.1", 0), compress=6,
                        compress_side="down").start()
    client_end = Tunnel(server_end.address, ("127.0.0.1", 0), compress=6,
                        compress_side="up").start()
    try:
        s = gevent.socket.create_connection(client_end.address, timeout=10)
        s.settimeout(10)
        s.sendall(b"small interactive message\n")
        assert s.recv(100) == b"small interactive message\n"   # not stuck in zlib
        s.close()
        payload = os.urandom(100_000) + b"a" * 650_000
        assert roundtrip(client_end.address, payload) == payload
    finally:
        client_end.stop(grace=1)
        server_end.stop(grace=1)


def _sink_server():
    got = {"bytes": 0, "error": None}
    done = gevent.event.Event()

    def sink(bev, address):
        try:
            while True:
                d = bev.recv(65536)
                if not d:
                    break
                got["bytes"] += len(d)
        except OSError as exc:
            got["error"] = exc
        done.set()

    server = BuffereventServer(("127.0.0.1", 0), sink)
    server.start()
    return server, got, done


def test_client_reset_reaches_the_target_as_a_reset():
    import struct
    server, got, done = _sink_server()
    tunnel = Tunnel(server.address, ("127.0.0.1", 0)).start()
    try:
        c = gevent.socket.create_connection(tunnel.address, timeout=10)
        c.sendall(b"z" * 300_000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()                              # RST
        assert done.wait(10)
        assert isinstance(got["error"], ConnectionResetError)   # not a clean EOF
    finally:
        tunnel.stop(grace=0)
        server.stop()


def test_open_reports_a_failed_target_as_an_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()
    s.close()
    tunnel = Tunnel(dead)
    bev = tunnel.open()
    bev.settimeout(10)
    with pytest.raises(ConnectionRefusedError):
        bev.recv(10)


def test_tunnel_rejects_bad_arguments():
    for kwargs in ({"rate": 0}, {"rate": -1}, {"conn_rate": float("inf")},
                   {"compress": 11}, {"tick": 0}):
        with pytest.raises(ValueError):
            Tunnel(("127.0.0.1", 9), **kwargs)
    for bad in ("127.0.0.1:80", ("127.0.0.1", 0), ("127.0.0.1", "80")):
        with pytest.raises(ValueError):
            Tunnel(bad)
    t = Tunnel(("127.0.0.1", 9), ("127.0.0.1", 0), compress=True)
    assert t.compress == 6
    t.start()
    with pytest.raises(RuntimeError):
        t.start()
    t.stop(grace=0)
