"""The command line: ``python -m gbufferevent COMMAND ...`` (also ``gbufferevent``).

Commands:

``echo``
    An echo server on :class:`~gbufferevent.server.BuffereventServer`.
``tunnel``
    A TCP relay with optional TLS on either side, zlib compression and rate
    limits (:mod:`gbufferevent.tunnel`).
"""
import argparse
import logging
import math
import os
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
    try:
        while True:
            data = bev.recv(65536)
            if not data:
                break
            bev.sendall(data)
    except OSError as exc:            # reset, broken pipe, TLS ended uncleanly
        log.debug("%s went away: %s", address, exc)   # a normal end for a client


def _fail(command, message):
    print(f"gbufferevent {command}: {message}", file=sys.stderr)
    return 2


def _certificate(command, cert, key):
    """Load (or generate) the certificate and print its fingerprint; returns
    ``(cert, key)`` or an exit code."""
    from .ssl import load_or_generate_cert
    try:
        cert, key, fingerprint = load_or_generate_cert(cert, key)
    except (OSError, ValueError) as exc:
        return _fail(command, f"cannot load certificate: {exc}")
    print(f"TLS certificate {cert} (SHA-256 {fingerprint})", flush=True)
    return cert, key


def _listen(command, server, listen):
    """Start *server*; returns None, or exit code 2 with a clear message."""
    try:
        server.start()
    except OSError as exc:
        return _fail(command, f"cannot listen on {listen[0]}:{listen[1]}: "
                              f"{exc.strerror or exc}")
    return None


def _run_until_signalled(duration):
    """Wait for SIGINT/SIGTERM (or *duration* seconds).  A second signal
    during the grace period that follows exits at once."""
    stop = gevent.event.Event()

    def on_signal():
        if stop.is_set():
            print("second signal: exiting now", file=sys.stderr, flush=True)
            os._exit(130)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, on_signal)
    stop.wait(duration)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be finite and >= 0: {text!r}")
    return value


def _positive_seconds(text):
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"seconds must be > 0: {text!r}")
    return value


def _target(text):
    host, port = parse_hostport(text)
    if port == 0:
        raise argparse.ArgumentTypeError(f"the target needs a port (1..65535): {text!r}")
    return host, port


def _share(text):
    return 0 if text.strip() == "0" else _size(text)


def _hostport_text(address):
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def cmd_echo(args):
    from .server import BuffereventServer
    ctx = None
    if args.tls:
        from .ssl import server_context
        loaded = _certificate("echo", args.cert, args.key)
        if isinstance(loaded, int):
            return loaded
        ctx = server_context(*loaded)
    server = BuffereventServer(args.listen, _echo_handler, ssl_context=ctx)
    failed = _listen("echo", server, args.listen)
    if failed:
        return failed
    print(f"echo server listening on {_hostport_text(server.address)}"
          f"{' (TLS)' if ctx else ''}", flush=True)
    _run_until_signalled(args.duration)
    server.stop(timeout=args.grace)
    print("echo server stopped", flush=True)
    return 0


def _size(text):
    from .tunnel import parse_size
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pem_pair(text):
    cert, sep, key = text.partition(",")
    if not sep or not cert or not key:
        raise argparse.ArgumentTypeError("use --tls-in CERT,KEY (or --tls-in alone)")
    return cert, key


def _print_stats(tunnel, every):
    """Every *every* seconds: each open connection (bytes relayed each way and
    its average rate), then the totals and their rate over the last period."""
    last = tunnel.totals()
    while True:
        gevent.sleep(every)           # the reporting period itself
        totals = tunnel.totals()
        for c in tunnel.connections():
            secs = max(c["seconds"], 1e-9)
            print(f"  {c['peer']}: in {c['client_to_target']} B "
                  f"({c['client_to_target'] / secs / 1e3:.1f} kB/s avg), "
                  f"out {c['target_to_client']} B "
                  f"({c['target_to_client'] / secs / 1e3:.1f} kB/s avg)", flush=True)
        rate_in = (totals["client_to_target"] - last["client_to_target"]) / every
        rate_out = (totals["target_to_client"] - last["target_to_client"]) / every
        line = (f"stats: {totals['open']} open, {totals['closed']} closed, "
                f"in {totals['client_to_target']} B ({rate_in / 1e3:.1f} kB/s), "
                f"out {totals['target_to_client']} B ({rate_out / 1e3:.1f} kB/s)")
        if "group_read" in totals:
            line += (f", group totals read {totals['group_read']} B "
                     f"written {totals['group_written']} B")
        print(line, flush=True)
        last = totals


