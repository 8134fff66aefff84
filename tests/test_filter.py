"""FilterBufferevent: libevent's filter scenarios (libevent-notes §1, 11-21)
and what issue #4 adds (errors as events, EOF finishing, no stuck bytes,
bounded steps, close delivering every layer, the blocking API, stacking)."""
import logging
import socket
import sys
import zlib

import gevent
import gevent.event
import gevent.socket
import pytest

from gbufferevent import (
    BEV_ERROR, BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR,
    BEV_EVENT_READING, BEV_EVENT_TIMEOUT, BEV_EVENT_WRITING, BEV_FINISHED,
    BEV_FLUSH, BEV_NEED_MORE, BEV_NORMAL, BEV_OK, BEV_OPT_CLOSE_ON_FREE,
    BEV_OPT_DEFER_CALLBACKS, EV_READ, EV_WRITE, Buffer, BuffereventClosedError,
    FilterBufferevent, FilterError, FilterStage, ProcessFilter, RateLimitGroup,
    SocketBufferevent, TokenBucketConfig, filter_new, pair_new,
)
from gbufferevent.filters import zlib_compress_filter, zlib_decompress_filter

from conftest import loopback_pair, wait_for

PATTERN = bytes(i % 256 for i in range(8333))


# -- helper filters -------------------------------------------------------------

def prefix_x(src, dst, limit, mode, ctx):
    """Output filter of scenario 11: every byte b becomes b"x" + b."""
    data = src.remove()
    if not data:
        return BEV_NEED_MORE
    out = bytearray(2 * len(data))
    out[0::2] = b"x" * len(data)
    out[1::2] = data
    dst.add(out)
    return BEV_OK


def drop_x(src, dst, limit, mode, ctx):
    """Input filter of scenario 11: keep the second byte of each pair."""
    n = len(src) // 2 * 2
    if limit >= 0:
        n = min(n, limit * 2)
    if not n:
        return BEV_NEED_MORE
    dst.add(src.remove(n)[1::2])
    return BEV_OK


def xor_filter(key):
    def f(src, dst, limit, mode, ctx):
        data = src.remove(len(src) if limit < 0 else limit)
        if not data:
            return BEV_NEED_MORE
        dst.add(bytes(b ^ key for b in data))
        return BEV_OK
    return f


class LineFramer:
    """Input filter: passes whole lines only (NEED_MORE until a newline);
    BEV_FINISHED releases a last partial line."""

    def __init__(self):
        self.calls = []
        self.called = gevent.event.Event()

    def __call__(self, src, dst, limit, mode, ctx):
        self.calls.append((len(src), mode))
        self.called.set()
        i = src.search(b"\n")
        if i < 0:
            if mode == BEV_FINISHED and src:
                dst.add(src.remove())
                return BEV_OK
            return BEV_NEED_MORE
        dst.add(src.remove(i + 1))
        return BEV_OK


def recv_until_eof(bev, timeout=10, size=65536):
    """Everything *bev* receives until EOF (blocking API, bounded in time)."""
    bev.settimeout(timeout)
    parts = []
    while True:
        chunk = bev.recv(size)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def collect(bev, *, events=None, done=None):
    """Callbacks that gather everything read (and events) on *bev*."""
    got = []
    ev = events if events is not None else []
    changed = gevent.event.Event()

    def readcb(b, arg):
        got.append(b.read())
        changed.set()

    def eventcb(b, what, arg):
        ev.append(int(what))
        changed.set()

    bev.setcb(readcb, None, eventcb)
    return got, ev, changed


# -- FilterStage: pure stepping logic, no hub -------------------------------------

def test_stage_passthrough_moves_up_to_limit_and_window():
    st = FilterStage(None)
    src, dst = Buffer(b"a" * 100), Buffer()
    r = st.step(src, dst, 30, BEV_NORMAL)
    assert (r.result, r.consumed, r.produced, r.more) == (BEV_OK, 30, 30, True)
    r = st.step(src, dst, -1, BEV_NORMAL, window=50)
    assert r.produced == 50 and len(src) == 20
    r = st.step(src, dst, -1, BEV_NORMAL)
    assert r.produced == 20 and not r.more
    r = st.step(src, dst, -1, BEV_NORMAL)
    assert r.result == BEV_NEED_MORE and not r.more


def test_stage_window_bounds_what_the_filter_sees_and_grows_on_need_more():
    seen = []

    def lines(src, dst, limit, mode, ctx):
        seen.append(len(src))
        i = src.search(b"\n")
        if i < 0:
            return BEV_NEED_MORE
        dst.add(src.remove(i + 1))
        return BEV_OK

    st = FilterStage(lines)
    src, dst = Buffer(b"x" * 100 + b"\n" + b"y" * 10), Buffer()
    r = st.step(src, dst, -1, BEV_NORMAL, window=16)
    # NEED_MORE on a cut window: more input exists, so another step is useful
    assert seen == [16] and r.result == BEV_NEED_MORE and r.more
    while r.more:
        r = st.step(src, dst, -1, BEV_NORMAL, window=16)
    # the window doubled until the line fit; then the rest (no newline) was
    # shown once, uncut, and NEED_MORE ended the steps
    assert seen == [16, 32, 64, 111, 10]
    assert r.result == BEV_NEED_MORE
    assert bytes(dst) == b"x" * 100 + b"\n" and len(src) == 10


def test_stage_runs_buffer_hooks_once_after_the_call():
    adds, drains, inside = [], [], []

    def chatty(src, dst, limit, mode, ctx):
        for _ in range(3):
            dst.add(src.remove(1))
        inside.append((len(adds), len(drains)))
        return BEV_OK

    src, dst = Buffer(b"abcdef"), Buffer()
    src._on_drain = lambda: drains.append(len(src))
    dst._on_add = lambda: adds.append(len(dst))
    r = FilterStage(chatty).step(src, dst, -1, BEV_NORMAL)
    assert inside == [(0, 0)]                  # held back during the call
    assert adds == [3] and drains == [3]       # once each, afterwards
    assert (r.consumed, r.produced, r.more) == (3, 3, True)


