import hashlib
import os
import socket
import sys

import gevent
import gevent.event
import pytest

from gbufferevent import (
    BEV_EVENT_EOF, BEV_EVENT_READING, BEV_EVENT_TIMEOUT, BEV_EVENT_WRITING,
    BEV_FINISHED, BEV_FLUSH, BEV_NORMAL, BEV_OPT_CLOSE_ON_FREE,
    BEV_OPT_DEFER_CALLBACKS, BEV_OPT_THREADSAFE, EV_READ, EV_WRITE,
    BuffereventClosedError, SocketBufferevent, pair_new,
)

PATTERN = bytes(i % 256 for i in range(8333))


def test_identity_and_defaults():
    a, b = pair_new()
    assert a.get_partner() is b and b.get_partner() is a
    assert a.getfd() == -1 and a.get_underlying() is None
    assert a.get_enabled() == EV_WRITE
    a.disable(EV_READ)
    assert a.get_enabled() == EV_WRITE
    b.enable(EV_READ)
    assert b.get_enabled() == EV_READ | EV_WRITE
    assert a.options & BEV_OPT_DEFER_CALLBACKS          # forced on
    assert a.get_max_single_read() == 16384
    assert SocketBufferevent().__class__.__name__ and not hasattr(
        SocketBufferevent(), "get_partner")


@pytest.mark.parametrize("options", [0, BEV_OPT_CLOSE_ON_FREE, BEV_OPT_THREADSAFE])
def test_both_ways_in_order(options):
    a, b = pair_new(options)
    a.enable(EV_READ)
    b.enable(EV_READ)
    a.write(b"to b 1;")
    b.write(b"to a 1;")
    a.write(b"to b 2")
    assert b.readexactly(13) == b"to b 1;to b 2"
    assert a.readexactly(7) == b"to a 1;"


@pytest.mark.parametrize("mode", [None, BEV_NORMAL, BEV_FLUSH])
def test_one_way_transfer_deferred(mode, recorder):
    a, b = pair_new()
    got = []
    inside_write = [False]
    done = gevent.event.Event()

    def readcb(bev, arg):
        assert not inside_write[0]              # never inside write()
        if len(bev.input) >= len(PATTERN):
            got.append(bev.read())
            bev.disable(EV_READ)
            done.set()

    empties = []
    b.setcb(readcb, None, lambda *x: pytest.fail("no events expected"))
    a.setcb(None, lambda bev, arg: empties.append(len(bev.output)),
            lambda *x: pytest.fail("no events expected"))
    b.enable(EV_READ)
    inside_write[0] = True
    a.write(PATTERN)
    if mode is not None:
        assert a.flush(EV_WRITE, mode) >= 0
    inside_write[0] = False
    assert done.wait(5)
    assert got == [PATTERN]
    assert empties and empties[-1] == 0
    b.free()
    assert a.get_partner() is None


def test_finished_flush_delivers_data_then_one_eof():
    a, b = pair_new()
    log = []
    done = gevent.event.Event()
    b.setcb(lambda bev, arg: log.append(("read", bev.read())), None,
            lambda bev, what, arg: (log.append(("event", int(what))), done.set()))
    a.setcb(None, None, lambda *x: pytest.fail("a gets no event"))
    b.enable(EV_READ)
    a.write(PATTERN)
    assert a.flush(EV_WRITE, BEV_FINISHED) >= 0
    assert done.wait(5)
    gevent.sleep(0)
    assert log == [("read", PATTERN), ("event", BEV_EVENT_EOF | BEV_EVENT_READING)]


def test_finished_with_nothing_buffered_one_loop_pass():
    a, b = pair_new()
    what = []
    b.setcb(None, None, lambda bev, w, arg: what.append(int(w)))
    a.enable(EV_WRITE)
    b.enable(EV_READ)
    a.flush(EV_WRITE, BEV_FINISHED)
    assert what == []                          # not synchronous
    gevent.sleep(0)
    assert what == [BEV_EVENT_EOF | BEV_EVENT_READING]