def cmd_tunnel(args):
    from .tunnel import Tunnel
    tls_in = None
    if args.tls_in is not None:
        cert, key = args.tls_in if args.tls_in is not True else (None, None)
        tls_in = _certificate("tunnel", cert, key)
        if isinstance(tls_in, int):
            return tls_in
    if not args.tls_out and (args.ca or args.insecure or args.server_name):
        return _fail("tunnel", "--ca, --insecure and --server-name need --tls-out")
    if args.rate is None and args.conn_rate is None and (
            args.burst is not None or args.min_share is not None):
        return _fail("tunnel", "--burst and --min-share need --rate or --conn-rate")
    if args.ca and not os.path.isfile(args.ca):
        return _fail("tunnel", f"cannot read the CA file --ca {args.ca!r}")
    try:
        tunnel = Tunnel(args.connect, args.listen, tls_out=args.tls_out or None,
                        tls_in=tls_in, ca=args.ca, insecure=args.insecure,
                        server_hostname=args.server_name, compress=args.compress,
                        compress_side=args.compress_side,
                        rate=args.rate, conn_rate=args.conn_rate, burst=args.burst,
                        tick=args.tick / 1000.0, min_share=args.min_share,
                        handshake_timeout=args.handshake_timeout)
    except Exception as exc:  # noqa: BLE001 - a clear message, not a traceback
        where = f" (CA file {args.ca})" if args.ca else ""
        return _fail("tunnel", f"{exc}{where}")
    failed = _listen("tunnel", tunnel, args.listen)
    if failed:
        return failed
    print(f"tunnel listening on {_hostport_text(tunnel.address)} -> "
          f"{_hostport_text(args.connect)}", flush=True)
    stats = gevent.spawn(_print_stats, tunnel, args.stats) if args.stats else None
    _run_until_signalled(args.duration)
    print("tunnel stopping", flush=True)
    tunnel.stop(args.grace)
    if stats is not None:
        stats.kill()
    print("tunnel stopped", flush=True)
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
    echo.add_argument("--duration", type=_positive_seconds, default=None, metavar="SECONDS",
                      help="stop after this many seconds (default: run until SIGINT/SIGTERM)")
    echo.add_argument("--grace", type=_seconds, default=5.0, metavar="SECONDS",
                      help="how long open connections may finish when stopping")
    echo.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose",
                      help="more logging (-vv for debug)")
    echo.set_defaults(func=cmd_echo)

    tun = sub.add_parser(
        "tunnel", help="relay TCP through TLS, compression and rate limits",
        description="Relay each accepted connection to the target, both ways. Two "
                    "tunnels (client end: --tls-out --compress; server end: --tls-in "
                    "--compress) make an encrypted, compressed, capped tunnel. Sizes "
                    "take k/M/G (decimal) or Ki/Mi/Gi (binary).")
    tun.add_argument("--listen", type=parse_hostport, required=True, metavar="HOST:PORT")
    tun.add_argument("--connect", type=_target, required=True, metavar="HOST:PORT")
    tun.add_argument("--tls-out", action="store_true",
                     help="TLS towards the target (verified unless --insecure)")
    tun.add_argument("--tls-in", nargs="?", const=True, type=_pem_pair, default=None,
                     metavar="CERT,KEY",
                     help="terminate TLS from clients; without files a self-signed "
                          "certificate is generated and cached")
    tun.add_argument("--ca", metavar="FILE", help="CA bundle to verify the target with")
    tun.add_argument("--insecure", action="store_true",
                     help="do not verify the target's certificate")
    tun.add_argument("--server-name", metavar="NAME",
                     help="name to verify and send as SNI (default: the --connect host)")
    tun.add_argument("--compress", nargs="?", const=6, type=int, default=None,
                     metavar="LEVEL", help="zlib-compress inside the TLS layer (both ends)")
    tun.add_argument("--rate", type=_size, metavar="BYTES_PER_S",
                     help="bandwidth cap shared by all connections")
    tun.add_argument("--conn-rate", type=_size, metavar="BYTES_PER_S",
                     help="bandwidth cap of each connection")
    tun.add_argument("--burst", type=_size, metavar="BYTES", help="token bucket size")
    tun.add_argument("--tick", type=float, default=100.0, metavar="MS",
                     help="token bucket tick in milliseconds (default 100)")
    tun.add_argument("--min-share", type=_share, metavar="BYTES",
                     help="rate-limit group minimum share (default 64)")
    tun.add_argument("--stats", type=_positive_seconds, metavar="SECONDS",
                     help="print throughput every SECONDS")
    tun.add_argument("--duration", type=_positive_seconds, default=None, metavar="SECONDS",
                     help="stop after this many seconds (default: until SIGINT/SIGTERM)")
    tun.add_argument("--handshake-timeout", type=_positive_seconds, default=30.0,
                     metavar="SECONDS", help="with --tls-in: how long a client may take "
                     "for its handshake (the target is dialled after it; default 30)")
    tun.add_argument("--compress-side", choices=("up", "down"), default=None,
                     help="which side --compress applies to: 'up' (towards --connect) or "
                          "'down' (towards clients); default: down with --tls-in, else up")
    tun.add_argument("--grace", type=_seconds, default=5.0, metavar="SECONDS",
                     help="how long open connections may finish when stopping")
    tun.add_argument("-v", "--verbose", action="count", default=0, dest="sub_verbose",
                     help="more logging (-vv for debug)")
    tun.set_defaults(func=cmd_tunnel)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = args.verbose + getattr(args, "sub_verbose", 0)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130