def test_stage_raising_filter_is_bev_error_and_logged(caplog):
    def boom(src, dst, limit, mode, ctx):
        raise ZeroDivisionError("bad filter")

    st = FilterStage(boom, name="input")
    with caplog.at_level(logging.ERROR, logger="gbufferevent.filter"):
        r = st.step(Buffer(b"x"), Buffer(), -1, BEV_NORMAL)
    assert r.result == BEV_ERROR and st.dead and isinstance(st.error, ZeroDivisionError)
    assert "bad filter" in caplog.text
    err = st.failure()
    assert isinstance(err, FilterError) and err.__cause__ is st.error


@pytest.mark.parametrize("bad", [None, True, 7, "ok", 1.0])
def test_stage_bad_return_value_is_bev_error(bad):
    st = FilterStage(lambda *a: bad)
    r = st.step(Buffer(b"x"), Buffer(), -1, BEV_NORMAL)
    assert r.result == BEV_ERROR and isinstance(st.error, TypeError)


def test_stage_ok_without_progress_is_not_retried():
    st = FilterStage(lambda *a: BEV_OK)
    r = st.step(Buffer(b"xyz"), Buffer(), -1, BEV_NORMAL)
    assert r.result == BEV_OK and not r.more


def test_process_filter_adapts_plain_objects():
    class Upper:
        def __init__(self):
            self.modes = []

        def process(self, data, mode):
            self.modes.append(mode)
            return data.upper() + (b"|end" if mode == BEV_FINISHED else b"")

    obj = Upper()
    f = ProcessFilter(obj)
    src, dst = Buffer(b"hello world"), Buffer()
    assert f(src, dst, 5, BEV_NORMAL, None) == BEV_OK        # dst_limit bounds input
    assert bytes(dst) == b"HELLO" and len(src) == 6
    assert f(src, dst, -1, BEV_FINISHED, None) == BEV_OK
    assert bytes(dst) == b"HELLO WORLD|end" and obj.modes == [BEV_NORMAL, BEV_FINISHED]
    assert f(Buffer(), dst, -1, BEV_NORMAL, None) == BEV_NEED_MORE
    with pytest.raises(TypeError, match="obj"):
        ProcessFilter(object())
    st = FilterStage(type("S", (), {"process": lambda self, d, m: "text"})())
    assert st.step(Buffer(b"x"), Buffer(), -1, BEV_NORMAL).result == BEV_ERROR
    assert isinstance(st.error, TypeError)


# -- creation ---------------------------------------------------------------------------

def test_creation_side_effects_and_identity():
    a, b = pair_new()
    old = []
    a.setcb(lambda *x: old.append("r"), lambda *x: old.append("w"),
            lambda *x: old.append("e"))
    f = FilterBufferevent(a, None, None)
    assert f.get_underlying() is a and f.getfd() == -1
    assert f.get_enabled() == EV_WRITE
    assert a.get_enabled() == EV_READ | EV_WRITE
    assert f.get_max_single_read() == 16384 and f.get_max_single_write() == 16384
    b.write(b"0123456789")
    assert len(b.output) == 10 and len(a.input) == 0    # underlying held back
    got, _, changed = collect(f)
    f.enable(EV_READ)                                   # releases the underlying
    wait_for(lambda: b"".join(got) == b"0123456789", changed, 5)
    f.disable(EV_READ)                                  # holds it again
    b.write(b"abc")
    assert len(b.output) == 3 and len(a.input) == 0
    a.disable(EV_WRITE)                                 # the underlying on its own
    assert a.get_enabled() == EV_READ and f.get_enabled() == EV_WRITE
    assert old == []                                    # old callbacks replaced
    f.free()
    b.free()


def test_filter_new_alias_and_socket_fd(sockpair):
    s0, s1 = sockpair()
    f = filter_new(s0, None, None)
    assert isinstance(f, FilterBufferevent) and f.getfd() == s0.getfd() >= 0
    assert f.fileno() == s0.getfd()
    f.free()


def test_bad_arguments():
    a, b = pair_new()
    with pytest.raises(TypeError, match="underlying"):
        FilterBufferevent(None, None, None)
    with pytest.raises(TypeError, match="underlying"):
        filter_new(b"not a bev", None, None)
    with pytest.raises(TypeError, match="input_filter"):
        FilterBufferevent(a, 5, None)
    with pytest.raises(TypeError, match="output_filter"):
        FilterBufferevent(a, None, "zlib")
    with pytest.raises(TypeError, match="free_context"):
        FilterBufferevent(a, None, None, free_context=3)
    with pytest.raises(ValueError, match="options"):
        FilterBufferevent(a, None, None, options=0x100)
    b.free()
    a.free()
    with pytest.raises(BuffereventClosedError):
        FilterBufferevent(a, None, None)


# -- data flow -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["socket", "pair"])
def test_roundtrip_scenario_11(kind, sockpair):
    if kind == "socket":
        ua, ub = sockpair()
    else:
        ua, ub = pair_new()
    out_calls = []

    def counted_prefix_x(src, dst, limit, mode, ctx):
        out_calls.append(len(src))
        return prefix_x(src, dst, limit, mode, ctx)

    sender = FilterBufferevent(ua, None, counted_prefix_x, BEV_OPT_CLOSE_ON_FREE)
    receiver = FilterBufferevent(ub, drop_x, None, BEV_OPT_CLOSE_ON_FREE)
    empty_seen = []
    fail = []
    sender.setcb(None, lambda bev, arg: empty_seen.append(len(bev.output)),
                 lambda *x: fail.append(x))
    got, events, changed = collect(receiver)
    sender.disable(EV_READ)
    receiver.enable(EV_READ)
    sender.write(PATTERN)
    wait_for(lambda: sum(map(len, got)) >= len(PATTERN), changed, 5)
    assert b"".join(got) == PATTERN
    assert out_calls == [len(PATTERN)]           # the output filter ran once
    assert empty_seen == [0] and fail == [] and events == []
    sender.free()
    receiver.free()


