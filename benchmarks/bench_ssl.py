"""TLS bufferevent benchmark: bulk throughput and handshakes per second.

One run prints one table (medians of several runs):

* bulk TLS 1.3 (AES-GCM) over loopback TCP, 64 MiB sent in 16 KiB writes,
  both ends in this process on one hub, for
  - the socket kind (``openssl_socket_new``) at both ends,
  - the filter kind over a ``SocketBufferevent`` (``openssl_filter_new``),
    with the underlying's default per-step caps (16 KiB) and tuned to 256 KiB,
  - gevent's own ``gevent.ssl`` sockets,
  - pyOpenSSL memory-BIO pumping with no event loop and no socket at all
    (the ceiling: encrypt, move, decrypt), and the same pumping through a
    loopback TCP connection with blocking sockets (still no loop);
* full handshakes per second (new TCP connection each time, ECDSA P-256
  certificate, TLS 1.3) for the socket kind and for ``gevent.ssl``.

Ratios: socket kind vs gevent.ssl (target >= 0.9), filter kind vs the
no-loop ceiling (target >= 0.7), shown against both ceilings.

The sender uses the blocking layer (``sendall`` of 16 KiB chunks, write low
watermark 256 KiB so ``sendall`` returns while the pipe is still full), the
receiver ``recv(65536)`` -- the same code shape as the gevent.ssl peer.

Usage: ``python benchmarks/bench_ssl.py [--quick] [--runs N] [--mib N]``
"""
import argparse
import os
import select
import socket
import ssl as stdssl
import statistics
import sys
import tempfile
import time

import gevent
import gevent.socket
import gevent.ssl
from OpenSSL import SSL

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gbufferevent import (  # noqa: E402
    BEV_OPT_CLOSE_ON_FREE, BUFFEREVENT_SSL_ACCEPTING, BUFFEREVENT_SSL_CONNECTING,
    EV_WRITE, SocketBufferevent, openssl_filter_new, openssl_socket_new,
)
from gbufferevent.ssl_context import generate_self_signed_cert  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table  # noqa: E402

WRITE = 16 * 1024
SOCKET = "socket kind"
FILTER = "filter kind over SocketBufferevent"
FILTER_TUNED = "filter kind, underlying max single r/w 256 KiB"
GEVENT = "gevent.ssl"
CEILING = "pyOpenSSL memory BIOs, no loop, no socket (ceiling)"
CEILING_SOCKET = "memory BIOs + loopback socket, no loop (ceil+sock)"


def pyopenssl_contexts(cert, key):
    s = SSL.Context(SSL.TLS_SERVER_METHOD)
    s.use_certificate_file(cert)
    s.use_privatekey_file(key)
    c = SSL.Context(SSL.TLS_CLIENT_METHOD)
    for ctx in (s, c):
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_tls13_ciphersuites(b"TLS_AES_256_GCM_SHA384")
    return s, c


def stdlib_contexts(cert, key):
    s = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_SERVER)
    s.load_cert_chain(cert, key)
    c = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = stdssl.CERT_NONE
    for ctx in (s, c):
        ctx.minimum_version = stdssl.TLSVersion.TLSv1_3
    return s, c


def tcp_pair():
    lst = gevent.socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    c = gevent.socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    lst.close()
    for x in (s, c):           # no Nagle/delayed-ACK stall at the tail of a run
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s, c


# -- bulk ---------------------------------------------------------------------

