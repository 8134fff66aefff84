"""Serve your own request through a bufferevent pair instead of a loopback socket.

A program that offers a service over the network sometimes needs that service
itself.  Connecting to its own port costs a socket pair in the kernel, a port,
and two trips through the TCP stack.  A bufferevent pair gives the same
bufferevent API with no socket at all: the handler written for network
connections gets one member, the program talks on the other.

Here a tiny line protocol ("GET key" -> value) is served on TCP by
``BuffereventServer`` and, for the program's own lookups, through a pair.

Run it:

    python examples/pair_tunnel.py            # self-lookups via a pair, then exit
    python examples/pair_tunnel.py --serve 127.0.0.1:7002   # also serve TCP until Ctrl-C
    python examples/pair_tunnel.py --smoke    # what the test suite runs
"""
import argparse
import os
import sys

import gevent

from gbufferevent import pair_new
from gbufferevent.server import BuffereventServer

STORE = {b"answer": b"42", b"greeting": b"hello from the store"}


def handle(bev, address):
    """The protocol handler: the same code for TCP connections and pair members."""
    while True:
        line = bev.readline()
        if not line:
            break
        cmd, _, key = line.strip().partition(b" ")
        if cmd == b"GET":
            bev.sendall(STORE.get(key, b"(none)") + b"\n")
        else:
            bev.sendall(b"ERR unknown command\n")


def lookup_via_pair(key):
    """Ask our own service, with no socket: one pair member per request."""
    client, server_side = pair_new()
    gevent.spawn(handle, server_side, "pair")
    client.sendall(b"GET " + key + b"\n")
    answer = client.readline().rstrip(b"\n")
    client.close()               # the handler sees EOF after our bytes
    return answer


def main(argv=None):
    ap = argparse.ArgumentParser(description="Serve your own request through a pair.")
    ap.add_argument("--serve", metavar="HOST:PORT", help="also serve the protocol on TCP")
    ap.add_argument("--smoke", action="store_true", help="quick self-check and exit")
    args = ap.parse_args(argv)
    smoke = args.smoke or os.environ.get("GBUFFEREVENT_SMOKE") == "1"
    for key in (b"answer", b"greeting", b"missing"):
        print(f"{key.decode()}: {lookup_via_pair(key).decode()}")
    if args.serve and not smoke:
        host, port = args.serve.rsplit(":", 1)
        server = BuffereventServer((host, int(port)), handle)
        print(f"serving on {host}:{port} (try: printf 'GET answer\\n' | nc {host} {port})")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
