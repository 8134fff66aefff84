"""libevent's test-ratelim, reproduced; plus what rate limiting costs at scale.

    python benchmarks/bench_ratelimit.py [--quick] [--runs 3] [--duration 5]

Part 1 is libevent's load test (``test/test-ratelim.c`` as driven by its
build): an echo server on 127.0.0.1 whose accepted connections are
rate-limited SocketBufferevents (reading and writing; here through
``BuffereventServer(rate_limit=..., rate_limit_group=...)``), 30 clients that
each keep >= 8 KiB queued and discard the echoes, 100 ms ticks, burst = 4 x
rate.  Four runs:

1. group only: 30,000 B/s for the group;
2. per connection only: 1,000 B/s each;
3. both;
4. both, the group at 35,000 B/s with 500 B drained from each of its
   buckets every tick (``decrement_read/write``): 30,000 B/s expected.

libevent's pass criteria: |total - 30,000| <= 1,000 B/s (runs with a group),
|average - 1,000| <= 50 B/s, population stddev of the per-connection rates
<= 50 B/s (<= 150 with the group only).  The table shows medians over
``--runs`` runs and how many runs met every criterion.

Part 2 reports the CPU share this process uses (CPU seconds / wall seconds)
for 2,000 and 10,000 idle-but-limited connections (each with its own limit
and all in one group, 100 ms tick, reading enabled, no traffic; the peer
ends live in a child process so the fd limit holds) and for 2,000 pair
members in one group pushing data through a 64 kB/s cap (the design card:
CPU well under the wall time).
"""
import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import gevent
import gevent.event
import gevent.socket

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table  # noqa: E402

from gbufferevent import (  # noqa: E402
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_OPT_CLOSE_ON_FREE, EV_READ,
    EV_WRITE, RateLimitGroup, SocketBufferevent, TokenBucketConfig, pair_new,
)
from gbufferevent.server import BuffereventServer  # noqa: E402

N_CONNS = 30
TICK = 0.1
# (label, per-connection B/s, group B/s, group drain per tick, expected total, stddev bound)
RUNS = [
    ("group only", 0, 30000, 0, 30000, 150),
    ("per connection only", 1000, 0, 0, None, 50),
    ("both", 1000, 30000, 0, 30000, 50),
    ("both + group drain", 1000, 35000, 500, 30000, 50),
]
TOTAL_TOL, AVG_TOL, AVG_EXPECTED = 1000, 50, 1000


def _cfg(per_second):
    rate = int(per_second * TICK)
    return TokenBucketConfig(rate, rate * 4, rate, rate * 4, TICK)


# -- part 1: test-ratelim ----------------------------------------------------

def _echo_handler(bev, address):
    """libevent's echo_readcb/echo_writecb/echo_eventcb on one connection."""
    done = gevent.event.Event()

    def readcb(b, arg):
        b.output.add_buffer(b.input)
        if len(b.output) > 1024000:
            b.disable(EV_READ)

    def writecb(b, arg):
        if len(b.output) < 512000:
            b.enable(EV_READ)

    def eventcb(b, what, arg):
        if what & (BEV_EVENT_EOF | BEV_EVENT_ERROR):
            done.set()

    bev.setcb(readcb, writecb, eventcb)
    bev.enable(EV_READ | EV_WRITE)
    done.wait()


def ratelim_run(conn_bps, group_bps, drain, duration, n=N_CONNS):
    """One test-ratelim run; returns (total B/s, average B/s, stddev B/s)."""
    group = RateLimitGroup(_cfg(group_bps)) if group_bps else None
    server = BuffereventServer(("127.0.0.1", 0), _echo_handler,
                               rate_limit=_cfg(conn_bps) if conn_bps else None,
                               rate_limit_group=group)
    server.start()
    received = [0] * n
    payload = [bytes([i % 256]) * 1024 for i in range(n)]

    def loud_writecb(bev, i):
        out = bev.output
        while len(out) < 8192:
            out.add(payload[i])

    def discard_readcb(bev, i):
        received[i] += len(bev.input)
        bev.input.drain(len(bev.input))

    def on_event(bev, what, i):
        if what & BEV_EVENT_CONNECTED:
            loud_writecb(bev, i)

    drain_timer = None
    if drain and group is not None:
        drain_timer = gevent.get_hub().loop.timer(TICK, TICK)
        drain_timer.start(lambda: (group.decrement_read(drain), group.decrement_write(drain)))
    clients = []
    for i in range(n):
        c = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE)
        c.setcb(discard_readcb, loud_writecb, on_event, i)
        c.enable(EV_READ | EV_WRITE)
        c.connect(server.address)
        clients.append(c)
    gevent.sleep(duration - 0.005)          # the measured window (libevent: loopexit)
    counts = list(received)
    if drain_timer is not None:
        drain_timer.close()
    for c in clients:
        c.free()
    server.stop(timeout=2)
    if group is not None:
        group.free()
    rates = [c / duration for c in counts]
    total = sum(rates)
    return total, total / n, statistics.pstdev(rates)