def test_writing_from_inside_the_filter_does_not_reenter_and_error_stops_writing():
    # scenario 12, with this project's rule: BEV_ERROR is an ERROR|WRITING event
    ua, ub = pair_new()
    calls, depth = [], [0]

    def once_then_error(src, dst, limit, mode, ctx):
        depth[0] += 1
        try:
            calls.append(len(src))
            assert depth[0] == 1, "the output filter was re-entered"
            if len(calls) > 1:
                return BEV_ERROR
            prefix_x(src, dst, limit, mode, ctx)
            sender.write(b"-")               # goes to our own output
            return BEV_OK
        finally:
            depth[0] -= 1

    sender = FilterBufferevent(ua, None, once_then_error, BEV_OPT_CLOSE_ON_FREE)
    receiver = FilterBufferevent(ub, drop_x, None, BEV_OPT_CLOSE_ON_FREE)
    s_events, writes = [], []
    done = gevent.event.Event()
    sender.setcb(None, lambda bev, arg: writes.append(len(bev.output)),
                 lambda bev, what, arg: (s_events.append(int(what)), done.set()))
    got, r_events, changed = collect(receiver)
    receiver.enable(EV_READ)
    sender.write(PATTERN)
    assert done.wait(5)
    wait_for(lambda: sum(map(len, got)) >= len(PATTERN), changed, 5)
    assert b"".join(got) == PATTERN and r_events == []
    assert calls == [len(PATTERN), 1]            # called again in the next step, for "-"
    assert s_events == [BEV_EVENT_ERROR | BEV_EVENT_WRITING]
    assert isinstance(sender.last_error, FilterError)
    assert bytes(sender.output) == b"-" and 0 not in writes
    sender.write(b"more")                        # the direction stays stopped
    with pytest.raises(FilterError):
        sender.sendall(b"x")
    assert len(calls) == 2
    sender.free()
    receiver.free()


def test_input_side_bev_error_is_error_reading_and_stops_reading():
    ua, ub = pair_new()
    calls = []

    def reject_bang(src, dst, limit, mode, ctx):
        calls.append(len(src))
        if src.search(b"!") >= 0:
            return BEV_ERROR
        dst.add_buffer(src)
        return BEV_OK

    f = FilterBufferevent(ua, reject_bang, None)
    got, events, changed = collect(f)
    f.enable(EV_READ)
    ub.write(b"fine")
    wait_for(lambda: got, changed, 5)
    ub.write(b"bad!")
    wait_for(lambda: events, changed, 5)
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert not f.get_enabled() & EV_READ
    n = len(calls)
    f.enable(EV_READ)
    changed.clear()
    ub.write(b"later")
    assert not changed.wait(0.05)              # nothing read, no new event
    assert len(calls) == n and b"".join(got) == b"fine"
    with pytest.raises(FilterError):
        f.recv(10)
    f.free()
    ub.free()


def test_raising_filter_becomes_error_event_and_the_hub_keeps_running(caplog):
    ua, ub = pair_new()

    def boom(src, dst, limit, mode, ctx):
        raise RuntimeError("filter exploded")

    f = FilterBufferevent(ua, boom, None)
    _, events, changed = collect(f)
    f.enable(EV_READ)
    with caplog.at_level(logging.ERROR, logger="gbufferevent.filter"):
        ub.write(b"x")
        wait_for(lambda: events, changed, 5)
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert isinstance(f.last_error.__cause__, RuntimeError)
    assert "filter exploded" in caplog.text
    assert gevent.spawn(lambda: 42).get(timeout=5) == 42   # the hub is fine
    f.free()
    ub.free()


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_filter_raising_greenletexit_is_an_error_event_too(side, caplog):
    """Any exception but KeyboardInterrupt/SystemExit is BEV_ERROR: a
    BaseException such as GreenletExit is logged and reported, not lost."""
    def exits(src, dst, limit, mode, ctx):
        raise gevent.GreenletExit()

    ua, ub = pair_new()
    f = FilterBufferevent(ua, exits, None) if side == "input" else \
        FilterBufferevent(ua, None, exits)
    _, events, changed = collect(f)
    f.enable(EV_READ)
    with caplog.at_level(logging.ERROR, logger="gbufferevent.filter"):
        if side == "input":
            ub.write(b"x")
        else:
            f.write(b"x")                     # the first step runs in write()
        wait_for(lambda: events, changed, 5)
    direction = BEV_EVENT_READING if side == "input" else BEV_EVENT_WRITING
    assert events == [BEV_EVENT_ERROR | direction]
    assert isinstance(f.last_error, FilterError)
    assert isinstance(f.last_error.__cause__, gevent.GreenletExit)
    assert "GreenletExit" in str(f.last_error) and "GreenletExit" in caplog.text
    assert gevent.spawn(lambda: 42).get(timeout=5) == 42   # the hub is fine
    f.free()
    ub.free()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_keyboardinterrupt_and_systemexit_from_a_filter_propagate(exc):
    def stop(src, dst, limit, mode, ctx):
        raise exc()

    st = FilterStage(stop, name="input")
    with pytest.raises(exc):
        st.step(Buffer(b"x"), Buffer(), -1, BEV_NORMAL)


