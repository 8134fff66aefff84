"""Shared helpers for the benchmark scripts (timing, medians, the table)."""
import statistics
import time

__all__ = ["median_rate", "print_table", "size_args", "timed"]


def size_args(doc, mib=64, runs=5, quick=(8, 2)):
    """Parse ``--mib``, ``--runs`` and ``--quick`` (a short smoke run of
    *quick* = (MiB, runs)) for a throughput benchmark; returns
    ``(args, total_bytes)``."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--mib", type=int, default=mib)
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--quick", action="store_true",
                    help=f"{quick[0]} MiB, {quick[1]} run(s)")
    args = ap.parse_args()
    if args.quick:
        args.mib, args.runs = quick
    return args, args.mib << 20


def timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def median_rate(fn, nbytes, runs):
    """Run *fn* *runs* times; return the median throughput in MB/s (1e6 bytes)."""
    rates = [nbytes / timed(fn) / 1e6 for _ in range(runs)]
    return statistics.median(rates)


def print_table(title, header, rows):
    """Print rows (lists of cells) under *header* as an aligned text table."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(title)
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in cells[1:]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print()


CHUNK = 16 * 1024     # bytes per write in the bulk benchmarks
RECV = 64 * 1024      # bytes asked per recv


def callback_bulk(sender, receiver, total, chunk=CHUNK):
    """Move *total* bytes from *sender* to *receiver* with callbacks only: the
    writecb refills a few chunks whenever the output runs dry, the readcb
    drains.  Frees both bufferevents."""
    import gevent.event
    from gbufferevent import EV_READ

    data = b"x" * chunk
    left = [total]
    got = [0]
    done = gevent.event.Event()

    def writecb(bev, arg):
        for _ in range(4):
            if left[0] <= 0:
                return
            bev.write(data)
            left[0] -= chunk

    def readcb(bev, arg):
        got[0] += len(bev.read())
        if got[0] >= total:
            done.set()

    sender.setcb(None, writecb, None)
    receiver.setcb(readcb, None, None)
    receiver.enable(EV_READ)
    writecb(sender, None)
    done.wait()
    sender.free()
    receiver.free()


def blocking_bulk(sender, receiver, total, chunk=CHUNK, recv=RECV):
    """Move *total* bytes with ``sendall``/``recv`` in two greenlets; works for
    bufferevents and gevent sockets alike.  Does not close them."""
    import gevent

    data = b"x" * chunk

    def writer():
        for _ in range(total // chunk):
            sender.sendall(data)

    def reader():
        n = 0
        while n < total:
            n += len(receiver.recv(recv))

    gevent.joinall([gevent.spawn(writer), gevent.spawn(reader)], raise_error=True)
