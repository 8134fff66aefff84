"""A zlib-compressed echo channel between a client and a server.

What it shows: stacking a :class:`~gbufferevent.FilterBufferevent` with the
ready zlib filters on top of TCP bufferevents, on both ends, and using it
with plain blocking-style greenlet code (``sendall``/``readline``):

* each side compresses what it writes (``zlib_compress_filter``) and
  inflates what it reads (``zlib_decompress_filter`` with ``max_output`` so
  a decompression bomb is an error, not a memory blowup);
* ``flush(EV_WRITE, BEV_FLUSH)`` after each message is a ``Z_SYNC_FLUSH``:
  the other end can inflate the message at once, without waiting for more;
* ``flush(EV_WRITE, BEV_FINISHED)`` ends the compressed stream and the TCP
  stream (FIN) once everything was delivered; ``close()`` then releases the
  whole stack (``BEV_OPT_CLOSE_ON_FREE`` closes the socket underneath).

Run it:

    python examples/compressed_echo.py                  # server + client demo
    python examples/compressed_echo.py --serve 127.0.0.1:9000
    python examples/compressed_echo.py --connect 127.0.0.1:9000 < some.txt
    python examples/compressed_echo.py --smoke          # quick self-check
                                                        # (or GBUFFEREVENT_SMOKE=1)
"""
import argparse
import os
import sys

import gevent

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gbufferevent import (  # noqa: E402
    BEV_FINISHED, BEV_FLUSH, BEV_OPT_CLOSE_ON_FREE, EV_WRITE, FilterBufferevent,
    create_connection,
)
from gbufferevent.cli import parse_hostport  # noqa: E402
from gbufferevent.filters import zlib_compress_filter, zlib_decompress_filter  # noqa: E402
from gbufferevent.server import BuffereventServer  # noqa: E402

#: The most one connection may inflate to, in bytes.
MAX_OUTPUT = 64 << 20


def compressed(bev):
    """Wrap a TCP bufferevent in a compressing/decompressing filter."""
    return FilterBufferevent(bev, zlib_decompress_filter(max_output=MAX_OUTPUT),
                             zlib_compress_filter(level=6), BEV_OPT_CLOSE_ON_FREE)


def handle(bev, address):
    """Server side: echo every line back, each one flushed on its own."""
    chan = compressed(bev)
    chan.settimeout(30)
    while True:
        line = chan.readline()
        if not line:
            break
        chan.sendall(line)
        chan.flush(EV_WRITE, BEV_FLUSH)
    chan.flush(EV_WRITE, BEV_FINISHED)      # end of the compressed stream
    chan.close()


def talk(address, lines, verbose=True):
    """Client side: send *lines*, read each echo; return the echoes and the
    (plain, compressed) byte counts sent."""
    chan = compressed(create_connection(address, timeout=10))
    chan.settimeout(30)
    echoes = []
    for line in lines:
        chan.sendall(line)
        chan.flush(EV_WRITE, BEV_FLUSH)     # Z_SYNC_FLUSH: the peer inflates it now
        echo = chan.readline()
        echoes.append(echo)
        if verbose:
            print("echo:", echo.decode(errors="replace").rstrip("\n"))
    chan.flush(EV_WRITE, BEV_FINISHED)
    deflate = chan.output_stage.fn
    sent = (deflate.total_in, deflate.total_out)
    if chan.recv(1) != b"":                 # the server's stream ends too
        raise RuntimeError("the server sent more than the echoes")
    chan.close()
    return echoes, sent


def demo(lines, verbose=True):
    server = BuffereventServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        echoes, (plain, wire) = talk(server.address, lines, verbose)
    finally:
        server.stop(timeout=5)
    return echoes, plain, wire


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", metavar="HOST:PORT", help="only run the server")
    ap.add_argument("--connect", metavar="HOST:PORT",
                    help="only run the client, echoing lines from stdin")
    ap.add_argument("--smoke", action="store_true",
                    help="quick self-check (also GBUFFEREVENT_SMOKE=1)")
    args = ap.parse_args(argv)
    if args.serve:
        server = BuffereventServer(parse_hostport(args.serve), handle)
        print("compressed echo server on %s:%d" % server.address[:2])
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop()
        return 0
    if args.connect:
        talk(parse_hostport(args.connect), [ln if ln.endswith(b"\n") else ln + b"\n"
                                            for ln in sys.stdin.buffer])
        return 0
    smoke = args.smoke or os.environ.get("GBUFFEREVENT_SMOKE") == "1"
    n = 20 if smoke else 200
    lines = [b"message %d: %s\n" % (i, b"the quick brown fox " * (1 + i % 30))
             for i in range(n)]
    echoes, plain, wire = gevent.spawn(demo, lines, not smoke).get(timeout=60)
    if echoes != lines:
        print("FAILED: echoes differ", file=sys.stderr)
        return 1
    print(f"{len(lines)} lines echoed through zlib: {plain} bytes of text "
          f"went out as {wire} compressed bytes ({wire / plain:.0%})")
    if smoke:
        print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
