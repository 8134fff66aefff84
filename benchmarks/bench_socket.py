"""One-way bulk throughput over loopback TCP and a socketpair.

    python benchmarks/bench_socket.py [--quick] [--mib 64] [--runs 5]

Sends N MiB in 16 KiB writes and prints, side by side and in one run, MB/s
medians and ratios to plain gevent sockets for:

* gbufferevent, callback layer (readcb/writecb on the hub, no greenlets),
  with libevent's default 16 KiB steps and with 64 KiB steps
  (``set_max_single_read/write(65536)``, the size plain gevent reads with),
* gbufferevent, blocking layer (``sendall``/``recv`` in greenlets),
* plain gevent sockets (``sendall``/``recv``),
* asyncio streams (``write``+``drain`` / ``read``).

Then a slow reader: a sender ``sendall``s 64 MiB to a receiver that reads
1 MiB every 5 ms with a 1 MiB read high watermark; peak RSS growth of a fresh
process must stay under 2x the high watermark plus 1 MiB.
"""
import asyncio
import os
import socket
import subprocess
import sys

import gevent
import gevent.event
import gevent.socket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    size_args, CHUNK, RECV, blocking_bulk, callback_bulk, median_rate, print_table,
)

from gbufferevent import (  # noqa: E402
    BEV_OPT_CLOSE_ON_FREE, SocketBufferevent,
)



def tcp_pair():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname())
    s, _ = srv.accept()
    srv.close()
    return c, s


def unix_pair():
    return socket.socketpair()


def gbev_callback_64k(make, total):
    gbev_callback(make, total, step=65536)


def gbev_callback(make, total, step=None):
    a, b = make()
    wa, rb = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE), SocketBufferevent(b, BEV_OPT_CLOSE_ON_FREE)
    if step:
        rb.set_max_single_read(step)
        wa.set_max_single_write(step)
    callback_bulk(wa, rb, total)


def gbev_blocking(make, total):
    a, b = make()
    wa, rb = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE), SocketBufferevent(b, BEV_OPT_CLOSE_ON_FREE)
    blocking_bulk(wa, rb, total)
    wa.free()
    rb.free()


def plain_gevent(make, total):
    a, b = make()
    a, b = gevent.socket.socket(fileno=a.detach()), gevent.socket.socket(fileno=b.detach())
    blocking_bulk(a, b, total)
    a.close()
    b.close()


def asyncio_streams(make, total):
    a, b = make()
    chunk = b"x" * CHUNK

    async def main():
        ra, wa = await asyncio.open_connection(sock=a)
        rb, wb = await asyncio.open_connection(sock=b)

        async def writer():
            for _ in range(total // CHUNK):
                wa.write(chunk)
                await wa.drain()

        async def reader():
            n = 0
            while n < total:
                n += len(await rb.read(RECV))

        await asyncio.gather(writer(), reader())
        wa.close()
        wb.close()

    asyncio.run(main())


SLOW_READER = r'''
import gevent, socket
from gbufferevent import SocketBufferevent, BEV_OPT_CLOSE_ON_FREE, EV_READ
HWM = 1 << 20
TOTAL = 64 << 20

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

a, b = socket.socketpair()
wa, rb = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE), SocketBufferevent(b, BEV_OPT_CLOSE_ON_FREE)
rb.setwatermark(EV_READ, 0, HWM)
payload = b"y" * (16 * 1024)
base = rss()
peak = [base]

def writer():
    for _ in range(TOTAL // len(payload)):
        wa.sendall(payload)

def reader():
    n = 0
    while n < TOTAL:
        gevent.sleep(0.002)              # the slow consumer: 1 MiB per pass
        n += len(rb.recv(1 << 20))
        peak[0] = max(peak[0], rss())

gevent.joinall([gevent.spawn(writer), gevent.spawn(reader)], raise_error=True)
print(peak[0] - base, HWM)
'''


def slow_reader_rss():
    out = subprocess.run([sys.executable, "-c", SLOW_READER], capture_output=True,
                         text=True, timeout=600, check=True)
    growth, hwm = map(int, out.stdout.split())
    return growth, hwm


def main():
    args, total = size_args(__doc__, runs=5, quick=(8, 2))
    contenders = [
        ("gbufferevent callbacks", gbev_callback),
        ("gbufferevent callbacks, 64 KiB steps", gbev_callback_64k),
        ("gbufferevent blocking", gbev_blocking),
        ("plain gevent sockets", plain_gevent),
        ("asyncio streams", asyncio_streams),
    ]
    rows = []
    for tname, make in (("loopback TCP", tcp_pair), ("socketpair", unix_pair)):
        rates = {name: median_rate(lambda f=fn: f(make, total), total, args.runs)
                 for name, fn in contenders}
        base = rates["plain gevent sockets"]
        for name, _ in contenders:
            rows.append([tname, name, f"{rates[name]:.0f}", f"{rates[name] / base:.2f}x"])
    print_table(f"One-way bulk, {args.mib} MiB in 16 KiB writes, median of {args.runs} "
                f"(Python {sys.version.split()[0]}, gevent {gevent.__version__})",
                ["transport", "contender", "MB/s", "vs gevent"], rows)
    growth, hwm = slow_reader_rss()
    limit = 2 * hwm + (1 << 20)
    print_table("Slow reader (64 MiB via sendall, read high watermark 1 MiB)",
                ["peak RSS growth", "limit (2x HWM + 1 MiB)", "met"],
                [[f"{growth / 2**20:.1f} MiB", f"{limit / 2**20:.1f} MiB",
                  "yes" if growth < limit else "NO"]])


if __name__ == "__main__":
    main()
