"""TLS bufferevents: both kinds, stacks, shutdowns, errors, interop, CLI, example."""
import errno
import hashlib
import logging
import os
import re
import shutil
import socket
import ssl as stdssl
import struct
import subprocess
import sys
import time
from types import SimpleNamespace

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
import gevent.subprocess
import pytest
from OpenSSL import SSL

from gbufferevent import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_TIMEOUT, BEV_FINISHED, BEV_FLUSH, BEV_OPT_CLOSE_ON_FREE,
    BUFFEREVENT_SSL_ACCEPTING, BUFFEREVENT_SSL_CONNECTING, BUFFEREVENT_SSL_OPEN, EV_READ,
    EV_WRITE, BuffereventClosedError, FilterBufferevent, SocketBufferevent,
    SSLCertVerificationError, SSLEOFError, SSLError, client_context, openssl_filter_new,
    openssl_socket_new, pair_new, server_context,
)
from gbufferevent.cli import _echo_handler as echo_handler
from gbufferevent.filters import zlib_compress_filter, zlib_decompress_filter
from gbufferevent.server import BuffereventServer
from gbufferevent.ssl import SSLSocketBufferevent, set_verify_name
from gbufferevent.ssl_context import generate_self_signed_cert
from gbufferevent.ssl_errors import pack_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: OpenSSL 3's SSL_OP_ALLOW_CLIENT_RENEGOTIATION (pyOpenSSL has no name for it).
ALLOW_CLIENT_RENEGOTIATION = getattr(SSL, "OP_ALLOW_CLIENT_RENEGOTIATION", 0x100)
EOF_R = BEV_EVENT_EOF | BEV_EVENT_READING
ERR_R = BEV_EVENT_ERROR | BEV_EVENT_READING


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    cert, key = generate_self_signed_cert(d / "cert.pem", d / "key.pem")
    other, okey = generate_self_signed_cert(d / "other.pem", d / "okey.pem")
    return SimpleNamespace(cert=cert, key=key, other=other, okey=okey, dir=str(d))


def sctx(pki, tls12=False):
    ctx = server_context(pki.cert, pki.key)
    if tls12:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    return ctx


def cctx(pki, tls12=False, cafile=None):
    ctx = client_context(cafile=cafile or pki.cert)
    if tls12:
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    return ctx


class Events:
    """Records (events, time) per bufferevent; wait_for(pred) with a deadline."""

    def __init__(self):
        self.log = []
        self.changed = gevent.event.Event()

    def cb(self, name):
        def eventcb(bev, what, arg):
            self.log.append((name, int(what)))
            self.changed.set()
        return eventcb

    def of(self, name):
        return [w for n, w in self.log if n == name]

    def wait_for(self, pred, timeout=10):
        with gevent.Timeout(timeout, AssertionError(f"not reached; events {self.log}")):
            while not pred():
                self.changed.clear()
                self.changed.wait()


@pytest.fixture
def made():
    objs = []
    yield objs
    for o in reversed(objs):
        try:
            if hasattr(o, "free"):
                o.free()
            else:
                o.close()
        except Exception:  # noqa: BLE001 - best-effort teardown
            pass


def tls_pair(pki, made, kind="socket", tls12=False, options=BEV_OPT_CLOSE_ON_FREE):
    """(client, server) TLS bufferevents over a socketpair (socket kind), a
    bufferevent pair / SocketBufferevents / TLS socket bufferevents (filter)."""
    cs, ss = SSL.Connection(cctx(pki, tls12), None), SSL.Connection(sctx(pki, tls12), None)
    if kind == "socket":
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        cli = openssl_socket_new(cs, BUFFEREVENT_SSL_CONNECTING, a, options,
                                 server_hostname="localhost")
        srv = openssl_socket_new(ss, BUFFEREVENT_SSL_ACCEPTING, b, options)
    else:
        if kind == "pair":
            u0, u1 = pair_new()
        elif kind == "over-socket":
            a, b = gevent.socket.socketpair()
            made.extend([a, b])
            u0, u1 = SocketBufferevent(a, options), SocketBufferevent(b, options)
        elif kind == "over-zlib":                # TLS over a compressing filter
            from gbufferevent import FilterBufferevent
            from gbufferevent.filters import zlib_compress_filter, zlib_decompress_filter
            p0, p1 = pair_new()
            made.extend([p0, p1])
            u0, u1 = (FilterBufferevent(p, zlib_decompress_filter(), zlib_compress_filter(),
                                        options) for p in (p0, p1))
        else:                                    # "tls-in-tls"
            u0, u1 = tls_pair(pki, made, "socket", tls12, options)
        made.extend([u0, u1])
        cli = openssl_filter_new(u0, cs, BUFFEREVENT_SSL_CONNECTING, options,
                                 server_hostname="localhost")
        srv = openssl_filter_new(u1, ss, BUFFEREVENT_SSL_ACCEPTING, options)
    made.extend([cli, srv])
    return cli, srv


def read_all(bev):
    h = hashlib.sha256()
    n = 0
    while True:
        d = bev.recv(65536)
        if not d:
            return n, h.hexdigest()
        h.update(d)
        n += len(d)


def listener():
    lst = gevent.socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(16)
    return lst


KINDS = ["socket", "pair", "over-socket", "over-zlib", "tls-in-tls"]


# -- handshake, CONNECTED, data ----------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_handshake_connected_once_and_1mib_each_way(pki, made, kind):
    cli, srv = tls_pair(pki, made, kind)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    srv.setcb(None, None, ev.cb("s"))
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    ev.wait_for(lambda: len(ev.log) == 2)
    assert ev.of("c") == [BEV_EVENT_CONNECTED] and ev.of("s") == [BEV_EVENT_CONNECTED]
    assert cli.handshake_done and srv.handshake_done
    assert cli.get_shutdown_timeout() == 3.0
    assert cli.get_ssl().get_peer_certificate() is not None       # server's cert
    assert srv.get_ssl().get_peer_certificate() is None           # no client cert
    if kind == "socket":
        assert cli.getfd() >= 0 and cli.get_underlying() is None
    else:
        assert cli.get_underlying() is not None
        assert cli.getfd() == cli.get_underlying().getfd()
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)

    def send(bev, data):
        bev.sendall(data)
        bev.shutdown(socket.SHUT_WR)            # close_notify: the peer reads EOF

    jobs = [gevent.spawn(send, cli, up), gevent.spawn(send, srv, down),
            gevent.spawn(read_all, srv), gevent.spawn(read_all, cli)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert jobs[2].value == (len(up), hashlib.sha256(up).hexdigest())
    assert jobs[3].value == (len(down), hashlib.sha256(down).hexdigest())
    assert ev.of("c").count(BEV_EVENT_CONNECTED) == 1
    assert ev.of("s").count(BEV_EVENT_CONNECTED) == 1
    assert not [w for _, w in ev.log if w & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)]


