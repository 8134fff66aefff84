"""The ready zlib filters, alone and through filter bufferevents; the
greenlet-driven pipeline under a big write; the compressed echo example."""
import gzip
import os
import random
import subprocess
import sys
import zlib

import gevent
import gevent.event
import pytest

from gbufferevent import (
    BEV_ERROR, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING, BEV_FINISHED,
    BEV_FLUSH, BEV_NEED_MORE, BEV_NORMAL, BEV_OK, BEV_OPT_CLOSE_ON_FREE,
    BEV_OPT_DEFER_CALLBACKS, EV_READ,
    EV_WRITE, Buffer, BuffereventClosedError, FilterBufferevent, FilterError,
    pair_new,
)
from gbufferevent.filters import (
    ZlibCompressFilter, ZlibDecompressFilter, zlib_compress_filter,
    zlib_decompress_filter,
)

from conftest import wait_for
from test_filter import recv_until_eof

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def text(size, seed=1):
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(1, 9)))
             for _ in range(3000)]
    out, n = [], 0
    while n < size:
        line = b" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 15))) + b"\n"
        out.append(line)
        n += len(line)
    return b"".join(out)[:size]


def drain_filter(f, src, dst, limit=-1, mode=BEV_NORMAL, max_calls=10000):
    """Call filter *f* by hand until it stops saying BEV_OK; the results."""
    results = [f(src, dst, limit, mode, None)]
    while results[-1] == BEV_OK and len(results) < max_calls:
        results.append(f(src, dst, limit, mode, None))
    return results


# -- the filter callables by hand ------------------------------------------------------

def test_compress_filter_flush_modes_map_to_zlib():
    c = zlib_compress_filter()
    assert isinstance(c, ZlibCompressFilter)
    dst = Buffer()
    assert c(Buffer(), dst, -1, BEV_NORMAL, None) == BEV_NEED_MORE
    assert c(Buffer(b"first message"), dst, -1, BEV_NORMAL, None) == BEV_OK
    # NORMAL: zlib buffers, nothing inflatable yet
    assert zlib.decompressobj().decompress(bytes(dst)) == b""
    assert c(Buffer(), dst, -1, BEV_FLUSH, None) == BEV_OK
    wire = bytes(dst)
    assert wire.endswith(b"\x00\x00\xff\xff")          # Z_SYNC_FLUSH marker
    d = zlib.decompressobj()
    assert d.decompress(wire) == b"first message" and not d.eof
    dst.clear()
    assert c(Buffer(b" and the last"), dst, -1, BEV_FINISHED, None) == BEV_OK
    assert d.decompress(bytes(dst)) == b" and the last" and d.eof  # Z_FINISH
    assert c.finished
    assert c(Buffer(), Buffer(), -1, BEV_NORMAL, None) == BEV_NEED_MORE
    assert c(Buffer(b"late"), Buffer(), -1, BEV_NORMAL, None) == BEV_ERROR
    assert "finished" in str(c.error)


def test_compress_filter_takes_about_dst_limit_of_input():
    c = zlib_compress_filter(level=0)           # stored: output ~ input
    src, dst = Buffer(os.urandom(10000)), Buffer()
    assert c(src, dst, 1000, BEV_NORMAL, None) == BEV_OK
    assert len(src) == 9000


@pytest.mark.parametrize("limit", [1, 100, 4096, -1])
def test_decompress_filter_never_truncates_under_dst_limit(limit):
    data = bytes(1 << 20)                        # 1 MiB from about 1 KiB
    comp = zlib.compress(data, 9)
    assert len(comp) < 2048
    d = zlib_decompress_filter()
    assert isinstance(d, ZlibDecompressFilter)
    src, dst = Buffer(comp), Buffer()
    biggest = 0
    while True:
        n = len(dst)
        r = d(src, dst, limit, BEV_NORMAL, None)
        biggest = max(biggest, len(dst) - n)
        if r != BEV_OK:
            break
        if limit == 1 and len(dst) > 4096:
            break                                # enough calls for the smallest limit
    if limit != 1:
        assert r == BEV_NEED_MORE and bytes(dst) == data and d.finished
    assert biggest <= (limit if limit > 0 else 64 * 1024)