def test_flush_read_direction_and_both():
    a, b = pair_new()
    ev = []
    b.setcb(None, None, lambda bev, w, arg: ev.append(int(w)))
    b.write(b"pending in b")                   # a is not reading
    assert len(b.output) == 12
    assert a.flush(EV_READ, BEV_FINISHED) == 1
    assert a.read() == b"pending in b"
    gevent.sleep(0)
    assert ev == [BEV_EVENT_EOF | BEV_EVENT_WRITING]
    c, d = pair_new()
    got = []
    d.setcb(None, None, lambda bev, w, arg: got.append(int(w)))
    c.write(b"1")
    d.write(b"2")
    c.flush(EV_READ | EV_WRITE, BEV_FINISHED)
    gevent.sleep(0)
    assert got == [BEV_EVENT_EOF | BEV_EVENT_READING | BEV_EVENT_WRITING]
    assert c.read() == b"2" and d.read() == b"1"


@pytest.mark.parametrize("mode", [BEV_NORMAL, BEV_FLUSH])
def test_normal_and_flush_override_high_watermark(mode):
    a, b = pair_new()
    b.setwatermark(EV_READ, 0, 20)
    b.enable(EV_READ)
    a.write(b"x" * 1000)
    assert len(b.input) == 20 and len(a.output) == 980
    assert a.flush(EV_WRITE, mode) == 1
    assert len(b.input) == 1000 and len(a.output) == 0


def test_transfer_gated_by_enable_and_resumes():
    a, b = pair_new()
    a.write(b"y" * 100)
    assert len(a.output) == 100 and len(b.input) == 0
    b.enable(EV_READ)
    assert len(b.input) == 100                 # moved at once
    a.disable(EV_WRITE)
    a.write(b"z" * 10)
    assert len(a.output) == 10
    a.enable(EV_WRITE)
    assert len(b.input) == 110
    b.setwatermark(EV_READ, 0, 120)
    a.write(b"w" * 50)
    assert len(b.input) == 120 and len(a.output) == 40
    b.read(60)
    assert len(b.input) == 100 and len(a.output) == 0


def test_free_one_member_unlinks_silently():
    a, b = pair_new()
    events = []
    a.setcb(lambda *x: events.append("read"), None, lambda *x: events.append(x))
    a.enable(EV_READ)
    b.free()
    assert a.get_partner() is None
    a.write(b"q" * 100)                        # accepted, goes nowhere
    assert len(a.output) == 100
    assert a.flush(EV_WRITE, BEV_FLUSH) == -1
    gevent.sleep(0.02)
    assert events == []
    a.free()
    c, d = pair_new(BEV_OPT_THREADSAFE)
    c.free()
    d.free()                                   # either order, no error
    e, f = pair_new()
    f.free()
    e.free()


def test_close_delivers_then_eof_to_partner():
    a, b = pair_new()
    a.write(b"last words")
    a.close()
    assert b.recv(100) == b"last words"
    assert b.recv(100) == b""
    assert b.get_partner() is None


def test_blocked_greenlets_woken_when_partner_freed():
    a, b = pair_new()
    reader = gevent.spawn(b.recv, 10)
    b.setwatermark(EV_WRITE, 0, 0)
    a.setwatermark(EV_READ, 0, 10)
    writer = gevent.spawn(b.sendall, b"x" * 1000)
    gevent.sleep(0.01)
    assert not reader.ready() and not writer.ready()
    a.free()
    reader.join(5)
    writer.join(5)
    assert reader.value == b""                 # documented: EOF for readers
    assert isinstance(writer.exception, BrokenPipeError)
    with pytest.raises(BrokenPipeError):
        b.sendall(b"more")


def test_pair_timeouts():
    a, b = pair_new()
    a_events, b_events = [], []
    t0 = gevent.get_hub().loop.now()
    a.setcb(lambda *x: pytest.fail("no readcb"), None,
            lambda bev, w, arg: a_events.append((int(w), bev.loop.now() - t0)))
    b.setcb(None, None, lambda bev, w, arg: b_events.append(int(w)))
    a.set_timeouts(0.15, 0.1)
    a.write(b"1234567")
    a.enable(EV_READ | EV_WRITE)
    b.disable(EV_READ)
    b.set_timeouts(0.1, 0.2)
    b.enable(EV_WRITE)
    done = gevent.event.Event()
    gevent.get_hub().loop.timer(0.35).start(done.set)
    done.wait(5)
    kinds = [w for w, _ in a_events]
    assert kinds == [BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING,
                     BEV_EVENT_TIMEOUT | BEV_EVENT_READING]
    assert 0.05 < a_events[0][1] < 0.2 and 0.1 < a_events[1][1] < 0.25
    assert b_events == []


