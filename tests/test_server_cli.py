import hashlib
import os
import socket
import subprocess
import sys

import gevent
import gevent.event
import gevent.pool
import gevent.socket
import pytest

from gbufferevent.cli import parse_hostport
from gbufferevent.server import BuffereventServer


def echo(bev, address):
    while True:
        data = bev.recv(65536)
        if not data:
            break
        bev.sendall(data)


def test_100_concurrent_clients_echo():
    server = BuffereventServer(("127.0.0.1", 0), echo)
    server.start()
    addr = server.address

    def client(i):
        payload = os.urandom(64 * 1024 + i)
        s = gevent.socket.create_connection(addr, timeout=20)
        g = gevent.spawn(s.sendall, payload)
        got = bytearray()
        while len(got) < len(payload):
            d = s.recv(65536)
            assert d
            got += d
        g.get()
        s.close()
        return hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()

    try:
        jobs = [gevent.spawn(client, i) for i in range(100)]
        gevent.joinall(jobs, timeout=60, raise_error=True)
        assert all(j.value for j in jobs)
    finally:
        server.stop()


def test_server_with_pool_and_half_close():
    pool = gevent.pool.Pool(2)

    def handle(bev, address):
        request = b""
        while True:
            d = bev.recv(100)
            if not d:
                break
            request += d
        bev.sendall(b"got " + request)      # after the client's FIN

    server = BuffereventServer(("127.0.0.1", 0), handle, spawn=pool)
    server.start()
    try:
        s = gevent.socket.create_connection(server.address, timeout=10)
        s.sendall(b"question")
        s.shutdown(socket.SHUT_WR)
        assert s.makefile("rb").read() == b"got question"
        s.close()
    finally:
        server.stop()


def test_handler_exception_costs_only_that_connection():
    def handle(bev, address):
        if bev.recv(1) == b"!":
            raise ValueError("handler bug")
        echo(bev, address)

    server = BuffereventServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        bad = gevent.socket.create_connection(server.address, timeout=10)
        bad.sendall(b"!")
        assert bad.recv(10) == b""          # closed by the server
        good = gevent.socket.create_connection(server.address, timeout=10)
        good.sendall(b"xhello")
        assert good.recv(10) == b"hello"
        good.close()
        bad.close()
    finally:
        server.stop()


def test_parse_hostport():
    assert parse_hostport("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_hostport(":81") == ("127.0.0.1", 81)
    assert parse_hostport("82") == ("127.0.0.1", 82)
    assert parse_hostport("[::1]:83") == ("::1", 83)
    import argparse
    for bad in ("host:port", "1:2:3", "host:70000"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_hostport(bad)


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cli_echo_subprocess():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gbufferevent", "echo", "--listen", f"127.0.0.1:{port}",
         "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in line
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            payload = os.urandom(300_000)
            s.sendall(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += s.recv(65536)
            assert bytes(got) == payload
        proc.terminate()
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_port_in_use_clear_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gbufferevent", "echo", "--listen", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30)
        assert out.returncode == 2
        assert "cannot listen" in out.stderr
    finally:
        holder.close()


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "gbufferevent", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "echo" in out.stdout


def test_server_validates_tls_and_rate_arguments_up_front():
    import ssl as stdssl
    handle = lambda bev, addr: None  # noqa: E731
    with pytest.raises(TypeError, match="OpenSSL"):
        BuffereventServer(("127.0.0.1", 0), handle,
                          ssl_context=stdssl.create_default_context())
    with pytest.raises(TypeError):
        BuffereventServer(("127.0.0.1", 0), handle, rate_limit="fast")
    with pytest.raises(TypeError):
        BuffereventServer(("127.0.0.1", 0), handle, rate_limit_group=5)
    with pytest.raises(ValueError):
        BuffereventServer(("127.0.0.1", 0), handle, handshake_timeout=0)


def test_peer_errors_cost_one_log_line_not_a_traceback(capsys):
    import logging
    import struct

    records = []
    logged = gevent.event.Event()

    class Catch(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())
            logged.set()

    logger = logging.getLogger("gbufferevent.server")
    handler, old_level = Catch(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    def handle(bev, address):
        while bev.recv(65536):
            pass

    server = BuffereventServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        s = gevent.socket.create_connection(server.address, timeout=10)
        s.sendall(b"x")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                  # RST while the handler reads
        assert logged.wait(10)
        assert len(records) == 1 and "ConnectionResetError" in records[0]
        assert "Traceback" not in capsys.readouterr().err
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        server.stop()


def test_echo_tls_client_closing_without_close_notify_is_quiet(tmp_path):
    import ssl as stdssl
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gbufferevent", "echo", "--tls", "--listen",
         f"127.0.0.1:{port}", "--duration", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path)))
    try:
        while "listening" not in proc.stdout.readline():
            pass
        ctx = stdssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = stdssl.CERT_NONE
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                s = ctx.wrap_socket(raw)
                s.sendall(b"ping")
                assert s.recv(10) == b"ping"
                s.close()                          # no close_notify from us
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
