"""Max single read/write: how big one step of a bufferevent may be.

A bufferevent never moves everything it could in one go: each read or write
step takes at most ``get_max_single_read()`` / ``get_max_single_write()``
bytes (16384 by default, as in libevent), then the hub serves everyone else.
This example floods one socket connection with 64 MiB while a second,
interactive connection pings every 10 ms, and prints, for a few cap sizes, the
step sizes the flood's readcb saw and the worst ping round trip.

Run it:

    python examples/read_write_caps.py          # caps 4 KiB, 16 KiB (default), 256 KiB
    python examples/read_write_caps.py --smoke  # a short run (what the tests do)
"""
import argparse
import os
import sys
import time

import gevent
import gevent.event
import gevent.socket

from gbufferevent import BEV_OPT_CLOSE_ON_FREE, EV_READ, SocketBufferevent


def bev_pair():
    a, b = gevent.socket.socketpair()
    return SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE), SocketBufferevent(b, BEV_OPT_CLOSE_ON_FREE)


def run(cap, total):
    sender, receiver = bev_pair()
    sender.set_max_single_write(cap)       # bufferevent_set_max_single_write
    receiver.set_max_single_read(cap)      # bufferevent_set_max_single_read
    steps = []
    done = gevent.event.Event()
    chunk = os.urandom(1 << 20)
    sent = [0]

    def readcb(bev, arg):
        steps.append(len(bev.input))       # one read step's worth
        bev.read()
        if sum(steps) >= total:
            done.set()

    def writecb(bev, arg):
        if sent[0] < total:
            bev.write(chunk)
            sent[0] += len(chunk)

    receiver.setcb(readcb, None, None)
    receiver.enable(EV_READ)
    sender.setcb(None, writecb, None)
    writecb(sender, None)

    ping_a, ping_b = bev_pair()
    rtts = []

    def pinger():
        pong = gevent.spawn(lambda: [ping_b.sendall(ping_b.recv(1)) for _ in iter(int, 1)])
        while not done.is_set():
            t0 = time.perf_counter()
            ping_a.sendall(b"p")
            ping_a.recv(1)
            rtts.append(time.perf_counter() - t0)
            gevent.sleep(0.01)
        pong.kill()

    p = gevent.spawn(pinger)
    t0 = time.perf_counter()
    done.wait()
    elapsed = time.perf_counter() - t0
    p.join()
    for bev in (sender, receiver, ping_a, ping_b):
        bev.free()
    return max(steps), len(steps), max(rtts) * 1000, total / elapsed / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description="Max single read/write, shown.")
    ap.add_argument("--smoke", action="store_true", help="a short run")
    args = ap.parse_args(argv)
    smoke = args.smoke or os.environ.get("GBUFFEREVENT_SMOKE") == "1"
    total = (4 if smoke else 64) << 20
    print(f"{'cap':>8} {'largest step':>13} {'steps':>7} {'worst ping':>11} {'MB/s':>7}")
    for cap in (4096, 16384, 262144):
        largest, nsteps, worst_ms, rate = run(cap, total)
        assert largest <= cap
        print(f"{cap:>8} {largest:>13} {nsteps:>7} {worst_ms:>9.1f}ms {rate:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