@pytest.mark.parametrize("deferred", [False, True])
def test_output_of_the_failing_call_comes_first_and_no_event_follows_the_error(deferred):
    """A filter that adds bytes and then returns BEV_ERROR: the bytes reach
    the readcb before ERROR|READING; the EOF that follows is not reported
    (after an ERROR on a direction, no further events for it)."""
    def until_bang(src, dst, limit, mode, ctx):
        data = src.remove()
        good, bang, _ = data.partition(b"!")
        dst.add(good)
        return BEV_ERROR if bang else BEV_OK

    ua, ub = pair_new()
    f = FilterBufferevent(ua, until_bang, None, BEV_OPT_DEFER_CALLBACKS if deferred else 0)
    log, changed = [], gevent.event.Event()
    f.setcb(lambda b, a: log.append(b.read()), None,
            lambda b, w, a: (log.append(int(w)), changed.set()))
    f.enable(EV_READ)
    ub.write(b"good bytes!rest")
    ub.flush(EV_WRITE, BEV_FINISHED)                   # EOF right behind the data
    wait_for(lambda: any(isinstance(x, int) for x in log), changed, 5)
    assert log == [b"good bytes", BEV_EVENT_ERROR | BEV_EVENT_READING]
    with pytest.raises(FilterError):
        f.recv(10)
    f.free()
    ub.free()


def test_data_stuck_below_full_filter_input_issue_362():
    # scenario 13: a 20-byte header makes the filter's input overflow its
    # high watermark while 20 bytes are still in the underlying.
    p0, p1 = pair_new(BEV_OPT_DEFER_CALLBACKS | BEV_OPT_CLOSE_ON_FREE)
    for bev in (p0, p1):
        bev.setwatermark(EV_READ, 0, 4096)
    header = [True]

    def add_header(src, dst, limit, mode, ctx):
        n = limit if limit >= 0 else len(src)
        if header[0]:
            dst.add(b"H" * 20)
            n -= 20
            header[0] = False
        src.remove_buffer(dst, max(n, 0))
        return BEV_OK

    f = FilterBufferevent(p1, add_header, None, BEV_OPT_CLOSE_ON_FREE)
    f.setwatermark(EV_READ, 0, 4096)
    got, _, changed = collect(f)
    f.enable(EV_READ)
    p0.write(b"d" * 4096)
    wait_for(lambda: sum(map(len, got)) >= 4116, changed, 5)
    assert sum(map(len, got)) == 4116
    assert len(p1.input) == 0
    f.free()
    p0.free()


def test_output_is_not_stuck_below_the_underlyings_write_high_watermark():
    ua, ub = pair_new()
    ua.setwatermark(EV_WRITE, 0, 1000)
    limits, after = [], []

    def recording(src, dst, limit, mode, ctx):
        limits.append(limit)
        n = min(len(src), limit) if limit >= 0 else len(src)
        dst.add(src.remove(n))
        after.append(len(dst))
        return BEV_OK

    f = FilterBufferevent(ua, None, recording)
    ub.setwatermark(EV_READ, 0, 300)          # the receiver takes little at a time
    got, _, changed = collect(ub)
    data = bytes(range(256)) * 200
    f.write(data)
    ub.enable(EV_READ)
    wait_for(lambda: sum(map(len, got)) >= len(data), changed, 10)
    assert b"".join(got) == data
    assert max(after) <= 1000 and all(0 < lim <= 1000 for lim in limits)
    f.free()
    ub.free()


class Recording:
    """A pass-through filter that records (dst_limit, mode) of every call."""

    def __init__(self):
        self.seen = []
        self.called = gevent.event.Event()

    def __call__(self, src, dst, limit, mode, ctx):
        self.seen.append((limit, mode))
        self.called.set()
        n = len(src) if limit < 0 else min(len(src), limit)
        dst.add(src.remove(n))
        return BEV_OK if n else BEV_NEED_MORE


def test_output_dst_limit_values_and_no_call_while_underlying_full():
    ua, ub = pair_new()                     # ub does not read: bytes stay in ua
    rec = Recording()
    f = FilterBufferevent(ua, None, rec)
    f.write(b"abc")
    assert rec.seen == [(-1, BEV_NORMAL)]        # no write watermark below: -1
    ua.setwatermark(EV_WRITE, 0, 100)
    f.write(b"defg")
    assert rec.seen[-1] == (100 - 3, BEV_NORMAL)
    assert f.flush(EV_WRITE, BEV_FLUSH) == 0     # called although empty ...
    assert rec.seen[-1] == (-1, BEV_FLUSH)       # ... with -1 in FLUSH mode
    assert bytes(ub.input) == b"abcdefg"         # and the pair below flushed too
    f.write(b"x" * 200)
    wait_for(lambda: len(ua.output) == 100, rec.called, 5)
    n = len(rec.seen)
    rec.called.clear()
    f.write(b"y")
    assert not rec.called.wait(0.05)             # underlying full: not called
    assert len(rec.seen) == n and len(f.output) == 101
    ub.enable(EV_READ)                           # the underlying drains ...
    wait_for(lambda: len(ub.input) == 208, rec.called, 5)   # ... and we resume
    assert bytes(ub.input) == b"abcdefg" + b"x" * 200 + b"y"
    f.free()
    ub.free()


def test_input_dst_limit_values_and_no_call_while_input_full():
    ua, ub = pair_new()
    rec = Recording()
    f = FilterBufferevent(ua, rec, None)
    f.enable(EV_READ)
    ub.write(b"123")
    wait_for(lambda: rec.seen, rec.called, 5)
    assert rec.seen == [(-1, BEV_NORMAL)]        # no read watermark: -1
    f.setwatermark(EV_READ, 0, 10)
    ub.write(b"4")
    wait_for(lambda: len(rec.seen) == 2, rec.called, 5)
    assert rec.seen[-1] == (10 - 3, BEV_NORMAL)
    ub.write(b"y" * 20)                          # more than fits
    wait_for(lambda: len(f.input) == 10, rec.called, 5)
    n = len(rec.seen)
    rec.called.clear()
    ub.write(b"z")
    assert not rec.called.wait(0.05)             # our input is full: not called
    assert len(rec.seen) == n
    assert f.read(4) == b"1234"                  # drained: filtering resumes
    wait_for(lambda: len(f.input) == 10, rec.called, 5)
    assert rec.seen[n][0] == 4
    assert f.flush(EV_READ, BEV_FLUSH) == 1      # a flush ignores the watermark
    assert rec.seen[-1] == (-1, BEV_FLUSH)
    assert bytes(f.input) == b"y" * 20 + b"z"
    f.free()
    ub.free()