def test_decompress_filter_releases_output_zlib_holds_when_input_ran_out():
    # Feeding small pieces under a small limit leaves zlib with decoded bytes
    # it could not hand out; they must come without more input.
    rnd = random.Random(5)
    for trial in range(40):
        data = os.urandom(50) * rnd.randint(10, 2000) + os.urandom(rnd.randint(0, 300))
        comp = zlib.compress(data)
        d = zlib_decompress_filter()
        src, dst = Buffer(), Buffer()
        limit = rnd.randint(1, 3000)
        pos = 0
        while pos < len(comp):
            step = rnd.randint(1, 64)
            src.add(comp[pos:pos + step])
            pos += step
            while True:
                n = len(dst)
                r = d(src, dst, limit, BEV_NORMAL, None)
                assert r != BEV_ERROR, d.error
                assert len(dst) - n <= limit + 2048
                if r != BEV_OK:
                    break
        assert bytes(dst) == data, trial         # nothing left inside zlib


def test_decompress_filter_errors():
    bomb = zlib.compress(bytes(10 << 20))
    d = zlib_decompress_filter(max_output=1 << 20)
    dst = Buffer()
    results = drain_filter(d, Buffer(bomb), dst)
    assert results[-1] == BEV_ERROR and "max_output" in str(d.error)
    assert len(dst) <= 1 << 20
    d = zlib_decompress_filter()
    assert d(Buffer(b"not zlib at all"), Buffer(), -1, BEV_NORMAL, None) == BEV_ERROR
    assert isinstance(d.error, zlib.error)
    d = zlib_decompress_filter()
    src = Buffer(zlib.compress(b"payload") + b"trailing junk")
    assert d(src, Buffer(), -1, BEV_NORMAL, None) == BEV_ERROR
    assert "after the end" in str(d.error)
    d = zlib_decompress_filter()
    half = zlib.compress(text(5000))[:100]
    assert d(Buffer(half), Buffer(), -1, BEV_NORMAL, None) == BEV_OK
    assert d(Buffer(), Buffer(), -1, BEV_FINISHED, None) == BEV_ERROR
    assert "truncated" in str(d.error)
    d = zlib_decompress_filter()                 # nothing ever came: a clean end
    assert d(Buffer(), Buffer(), -1, BEV_FINISHED, None) == BEV_NEED_MORE


def test_decompress_filter_delivers_what_inflated_before_the_break():
    """Data received before an error comes first: the output of the failing
    call is added to dst, then BEV_ERROR, and BEV_ERROR on every later call."""
    body = text(50_000)
    gz = gzip.compress(b"hello gzip")
    c = zlib.compressobj()
    # a reserved block type (BFINAL=1, BTYPE=11) right after a sync flush
    corrupt = c.compress(body[:30_000]) + c.flush(zlib.Z_SYNC_FLUSH) + b"\x07" + b"x" * 100
    cases = {
        "gzip member then junk": (47, gz + b"junk", b"hello gzip", "after the end"),
        "zlib stream then junk": (15, zlib.compress(body) + b"junk", body, "after the end"),
        # corrupt in the middle: zlib itself fails and drops the call's output
        "corrupt middle": (15, corrupt, body[:30_000], "invalid block type"),
        "bad checksum": (15, zlib.compress(body)[:-1] + b"\x00", body, "incorrect data check"),
    }
    for name, (wbits, stream, expect, why) in cases.items():
        d = zlib_decompress_filter(wbits=wbits)
        src, dst = Buffer(stream), Buffer()
        results = drain_filter(d, src, dst, mode=BEV_FLUSH)
        assert results[-1] == BEV_ERROR, name
        assert why in str(d.error), (name, d.error)
        got = bytes(dst)
        assert got == expect, name
        assert d.total_out == len(got)
        assert d(src, Buffer(), -1, BEV_NORMAL, None) == BEV_ERROR   # sticky
    # max_output: exactly the allowed bytes, then the error
    d = zlib_decompress_filter(max_output=12_345)
    dst = Buffer()
    assert drain_filter(d, Buffer(zlib.compress(body)), dst)[-1] == BEV_ERROR
    assert bytes(dst) == body[:12_345] and "max_output" in str(d.error)


