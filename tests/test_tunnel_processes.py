"""The tunnel end to end, with real processes on loopback.

A target (the echo main job, or an in-test sink), a server end
(``--tls-in --compress``), a client end (``--tls-out --compress``) and
clients: data integrity, the group cap, half-close, garbage, a dead target,
``openssl s_client``, in-process ``Tunnel.open()``, CLI errors and SIGTERM.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import sys
import time

import gevent
import gevent.event
import gevent.socket
from conftest import roundtrip
import gevent.subprocess as gsp
import pytest

from gbufferevent.server import BuffereventServer
from gbufferevent.ssl_context import generate_self_signed_cert
from gbufferevent.tunnel import Tunnel

LISTEN = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")


class Proc:
    """``python -m gbufferevent ARGS`` whose listening port is read from stdout."""

    def __init__(self, *args):
        self.p = gsp.Popen([sys.executable, "-m", "gbufferevent", *args],
                           stdout=gsp.PIPE, stderr=gsp.PIPE)
        self.lines = []
        with gevent.Timeout(30, AssertionError(f"{args} did not start")):
            while True:
                line = self.p.stdout.readline()
                if not line:
                    raise AssertionError(f"{args} exited: {self.p.stderr.read()!r}")
                self.lines.append(line)
                m = LISTEN.search(line)
                if m:
                    self.port = int(m.group(1))
                    break
        self.addr = ("127.0.0.1", self.port)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except gsp.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return self.p.returncode


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("cert")
    c, k = str(d / "cert.pem"), str(d / "key.pem")
    generate_self_signed_cert(c, k)
    return c, k


@pytest.fixture(scope="module")
def chain(cert):
    """echo target <- server end (TLS in, compress) <- client end (TLS out, compress)."""
    c, k = cert
    target = Proc("echo", "--listen", "127.0.0.1:0")
    server_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"127.0.0.1:{target.port}",
                      "--tls-in", f"{c},{k}", "--compress")
    client_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"localhost:{server_end.port}",
                      "--tls-out", "--ca", c, "--server-name", "localhost", "--compress")
    yield target, server_end, client_end
    for p in (client_end, server_end, target):
        p.stop()


def test_50_clients_1mib_each_through_tls_and_compression(chain):
    _, _, client_end = chain
    payloads = [os.urandom(512 * 1024) + bytes([i]) * (512 * 1024) for i in range(50)]
    jobs = [gevent.spawn(roundtrip, client_end.addr, p) for p in payloads]
    gevent.joinall(jobs, timeout=120, raise_error=True)
    assert [hashlib.sha256(j.value).hexdigest() for j in jobs] == \
        [hashlib.sha256(p).hexdigest() for p in payloads]


def test_half_close_through_the_tunnel(cert):
    """The client sends, shuts its write side, and still gets the reply."""
    def count_then_reply(bev, address):
        n = 0
        while True:
            d = bev.recv(65536)
            if not d:
                break
            n += len(d)
        bev.sendall(b"got %d bytes" % n)

    target = BuffereventServer(("127.0.0.1", 0), count_then_reply)
    target.start()
    c, k = cert
    server_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"127.0.0.1:{target.address[1]}",
                      "--tls-in", f"{c},{k}", "--compress")
    client_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"127.0.0.1:{server_end.port}",
                      "--tls-out", "--insecure", "--compress")
    try:
        assert roundtrip(client_end.addr, b"q" * 300_000) == b"got 300000 bytes"
    finally:
        client_end.stop()
        server_end.stop()
        target.stop()


def test_group_cap_holds_over_two_seconds():
    received = [0]
    changed = gevent.event.Event()

    def sink(bev, address):
        while True:
            d = bev.recv(1 << 16)
            if not d:
                break
            received[0] += len(d)
            changed.set()

    target = BuffereventServer(("127.0.0.1", 0), sink)
    target.start()
    rate = 300_000
    tunnel = Proc("tunnel", "--listen", "127.0.0.1:0",
                  "--connect", f"127.0.0.1:{target.address[1]}",
                  "--rate", "300k", "--burst", "30k", "--tick", "100")
    stop = gevent.event.Event()

    def client():
        s = gevent.socket.create_connection(tunnel.addr, timeout=10)
        chunk = b"r" * 65536
        try:
            while not stop.is_set():
                s.sendall(chunk)
        except OSError:
            pass
        s.close()

    clients = [gevent.spawn(client) for _ in range(4)]
    try:
        with gevent.Timeout(10):
            while received[0] < 60_000:          # warmed up past the first burst
                changed.clear()
                changed.wait()
        t0, n0 = time.monotonic(), received[0]
        done = gevent.event.Event()
        gevent.get_hub().loop.timer(2.5).start(done.set)
        done.wait(10)
        t1, n1 = time.monotonic(), received[0]
        measured = (n1 - n0) / (t1 - t0)
        assert abs(measured - rate) / rate <= 0.15, measured
    finally:
        stop.set()
        gevent.killall(clients, timeout=5)
        tunnel.stop()
        target.stop()


def test_garbage_into_tls_end_costs_one_connection(chain):
    _, server_end, client_end = chain
    s = gevent.socket.create_connection(server_end.addr, timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" + os.urandom(2000))
    s.settimeout(10)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    s.close()
    assert roundtrip(client_end.addr, b"still serving") == b"still serving"
    assert server_end.p.poll() is None


def test_target_down_refuses_cleanly():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    tunnel = Proc("tunnel", "--listen", "127.0.0.1:0", "--connect", f"127.0.0.1:{dead_port}")
    try:
        for _ in range(3):
            try:
                s = gevent.socket.create_connection(tunnel.addr, timeout=10)
                s.settimeout(10)
                assert s.recv(10) == b""         # closed at once ...
                s.close()
            except (ConnectionResetError, ConnectionAbortedError):
                pass                             # ... or reset, as a refused target is
        assert tunnel.p.poll() is None
    finally:
        assert tunnel.stop() == 0
    assert b"unreachable" in tunnel.p.stderr.read()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl binary not installed")
def test_openssl_s_client_against_tls_in(cert):
    c, k = cert
    target = Proc("echo", "--listen", "127.0.0.1:0")
    server_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"127.0.0.1:{target.port}", "--tls-in", f"{c},{k}")
    try:
        client = gsp.Popen(["openssl", "s_client", "-connect",
                            f"127.0.0.1:{server_end.port}", "-CAfile", c,
                            "-verify_return_error", "-quiet"],
                           stdin=gsp.PIPE, stdout=gsp.PIPE, stderr=gsp.PIPE)
        try:
            client.stdin.write(b"hello through s_client\n")
            client.stdin.flush()
            with gevent.Timeout(30, AssertionError("no echo from s_client")):
                line = client.stdout.readline()
            assert line == b"hello through s_client\n"
        finally:
            client.kill()
            client.wait()
    finally:
        server_end.stop()
        target.stop()


def test_in_process_open_through_tls_and_compression(chain, cert):
    _, server_end, _ = chain
    c, _ = cert
    tunnel = Tunnel(("localhost", server_end.port), tls_out=True, ca=c, compress=6)
    bev = tunnel.open()
    payload = os.urandom(200_000)
    sender = gevent.spawn(lambda: (bev.sendall(payload), bev.shutdown(socket.SHUT_WR)))
    got = bytearray()
    bev.settimeout(30)
    while True:
        d = bev.recv(1 << 16)
        if not d:
            break
        got += d
    sender.get(timeout=30)
    assert bytes(got) == payload
    bev.close()


def test_cli_errors_are_clear(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        out = gsp.run([sys.executable, "-m", "gbufferevent", "tunnel", "--listen",
                       f"127.0.0.1:{port}", "--connect", "127.0.0.1:9"],
                      capture_output=True, text=True, timeout=30)
        assert out.returncode == 2 and "cannot listen" in out.stderr
    finally:
        holder.close()
    out = gsp.run([sys.executable, "-m", "gbufferevent", "tunnel", "--listen", "127.0.0.1:0",
                   "--connect", "127.0.0.1:9", "--tls-in",
                   f"{tmp_path}/missing.pem,{tmp_path}/missing.key"],
                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "certificate" in out.stderr
    out = gsp.run([sys.executable, "-m", "gbufferevent", "tunnel", "--listen", "127.0.0.1:0",
                   "--connect", "127.0.0.1:9", "--rate", "fast"],
                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "bad size" in out.stderr


def test_sigterm_lets_open_connections_finish(cert):
    got_request = gevent.event.Event()

    def slow_reply(bev, address):
        bev.recv(100)
        got_request.set()
        gevent.sleep(0.5)                       # the reply takes a while
        bev.sendall(b"late but complete")

    target = BuffereventServer(("127.0.0.1", 0), slow_reply)
    target.start()
    tunnel = Proc("tunnel", "--listen", "127.0.0.1:0",
                  "--connect", f"127.0.0.1:{target.address[1]}", "--grace", "10")
    try:
        s = gevent.socket.create_connection(tunnel.addr, timeout=10)
        s.sendall(b"request")
        s.settimeout(10)
        assert got_request.wait(10)             # the request is in flight
        tunnel.p.send_signal(signal.SIGTERM)
        assert s.recv(100) == b"late but complete"
        s.close()
        assert tunnel.p.wait(timeout=15) == 0
        with pytest.raises(OSError):            # no longer accepting
            gevent.socket.create_connection(tunnel.addr, timeout=2)
    finally:
        tunnel.stop()
        target.stop()


@pytest.mark.parametrize("args,message", [
    (["--rate", "inf"], "finite"),
    (["--stats", "-1"], "seconds"),
    (["--grace", "-2"], "seconds"),
    (["--insecure"], "need --tls-out"),
    (["--burst", "10k"], "need --rate"),
    (["--tls-out", "--ca", "/nonexistent.pem"], "CA file"),
])
def test_cli_rejects_bad_tunnel_options(args, message):
    out = gsp.run([sys.executable, "-m", "gbufferevent", "tunnel", "--listen", "127.0.0.1:0",
                   "--connect", "127.0.0.1:9", *args],
                  capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr


def test_tls_in_dials_the_target_only_after_the_handshake(cert):
    dialled = []

    def handle(bev, address):
        dialled.append(address)

    target = BuffereventServer(("127.0.0.1", 0), handle)
    target.start()
    c, k = cert
    server_end = Proc("tunnel", "--listen", "127.0.0.1:0",
                      "--connect", f"127.0.0.1:{target.address[1]}",
                      "--tls-in", f"{c},{k}", "--handshake-timeout", "0.5")
    try:
        silent = [gevent.socket.create_connection(server_end.addr, timeout=10)
                  for _ in range(5)]
        for s in silent:                      # dropped after the handshake timeout
            s.settimeout(10)
            try:
                assert s.recv(10) == b""
            except ConnectionResetError:
                pass
            s.close()
        assert dialled == []
    finally:
        server_end.stop()
        target.stop()
