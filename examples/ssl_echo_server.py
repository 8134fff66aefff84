"""The seed's "simple SSL-based echo server", ported to gbufferevent.

As in libevent's chapter: a listener accepts connections on 127.0.0.1:9999;
each socket becomes a TLS bufferevent in state ACCEPTING
(``bufferevent_openssl_socket_new``) whose read callback prints what arrived
and writes it back (``bufferevent_write_buffer``).

Differences from the C original:

* if the ``cert``/``pkey`` files are missing, a self-signed ECDSA P-256
  certificate is generated into them (with ``cryptography``) instead of
  printing ``openssl`` commands;
* the context has the library's secure defaults (TLS 1.2 minimum, no
  compression) rather than ``SSLv23_server_method`` minus SSLv2;
* an event callback frees the bufferevent on EOF/ERROR (the original leaks it);
* no OpenSSL initialisation or locking setup: pyOpenSSL does it, and OpenSSL
  >= 1.1 is thread-safe by itself.

Usage::

    python examples/ssl_echo_server.py [--port 9999] [--cert cert] [--pkey pkey]
    python examples/ssl_echo_server.py --smoke     # or GBUFFEREVENT_SMOKE=1

``--smoke`` listens on a free port with a certificate in a temporary
directory, echoes one message to a Python ``ssl`` client and exits 0.
"""
import argparse
import os
import socket
import ssl
import sys
import tempfile

import gevent
import gevent.socket
import gevent.ssl
from OpenSSL import SSL

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gbufferevent import (  # noqa: E402
    BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_OPT_CLOSE_ON_FREE, BUFFEREVENT_SSL_ACCEPTING,
    EV_READ, openssl_socket_new, server_context,
)
from gbufferevent.ssl_context import generate_self_signed_cert  # noqa: E402


def ssl_readcb(bev, arg):
    inp = bev.input
    print(f"Received {len(inp)} bytes")
    print("----- data ----")
    print(inp.pullup(-1).decode("utf-8", "replace"))
    bev.write_buffer(inp)


def ssl_eventcb(bev, events, arg):
    if events & (BEV_EVENT_EOF | BEV_EVENT_ERROR):
        bev.close()                  # clean TLS close, then the socket


def ssl_acceptcb(sock, server_ctx):
    client_ctx = SSL.Connection(server_ctx, None)          # SSL_new(server_ctx)
    bev = openssl_socket_new(client_ctx, BUFFEREVENT_SSL_ACCEPTING, sock,
                             BEV_OPT_CLOSE_ON_FREE)
    bev.enable(EV_READ)
    bev.setcb(ssl_readcb, None, ssl_eventcb, None)


def evssl_init(certfile="cert", keyfile="pkey"):
    """The server context; generates a self-signed certificate if missing."""
    if not (os.path.exists(certfile) and os.path.exists(keyfile)):
        print(f"Couldn't read {keyfile!r} or {certfile!r}: generating a self-signed "
              "certificate for localhost")
        generate_self_signed_cert(certfile, keyfile)
    return server_context(certfile, keyfile)


def listen(port):
    """``evconnlistener_new_bind``: a listening socket and an accept loop."""
    listener = gevent.socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    return listener


def accept_loop(listener, ctx):
    while True:
        sock, _addr = listener.accept()
        ssl_acceptcb(sock, ctx)


def smoke():
    """Serve one echo to a stdlib ``ssl`` client; return 0 on success."""
    with tempfile.TemporaryDirectory() as d:
        certfile, keyfile = os.path.join(d, "cert"), os.path.join(d, "pkey")
        ctx = evssl_init(certfile, keyfile)
        listener = listen(0)
        server = gevent.spawn(accept_loop, listener, ctx)
        try:
            client_ctx = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client_ctx.load_verify_locations(certfile)
            with gevent.Timeout(10):
                raw = gevent.socket.create_connection(listener.getsockname())
                conn = client_ctx.wrap_socket(raw, server_hostname="localhost")
                conn.sendall(b"hello, echo")
                got = b""
                while len(got) < len(b"hello, echo"):
                    data = conn.recv(100)
                    if not data:
                        break
                    got += data
                conn.close()
        finally:
            server.kill()
            listener.close()
    ok = got == b"hello, echo"
    print("smoke test", "OK" if ok else f"FAILED (got {got!r})")
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description="TLS echo server (libevent's example)")
    ap.add_argument("--port", type=int, default=9999)
    ap.add_argument("--cert", default="cert", help="PEM certificate (default: ./cert)")
    ap.add_argument("--pkey", default="pkey", help="PEM private key (default: ./pkey)")
    ap.add_argument("--smoke", action="store_true",
                    help="run a self-test and exit (also GBUFFEREVENT_SMOKE=1)")
    args = ap.parse_args(argv)
    if args.smoke or os.environ.get("GBUFFEREVENT_SMOKE") == "1":
        return smoke()
    ctx = evssl_init(args.cert, args.pkey)
    listener = listen(args.port)
    print(f"TLS echo server on 127.0.0.1:{listener.getsockname()[1]}")
    try:
        accept_loop(listener, ctx)                        # event_base_loop
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