def _pump(sender, receiver, total):
    """Seconds to move *total* bytes: ``sendall`` of 16 KiB chunks in one
    greenlet, ``recv(65536)`` in this one (bufferevents and gevent sockets)."""
    chunk = os.urandom(WRITE)

    def send():
        for _ in range(total // WRITE):
            sender.sendall(chunk)

    g = gevent.spawn(send)
    t0 = time.perf_counter()
    got = 0
    while got < total:
        d = receiver.recv(65536)
        if not d:
            break
        got += len(d)
    dt = time.perf_counter() - t0
    g.get()
    assert got == total, got
    return dt


def _bulk_bev(sender, receiver, total):
    sender.setwatermark(EV_WRITE, 256 * 1024, 0)
    return _pump(sender, receiver, total)


def bulk_socket_kind(ctxs, total):
    sctx, cctx = ctxs
    s, c = tcp_pair()
    a = openssl_socket_new(SSL.Connection(cctx, None), BUFFEREVENT_SSL_CONNECTING, c,
                           BEV_OPT_CLOSE_ON_FREE)
    b = openssl_socket_new(SSL.Connection(sctx, None), BUFFEREVENT_SSL_ACCEPTING, s,
                           BEV_OPT_CLOSE_ON_FREE)
    assert a.wait_handshake(10) and b.wait_handshake(10)
    dt = _bulk_bev(a, b, total)
    a.free()
    b.free()
    return dt


def bulk_filter_kind(ctxs, total, step=None):
    sctx, cctx = ctxs
    s, c = tcp_pair()
    unders = [SocketBufferevent(c, BEV_OPT_CLOSE_ON_FREE),
              SocketBufferevent(s, BEV_OPT_CLOSE_ON_FREE)]
    if step:                   # the underlying's per-step caps, tuned
        for u in unders:
            u.set_max_single_read(step)
            u.set_max_single_write(step)
    a = openssl_filter_new(unders[0], SSL.Connection(cctx, None),
                           BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE)
    b = openssl_filter_new(unders[1], SSL.Connection(sctx, None),
                           BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
    assert a.wait_handshake(10) and b.wait_handshake(10)
    dt = _bulk_bev(a, b, total)
    a.free()
    b.free()
    return dt


def bulk_gevent_ssl(ctxs, total):
    sctx, cctx = ctxs
    s, c = tcp_pair()
    srv = gevent.spawn(sctx.wrap_socket, s, server_side=True)
    cli = cctx.wrap_socket(c)
    srv = srv.get()
    dt = _pump(cli, srv, total)
    cli.close()
    srv.close()
    return dt


def _bio_pair(ctxs):
    sctx, cctx = ctxs
    a = SSL.Connection(cctx, None)
    a.set_connect_state()
    b = SSL.Connection(sctx, None)
    b.set_accept_state()
    for _ in range(10):                      # handshake by hand
        for x in (a, b):
            try:
                x.do_handshake()
            except SSL.WantReadError:
                pass
        for x, y in ((a, b), (b, a)):
            try:
                y.bio_write(x.bio_read(1 << 20))
            except SSL.WantReadError:
                pass
    return a, b


def bulk_ceiling(ctxs, total):
    """Encrypt, hand the record over, decrypt: no loop, no socket."""
    a, b = _bio_pair(ctxs)
    chunk = os.urandom(WRITE)
    t0 = time.perf_counter()
    got = 0
    for _ in range(total // WRITE):
        a.send(chunk)
        b.bio_write(a.bio_read(1 << 17))
        got += len(b.recv(65536))
    dt = time.perf_counter() - t0
    assert got == total
    return dt


def bulk_ceiling_socket(ctxs, total):
    """The same through a loopback TCP connection (blocking sockets), no loop."""
    a, b = _bio_pair(ctxs)
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    s1 = socket.create_connection(lst.getsockname())
    s2, _ = lst.accept()
    for x in (s1, s2):
        x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    chunk = os.urandom(WRITE)
    got = 0

    def receive():                           # one recv, everything decrypted
        nonlocal got
        b.bio_write(s2.recv(1 << 17))
        try:
            while True:
                got += len(b.recv(65536))
        except SSL.WantReadError:
            pass

    t0 = time.perf_counter()
    for _ in range(total // WRITE):
        a.send(chunk)
        s1.sendall(a.bio_read(1 << 17))
        receive()
        while got < total and select.select([s2], [], [], 0)[0]:
            receive()
    while got < total:
        receive()
    dt = time.perf_counter() - t0
    for s in (s1, s2, lst):
        s.close()
    return dt


# -- handshakes -----------------------------------------------------------------

def _handshakes(count, accept_one, connect_one):
    """Full handshakes per second: *count* new TCP connections, one at a time;
    ``accept_one(sock)`` serves one, ``connect_one(address)`` makes one."""
    lst = gevent.socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    addr = lst.getsockname()

    def server():
        for _ in range(count):
            accept_one(lst.accept()[0])

    g = gevent.spawn(server)
    t0 = time.perf_counter()
    for _ in range(count):
        connect_one(addr)
    g.get()
    dt = time.perf_counter() - t0
    lst.close()
    return count / dt


def handshakes_socket_kind(ctxs, count):
    sctx, cctx = ctxs

    def accept_one(s):
        b = openssl_socket_new(SSL.Connection(sctx, None), BUFFEREVENT_SSL_ACCEPTING,
                               s, BEV_OPT_CLOSE_ON_FREE)
        assert b.wait_handshake(10)
        b.free()

    def connect_one(addr):
        a = openssl_socket_new(SSL.Connection(cctx, None), BUFFEREVENT_SSL_CONNECTING,
                               None, BEV_OPT_CLOSE_ON_FREE)
        a.connect(addr)
        assert a.wait_handshake(10)
        a.free()

    return _handshakes(count, accept_one, connect_one)


def handshakes_gevent_ssl(ctxs, count):
    sctx, cctx = ctxs
    return _handshakes(
        count, lambda s: sctx.wrap_socket(s, server_side=True).close(),
        lambda addr: cctx.wrap_socket(gevent.socket.create_connection(addr)).close())


def median_of(runs, fn, *args):
    return statistics.median(fn(*args) for _ in range(runs))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    ap.add_argument("--mib", type=int, default=64, help="MiB per bulk run")
    ap.add_argument("--handshakes", type=int, default=200, help="handshakes per run")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.mib, args.handshakes = 1, 4, 20
    total = args.mib << 20
    with tempfile.TemporaryDirectory() as d:
        cert, key = generate_self_signed_cert(os.path.join(d, "c.pem"),
                                              os.path.join(d, "k.pem"))
        pctx, sctx = pyopenssl_contexts(cert, key), stdlib_contexts(cert, key)
        mbps = {}
        for name, fn, ctxs in (
                (SOCKET, bulk_socket_kind, pctx),
                (FILTER, bulk_filter_kind, pctx),
                (FILTER_TUNED, lambda c, t: bulk_filter_kind(c, t, 256 * 1024), pctx),
                (GEVENT, bulk_gevent_ssl, sctx),
                (CEILING, bulk_ceiling, pctx),
                (CEILING_SOCKET, bulk_ceiling_socket, pctx)):
            fn(ctxs, min(total, 4 << 20))                   # warm up
            mbps[name] = total / median_of(args.runs, fn, ctxs, total) / 1e6
        hps = {SOCKET: median_of(args.runs, handshakes_socket_kind, pctx, args.handshakes),
               GEVENT: median_of(args.runs, handshakes_gevent_ssl, sctx, args.handshakes)}
    gs, ceil, ceil_s = mbps[GEVENT], mbps[CEILING], mbps[CEILING_SOCKET]
    rows = [["bulk MB/s", name, f"{v:.0f}", f"{v / gs:.2f}x", f"{v / ceil:.2f}x",
             f"{v / ceil_s:.2f}x"] for name, v in mbps.items()]
    rows += [["handshakes/s", name, f"{v:.0f}", f"{v / hps[GEVENT]:.2f}x", "", ""]
             for name, v in hps.items()]
    print_table(f"TLS 1.3 TLS_AES_256_GCM_SHA384 over loopback: {args.mib} MiB in "
                f"{WRITE // 1024} KiB writes; full handshakes, ECDSA P-256, new TCP "
                f"connection each; median of {args.runs}",
                ["measure", "contender", "value", "vs gevent.ssl", "vs ceiling",
                 "vs ceil+sock"], rows)
    print(f"targets: socket kind >= 0.9x gevent.ssl: {mbps[SOCKET] / gs:.2f}x; "
          f"filter kind >= 0.7x no-loop ceiling: {mbps[FILTER] / ceil:.2f}x "
          f"({mbps[FILTER] / ceil_s:.2f}x of the ceiling with the socket; tuned "
          f"underlying {mbps[FILTER_TUNED] / ceil:.2f}x / {mbps[FILTER_TUNED] / ceil_s:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