def test_write_after_connect_from_the_event_callback(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    got = []

    def on_cli(bev, what, arg):
        if what & BEV_EVENT_CONNECTED:
            bev.write(b"1\n")                  # libevent's "write after connect"

    cli.setcb(None, None, on_cli)
    srv.setcb(lambda b, a: got.append(b.read()), None, None)
    srv.enable(EV_READ)
    with gevent.Timeout(10):
        while b"".join(got) != b"1\n":
            gevent.sleep(0.01)


@pytest.mark.parametrize("kind", ["socket", "pair"])
def test_created_open_has_no_connected(pki, made, kind):
    # libevent's startopen tests: handshake without CLOSE_ON_FREE, free, then
    # wrap the same Connections (and sockets/underlyings) in OPEN bufferevents.
    if kind == "socket":
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        under = (a, b)
    else:
        under = pair_new()
        made.extend(under)
    cs, ss = SSL.Connection(cctx(pki), None), SSL.Connection(sctx(pki), None)
    new = openssl_socket_new if kind == "socket" else openssl_filter_new
    c1 = new(under[0], cs, BUFFEREVENT_SSL_CONNECTING) if kind != "socket" else \
        new(cs, BUFFEREVENT_SSL_CONNECTING, under[0])
    s1 = new(under[1], ss, BUFFEREVENT_SSL_ACCEPTING) if kind != "socket" else \
        new(ss, BUFFEREVENT_SSL_ACCEPTING, under[1])
    assert c1.wait_handshake(10) and s1.wait_handshake(10)
    c1.free()
    s1.free()
    assert c1.get_ssl() is cs                  # no CLOSE_ON_FREE: kept
    ev = Events()
    if kind == "socket":
        c2 = new(cs, BUFFEREVENT_SSL_OPEN, under[0], BEV_OPT_CLOSE_ON_FREE)
        s2 = new(ss, BUFFEREVENT_SSL_OPEN, under[1], BEV_OPT_CLOSE_ON_FREE)
    else:
        c2 = new(under[0], cs, BUFFEREVENT_SSL_OPEN, BEV_OPT_CLOSE_ON_FREE)
        s2 = new(under[1], ss, BUFFEREVENT_SSL_OPEN, BEV_OPT_CLOSE_ON_FREE)
    made.extend([c2, s2])
    c2.setcb(None, None, ev.cb("c"))
    s2.setcb(None, None, ev.cb("s"))
    assert c2.wait_handshake(1) is True
    c2.sendall(b"ping")
    assert s2.readexactly(4) == b"ping"
    s2.sendall(b"pong")
    assert c2.readexactly(4) == b"pong"
    assert ev.log == []                        # no CONNECTED for OPEN


def test_close_on_free_closes_socket_and_drops_ssl(pki, made):
    cli, srv = tls_pair(pki, made, "socket")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    fd = srv.getfd()
    sock = srv.socket
    srv.free()
    assert srv.get_ssl() is None and srv.getfd() == -1
    assert fd >= 0 and sock.fileno() == -1     # closed
    # the peer sees the transport end without close_notify: dirty -> ERROR
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    cli.enable(EV_READ)
    ev.wait_for(lambda: ev.log)
    assert ev.of("c") == [ERR_R]
    # filter kind: the underlying is freed too
    fcli, fsrv = tls_pair(pki, made, "pair")
    u = fsrv.get_underlying()
    fsrv.free()
    assert u.closed and fsrv.get_ssl() is None
    # without CLOSE_ON_FREE the underlying survives, callbacks released
    fcli2, fsrv2 = tls_pair(pki, made, "pair", options=0)
    u2 = fsrv2.get_underlying()
    fsrv2.free()
    assert not u2.closed and u2.getcb()[:3] == (None, None, None)


# -- failures -----------------------------------------------------------------------

def test_garbage_handshake_is_error_with_openssl_error(pki, made):
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, b)
    made.append(srv)
    ev = Events()
    srv.setcb(None, None, ev.cb("s"))
    a.sendall(b"GET / HTTP/1.0\r\n\r\n")
    ev.wait_for(lambda: ev.log)
    assert ev.of("s") == [ERR_R]
    code = srv.get_openssl_error()
    assert code != 0 and code == pack_error("SSL routines", "http request")
    assert "http request" in str(code)
    assert srv.wait_handshake(1) is False
    with pytest.raises(SSLError) as info:
        srv.recv(10)
    assert info.value.reason == "HTTP_REQUEST"


@pytest.mark.parametrize("tls12", [False, True])
def test_untrusted_certificate_and_wrong_host_are_errors(pki, made, tls12):
    # The client checks the name during the handshake (SSL_set1_host), so
    # it sends an alert and the server's handshake fails too.
    for cafile, host, alert in ((pki.other, "localhost", "tlsv1 alert unknown ca"),
                                (pki.cert, "wrong.example", "tls alert bad certificate"),
                                (pki.cert, "10.1.2.3", "tls alert bad certificate")):
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        cli = openssl_socket_new(SSL.Connection(cctx(pki, tls12, cafile=cafile), None),
                                 BUFFEREVENT_SSL_CONNECTING, a, server_hostname=host)
        srv = openssl_socket_new(SSL.Connection(sctx(pki), None),
                                 BUFFEREVENT_SSL_ACCEPTING, b)
        made.extend([cli, srv])
        ev = Events()
        cli.setcb(None, None, ev.cb("c"))
        srv.setcb(None, None, ev.cb("s"))
        server_done = gevent.spawn(srv.wait_handshake, 10)
        assert cli.wait_handshake(10) is False
        assert server_done.get(timeout=10) is False
        ev.wait_for(lambda: ev.of("c") and ev.of("s"))
        assert ev.of("c") == [ERR_R] and ev.of("s") == [ERR_R]
        assert cli.get_openssl_error() == pack_error("SSL routines",
                                                     "certificate verify failed")
        assert srv.get_openssl_error() == pack_error("SSL routines", alert)
        with pytest.raises(SSLCertVerificationError):
            cli.recv(1)
        with pytest.raises(SSLError, match=alert.upper().replace(" ", "_")):
            srv.recv(1)


def test_stalled_handshake_is_one_timeout(pki, made):
    a, b = gevent.socket.socketpair()          # b: a peer that never answers
    made.extend([a, b])
    cli = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING, a)
    made.append(cli)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    cli.set_timeouts(0.3, 0.3)
    cli.enable(EV_READ | EV_WRITE)
    cli.write(b"1")
    t0 = time.monotonic()
    ev.wait_for(lambda: ev.log, timeout=5)
    gevent.sleep(0.5)                          # pacing: no second event follows
    assert ev.of("c") == [BEV_EVENT_TIMEOUT]   # no READING/WRITING bit
    assert 0.25 < time.monotonic() - t0 < 2
    assert cli.wait_handshake(1) is False
    # the blocking helper has its own deadline
    c2 = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING, a)
    made.append(c2)
    assert c2.wait_handshake(0.2) is False
    assert isinstance(c2.last_error, TimeoutError)