def test_need_more_is_not_retried_and_readcb_only_on_ok():
    # scenario 15 with a line-framing input filter
    ua, ub = pair_new()
    framer = LineFramer()
    f = FilterBufferevent(ua, framer, None)
    got, _, changed = collect(f)
    f.enable(EV_READ)
    for i, piece in enumerate([b"abcd", b"efgh"]):
        ub.write(piece)
        wait_for(lambda: len(framer.calls) == i + 1, framer.called, 5)
        framer.called.clear()
        assert not framer.called.wait(0.02)      # not retried in a loop
        assert got == []                         # NEED_MORE: no readcb
    ub.write(b"ij\nkl")
    wait_for(lambda: got, changed, 5)
    assert got == [b"abcdefghij\n"]
    # after BEV_OK with bytes left the filter runs once more, then rests
    wait_for(lambda: len(framer.calls) == 4, framer.called, 5)
    framer.called.clear()
    assert not framer.called.wait(0.02)
    assert [n for n, _ in framer.calls] == [4, 8, 13, 2]
    assert bytes(ua.input) == b"kl"
    f.free()
    ub.free()


def test_ctx_reaches_filters_and_free_context_runs_once():
    ua, ub = pair_new()
    ctx = object()
    seen, freed = [], []

    def f_in(src, dst, limit, mode, c):
        seen.append(("in", c))
        dst.add_buffer(src)
        return BEV_OK

    def f_out(src, dst, limit, mode, c):
        seen.append(("out", c))
        dst.add_buffer(src)
        return BEV_OK

    f = FilterBufferevent(ua, f_in, f_out, free_context=freed.append, ctx=ctx)
    assert f.ctx is ctx
    f.enable(EV_READ)
    f.write(b"x")
    ub.write(b"y")
    assert f.readexactly(1) == b"y"
    assert ("in", ctx) in seen and ("out", ctx) in seen and len({c for _, c in seen}) == 1
    f.free()
    f.free()
    assert freed == [ctx]
    # close() path, with output still to deliver: called once, too
    freed2 = []
    done = gevent.event.Event()
    ua.disable(EV_READ)                          # keep g's bytes from leaving
    g = FilterBufferevent(ub, None, None,
                          free_context=lambda c: (freed2.append(c), done.set()), ctx=7)
    ub.setwatermark(EV_WRITE, 0, 1)
    g.write(b"zz")
    g.close()
    g.close()
    assert freed2 == [] and len(g.output) == 1   # not before the output is out
    ua.enable(EV_READ)
    assert done.wait(5)
    assert freed2 == [7] and ua.readexactly(2) == b"zz"


def test_free_context_errors_are_logged_not_raised(caplog):
    ua, ub = pair_new()

    def bad(ctx):
        raise ValueError("cleanup failed")

    f = FilterBufferevent(ua, None, None, free_context=bad)
    with caplog.at_level(logging.ERROR):
        f.free()
    assert "free_context" in caplog.text and f.closed
    ub.free()


def test_flush_calls_the_filter_at_least_once_and_reports_ok():
    ua, ub = pair_new()
    modes = []

    def out(src, dst, limit, mode, ctx):
        modes.append(mode)
        if mode == BEV_FLUSH:
            dst.add(b"<flush>")
            return BEV_OK
        return BEV_NEED_MORE

    f = FilterBufferevent(ua, None, out)
    f.disable(EV_WRITE)                         # even with writing disabled
    assert f.flush(EV_WRITE, BEV_FLUSH) == 1    # empty buffers: called anyway
    assert modes == [BEV_FLUSH]
    assert f.flush(EV_WRITE, BEV_FINISHED) == 0  # NEED_MORE: nothing flushed
    assert modes == [BEV_FLUSH, BEV_FINISHED]
    assert bytes(ub.input) == b"<flush>"        # the pair below was flushed too
    with pytest.raises(ValueError, match="mode"):
        f.flush(EV_WRITE, 9)
    with pytest.raises(ValueError, match="iotype"):
        f.flush(0x100, BEV_FLUSH)
    f.free()
    ub.free()


def test_finished_flush_over_a_pair_delivers_the_tail_then_eof():
    ua, ub = pair_new()
    c = zlib_compress_filter()
    f = FilterBufferevent(ua, None, c)
    log_ = []
    done = gevent.event.Event()
    ub.setcb(lambda bev, arg: log_.append(("read", bev.read())), None,
             lambda bev, what, arg: (log_.append(("event", int(what))), done.set()))
    ub.enable(EV_READ)
    f.write(b"hello " * 100)
    assert f.flush(EV_WRITE, BEV_FINISHED) == 1
    assert done.wait(5)
    wire = b"".join(d for k, d in log_ if k == "read")
    assert zlib.decompress(wire) == b"hello " * 100        # the tail came first
    assert log_[-1] == ("event", BEV_EVENT_EOF | BEV_EVENT_READING)
    assert [k for k, _ in log_].count("event") == 1
    with pytest.raises(BuffereventClosedError):
        f.write(b"after the end")
    f.free()
    ub.free()