def part1(runs, duration):
    rows = []
    for label, conn_bps, group_bps, drain, expected_total, sd_tol in RUNS:
        results = [ratelim_run(conn_bps, group_bps, drain, duration) for _ in range(runs)]
        passes = 0
        for total, avg, sd in results:
            ok = abs(avg - AVG_EXPECTED) <= AVG_TOL and sd <= sd_tol
            if expected_total is not None:
                ok = ok and abs(total - expected_total) <= TOTAL_TOL
            passes += ok
        total = statistics.median(r[0] for r in results)
        avg = statistics.median(r[1] for r in results)
        sd = statistics.median(r[2] for r in results)
        crit = (f"|total-{expected_total}|<={TOTAL_TOL}, " if expected_total else "") + \
            f"|avg-{AVG_EXPECTED}|<={AVG_TOL}, sd<={sd_tol}"
        rows.append([label, conn_bps or "-", group_bps or "-", drain or "-",
                     f"{total:,.0f}", f"{avg:,.1f}", f"{sd:,.1f}", crit,
                     f"{'PASS' if passes == runs else 'FAIL'} ({passes}/{runs})"])
    print_table(
        f"test-ratelim reproduced: {N_CONNS} echo connections, {duration:g} s, "
        f"{int(TICK * 1000)} ms tick, burst 4x rate (medians of {runs} runs, B/s)",
        ["run", "conn B/s", "group B/s", "drain/tick", "total", "average", "stddev",
         "libevent criteria", "result"], rows)


# -- part 2: CPU share ---------------------------------------------------------

_HOLDER = r"""
import socket, sys
addr = (sys.argv[1], int(sys.argv[2])); n = int(sys.argv[3])
socks = [socket.create_connection(addr) for _ in range(n)]
sys.stdout.write("ready\n"); sys.stdout.flush()
sys.stdin.read()
"""


def _cpu_share(window):
    c0, t0 = time.process_time(), time.perf_counter()
    gevent.sleep(window)                   # pacing is what is measured
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def idle_cpu_share(n, window):
    """CPU share with *n* idle connections, each limited and in one group."""
    conn_cfg = _cfg(1000)
    group = RateLimitGroup(_cfg(30000))
    lsock = gevent.socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1024)
    bevs = []

    def acceptor():
        while len(bevs) < n:
            s, _ = lsock.accept()
            bev = SocketBufferevent(s, BEV_OPT_CLOSE_ON_FREE)
            bev.set_rate_limit(conn_cfg)
            bev.add_to_rate_limit_group(group)
            bev.enable(EV_READ | EV_WRITE)
            bevs.append(bev)

    g = gevent.spawn(acceptor)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, "127.0.0.1",
                               str(lsock.getsockname()[1]), str(n)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        g.join(timeout=120)
        if len(bevs) < n:
            raise RuntimeError(f"only {len(bevs)} of {n} connections accepted")
        gevent.sleep(0.3)                  # let the accept burst's garbage settle
        return _cpu_share(window)
    finally:
        g.kill()
        for b in bevs:
            b.free()
        group.free()
        lsock.close()
        holder.stdin.close()
        holder.wait(timeout=30)


def group_transfer_cpu_share(n, window):
    """CPU share while *n* pair members in one group share a 64 kB/s cap."""
    group = RateLimitGroup(_cfg(64000))
    pairs = [pair_new() for _ in range(n)]
    got = [0]

    def readcb(bev, arg):
        got[0] += len(bev.input)
        bev.input.drain(len(bev.input))

    blob = b"x" * 4096
    for a, b in pairs:
        group.add(a)
        b.setcb(readcb, None, None)
        b.enable(EV_READ)
        a.write(blob)
    try:
        gevent.sleep(0.3)                  # past the first, uneven tick
        before = got[0]
        share = _cpu_share(window)
        return share, (got[0] - before) / window
    finally:
        for a, b in pairs:
            a.free()
            b.free()
        group.free()


def part2(runs, window, sizes):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    rows = []
    for n in sizes:
        if n + 64 > soft:
            rows.append([f"{n:,} idle limited connections", "-", f"skipped (fd limit {soft})"])
            continue
        shares = [idle_cpu_share(n, window) for _ in range(runs)]
        rows.append([f"{n:,} idle limited connections", f"{statistics.median(shares):.2%}",
                     "target < 5% at 10,000"])
    results = [group_transfer_cpu_share(2000, window) for _ in range(runs)]
    share = statistics.median(r[0] for r in results)
    rate = statistics.median(r[1] for r in results)
    rows.append(["2,000 pair members, one 64 kB/s group", f"{share:.2%}",
                 f"moved {rate:,.0f} B/s; CPU well under wall time"])
    print_table(f"CPU share (CPU s / wall s, {window:g} s windows, medians of {runs} runs, "
                f"{int(TICK * 1000)} ms tick)", ["load", "CPU share", "note"], rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="short smoke run (1 run, 1.5 s; libevent's criteria need 5 s)")
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (median)")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per test-ratelim run")
    ap.add_argument("--window", type=float, default=3.0, help="seconds per CPU measurement")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.duration <= 0.5 or args.window <= 0 or math.isnan(args.duration):
        ap.error("--runs must be >= 1, --duration > 0.5, --window > 0")
    sizes = (2000, 10000)
    if args.quick:
        args.runs, args.duration, args.window, sizes = 1, 1.5, 1.0, (2000,)
    part1(args.runs, args.duration)
    part2(args.runs, args.window, sizes)


if __name__ == "__main__":
    main()