def test_filter_handshake_timeout(pki, made):
    u0, u1 = pair_new()                        # u1 never reads
    made.extend([u0, u1])
    cli = openssl_filter_new(u0, SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING)
    made.append(cli)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    cli.set_timeouts(0.2, None)
    ev.wait_for(lambda: ev.log, timeout=5)
    assert ev.of("c") == [BEV_EVENT_TIMEOUT]


def connecting_client(pki, made):
    """A listener and a TLS client connect()ing to it (not yet accepted)."""
    lst = listener()
    cli = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING,
                             None, BEV_OPT_CLOSE_ON_FREE)
    made.extend([lst, cli])
    cli.connect(lst.getsockname())
    return lst, cli


def test_no_busy_loop_while_peer_is_silent(pki, made):
    lst, cli = connecting_client(pki, made)
    cli.write(b"queued while the server sleeps")
    cli.enable(EV_READ | EV_WRITE)
    f0, f1 = pair_new()                        # and a filter whose peer is silent
    made.extend([f0, f1])
    fcli = openssl_filter_new(f0, SSL.Connection(cctx(pki), None),
                              BUFFEREVENT_SSL_CONNECTING)
    made.append(fcli)
    fcli.enable(EV_READ | EV_WRITE)
    s, _ = lst.accept()
    made.append(s)
    cpu0 = time.process_time()
    gevent.sleep(0.6)                          # pacing: the peer stays silent
    assert time.process_time() - cpu0 < 0.15
    srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, s)
    made.append(srv)
    assert srv.readexactly(30) == b"queued while the server sleeps"
    cpu0 = time.process_time()                 # open, both reading, nobody talks
    gevent.sleep(0.4)
    assert time.process_time() - cpu0 < 0.1
    srv.sendall(b"!")
    assert cli.readexactly(1) == b"!"


# -- shutdowns ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["socket", "pair", "over-socket"])
@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize("how", ["close", "free"])
def test_shutdown_matrix(pki, made, kind, allow, how):
    cli, srv = tls_pair(pki, made, kind)
    assert cli.get_allow_dirty_shutdown() == 0           # default off
    cli.set_allow_dirty_shutdown(allow)
    assert cli.get_allow_dirty_shutdown() == int(allow)
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    ev = Events()
    got = []
    cli.setcb(lambda b, a: (got.append(b.read()), ev.changed.set()), None, ev.cb("c"))
    cli.enable(EV_READ)
    srv.write(b"last words")
    if how == "close":
        srv.close()            # clean: data, close_notify, transport closed
    else:
        gevent.spawn(dirty_close, srv, kind)
    ev.wait_for(lambda: ev.log)
    assert b"".join(got) == b"last words"              # data first, either way
    clean = how == "close"
    assert ev.of("c") == [EOF_R if clean or allow else ERR_R]
    if not clean and not allow:
        assert cli.get_openssl_error() != 0
        with pytest.raises(SSLEOFError):
            cli.recv(1)
    else:
        assert cli.recv(1) == b""


def dirty_close(bev, kind):
    """Deliver the output, then end the transport without close_notify."""
    bev.drain()
    under = bev.get_underlying()
    if kind == "pair":
        under.flush(EV_WRITE, BEV_FINISHED)    # the partner sees EOF
    elif under is not None:
        under.drain()
    bev.free()


def test_clean_close_both_ends_promptly(pki, made):
    cli, srv = tls_pair(pki, made, "socket")
    cli.set_shutdown_timeout(10)
    srv.set_shutdown_timeout(10)
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    ssl_c, ssl_s = cli.get_ssl(), srv.get_ssl()
    srv.enable(EV_READ)
    payload = os.urandom(300_000)
    cli.write(payload)
    t0 = time.monotonic()
    cli.close()                                # never blocks
    n, digest = read_all(srv)                  # data, then EOF (close_notify)
    assert (n, digest) == (len(payload), hashlib.sha256(payload).hexdigest())
    srv.close()
    with gevent.Timeout(5):
        while not (cli.closed and cli.get_ssl() is None and srv.get_ssl() is None):
            gevent.sleep(0.01)
    assert time.monotonic() - t0 < 3           # not the 10 s shutdown timeout
    both = SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN
    assert ssl_c.get_shutdown() == both and ssl_s.get_shutdown() == both


def test_clean_close_keeps_the_session_resumable(pki, made):
    # TLS 1.2 session IDs in the server's cache: OpenSSL drops a session from
    # it when the connection ends without close_notify (libevent's problem).
    class Metered(SSLSocketBufferevent):
        read_bytes = 0

        def _charge_read(self, n):
            self.read_bytes += n

    s_ctx = sctx(pki, tls12=True)
    s_ctx.set_options(SSL.OP_NO_TICKET)
    c_ctx = cctx(pki, tls12=True)

    def connect(session, clean):
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        cs = SSL.Connection(c_ctx, None)
        if session is not None:
            cs.set_session(session)
        cli = Metered(cs, BUFFEREVENT_SSL_CONNECTING, a, BEV_OPT_CLOSE_ON_FREE)
        srv = openssl_socket_new(SSL.Connection(s_ctx, None), BUFFEREVENT_SSL_ACCEPTING,
                                 b, BEV_OPT_CLOSE_ON_FREE)
        made.extend([cli, srv])
        assert cli.wait_handshake(10) and srv.wait_handshake(10)
        handshake_bytes = cli.read_bytes
        if clean:
            cli.close()
            srv.enable(EV_READ)
            assert srv.recv(1) == b""
            srv.close()
            with gevent.Timeout(5):
                while cli.get_ssl() is not None or srv.get_ssl() is not None:
                    gevent.sleep(0.01)
        else:
            cli.free()
            srv.free()
        return cs.get_session(), handshake_bytes

    session, full = connect(None, clean=True)
    _, resumed = connect(session, clean=True)
    assert resumed < full / 2                  # no certificate: resumed
    session, full = connect(None, clean=False)
    _, again = connect(session, clean=False)
    assert again > full * 0.9                  # dropped from the cache: full