@pytest.mark.parametrize("how", ["pair-finished", "socket-close"])
def test_eof_runs_the_input_filter_finished_before_the_eof_event(how, sockpair):
    if how == "socket-close":
        ua, ub = sockpair()
    else:
        ua, ub = pair_new()
    framer = LineFramer()
    f = FilterBufferevent(ua, framer, None)
    order = []
    done = gevent.event.Event()
    f.setcb(lambda bev, arg: order.append(("read", bev.read())), None,
            lambda bev, what, arg: (order.append(("event", int(what))), done.set()))
    f.enable(EV_READ)
    ub.write(b"line\npartial")
    ub.flush(EV_WRITE, BEV_FINISHED)           # EOF (pair) or FIN (socket) after it
    assert done.wait(5)
    assert b"".join(d for k, d in order if k == "read") == b"line\npartial"
    assert order[-1] == ("event", BEV_EVENT_EOF | BEV_EVENT_READING)
    assert [m for _, m in framer.calls].count(BEV_FINISHED) == 1
    assert f.recv(10) == b""                    # EOF for the blocking layer
    f.free()
    ub.free()


def test_free_without_close_on_free_gives_the_underlying_back():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, xor_filter(1), xor_filter(1))
    f.free()
    assert ua.getcb() == (None, None, None, None)
    assert not ua.closed and ua.get_partner() is ub
    got, _, changed = collect(ua)              # usable again, reading not held
    ub.write(b"plain")
    wait_for(lambda: got, changed, 5)
    assert got == [b"plain"]
    ua.write(b"back")
    ub.enable(EV_READ)
    assert ub.readexactly(4) == b"back"
    ua.free()
    ub.free()


def test_free_with_close_on_free_frees_the_underlying(sockpair):
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, None, BEV_OPT_CLOSE_ON_FREE)
    f.free()
    assert ua.closed and ub.get_partner() is None
    s0, s1 = sockpair()
    g = FilterBufferevent(s0, None, None, BEV_OPT_CLOSE_ON_FREE)
    g.free()
    assert s0.closed and s0.getfd() == -1
    s1.settimeout(5)
    assert s1.recv(10) == b""                   # the peer sees EOF


def test_unconnected_socket_underlying_can_be_wrapped_and_freed():
    s = SocketBufferevent()
    f = FilterBufferevent(s, None, None)
    assert f.getfd() == -1
    f.free()
    s.free()


def test_close_delivers_every_layers_output_over_a_socket(sockpair):
    s0, s1 = sockpair()
    f = FilterBufferevent(s0, None, zlib_compress_filter(level=1), BEV_OPT_CLOSE_ON_FREE)
    data = b"".join(b"line %d of the text\n" % i for i in range(20000))
    s0.setwatermark(EV_WRITE, 0, 4096)        # keep bytes in every layer
    f.write(data)
    f.close()                                  # never blocks
    assert f.closed
    assert zlib.decompress(recv_until_eof(s1)) == data
    assert s0.closed


def test_close_without_close_on_free_leaves_a_working_underlying():
    ua, ub = pair_new()
    freed = gevent.event.Event()
    f = FilterBufferevent(ua, None, xor_filter(0x20), free_context=lambda c: freed.set())
    ua.setwatermark(EV_WRITE, 0, 2)              # bytes wait in both layers
    f.write(b"HELLO")
    f.close()
    assert not freed.is_set()
    ub.enable(EV_READ)
    assert ub.readexactly(5) == b"hello"
    assert freed.wait(5)
    assert f.closed and not ua.closed
    ua.write(b"raw")
    assert ub.readexactly(3) == b"raw"
    ua.free()
    ub.free()


def test_blocking_api_over_filters(sockpair):
    s0, s1 = sockpair()
    a = FilterBufferevent(s0, xor_filter(0x55), xor_filter(0x55), BEV_OPT_CLOSE_ON_FREE)
    b = FilterBufferevent(s1, xor_filter(0x55), xor_filter(0x55), BEV_OPT_CLOSE_ON_FREE)
    a.settimeout(10)
    b.settimeout(10)
    assert b.get_enabled() == EV_WRITE           # recv enables reading

    def server():
        line = b.readline()
        b.sendall(line.upper())
        n = int(b.readexactly(3))
        b.sendall(b.readexactly(n)[::-1])
        with b.makefile("rwb") as fp:
            fp.write(fp.readline().strip() + b"!\n")
            fp.flush()
        b.close()

    g = gevent.spawn(server)
    a.sendall(b"hello filters\n")
    assert a.readline() == b"HELLO FILTERS\n"
    big = bytes(range(256)) * 400
    a.sendall(b"%03d" % 100 + big[:100])
    assert a.readexactly(100) == big[:100][::-1]
    a.sendall(b"file\n")
    assert a.readline() == b"file!\n"
    assert a.recv(10) == b""                      # b closed: EOF through the filter
    g.get(timeout=10)
    a.close()


def three_filters(sock):
    """xor, then zlib, then xor again, over a TCP socket; all CLOSE_ON_FREE."""
    layers = [SocketBufferevent(sock, BEV_OPT_CLOSE_ON_FREE)]
    for fin, fout in ((xor_filter(0xA5), xor_filter(0xA5)),
                      (zlib_decompress_filter(), zlib_compress_filter()),
                      (xor_filter(0x5A), xor_filter(0x5A))):
        layers.append(FilterBufferevent(layers[-1], fin, fout, BEV_OPT_CLOSE_ON_FREE))
    return layers


def test_three_filters_over_tcp_and_closing_the_top_closes_the_socket():
    client, accepted = loopback_pair()
    peer = three_filters(accepted)[-1]
    received = gevent.spawn(recv_until_eof, peer, 20)
    layers = three_filters(client)
    top, bev = layers[-1], layers[0]
    assert top.get_underlying().get_underlying().get_underlying() is bev
    assert top.getfd() == bev.getfd() == client.fileno()
    payload = b"".join(b"record %d;" % i for i in range(30000))
    top.sendall(payload)
    top.close()
    assert received.get(timeout=20) == payload   # all of it, then EOF
    assert all(layer.closed for layer in layers)
    assert client.fileno() == -1                 # the socket itself was closed
    peer.close()