@pytest.mark.parametrize("wbits,stream,expect", [
    (47, gzip.compress(b"hello gzip") + b"junk", b"hello gzip"),
    (15, zlib.compress(b"z" * 70_000)[:-1] + b"\x00", b"z" * 70_000),
], ids=["gzip-then-junk", "bad-checksum"])
def test_recv_returns_the_good_data_then_raises(wbits, stream, expect):
    """Over a filter bufferevent: recv() returns what inflated before the
    break, the next recv() raises the FilterError; one ERROR event."""
    ua, ub = pair_new()
    f = FilterBufferevent(ua, zlib_decompress_filter(wbits=wbits), None)
    events = []
    f.setcb(None, None, lambda b, w, a: events.append(int(w)))
    ub.write(stream)
    ub.flush(EV_WRITE, BEV_FINISHED)
    got = b""
    with pytest.raises(FilterError):
        with gevent.Timeout(5):
            while True:
                got += f.recv(1 << 20)
    assert got == expect
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    f.free()
    ub.free()


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="level"):
        zlib_compress_filter(level=10)
    with pytest.raises(TypeError, match="level"):
        zlib_compress_filter(level="6")
    with pytest.raises(ValueError, match="wbits"):
        zlib_compress_filter(wbits=8)
    with pytest.raises(ValueError, match="wbits"):
        zlib_decompress_filter(wbits=99)
    with pytest.raises(TypeError, match="wbits"):
        zlib_decompress_filter(wbits=None)
    with pytest.raises(ValueError, match="max_output"):
        zlib_decompress_filter(max_output=-1)
    with pytest.raises(TypeError, match="max_output"):
        zlib_decompress_filter(max_output="1M")


# -- through filter bufferevents -----------------------------------------------------------

def test_1mb_text_in_random_chunks_through_compress_pair_decompress():
    data = text(1 << 20)
    ua, ub = pair_new()
    sender = FilterBufferevent(ua, None, zlib_compress_filter(), BEV_OPT_CLOSE_ON_FREE)
    receiver = FilterBufferevent(ub, zlib_decompress_filter(), None, BEV_OPT_CLOSE_ON_FREE)
    rnd = random.Random(3)

    def send():
        pos = 0
        while pos < len(data):
            n = rnd.randint(1, 20000)
            sender.sendall(data[pos:pos + n])
            pos += n
        sender.close()                          # BEV_FINISHED, then EOF below

    g = gevent.spawn(send)
    got = recv_until_eof(receiver, timeout=20)
    g.get(timeout=10)
    assert got == data
    receiver.free()


@pytest.mark.parametrize("wbits, inflate", [
    (15, zlib.decompress),
    (-15, lambda b: zlib.decompress(b, -15)),
    (31, gzip.decompress),
])
def test_the_wire_stream_is_valid_for_pythons_zlib(wbits, inflate):
    data = text(200000)
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, zlib_compress_filter(wbits=wbits))
    wire, done = [], gevent.event.Event()
    ub.setcb(lambda b, a: wire.append(b.read()), None, lambda b, w, a: done.set())
    ub.enable(EV_READ)
    for i in range(0, len(data), 7777):
        f.write(data[i:i + 7777])
    f.flush(EV_WRITE, BEV_FINISHED)
    assert done.wait(5)
    assert inflate(b"".join(wire)) == data
    # and our decompressor reads the same format
    back = FilterBufferevent(ub, zlib_decompress_filter(wbits=wbits), None)
    assert back.get_underlying() is ub
    f.free()
    back.free()
    ub.free()