def test_half_close_through_tls(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    srv.set_half_close(True)
    assert srv.get_half_close() == 1 and cli.get_half_close() == 0
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    cli.sendall(b"request")
    cli.shutdown(socket.SHUT_WR)               # close_notify: "no more requests"
    assert read_all(srv) == (7, hashlib.sha256(b"request").hexdigest())
    srv.sendall(b"response after the peer's close_notify")
    srv.shutdown(socket.SHUT_WR)
    assert cli.readuntil(b"notify") == b"response after the peer's close_notify"
    assert cli.recv(10) == b""


def test_tunnel_over_tls_and_zlib_both_ends(pki, made):
    from gbufferevent.tunnel import Tunnel
    target = BuffereventServer(("127.0.0.1", 0), echo_handler)
    target.start()
    made.append(target)
    server_end = Tunnel(target.address, ("127.0.0.1", 0), tls_in=(pki.cert, pki.key),
                        compress=6)
    server_end.start()
    client_end = Tunnel(server_end.address, ("127.0.0.1", 0), tls_out=True, ca=pki.cert,
                        server_hostname="localhost", compress=6)
    client_end.start()
    payload = os.urandom(300_000)
    try:
        with gevent.Timeout(20):
            s = gevent.socket.create_connection(client_end.address)
            g = gevent.spawn(lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
            got = read_all(s)
            g.get()
            s.close()
        # the echo came back whole after our FIN: the half-close travelled through TLS
        assert got == (len(payload), hashlib.sha256(payload).hexdigest())
    finally:
        client_end.stop(grace=1)
        server_end.stop(grace=1)


def test_set_verify_name(pki, made):
    for name, ok in (("localhost", True), ("127.0.0.1", True), ("other.example", False)):
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        conn = SSL.Connection(cctx(pki), None)
        set_verify_name(conn, name)
        cli = openssl_socket_new(conn, BUFFEREVENT_SSL_CONNECTING, a)
        srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, b)
        made.extend([cli, srv])
        server_done = gevent.spawn(srv.wait_handshake, 10)
        assert cli.wait_handshake(10) is ok
        assert server_done.get(timeout=10) is ok      # the mismatch reaches the server
    with pytest.raises(TypeError, match="ssl"):
        set_verify_name("conn", "x")


def test_receiving_close_notify_answers_with_ours(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.enable(EV_READ)
    cli.enable(EV_READ)
    cli.shutdown(socket.SHUT_WR)               # close_notify, keep reading
    assert srv.recv(10) == b""
    assert cli.recv(10) == b""                 # srv answered with its own
    assert srv.get_ssl().get_shutdown() & SSL.SENT_SHUTDOWN
    with pytest.raises(BrokenPipeError):
        srv.sendall(b"too late")


def test_close_with_silent_peer_is_bounded(pki, made):
    lst, cli = connecting_client(pki, made)
    s, _ = lst.accept()
    made.append(s)
    srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, s)
    made.append(srv)
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.disable(EV_READ | EV_WRITE)            # the peer will never answer
    cli.set_shutdown_timeout(0.3)
    t0 = time.monotonic()
    cli.close()
    with gevent.Timeout(5):
        while cli.get_ssl() is not None:
            gevent.sleep(0.02)
    assert 0.25 < time.monotonic() - t0 < 2
    # the transport is closed: the raw peer socket reads close_notify, then EOF
    data = b""
    with gevent.Timeout(5):
        while True:
            d = s.recv(4096)
            if not d:
                break
            data += d
    assert data[:1] == b"\x17"                 # an encrypted alert record


def test_data_after_our_close_notify_is_discarded(pki, made):
    cli, srv = tls_pair(pki, made, "socket")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    srv.write(os.urandom(200_000))             # in flight while cli closes
    cli.close()
    srv.enable(EV_READ)
    assert srv.recv(10) == b""                 # cli's close_notify
    with gevent.Timeout(5):
        while cli.get_ssl() is not None:
            gevent.sleep(0.01)
    assert ev.log == []                        # no ERROR for the discarded data


def test_flush_finished_sends_close_notify(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    srv.enable(EV_READ)
    cli.write(b"abc")
    assert cli.flush(EV_WRITE, BEV_FINISHED) == 0
    assert srv.readexactly(3) == b"abc"
    assert srv.recv(5) == b""
    with pytest.raises(BuffereventClosedError):
        cli.write(b"more")


def zlib_tls(pki, made, transport):
    """(client, server, codecs, freed): TLS over zlib filters over a pair or
    a socketpair; codecs[side] = (decompressor, compressor); freed[side] is
    set when that side's zlib filter goes away (its free_context)."""
    if transport == "pair":
        u0, u1 = pair_new()
    else:
        a, b = gevent.socket.socketpair()
        made.extend([a, b])
        u0, u1 = (SocketBufferevent(s, BEV_OPT_CLOSE_ON_FREE) for s in (a, b))
    made.extend([u0, u1])
    codecs, freed, zs = {}, {}, []
    for side, u in (("c", u0), ("s", u1)):
        codecs[side] = (zlib_decompress_filter(), zlib_compress_filter())
        freed[side] = gevent.event.Event()
        zs.append(FilterBufferevent(u, *codecs[side], BEV_OPT_CLOSE_ON_FREE,
                                    free_context=lambda side: freed[side].set(), ctx=side))
    made.extend(zs)
    cli = openssl_filter_new(zs[0], SSL.Connection(cctx(pki), None),
                             BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE,
                             server_hostname="localhost")
    srv = openssl_filter_new(zs[1], SSL.Connection(sctx(pki), None),
                             BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
    made.extend([cli, srv])
    return cli, srv, codecs, freed


@pytest.mark.parametrize("transport", ["pair", "socket"])
def test_tls_over_zlib_needs_no_flush_and_closes_promptly(pki, made, transport):
    cli, srv, codecs, freed = zlib_tls(pki, made, transport)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    srv.setcb(None, None, ev.cb("s"))
    cli.set_shutdown_timeout(10)
    srv.set_shutdown_timeout(10)
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    with gevent.Timeout(5, AssertionError("b'hi' is stuck in the compressor")):
        cli.sendall(b"hi")                     # no flush() from the user
        assert srv.recv(10) == b"hi"
    up, down = os.urandom(1 << 20), os.urandom(1 << 20)
    jobs = [gevent.spawn(cli.sendall, up), gevent.spawn(srv.sendall, down),
            gevent.spawn(srv.readexactly, len(up)), gevent.spawn(cli.readexactly, len(down))]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert all(j.successful() for j in jobs)   # the tails were not held back either
    assert hashlib.sha256(jobs[2].value).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(jobs[3].value).digest() == hashlib.sha256(down).digest()
    t0 = time.monotonic()
    cli.close()
    with gevent.Timeout(5):
        assert srv.recv(1) == b""              # our close_notify got through: clean EOF
    srv.close()
    assert freed["c"].wait(5) and freed["s"].wait(5)
    assert time.monotonic() - t0 < 3           # not the 10 s shutdown timeout
    assert cli.get_ssl() is None and srv.get_ssl() is None
    assert ev.of("c") == [BEV_EVENT_CONNECTED]
    assert ev.of("s") == [BEV_EVENT_CONNECTED, EOF_R]
    for dec, comp in codecs.values():          # no "compressed stream truncated"
        assert dec.error is None and comp.error is None


def test_flush_passes_down_the_stack(pki, made):
    cli, srv, codecs, _ = zlib_tls(pki, made, "pair")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.set_half_close(True)
    cli.write(b"abc")
    assert cli.flush(EV_WRITE, BEV_FLUSH) == 1     # encrypted and sync-flushed now
    assert len(cli.output) == 0
    assert srv.readexactly(3) == b"abc"
    assert cli.flush(EV_WRITE, BEV_FLUSH) == 0     # nothing pending anywhere
    cli.write(b"end")
    assert cli.flush(EV_WRITE, BEV_FINISHED) == 1
    assert codecs["c"][1].finished                 # the compressed stream ended too
    assert srv.readexactly(3) == b"end"
    assert srv.recv(1) == b""                      # close_notify: a clean EOF
    assert codecs["s"][0].finished and codecs["s"][0].error is None
    srv.sendall(b"reply")                          # half-close: the other way still works
    assert cli.readexactly(5) == b"reply"
    with pytest.raises(BuffereventClosedError):
        cli.write(b"more")
    # EV_READ is passed down as well: what the partner still holds is
    # forced across and decrypted, even with reading disabled.
    cli.disable(EV_READ)
    srv.write(b"held")
    assert srv.flush(EV_WRITE, BEV_FLUSH) == 1
    assert cli.flush(EV_READ, BEV_FLUSH) == 1
    assert cli.read(10) == b"held"


def test_tls_over_a_pair_keeps_backpressure(pki, made):
    # The end-of-burst flush goes to layered underlyings only: a pair moves
    # its output by itself, and forcing it would pass a reader that stopped.
    cli, srv = tls_pair(pki, made, "pair")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.disable(EV_READ)
    cli.settimeout(0.3)
    chunk = os.urandom(1 << 16)
    sent = 0
    with pytest.raises(TimeoutError):          # blocks: the reader stopped
        for _ in range(64):                    # each call ends a burst
            cli.sendall(chunk)
            sent += 1
    u0, u1 = cli.get_underlying(), srv.get_underlying()
    assert sent < 16 and len(u0.output) + len(u1.input) < 1 << 20
    cli.close()                                # what was taken is still delivered
    srv.enable(EV_READ)
    n, digest = read_all(srv)
    assert n >= sent * len(chunk) and n % len(chunk) == 0
    assert digest == hashlib.sha256(chunk * (n // len(chunk))).hexdigest()


def vanishing(pki, made, gone, with_server=True):
    """(client, kill): a TLS filter client over a pair (or over a
    pass-through filter over a pair); kill() makes its transport vanish
    without an event: the peer TLS freed (its pair member with it), the
    client's own underlying freed, or the pair member below the filter."""
    u0, u1 = pair_new()
    made.extend([u0, u1])
    below = u0
    if gone == "partner-below-filter":
        below = FilterBufferevent(u0, None, None, BEV_OPT_CLOSE_ON_FREE)
        made.append(below)
    cli = openssl_filter_new(below, SSL.Connection(cctx(pki), None),
                             BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE,
                             server_hostname="localhost")
    made.append(cli)
    srv = None
    if with_server:
        srv = openssl_filter_new(u1, SSL.Connection(sctx(pki), None),
                                 BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
        made.append(srv)
        assert cli.wait_handshake(10) and srv.wait_handshake(10)
    kill = {"peer": (srv or u1).free, "underlying": u0.free,
            "partner-below-filter": u1.free}[gone]
    return cli, kill


GONE = ["peer", "underlying", "partner-below-filter"]


@pytest.mark.parametrize("gone", GONE)
@pytest.mark.parametrize("allow", [False, True])
def test_vanished_transport_wakes_recv_and_sendall(pki, made, gone, allow):
    # No close_notify came: a dirty shutdown, ERROR (SSLEOFError) or, with
    # allow_dirty_shutdown, EOF -- at once, not never.
    for call in ("recv", "sendall"):
        cli, kill = vanishing(pki, made, gone)
        cli.set_allow_dirty_shutdown(allow)
        ev = Events()
        cli.setcb(None, None, ev.cb("c"))
        cli.hub.loop.run_callback(kill)        # runs once the call below blocks
        t0 = time.monotonic()
        with gevent.Timeout(5, AssertionError(f"{call} hangs")):
            if call == "recv" and allow:
                assert cli.recv(10) == b""
            elif call == "recv":
                with pytest.raises(SSLEOFError):
                    cli.recv(10)
            else:
                with pytest.raises(BrokenPipeError if allow else SSLEOFError):
                    cli.sendall(os.urandom(1 << 20))
        assert time.monotonic() - t0 < 2
        ev.wait_for(lambda: ev.log)
        assert ev.of("c") == [EOF_R if allow else ERR_R]
        if not allow:
            assert cli.get_openssl_error() != 0


@pytest.mark.parametrize("gone", GONE)
@pytest.mark.parametrize("allow", [False, True])
def test_vanished_transport_ends_wait_handshake(pki, made, gone, allow):
    cli, kill = vanishing(pki, made, gone, with_server=False)   # nobody answers
    cli.set_allow_dirty_shutdown(allow)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    cli.hub.loop.run_callback(kill)
    t0 = time.monotonic()
    assert cli.wait_handshake(10) is False
    assert time.monotonic() - t0 < 2
    ev.wait_for(lambda: ev.log)
    assert ev.of("c") == [EOF_R if allow else ERR_R]
    with pytest.raises(BrokenPipeError if allow else SSLEOFError):
        cli.sendall(b"x")


def test_tls_filter_over_a_socketless_bufferevent_raises(pki, made):
    # As on the socket bufferevent itself: no socket, no connect -> ENOTCONN.
    u = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE)
    cli = openssl_filter_new(u, SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING,
                             BEV_OPT_CLOSE_ON_FREE)
    made.extend([u, cli])
    with gevent.Timeout(5, AssertionError("recv hangs")):
        with pytest.raises(OSError) as info:
            cli.recv(1)
    assert info.value.errno == errno.ENOTCONN


# -- reading and writing edge cases ------------------------------------------------------

def manual_peer(ctx, sock, server=True):
    """A pyOpenSSL memory-BIO Connection pumped by hand over a gevent socket."""
    conn = SSL.Connection(ctx, None)
    conn.set_accept_state() if server else conn.set_connect_state()
    while True:
        try:
            conn.do_handshake()
            break
        except SSL.WantReadError:
            try:
                out = conn.bio_read(1 << 16)
                sock.sendall(out)
            except SSL.WantReadError:
                pass
            conn.bio_write(sock.recv(1 << 16))
    try:
        sock.sendall(conn.bio_read(1 << 16))
    except SSL.WantReadError:
        pass
    return conn


@pytest.mark.parametrize("watermark", [False, True])
def test_records_in_one_segment_all_arrive(pki, made, watermark):
    # max single read 50, or the read high watermark reached by the first
    # record: what OpenSSL already holds is still all decrypted.
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    cli = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING, a)
    made.append(cli)
    seen = []
    if watermark:
        cli.setwatermark(EV_READ, 0, 10)
        cli.setcb(lambda bev, arg: seen.append(len(bev.input)), None, None)
    else:
        cli.set_max_single_read(50)
        cli.setcb(lambda bev, arg: seen.append(bev.read()), None, None)
    cli.enable(EV_READ)
    peer = gevent.spawn(manual_peer, sctx(pki), b).get(timeout=10)
    assert cli.wait_handshake(10)
    parts = [b"A" * 3000, b"B" * 3000, b"C" * 3000]
    for p in parts:
        peer.send(p)
    b.sendall(peer.bio_read(1 << 16))          # three records, one segment
    with gevent.Timeout(5):
        while (len(cli.input) if watermark else len(b"".join(seen))) < 9000:
            gevent.sleep(0.01)
    data = cli.read() if watermark else b"".join(seen)
    assert data == b"".join(parts)


def test_max_single_write_caps_each_record(pki, made):
    # TLS 1.2 (no post-handshake records); AES-GCM adds 24 bytes per record
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    srv = openssl_socket_new(SSL.Connection(sctx(pki, tls12=True), None),
                             BUFFEREVENT_SSL_ACCEPTING, a)
    made.append(srv)
    peer = gevent.spawn(manual_peer, cctx(pki, tls12=True), b, False)
    assert srv.wait_handshake(10)
    peer.get(timeout=10)
    srv.set_max_single_write(100)
    srv.write(b"x" * 5000)
    wire = b""
    with gevent.Timeout(5):
        while True:
            wire += b.recv(65536)
            sizes, rest = [], wire
            while len(rest) >= 5:
                (length,) = struct.unpack("!H", rest[3:5])
                if len(rest) < 5 + length:
                    break
                if rest[0] == 0x17:
                    sizes.append(length)
                rest = rest[5 + length:]
            if sum(s - 24 for s in sizes) >= 5000:
                break
    assert len(sizes) >= 50 and max(sizes) <= 100 + 24


def test_wire_bytes_charged_and_allowance_obeyed(pki, made):
    # The hooks rate limiting plugs into: wire bytes (handshake included)
    # are charged, and a write allowance of 0 sends nothing.
    class Metered(SSLSocketBufferevent):
        read_bytes = written = 0
        hold_writes = False

        def _charge_read(self, n):
            self.read_bytes += n

        def _charge_write(self, n):
            self.written += n

        def _write_allowance(self):
            return 0 if self.hold_writes else super()._write_allowance()

    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    cli = Metered(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING, a)
    srv = Metered(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, b)
    made.extend([cli, srv])
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    cli.enable(EV_READ)
    srv.enable(EV_READ)
    with gevent.Timeout(5):
        while cli.read_bytes != srv.written or srv.read_bytes != cli.written:
            gevent.sleep(0.01)
    assert cli.written > 200 and cli.read_bytes > 400          # handshake counted
    cli.hold_writes = True
    before = cli.written
    cli.write(b"held back")
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.3):
            srv.recv(100)
    assert cli.written == before               # allowance 0: nothing sent
    cli.hold_writes = False
    cli._update_io()                           # what a refill does
    assert srv.recv(100) == b"held back"
    assert srv.read_bytes == cli.written > before + len(b"held back")


def test_group_totals_count_wire_bytes_with_the_handshake(pki, made):
    from gbufferevent import RateLimitGroup, TokenBucketConfig
    big = 1 << 30
    group = RateLimitGroup(TokenBucketConfig(big, big, big, big, 1.0))
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    cli = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING)
    srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, b)
    made.extend([cli, srv])
    group.add(cli)
    group.add(srv)
    cli.setfd(a)                               # the ClientHello goes out now
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    cli.sendall(b"x" * 1000)
    assert srv.readexactly(1000) == b"x" * 1000
    srv.sendall(b"y" * 1000)
    assert cli.readexactly(1000) == b"y" * 1000
    with gevent.Timeout(5):                    # everything written has been read
        while group.get_totals()[0] != group.get_totals()[1]:
            gevent.sleep(0.01)
    read, written = group.get_totals()
    assert read == written > 2000 + 1000       # payload + handshake + record overhead


@pytest.mark.parametrize("kind", ["socket", "pair"])
def test_rate_limit_paces_tls(pki, made, kind):
    from gbufferevent import TokenBucketConfig
    cli, srv = tls_pair(pki, made, kind)
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    # 25 kB per 0.1 s tick = 250 kB/s of wire bytes for the sender
    cli.set_rate_limit(TokenBucketConfig(1 << 30, 1 << 30, 25_000, 25_000, 0.1))
    payload = os.urandom(150_000)
    t0 = time.monotonic()
    g = gevent.spawn(cli.sendall, payload)
    assert srv.readexactly(len(payload)) == payload
    elapsed = time.monotonic() - t0
    g.get(timeout=5)
    assert 0.4 < elapsed < 3                   # ~0.6 s at 250 kB/s (one tick up front)


def test_5mib_tiny_sndbuf_slow_reader_with_renegotiation(pki, made):
    # Writer: client, TLS 1.2. The server renegotiates in the middle, so the
    # client's SSL_write must wait for handshake bytes (WANT_READ) and retry.
    lst = listener()
    made.append(lst)
    csock = gevent.socket.socket()
    csock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    csock.connect(lst.getsockname())
    ssock, _ = lst.accept()
    made.extend([csock, ssock])
    cli = openssl_socket_new(SSL.Connection(cctx(pki, tls12=True), None),
                             BUFFEREVENT_SSL_CONNECTING, csock, BEV_OPT_CLOSE_ON_FREE)
    srv = openssl_socket_new(SSL.Connection(sctx(pki, tls12=True), None),
                             BUFFEREVENT_SSL_ACCEPTING, ssock, BEV_OPT_CLOSE_ON_FREE)
    made.extend([cli, srv])
    ev = Events()
    srv.setcb(None, None, ev.cb("s"))
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    cli.enable(EV_READ)                        # to see the HelloRequest
    srv.setwatermark(EV_READ, 0, 65536)        # backpressure from the slow reader
    renegotiated = False
    payload = os.urandom(5 << 20)
    writer = gevent.spawn(lambda: (cli.sendall(payload), cli.shutdown(socket.SHUT_WR)))
    h = hashlib.sha256()
    n = 0
    with gevent.Timeout(30):
        while True:
            d = srv.recv(16384)
            if not d:
                break
            h.update(d)
            n += len(d)
            if n >= 1 << 20 and not renegotiated:
                assert srv.renegotiate() == 0
                renegotiated = True
            gevent.sleep(0.001)                # pacing: a slow reader
    writer.get(timeout=5)
    assert n == len(payload) and h.hexdigest() == hashlib.sha256(payload).hexdigest()
    assert ev.of("s").count(BEV_EVENT_CONNECTED) == 2          # renegotiated
    assert cli.get_ssl().total_renegotiations() >= 1


# -- renegotiation and errors -------------------------------------------------------

@pytest.mark.parametrize("kind", ["socket", "pair"])
def test_server_renegotiation_with_a_reading_only_peer(pki, made, kind):
    cli, srv = tls_pair(pki, made, kind, tls12=True)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    srv.setcb(None, None, ev.cb("s"))
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    cli.disable(EV_WRITE)                      # the client only reads
    cli.enable(EV_READ)
    assert srv.renegotiate() == 0
    payload = os.urandom(200_000)
    g = gevent.spawn(srv.sendall, payload)
    assert cli.readexactly(len(payload)) == payload          # data keeps flowing
    g.get(timeout=10)
    ev.wait_for(lambda: ev.of("s").count(BEV_EVENT_CONNECTED) == 2)
    assert ev.of("c") == [BEV_EVENT_CONNECTED]                # passive side: once
    assert srv.get_ssl().total_renegotiations() == 1
    assert not srv.get_ssl().renegotiate_pending()


def test_renegotiate_refused_under_tls13_and_first_errors_kept(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    for _ in range(4):
        assert srv.renegotiate() == -1
    codes = [srv.get_openssl_error() for _ in range(4)]
    assert codes[:3] == [pack_error("SSL routines", "wrong ssl version")] * 3
    assert "TLS 1.2" in codes[0].reason and "TLSv1.3" in codes[0].reason
    assert codes[3] == 0                      # at most 3 kept
    fresh, _ = tls_pair(pki, made, "pair")
    with pytest.raises(RuntimeError):
        fresh.renegotiate()                   # before the handshake


def test_client_initiated_renegotiation_is_refused(pki, made):
    # OpenSSL 3's server refuses with a no_renegotiation warning; the
    # client's OpenSSL takes that as fatal and answers handshake_failure, so
    # both connections end with an ERROR (what docs/tls.md says).
    cli, srv = tls_pair(pki, made, "socket", tls12=True)
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    srv.setcb(None, None, ev.cb("s"))
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.enable(EV_READ)
    cli.enable(EV_READ)
    assert cli.renegotiate() == 0              # started ...
    ev.wait_for(lambda: ERR_R in ev.of("c") and ERR_R in ev.of("s"))
    assert ev.of("c") == [BEV_EVENT_CONNECTED, ERR_R]
    assert ev.of("s") == [BEV_EVENT_CONNECTED, ERR_R]
    assert cli.get_openssl_error() == pack_error("SSL routines", "no renegotiation")
    assert srv.get_openssl_error() == pack_error("SSL routines",
                                                 "tls alert handshake failure")
    assert srv.get_ssl().total_renegotiations() == 0
    # A server that allows it (SSL_OP_ALLOW_CLIENT_RENEGOTIATION, which
    # pyOpenSSL has no name for) renegotiates: a second CONNECTED.
    s_ctx = sctx(pki, tls12=True)
    s_ctx.set_options(ALLOW_CLIENT_RENEGOTIATION)
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    cli = openssl_socket_new(SSL.Connection(cctx(pki, tls12=True), None),
                             BUFFEREVENT_SSL_CONNECTING, a, BEV_OPT_CLOSE_ON_FREE)
    srv = openssl_socket_new(SSL.Connection(s_ctx, None), BUFFEREVENT_SSL_ACCEPTING, b,
                             BEV_OPT_CLOSE_ON_FREE)
    made.extend([cli, srv])
    ev = Events()
    cli.setcb(None, None, ev.cb("c"))
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    srv.enable(EV_READ)
    cli.enable(EV_READ)
    assert cli.renegotiate() == 0
    ev.wait_for(lambda: ev.of("c").count(BEV_EVENT_CONNECTED) == 2)
    cli.sendall(b"still open")
    assert srv.readexactly(10) == b"still open"


def test_get_openssl_error_returns_oldest_first(pki, made):
    cli, srv = tls_pair(pki, made, "pair")
    assert cli.wait_handshake(10) and srv.wait_handshake(10)
    ev = Events()
    srv.setcb(None, None, ev.cb("s"))
    srv.enable(EV_READ)
    # an attacker's application-data record: bad MAC, then "record layer failure"
    cli.get_underlying().write(b"\x17\x03\x03\x00\x20" + os.urandom(32))
    ev.wait_for(lambda: ev.log)
    assert ev.of("s") == [ERR_R]
    first = srv.get_openssl_error()
    assert first == pack_error("SSL routines", "decryption failed or bad record mac")
    second = srv.get_openssl_error()
    assert second == pack_error("SSL routines", "record layer failure")
    assert srv.get_openssl_error() == 0


def test_bad_arguments(pki, made):
    conn = SSL.Connection(cctx(pki), None)
    with pytest.raises(TypeError, match="ssl"):
        openssl_socket_new("not a connection", BUFFEREVENT_SSL_CONNECTING)
    with pytest.raises(ValueError, match="state"):
        openssl_socket_new(conn, 7)
    with pytest.raises(TypeError, match="state"):
        openssl_socket_new(conn, "open")
    s = socket.socket()
    made.append(s)
    with pytest.raises(ValueError, match="Connection\\(ctx, None\\)"):
        openssl_socket_new(SSL.Connection(cctx(pki), s), BUFFEREVENT_SSL_CONNECTING)
    with pytest.raises(TypeError, match="underlying"):
        openssl_filter_new(object(), conn, BUFFEREVENT_SSL_CONNECTING)
    u0, _ = pair_new()
    u0.free()
    with pytest.raises(ValueError, match="underlying"):
        openssl_filter_new(u0, conn, BUFFEREVENT_SSL_CONNECTING)
    bev = openssl_socket_new(conn, BUFFEREVENT_SSL_CONNECTING)
    made.append(bev)
    with pytest.raises(ValueError, match="seconds"):
        bev.set_shutdown_timeout(-1)
    got = []
    gevent.get_hub().loop.run_callback(
        lambda: got.append(pytest.raises(RuntimeError, bev.wait_handshake, 1)))
    gevent.sleep(0)
    assert got


# -- connecting later ------------------------------------------------------------------

def test_setfd_later_and_connect(pki, made):
    a, b = gevent.socket.socketpair()
    made.extend([a, b])
    cli = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING,
                             -1, server_hostname="localhost")
    made.append(cli)
    assert cli.getfd() == -1
    cli.write(b"early")
    srv = openssl_socket_new(SSL.Connection(sctx(pki), None), BUFFEREVENT_SSL_ACCEPTING, b)
    made.append(srv)
    assert cli.setfd(a) == 0                   # the handshake starts now
    assert cli.wait_handshake(10)
    assert srv.readexactly(5) == b"early"
    # connect() and connect_hostname() (SNI + host name check against the cert)
    server = BuffereventServer(("127.0.0.1", 0), echo_handler, ssl_context=sctx(pki))
    server.start()
    made.append(server)
    port = server.address[1]
    for how in ("connect", "connect_hostname"):
        c = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING,
                               None, BEV_OPT_CLOSE_ON_FREE)
        made.append(c)
        ev = Events()
        c.setcb(None, None, ev.cb("c"))
        if how == "connect":
            c.connect(("127.0.0.1", port))
        else:
            c.connect_hostname("localhost", port)
        c.sendall(b"echo me\n")
        assert c.readline() == b"echo me\n"
        assert ev.of("c") == [BEV_EVENT_CONNECTED]             # TCP's one swallowed
        if how == "connect_hostname":
            assert c.get_ssl().get_servername() == b"localhost"



