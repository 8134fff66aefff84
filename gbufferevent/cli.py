"""The command line: ``python -m gbufferevent COMMAND ...`` (also ``gbufferevent``).

Commands:

``echo``
    An echo server on :class:`~gbufferevent.server.BuffereventServer`.
"""
import argparse
import logging
import signal
import sys

import gevent
import gevent.event

__all__ = ["main", "parse_hostport"]

log = logging.getLogger("gbufferevent.cli")


def parse_hostport(text, default_host="127.0.0.1"):
    """``"HOST:PORT"``, ``":PORT"``, ``"PORT"`` or ``"[v6]:PORT"`` -> ``(host, port)``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" not in text:
        host, port = "", text
    else:
        raise argparse.ArgumentTypeError(f"bad address {text!r}: use HOST:PORT")
    try:
        port = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range in {text!r}")
    return host or default_host, port


def _echo_handler(bev, address):
    while True:
        data = bev.recv(65536)
        if not data:
            break
        bev.sendall(data)


def cmd_echo(args):
    from .server import BuffereventServer
    ctx = None
    if args.tls:
        from .ssl import load_or_generate_cert, server_context
        cert, key, fingerprint = load_or_generate_cert(args.cert, args.key)
        ctx = server_context(cert, key)
        print(f"TLS certificate {cert} (SHA-256 {fingerprint})", flush=True)
    server = BuffereventServer(args.listen, _echo_handler, ssl_context=ctx)
    try:
        server.start()
    except OSError as exc:
        print(f"gbufferevent echo: cannot listen on {args.listen[0]}:{args.listen[1]}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 2
    host, port = server.address[:2]
    print(f"echo server listening on {host}:{port}{' (TLS)' if ctx else ''}", flush=True)
    stop = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stop.set)
    stop.wait(args.duration)
    server.stop(timeout=args.grace)
    print("echo server stopped", flush=True)
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="gbufferevent",
        description="libevent's bufferevents on gevent: servers and tools.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    echo = sub.add_parser("echo", help="run an echo server",
                          description="Echo every byte back, on BuffereventServer.")
    echo.add_argument("--listen", type=parse_hostport, default=("127.0.0.1", 7000),
                      metavar="HOST:PORT", help="where to listen (default 127.0.0.1:7000)")
    echo.add_argument("--tls", action="store_true",
                      help="serve TLS (a self-signed certificate is generated and "
                           "cached if --cert/--key are not given)")
    echo.add_argument("--cert", help="PEM certificate file (with --tls)")
    echo.add_argument("--key", help="PEM private key file (with --tls)")
    echo.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                      help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    echo.add_argument("--grace", type=float, default=5.0, metavar="SECONDS",
                      help="how long open connections may finish when stopping")
    echo.set_defaults(func=cmd_echo)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130

