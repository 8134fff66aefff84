"""Bulk one-way throughput through a bufferevent pair and its peers.

    python benchmarks/bench_pair.py [--quick] [--mib 64] [--runs 5]

Moves N MiB in 16 KiB writes, in one run, side by side (MB/s medians and
ratios):

* gbufferevent pair, callback layer (writecb refills, readcb drains),
* gbufferevent pair, blocking layer (``sendall``/``recv`` greenlets),
* ``gevent.socket.socketpair()`` (``sendall``/``recv`` greenlets),
* trio's ``memory_stream_pair`` (if trio is importable: ``pip install trio``).

Target: the pair beats gevent's socketpair and trio's memory streams by 2x.
"""
import os
import sys

import gevent
import gevent.event
import gevent.socket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    size_args, CHUNK, RECV, blocking_bulk, callback_bulk, median_rate, print_table,
)

from gbufferevent import pair_new  # noqa: E402



def pair_callback(total):
    callback_bulk(*pair_new(), total)


def pair_blocking(total):
    a, b = pair_new()
    blocking_bulk(a, b, total)
    a.free()
    b.free()


def gevent_socketpair(total):
    a, b = gevent.socket.socketpair()
    blocking_bulk(a, b, total)
    a.close()
    b.close()


def trio_memory_streams(total):
    import trio
    import trio.testing

    chunk = b"x" * CHUNK

    async def main():
        left, right = trio.testing.memory_stream_pair()

        async def writer():
            for _ in range(total // CHUNK):
                await left.send_all(chunk)

        async def reader():
            n = 0
            while n < total:
                n += len(await right.receive_some(RECV))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(reader)

    trio.run(main)


def main():
    args, total = size_args(__doc__, runs=5, quick=(8, 2))
    contenders = [
        ("gbufferevent pair, callbacks", pair_callback),
        ("gbufferevent pair, blocking", pair_blocking),
        ("gevent socketpair", gevent_socketpair),
    ]
    try:
        import trio.testing  # noqa: F401
        contenders.append(("trio memory_stream_pair", trio_memory_streams))
    except ImportError:
        print("(trio not installed: pip install trio to compare with it)\n")
    rates = {name: median_rate(lambda f=fn: f(total), total, args.runs)
             for name, fn in contenders}
    gev = rates["gevent socketpair"]
    trio_rate = rates.get("trio memory_stream_pair")
    rows = []
    for name, _ in contenders:
        r = rates[name]
        rows.append([name, f"{r:.0f}", f"{r / gev:.2f}x",
                     f"{r / trio_rate:.2f}x" if trio_rate else "-"])
    print_table(f"Pair bulk, {args.mib} MiB in 16 KiB writes, median of {args.runs}",
                ["contender", "MB/s", "vs gevent socketpair", "vs trio"], rows)


if __name__ == "__main__":
    main()
