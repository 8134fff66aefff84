"""Benchmark: the filter pipeline's overhead.

Two comparisons, printed as one table (medians of several runs):

* pass-through: bytes moved through ``FilterBufferevent(pair member, None,
  None)`` to a reading partner, against the bare pair (target >= 0.8x);
* zlib: the same text pushed through ``zlib_compress_filter(level)`` over a
  pair (the partner just counts what arrives), against compressing it with
  ``zlib.compressobj`` in one plain loop, for levels 1 and 6 (target >= 0.85x
  of raw zlib: the pipeline must cost little next to compression itself).

Run: ``python benchmarks/bench_filter.py`` (``--quick`` for a short smoke
run, ``--runs N`` / ``--mb N`` to change the work).
"""
import argparse
import os
import random
import socket
import statistics
import sys
import time
import zlib

import gevent
import gevent.event

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gbufferevent import EV_READ, FilterBufferevent, pair_new  # noqa: E402
from gbufferevent.filters import zlib_compress_filter  # noqa: E402

CHUNK = 64 * 1024


def make_text(size, seed=7):
    """Word salad: compresses like prose (about 3:1 at level 6)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"etaoinshrdlucmfwyp") for _ in range(rnd.randint(2, 9)))
             for _ in range(5000)]
    out, n = [], 0
    while n < size:
        line = b" ".join(rnd.choice(words) for _ in range(12)) + b"\n"
        out.append(line)
        n += len(line)
    return b"".join(out)[:size]


def timed_pair_run(make_writer, chunks, finish=None):
    """Write *chunks* with ``sendall`` from a greenlet through
    ``make_writer(pair member)``; the partner's readcb counts what arrives.

    Without *finish* the run ends when all bytes arrived; with it, *finish*
    is called after the last chunk and the run ends at the partner's EOF.
    Returns ``(seconds, bytes received)``.
    """
    a, b = pair_new()
    writer = make_writer(a)
    total = sum(map(len, chunks))
    got = [0]
    done = gevent.event.Event()

    def readcb(bev, arg):
        got[0] += len(bev.input)
        bev.input.clear()
        if finish is None and got[0] >= total:
            done.set()

    b.setcb(readcb, None, lambda bev, what, arg: done.set())
    b.enable(EV_READ)

    def write_all():
        for chunk in chunks:
            writer.sendall(chunk)
        if finish is not None:
            finish(writer)

    t0 = time.perf_counter()
    g = gevent.spawn(write_all)
    if not done.wait(600):
        raise RuntimeError("benchmark stalled")
    dt = time.perf_counter() - t0
    g.get()
    writer.free()
    b.free()
    return dt, got[0]


def bench_pass(chunks, total):
    bare, _ = timed_pair_run(lambda a: a, chunks)
    filt, _ = timed_pair_run(lambda a: FilterBufferevent(a, None, None), chunks)
    return total / bare, total / filt


def bench_zlib(level, chunks, total):
    t0 = time.perf_counter()
    c = zlib.compressobj(level)
    n = 0
    for chunk in chunks:
        n += len(c.compress(chunk))
    n += len(c.flush())
    raw = time.perf_counter() - t0
    # SHUT_WR through the filter: Z_FINISH, then EOF to the partner.
    filt, wire = timed_pair_run(
        lambda a: FilterBufferevent(a, None, zlib_compress_filter(level)), chunks,
        finish=lambda f: f.shutdown(socket.SHUT_WR))
    if abs(wire - n) > 64:
        raise RuntimeError(f"compressed sizes differ: filter {wire}, raw {n}")
    return total / raw, total / filt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short smoke run")
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--mb", type=int, default=64, help="MiB per pass-through run")
    ap.add_argument("--zmb", type=int, default=16, help="MiB per zlib run")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.mb, args.zmb = 1, 4, 1
    pass_total = args.mb << 20
    pass_chunks = [b"x" * CHUNK] * (pass_total // CHUNK)
    text = make_text(args.zmb << 20)
    ztotal = len(text)
    zchunks = [text[i:i + CHUNK] for i in range(0, ztotal, CHUNK)]

    rows = []
    samples = [bench_pass(pass_chunks, pass_total) for _ in range(args.runs)]
    peer = statistics.median(s[0] for s in samples)
    ours = statistics.median(s[1] for s in samples)
    rows.append(("pass-through filter over pair", "bare pair", ours, peer, 0.8))
    for level in (1, 6):
        samples = [bench_zlib(level, zchunks, ztotal) for _ in range(args.runs)]
        peer = statistics.median(s[0] for s in samples)
        ours = statistics.median(s[1] for s in samples)
        rows.append((f"zlib level {level} filter over pair",
                     f"zlib.compressobj({level}) loop", ours, peer, 0.85))

    print(f"bench_filter: {args.runs} run(s) each, median; pass-through "
          f"{args.mb} MiB, zlib {args.zmb} MiB of text, {CHUNK // 1024} KiB writes")
    head = f"{'case':34} {'MB/s':>9} {'peer':30} {'MB/s':>9} {'ratio':>6} {'target':>7}"
    print(head)
    print("-" * len(head))
    for name, peer_name, ours, peer, target in rows:
        ratio = ours / peer
        mark = "ok" if ratio >= target else "LOW"
        print(f"{name:34} {ours / 1e6:9.1f} {peer_name:30} {peer / 1e6:9.1f} "
              f"{ratio:6.2f} {'>=' + str(target):>5} {mark}")


if __name__ == "__main__":
    main()