def test_blocked_greenlets_do_not_hang_when_the_pair_partner_goes_away():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, LineFramer(), None)
    ub.write(b"no newline yet")
    reader = gevent.spawn(f.recv, 100)
    gevent.idle()
    ub.free()
    # the partial record is released like at EOF, then EOF
    assert reader.get(timeout=5) == b"no newline yet"
    assert f.recv(100) == b""
    with pytest.raises(BrokenPipeError):
        f.sendall(b"x")
    f.free()


def _stack_depth():
    frame, n = sys._getframe(1), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def test_writes_from_callbacks_do_not_reenter_the_filter():
    ua, ub = pair_new()
    depth, depths = [0], []

    def out(src, dst, limit, mode, ctx):
        depth[0] += 1
        assert depth[0] == 1
        depths.append(_stack_depth())
        dst.add_buffer(src)
        depth[0] -= 1
        return BEV_OK

    f = FilterBufferevent(ua, None, out)         # callbacks not deferred
    count = [0]

    def writecb(bev, arg):
        if count[0] < 200:
            count[0] += 1
            bev.write(b"%d," % count[0])         # from inside the pipeline

    f.setcb(None, writecb, None)
    ub.enable(EV_READ)
    f.write(b"0,")                               # first step runs in write()
    expected = b"".join(b"%d," % i for i in range(201))
    assert ub.readexactly(len(expected)) == expected
    # every later step ran from the hub at the same depth: no recursion
    assert len(depths) == 201 and len(set(depths[1:])) == 1
    f.free()
    ub.free()


def test_each_filter_call_sees_at_most_max_single_read_or_write():
    ua, ub = pair_new()
    sizes = {"in": [], "out": []}

    def rec(side):
        def f(src, dst, limit, mode, ctx):
            sizes[side].append(len(src))
            dst.add_buffer(src)
            return BEV_OK
        return f

    a = FilterBufferevent(ua, None, rec("out"))
    b = FilterBufferevent(ub, rec("in"), None)
    a.set_max_single_write(1000)
    b.set_max_single_read(700)
    data = bytes(range(256)) * 200
    a.write(data)
    assert b.readexactly(len(data)) == data
    assert max(sizes["out"]) == 1000 and len(sizes["out"]) >= len(data) // 1000
    assert max(sizes["in"]) <= 700
    a.free()
    b.free()


def test_rate_limits_pace_a_filter_and_bound_each_step():
    ua, ub = pair_new()
    seen = {"in": [], "out": []}

    def rec(side):
        def f(src, dst, limit, mode, ctx):
            seen[side].append((len(src), limit))
            n = len(src) if limit < 0 else min(limit, len(src))
            dst.add(src.remove(n))
            return BEV_OK if n else BEV_NEED_MORE
        return f

    f = FilterBufferevent(ua, rec("in"), rec("out"))
    # 2000 bytes per 20 ms tick each way (100 kB/s), bursts of one tick
    f.set_rate_limit(TokenBucketConfig(2000, 2000, 2000, 2000, tick_len=0.02))
    group = RateLimitGroup(TokenBucketConfig(10**9, 10**9, 10**9, 10**9))
    f.add_to_rate_limit_group(group)               # only to count what is charged
    ub.enable(EV_READ)
    loop = gevent.get_hub().loop
    loop.update_now()
    t0 = loop.now()
    f.write(b"w" * 20000)
    assert ub.readexactly(20000) == b"w" * 20000
    ub.write(b"r" * 20000)
    assert f.readexactly(20000) == b"r" * 20000
    loop.update_now()
    elapsed = loop.now() - t0
    # 2 x 20000 bytes at 2000 per tick: about 18 ticks after the first ones
    assert 0.25 <= elapsed < 5, elapsed
    assert max(n for n, _ in seen["out"]) <= 2000         # steps fit the bucket
    assert all(0 < lim <= 2000 for _, lim in seen["out"])
    assert all(0 < lim <= 2000 for _, lim in seen["in"])
    assert group.get_totals() == (20000, 20000)            # every byte charged once
    f.free()
    ub.free()
    # through a compressor, the bytes charged are those written to the filter
    ua, ub = pair_new()
    z = FilterBufferevent(ua, None, zlib_compress_filter())
    z.set_rate_limit(TokenBucketConfig(5000, 5000, 5000, 5000, tick_len=0.02))
    group.reset_totals()
    z.add_to_rate_limit_group(group)
    ub.enable(EV_READ)
    z.sendall(b"abc" * 10000)
    z.flush(EV_WRITE, BEV_FINISHED)
    assert zlib.decompress(ub.read()) == b"abc" * 10000
    assert group.get_totals() == (0, 30000)
    z.free()
    ub.free()
    group.free()


def test_timeouts_on_the_filter_and_forwarded_from_the_underlying():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, None)
    _, events, changed = collect(f)
    f.enable(EV_READ)
    f.set_timeouts(0.05, None)
    wait_for(lambda: events, changed, 5)
    assert events == [BEV_EVENT_TIMEOUT | BEV_EVENT_READING]
    assert not f.get_enabled() & EV_READ
    ua.set_timeouts(None, 0.05)                  # the transport's own timeout
    ua.write(b"stuck")                           # ub does not read
    wait_for(lambda: len(events) == 2, changed, 5)
    assert events[1] == BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING
    f.free()
    ub.free()


def test_deferred_callbacks_option():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, None, BEV_OPT_DEFER_CALLBACKS)
    inside = [False]
    calls = []
    done = gevent.event.Event()

    def writecb(bev, arg):
        calls.append(inside[0])
        done.set()

    f.setcb(None, writecb, None)
    inside[0] = True
    f.write(b"x")                               # first step runs now ...
    inside[0] = False
    assert done.wait(5)
    assert calls == [False]                     # ... but the writecb later
    f.free()
    ub.free()


class Rot13:
    """A plain object filter: process(data, mode) -> bytes."""

    table = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                            b"NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm")

    def process(self, data, mode):
        return data.translate(self.table)