def test_sync_flush_lets_the_peer_inflate_each_message_at_once():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, zlib_compress_filter())
    d = zlib.decompressobj()
    for msg in (b"first message\n", b"second, longer message " * 20):
        f.write(msg)
        assert f.flush(EV_WRITE, BEV_FLUSH) == 1
        assert d.decompress(ub.read()) == msg       # all of it, right now
    f.free()
    ub.free()


def test_scenario_16_two_chunks_then_finished_over_sockets(sockpair):
    s0, s1 = sockpair()
    pattern = bytes(i % 256 for i in range(8333))
    freed = []
    sender = FilterBufferevent(s0, None, zlib_compress_filter(), BEV_OPT_CLOSE_ON_FREE,
                               free_context=freed.append, ctx="sender")
    receiver = FilterBufferevent(s1, zlib_decompress_filter(), None, BEV_OPT_CLOSE_ON_FREE,
                                 free_context=freed.append, ctx="receiver")
    got, r_events, s_events, empties = [], [], [], []
    changed = gevent.event.Event()
    receiver.setcb(lambda b, a: (got.append(b.read()), changed.set()), None,
                   lambda b, w, a: (r_events.append(int(w)), changed.set()))
    sender.setcb(None, lambda b, a: empties.append(len(b.output)),
                 lambda b, w, a: s_events.append(int(w)))
    receiver.enable(EV_READ)
    sender.write(pattern[:1800])
    sender.write(pattern[1800:])
    sender.flush(EV_WRITE, BEV_FINISHED)
    wait_for(lambda: r_events, changed, 5)
    assert b"".join(got) == pattern
    assert r_events == [BEV_EVENT_EOF | BEV_EVENT_READING]      # FIN after the data
    assert s_events == [] and 0 in empties
    assert sender.output_stage.calls >= 1 and receiver.input_stage.calls >= 1
    sender.free()
    receiver.free()
    sender.free()
    assert sorted(freed) == ["receiver", "sender"]


def test_decompressor_under_a_read_high_watermark_delivers_everything():
    data = bytes(1 << 20)
    ua, ub = pair_new()
    f = FilterBufferevent(ua, zlib_decompress_filter(), None)
    f.setwatermark(EV_READ, 0, 4096)
    sizes, total = [], [0]
    done = gevent.event.Event()

    def readcb(bev, arg):
        chunk = bev.read()
        sizes.append(len(chunk))
        total[0] += len(chunk)
        if total[0] >= len(data):
            done.set()

    f.setcb(readcb, None, None)
    f.enable(EV_READ)
    ub.write(zlib.compress(data, 9))           # about 1 KiB, no end of stream needed
    assert done.wait(10)
    assert total[0] == len(data) and max(sizes) <= 4096
    f.free()
    ub.free()


def test_decompression_bomb_is_an_error_event_not_a_blowup():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, zlib_decompress_filter(max_output=1 << 20), None)
    events, sizes = [], []
    changed = gevent.event.Event()
    f.setcb(lambda b, a: sizes.append(len(b.input)), None,
            lambda b, w, a: (events.append(int(w)), changed.set()))
    f.enable(EV_READ)
    ub.write(zlib.compress(bytes(64 << 20), 9))  # 64 MiB from ~64 KiB
    wait_for(lambda: events, changed, 10)
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert isinstance(f.last_error, FilterError)
    assert "max_output" in str(f.last_error.__cause__)
    assert len(f.input) <= 1 << 20 and max(sizes) <= 1 << 20
    with pytest.raises(FilterError):
        f.recv(1 << 21) and f.recv(1)
    f.free()
    ub.free()