# -- server, interop, CLI, example -----------------------------------------------------

def test_server_survives_bad_clients_with_one_log_line_each(pki, made, caplog):
    server = BuffereventServer(("127.0.0.1", 0), echo_handler, ssl_context=sctx(pki))
    server.start()
    made.append(server)
    caplog.set_level(logging.INFO)
    bad = [b"\x16\x03\x01\x00\x05hello garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
           b"\x16\x03\x01"]                    # garbage, plaintext, cut mid-handshake
    for data in bad:
        s = gevent.socket.create_connection(server.address)
        s.sendall(data)
        if data == b"\x16\x03\x01":
            s.close()
        else:
            with gevent.Timeout(5):
                try:
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
            s.close()
    ctx = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cert)
    with gevent.Timeout(10):
        good = ctx.wrap_socket(gevent.socket.create_connection(server.address),
                               server_hostname="localhost")
        good.sendall(b"still serving")
        assert good.recv(100) == b"still serving"
        good.close()
        while len([r for r in caplog.records if "handshake" in r.getMessage()]) < 3:
            gevent.sleep(0.01)
    lines = [r for r in caplog.records if r.name.startswith("gbufferevent")]
    assert len([r for r in lines if "handshake" in r.getMessage()]) == 3
    assert not [r for r in lines if r.exc_info or r.levelno >= logging.ERROR]