def test_max_single_caps_apply_per_step():
    a, b = pair_new()
    a.set_max_single_write(3000)
    b.set_max_single_read(1000)
    sizes = []
    done = gevent.event.Event()

    def readcb(bev, arg):
        sizes.append(len(bev.input))
        bev.read()
        if sum(sizes) >= 100_000:
            done.set()

    b.setcb(readcb, None, None)
    b.enable(EV_READ)
    a.write(os.urandom(100_000))
    assert done.wait(5)
    assert max(sizes) <= 1000 and sum(sizes) == 100_000


def test_ping_pong_20000_from_callbacks_keeps_stack_flat():
    a, b = pair_new()
    count = [0]
    depth = []
    done = gevent.event.Event()

    def ra(bev, arg):
        data = bev.read()
        count[0] += 1
        if count[0] % 1000 == 0:
            f, d = sys._getframe(), 0
            while f:
                d, f = d + 1, f.f_back
            depth.append(d)
        if count[0] < 20000:
            bev.write(data)
        else:
            done.set()

    b.setcb(lambda bev, arg: bev.write(bev.read()), None, None)
    a.setcb(ra, None, None)
    a.enable(EV_READ)
    b.enable(EV_READ)
    a.write(b"p")
    assert done.wait(30)
    assert count[0] == 20000
    assert max(depth) - min(depth) <= 2 and max(depth) < 50


def test_4mib_sha256_through_blocking_layer():
    a, b = pair_new()
    payload = os.urandom(4 << 20)

    def writer():
        a.sendall(payload)
        a.shutdown(socket.SHUT_WR)

    def reader():
        h = hashlib.sha256()
        while True:
            d = b.recv(50_000)
            if not d:
                return h.hexdigest()
            h.update(d)

    gs = [gevent.spawn(writer), gevent.spawn(reader)]
    gevent.joinall(gs, timeout=30, raise_error=True)
    assert gs[1].value == hashlib.sha256(payload).hexdigest()


def test_sendall_to_non_reading_partner_blocks_then_completes():
    a, b = pair_new()
    b.setwatermark(EV_READ, 0, 64 * 1024)
    b.enable(EV_READ)
    payload = os.urandom(8 << 20)
    g = gevent.spawn(a.sendall, payload)
    gevent.sleep(0.05)
    assert not g.ready()
    assert len(b.input) <= 64 * 1024
    assert len(a.output) < len(payload) // 4    # not everything buffered
    acc = bytearray()
    while len(acc) < len(payload):
        acc += b.recv(1 << 20)
    g.join(10)
    assert g.successful() and bytes(acc) == payload


def test_watermark_cases():
    a, b = pair_new()
    assert b.getwatermark(EV_READ) == (0, 0) and a.getwatermark(EV_WRITE) == (0, 0)
    b.setwatermark(EV_READ, 10, 20)
    a.setwatermark(EV_WRITE, 100, 2000)
    assert b.getwatermark(EV_READ) == (10, 20)
    assert a.getwatermark(EV_WRITE) == (100, 2000)
    with pytest.raises(ValueError):
        a.getwatermark(EV_READ | EV_WRITE)
    sizes, outs = [], []
    total = [0]
    done = gevent.event.Event()

    def readcb(bev, arg):
        sizes.append(len(bev.input))
        total[0] += len(bev.read())
        if total[0] == 65000:
            done.set()

    b.setcb(readcb, None, lambda *x: pytest.fail("no events"))
    a.setcb(None, lambda bev, arg: outs.append(len(bev.output)), None)
    b.enable(EV_READ)
    a.write(os.urandom(65000))
    assert done.wait(10)
    gevent.sleep(0)
    assert all(10 <= s <= 20 for s in sizes)
    assert outs and all(o <= 100 for o in outs) and outs[-1] == 0


def test_write_after_free_raises():
    a, b = pair_new()
    a.free()
    with pytest.raises(BuffereventClosedError):
        a.write(b"x")
    with pytest.raises(BuffereventClosedError):
        a.recv(1)