def test_plain_objects_with_process_are_filters():
    ua, ub = pair_new()
    a = FilterBufferevent(ua, Rot13(), Rot13())
    ub.enable(EV_READ)
    a.sendall(b"Hello, World")
    assert ub.readexactly(12) == b"Uryyb, Jbeyq"
    ub.write(b"Uryyb onpx")
    assert a.readexactly(10) == b"Hello back"
    assert isinstance(a.output_stage.fn, ProcessFilter)
    a.free()
    ub.free()


class HoldPartialLines:
    """Output filter: sends whole lines only; BEV_FINISHED sends the rest."""

    def __call__(self, src, dst, limit, mode, ctx):
        i = src.search(b"\n")
        if mode == BEV_FINISHED:
            n = len(src)
        elif i >= 0:
            n = i + 1
        else:
            return BEV_NEED_MORE
        dst.add(src.remove(n))
        return BEV_OK if n else BEV_NEED_MORE


def test_close_finishes_an_output_filter_that_holds_a_partial_record():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, HoldPartialLines(), BEV_OPT_CLOSE_ON_FREE)
    f.write(b"one\ntwo\nthree, no newline")
    assert bytes(ua.output) == b"one\n"            # first step at once
    f.close()
    assert recv_until_eof(ub) == b"one\ntwo\nthree, no newline"   # then EOF
    assert ua.closed


def test_shutdown_write_finishes_the_stream_and_reading_goes_on():
    ua, ub = pair_new()
    f = FilterBufferevent(ua, None, zlib_compress_filter())
    ub.enable(EV_READ)
    f.write(b"request " * 100)
    f.shutdown(socket.SHUT_WR)
    assert zlib.decompress(recv_until_eof(ub)) == b"request " * 100   # then EOF
    ub.write(b"response")
    assert f.readexactly(8) == b"response"
    with pytest.raises(BrokenPipeError):
        f.sendall(b"more")
    f.free()
    ub.free()


def test_freeing_the_filter_from_its_own_readcb():
    ua, ub = pair_new()
    freed = []
    f = FilterBufferevent(ua, xor_filter(3), None, BEV_OPT_CLOSE_ON_FREE,
                          free_context=freed.append, ctx="ctx")
    done = gevent.event.Event()

    def readcb(bev, arg):
        bev.free()
        done.set()

    f.setcb(readcb, None, None)
    f.enable(EV_READ)
    ub.write(b"a" * 100000)                       # many steps would follow
    assert done.wait(5)
    assert freed == ["ctx"] and f.closed and ub.get_partner() is None
    ub.free()


def test_output_pauses_below_an_underlying_without_watermark():
    from gbufferevent import DEFAULT_SEND_BUFFER
    ua, ub = pair_new()                           # ub does not read yet
    rec = Recording()
    f = FilterBufferevent(ua, None, rec)
    data = bytes(range(256)) * 8192               # 2 MiB
    f.write(data)
    wait_for(lambda: len(ua.output) >= DEFAULT_SEND_BUFFER, rec.called, 5)
    rec.called.clear()
    assert not rec.called.wait(0.05)              # paused, not spinning
    assert len(ua.output) < DEFAULT_SEND_BUFFER + f.get_max_single_write()
    assert len(f.output) == len(data) - len(ua.output)
    assert all(limit == -1 for limit, _ in rec.seen)   # dst_limit stays -1
    f.settimeout(0.05)
    with pytest.raises(TimeoutError):
        f.drain()                                 # nothing below takes it
    f.settimeout(10)
    ub.enable(EV_READ)
    g = gevent.spawn(f.drain)
    got = ub.readexactly(len(data))
    g.get(timeout=10)
    assert got == data
    f.free()
    ub.free()


def test_bytes_already_waiting_in_the_underlying_are_picked_up():
    ua, ub = pair_new()
    ua.enable(EV_READ)
    ub.write(b"early bytes")
    assert bytes(ua.input) == b"early bytes"      # read before any filter existed
    f = FilterBufferevent(ua, xor_filter(0), None)
    f.settimeout(5)
    assert f.recv(100) == b"early bytes"          # enabling READ finds them
    f.free()
    ub.free()


def test_filter_over_a_connecting_socket_forwards_connected():
    listener = gevent.socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    s = SocketBufferevent()
    f = FilterBufferevent(s, None, xor_filter(0x01), BEV_OPT_CLOSE_ON_FREE)
    events = []
    changed = gevent.event.Event()
    f.setcb(None, None, lambda b, w, a: (events.append(int(w)), changed.set()))
    f.write(b"queued before connecting")
    assert f.getfd() == -1
    s.connect(listener.getsockname())
    conn, _ = listener.accept()
    wait_for(lambda: events, changed, 5)
    assert events == [BEV_EVENT_CONNECTED] and f.getfd() == s.getfd() >= 0
    conn.settimeout(5)
    got = b""
    while len(got) < 24:
        chunk = conn.recv(100)
        assert chunk, "EOF before the bytes arrived"
        got += chunk
    assert got == bytes(b ^ 1 for b in b"queued before connecting")
    other = socket.socketpair()
    assert f.setfd(other[0]) == 0 and s.getfd() == other[0].fileno()
    f.free()
    for sock in (conn, listener, *other):
        sock.close()


def test_a_filter_flushing_its_own_bufferevent_is_an_error_not_recursion(caplog):
    ua, ub = pair_new()

    def selfish(src, dst, limit, mode, ctx):
        dst.add_buffer(src)
        f.flush(EV_WRITE, BEV_FLUSH)             # re-enters this very filter
        return BEV_OK

    f = FilterBufferevent(ua, None, selfish)
    events = []
    f.setcb(None, None, lambda b, w, a: events.append(int(w)))
    with caplog.at_level(logging.ERROR, logger="gbufferevent.filter"):
        f.write(b"x")
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_WRITING]
    assert isinstance(f.last_error.__cause__, RuntimeError)
    assert "re-entered" in caplog.text
    f.free()
    ub.free()