def test_interop_with_stdlib_ssl_both_ways(pki, made):
    # our server, stdlib client (clean close by unwrap -> our EOF)
    server = BuffereventServer(("127.0.0.1", 0), echo_handler, ssl_context=sctx(pki))
    server.start()
    made.append(server)
    ctx = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(pki.cert)
    payload = os.urandom(300_000)
    with gevent.Timeout(20):
        s = ctx.wrap_socket(gevent.socket.create_connection(server.address),
                            server_hostname="localhost")
        g = gevent.spawn(s.sendall, payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        g.get()
        assert got == payload
        s.unwrap()                             # close_notify both ways
        s.close()
    # stdlib server, our client
    lst = listener()
    made.append(lst)
    sctx_std = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_SERVER)
    sctx_std.load_cert_chain(pki.cert, pki.key)

    def std_server():
        conn, _ = lst.accept()
        t = sctx_std.wrap_socket(conn, server_side=True)
        t.sendall(read_all(t)[1].encode())     # sha256 hex of what came
        t.unwrap()
        t.close()

    g = gevent.spawn(std_server)
    c = openssl_socket_new(SSL.Connection(cctx(pki), None), BUFFEREVENT_SSL_CONNECTING,
                           None, BEV_OPT_CLOSE_ON_FREE)
    made.append(c)
    c.connect_hostname("localhost", lst.getsockname()[1])
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    assert c.readexactly(64) == hashlib.sha256(payload).hexdigest().encode()
    assert c.recv(1) == b""                    # stdlib's close_notify: clean EOF
    g.get(timeout=10)