def test_corrupt_and_truncated_streams_are_error_events():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, zlib_decompress_filter(), None)
    events = []
    changed = gevent.event.Event()
    f.setcb(None, None, lambda b, w, a: (events.append(int(w)), changed.set()))
    f.enable(EV_READ)
    ub.write(b"this is not a zlib stream")
    wait_for(lambda: events, changed, 5)
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert isinstance(f.last_error.__cause__, zlib.error)
    f.free()
    ub.free()


@pytest.mark.parametrize("deferred", [False, True])
def test_truncated_stream_is_one_error_event_after_the_data_and_no_eof(deferred):
    """ERROR|READING stops reading for good: the EOF that revealed the
    truncation is not reported after it; everything inflated before the
    break reaches the readcb first."""
    ua, ub = pair_new()
    g = FilterBufferevent(ua, zlib_decompress_filter(), None,
                          BEV_OPT_DEFER_CALLBACKS if deferred else 0)
    log, changed = [], gevent.event.Event()
    g.setcb(lambda b, a: log.append(b.read()), None,
            lambda b, w, a: (log.append(int(w)), changed.set()))
    g.enable(EV_READ)
    c = zlib.compressobj()
    ub.write(c.compress(b"hello" * 100) + c.flush(zlib.Z_SYNC_FLUSH))  # no end ...
    ub.flush(EV_WRITE, BEV_FINISHED)                                  # ... then EOF
    wait_for(lambda: any(isinstance(x, int) for x in log), changed, 5)
    events = [x for x in log if isinstance(x, int)]
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert b"".join(x for x in log if isinstance(x, bytes)) == b"hello" * 100
    assert isinstance(log[-1], int)                    # the data came before the event
    assert "truncated" in str(g.last_error)
    with pytest.raises(FilterError):
        g.recv(10)
    g.free()
    ub.free()


def test_writing_after_finished_raises():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, zlib_compress_filter())
    f.write(b"x")
    f.flush(EV_WRITE, BEV_FINISHED)
    with pytest.raises(BuffereventClosedError):
        f.write(b"y")
    with pytest.raises(BrokenPipeError):
        f.sendall(b"y")
    f.free()
    ub.free()


def test_200mb_write_keeps_other_greenlets_heartbeat_under_100ms():
    payload = text(256 << 10, seed=9) * 800        # 200 MiB in ONE write
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, zlib_compress_filter(level=1))
    wire = []
    ub.setcb(lambda b, a: wire.append(b.read()), None, None)
    ub.enable(EV_READ)
    gaps = []
    stop = gevent.event.Event()

    def heartbeat():
        last = gevent.get_hub().loop.now()
        while not stop.wait(0.01):                 # pacing is what is measured
            gevent.get_hub().loop.update_now()
            now = gevent.get_hub().loop.now()
            gaps.append(now - last)
            last = now

    hb = gevent.spawn(heartbeat)

    def writer():
        f.write(payload)
        f.drain()                                  # every byte went through the filter

    w = gevent.spawn(writer)
    w.get(timeout=60)
    stop.set()
    hb.join(timeout=5)
    f.flush(EV_WRITE, BEV_FINISHED)
    wire.append(ub.read())                         # the tail, moved by the flush
    assert len(gaps) > 10
    assert max(gaps) < 0.1, f"heartbeat gap {max(gaps) * 1000:.0f} ms"
    assert f.output_stage.calls >= len(payload) // f.get_max_single_write()
    d, n = zlib.decompressobj(), 0
    for chunk in wire:
        n += len(d.decompress(chunk))
    assert n == len(payload) and d.eof
    f.free()
    ub.free()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_compressed_echo_example_smoke(how):
    script = os.path.join(ROOT, "examples", "compressed_echo.py")
    env = dict(os.environ, GBUFFEREVENT_SMOKE="1") if how == "env" else dict(os.environ)
    args = [sys.executable, script] + (["--smoke"] if how == "flag" else [])
    proc = subprocess.run(args, capture_output=True, timeout=60, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert out.rstrip().endswith("OK") and "lines echoed through zlib" in out