def run_cli_echo(pki, tmp_path):
    env = dict(os.environ, GBUFFEREVENT_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=ROOT)
    proc = gevent.subprocess.Popen(
        [sys.executable, "-m", "gbufferevent", "echo", "--tls", "--listen", "127.0.0.1:0",
         "--duration", "30"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        cwd=ROOT)
    head = b""
    with gevent.Timeout(20):
        while b"listening on" not in head:
            line = proc.stdout.readline()
            assert line, head
            head += line
    port = int(re.search(rb"listening on 127\.0\.0\.1:(\d+)", head).group(1))
    fp = re.search(rb"SHA-256 ([0-9A-F:]{95})", head).group(1).decode()
    return proc, port, fp, str(tmp_path / "cache" / "selfsigned-cert.pem")


def test_cli_echo_tls_with_python_ssl_and_openssl_s_client(pki, tmp_path):
    proc, port, fp, cert = run_cli_echo(pki, tmp_path)
    try:
        ctx = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cert)
        with gevent.Timeout(10):
            s = ctx.wrap_socket(gevent.socket.create_connection(("127.0.0.1", port)),
                                server_hostname="localhost")
            der = s.getpeercert(binary_form=True)
            assert hashlib.sha256(der).hexdigest().upper() == fp.replace(":", "")
            s.sendall(b"hello over TLS")
            assert s.recv(100) == b"hello over TLS"
            s.unwrap()
            s.close()
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("the openssl binary is not installed")
        sc = gevent.subprocess.Popen(
            [openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-quiet",
             "-CAfile", cert, "-verify_return_error", "-servername", "localhost"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            sc.stdin.write(b"ping from s_client\n")
            sc.stdin.flush()
            with gevent.Timeout(10):
                assert sc.stdout.readline() == b"ping from s_client\n"
        finally:
            sc.kill()
            sc.wait()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_example_ssl_echo_server_smoke():
    env = dict(os.environ, GBUFFEREVENT_SMOKE="1")
    out = gevent.subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "ssl_echo_server.py")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=30)
    assert out.returncode == 0, out.stdout
    assert b"smoke test OK" in out.stdout and b"hello, echo" in out.stdout
