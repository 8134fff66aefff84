"""Rate limits on live bufferevents: per bufferevent, per group, the scheduler.

Most tests use a tick of an hour (``LONG``) so that no refill can happen while
they run and every number is exact; the few timing tests use short ticks,
run >= 1 s where they measure a rate, and allow +-15%.
"""
import os
import threading
import time

import gevent
import gevent.event
import pytest

from gbufferevent import (
    BEV_FLUSH, BEV_OPT_CLOSE_ON_FREE, EV_READ, EV_SSIZE_MAX, EV_WRITE,
    BuffereventClosedError, RateLimitGroup, SocketBufferevent, TokenBucketConfig,
    TokenScheduler, create_connection, pair_new,
)
from gbufferevent.server import BuffereventServer

from conftest import loopback_pair

LONG = 3600.0          # no tick boundary passes during a test


def cfg(rate, burst=None, tick=LONG):
    """Same rate and burst for reading and writing."""
    burst = burst or rate
    return TokenBucketConfig(rate, burst, rate, burst, tick)


def tcp_pair():
    """Two connected SocketBufferevents over 127.0.0.1: (client, server)."""
    c, s = loopback_pair()
    return (SocketBufferevent(c, BEV_OPT_CLOSE_ON_FREE),
            SocketBufferevent(s, BEV_OPT_CLOSE_ON_FREE))


@pytest.fixture
def keep():
    """``keep(*objs)`` returns *objs* (one object alone) and frees them after the test."""
    objs = []

    def keep_(*new):
        objs.extend(new)
        return new if len(new) > 1 else new[0]

    yield keep_
    for obj in reversed(objs):
        obj.free()


class Sink:
    """A readcb that keeps what arrives, when, and wakes waiters."""

    def __init__(self, bev):
        self.chunks = []
        self.times = []
        self.changed = gevent.event.Event()
        bev.setcb(self.readcb, None, None)
        bev.enable(EV_READ)

    def readcb(self, bev, arg):
        self.chunks.append(bev.read())
        self.times.append(time.monotonic())
        self.changed.set()

    @property
    def data(self):
        return b"".join(self.chunks)

    def wait_for(self, n, timeout=5):
        with gevent.Timeout(timeout, AssertionError(f"{n} bytes not received in time")):
            while len(self.data) < n:
                self.changed.clear()
                self.changed.wait()

    def quiet_for(self, seconds):
        """True if nothing arrives within *seconds*."""
        self.changed.clear()
        return not self.changed.wait(seconds)


def member_counters(n, total):
    """``(counts, enough, readcb)``: ``readcb(bev, i)`` adds what member *i*
    reads to ``counts[i]``; *enough* is set once they read *total* together."""
    counts = [0] * n
    enough = gevent.event.Event()

    def readcb(bev, i):
        counts[i] += len(bev.read())
        if sum(counts) >= total:
            enough.set()

    return counts, enough, readcb


def in_other_thread(fn):
    """Run *fn* in another thread while this hub waits (an async watcher
    wakes it when *fn* is done); return when the thread has finished."""
    done = gevent.get_hub().loop.async_()
    finished = gevent.event.Event()
    done.start(finished.set)

    def run():
        try:
            fn()
        finally:
            done.send()

    t = threading.Thread(target=run)
    t.start()
    try:
        assert finished.wait(10)
        t.join(10)
    finally:
        done.close()


def group_mutators(g, bev):
    """Every RateLimitGroup call that changes the group but free(), by name."""
    return {
        "add": lambda: g.add(bev), "remove": lambda: g.remove(bev),
        "set_cfg": lambda: g.set_cfg(cfg(50)), "set_min_share": lambda: g.set_min_share(0),
        "decrement_read": lambda: g.decrement_read(10 ** 6),
        "decrement_write": lambda: g.decrement_write(10 ** 6),
        "reset_totals": g.reset_totals,
    }


# -- per-bufferevent limits: values ------------------------------------------

def test_limit_starts_with_one_tick_and_max_to_is_the_minimum(keep):
    a, _ = keep(*pair_new())
    assert a.get_read_limit() == a.get_write_limit() == EV_SSIZE_MAX
    assert a.get_token_bucket_cfg() is None
    assert (a.get_max_to_read(), a.get_max_to_write()) == (16384, 16384)
    c = TokenBucketConfig(100, 400, 50, 200, LONG)
    assert a.set_rate_limit(c) == 0
    assert a.get_token_bucket_cfg() is c
    assert (a.get_read_limit(), a.get_write_limit()) == (100, 50)      # the rate, not the burst
    assert (a.get_max_to_read(), a.get_max_to_write()) == (100, 50)
    a.set_max_single_read(30)
    assert a.get_max_to_read() == 30                                   # min(max single, bucket)
    # one config shared by two bufferevents: separate buckets
    b, _ = keep(*pair_new())
    b.set_rate_limit(c)
    a.decrement_read_limit(70)
    assert (a.get_read_limit(), b.get_read_limit()) == (30, 100)


def test_same_cfg_is_a_noop_new_cfg_clips_none_removes(keep):
    a, b = keep(*pair_new())
    sink = Sink(b)
    c = cfg(100, 400)
    a.set_rate_limit(c)
    a.decrement_write_limit(500)
    assert a.get_write_limit() == -400 and a.get_max_to_write() == 0  # never negative
    a.set_rate_limit(c)                                                # same cfg: no-op
    assert a.get_write_limit() == -400
    a.write(b"x" * 10)
    assert len(b.input) + len(sink.data) == 0                          # suspended
    a.decrement_write_limit(-1000)                                     # 600: above the burst
    assert a.get_write_limit() == 590                                  # 10 bytes moved at once
    a.set_rate_limit(TokenBucketConfig(7, 300, 7, 300, LONG))          # clipped, not reset
    assert (a.get_read_limit(), a.get_write_limit()) == (100, 300)
    a.decrement_write_limit(10_000)
    a.write(b"y" * 50)
    assert len(b.input) + len(sink.data) == 10
    assert a.set_rate_limit(None) == 0                                 # lifts the suspension
    assert len(b.input) + len(sink.data) == 60
    assert a.get_write_limit() == EV_SSIZE_MAX and a.get_token_bucket_cfg() is None


def test_rate_limit_bad_input(keep):
    a, _ = keep(*pair_new())
    for bad in ("cfg", 1, object()):
        with pytest.raises(TypeError, match="cfg"):
            a.set_rate_limit(bad)
    with pytest.raises(RuntimeError, match="no rate limit"):
        a.decrement_read_limit(1)
    with pytest.raises(RuntimeError, match="no rate limit"):
        a.decrement_write_limit(1)
    a.set_rate_limit(cfg(10))
    for bad in ("5", 1.5, None, True):
        with pytest.raises(TypeError, match="decr"):
            a.decrement_read_limit(bad)
    with pytest.raises(TypeError, match="group"):
        a.add_to_rate_limit_group("group")
    with pytest.raises(TypeError, match="cfg"):
        RateLimitGroup(None)
    g = keep(RateLimitGroup(cfg(100)))
    with pytest.raises(TypeError, match="cfg"):
        g.set_cfg(3)
    with pytest.raises(ValueError, match="share"):
        g.set_min_share(-1)
    with pytest.raises(TypeError, match="share"):
        g.set_min_share("64")
    with pytest.raises(TypeError, match="bev"):
        g.add(object())
    with pytest.raises(ValueError, match="not a member"):
        g.remove(a)
    with pytest.raises(TypeError, match="decr"):
        g.decrement_write(2.5)
    a.free()
    with pytest.raises(BuffereventClosedError):
        a.set_rate_limit(cfg(10))
    with pytest.raises(RuntimeError):
        g.add(a)
    assert a.set_rate_limit(None) == 0


# -- per-bufferevent limits: suspension and resumption ---------------------------

def test_decrement_suspends_reading_until_the_ticks_refill_it(keep):
    a, b = keep(*tcp_pair())
    b.set_rate_limit(TokenBucketConfig(1000, 4000, 1000, 4000, 0.05))
    b.decrement_read_limit(3500)
    level = b.get_read_limit()
    assert -2500 <= level <= -1500 and b.get_max_to_read() == 0
    ticks = -level // 1000 + 1                 # ticks until the bucket is positive
    t0 = time.monotonic()
    sink = Sink(b)
    a.write(b"z" * 500)
    sink.wait_for(500)
    waited = time.monotonic() - t0
    # ticks are epoch-aligned: the first refill may come up to one tick early
    assert (ticks - 1) * 0.05 - 0.01 <= waited <= ticks * 0.05 + 0.2
    assert sink.data == b"z" * 500


def test_negative_decrement_resumes_at_once_and_waiting_costs_no_cpu(keep):
    a, b = keep(*tcp_pair())
    b.set_rate_limit(cfg(1000, 4000))
    b.decrement_read_limit(5000)
    sink = Sink(b)
    a.write(b"q" * 300)
    c0 = time.process_time()
    assert sink.quiet_for(0.3)                                 # held back: nothing read
    assert time.process_time() - c0 < 0.05                     # and no busy loop
    b.decrement_read_limit(-4100)                              # -4000 -> 100: resume now
    sink.wait_for(100, timeout=2)
    assert sink.quiet_for(0.1)                                 # exactly the 100 allowed
    assert sink.data == b"q" * 100 and b.get_read_limit() == 0


def test_refill_is_capped_at_the_burst(keep):
    a, _ = keep(*pair_new())
    a.set_rate_limit(TokenBucketConfig(100, 250, 100, 250, 0.02))
    gevent.sleep(0.12)                     # idle for >= 5 ticks: the pacing under test
    assert (a.get_read_limit(), a.get_write_limit()) == (250, 250)


def test_pair_is_throttled_by_either_member(keep):
    for limited in ("sender", "receiver"):
        a, b = keep(*pair_new())
        b.enable(EV_READ)
        bev = a if limited == "sender" else b
        bev.set_rate_limit(cfg(1000))
        a.write(b"p" * 5000)
        assert len(b.input) == 1000                            # one tick's worth crossed
        assert bev.get_max_to_write() == 0 if limited == "sender" else bev.get_max_to_read() == 0
        if limited == "sender":
            bev.decrement_write_limit(-2000)
        else:
            bev.decrement_read_limit(-2000)
        assert len(b.input) == 3000 and len(a.output) == 2000


def test_flush_overdraws_the_bucket(keep):
    a, b = keep(*pair_new())
    b.enable(EV_READ)
    a.set_rate_limit(cfg(100))
    a.write(b"f" * 1000)
    assert len(b.input) == 100
    assert a.flush(EV_WRITE, BEV_FLUSH) == 1
    assert len(b.input) == 1000 and a.get_write_limit() == -900   # deficit spending
    a.write(b"g" * 10)
    assert len(b.input) == 1000
    a.decrement_write_limit(-1000)
    assert len(b.input) == 1010 and a.get_write_limit() == 90


# -- rates over time -------------------------------------------------------------

def test_tcp_read_rate_and_per_sample_bound(keep):
    """A greenlet blocked in recv() on a read-limited connection: 100 kB/s."""
    a, b = keep(*tcp_pair())
    rate, tick = 10_000, 0.1                                   # per tick -> 100 kB/s
    burst = 2 * rate
    per_s = rate / tick
    t0 = time.monotonic()
    b.set_rate_limit(TokenBucketConfig(rate, burst, rate, burst, tick))
    a.write(os.urandom(300_000))
    got, samples = 0, []
    while not samples or samples[-1][0] - t0 < 1.3:
        got += len(b.recv(65536))
        samples.append((time.monotonic(), got))
    for t, n in samples:                                       # received(t) bound
        assert n <= burst + per_s * (t - t0) + rate
    (t1, n1), (t2, n2) = samples[0], samples[-1]
    assert t2 - t1 >= 1.0
    assert 0.85 * per_s <= (n2 - n1) / (t2 - t1) <= 1.15 * per_s


def test_tcp_single_big_write_is_throttled_without_drain(keep):
    a, b = keep(*tcp_pair())
    a.set_rate_limit(cfg(10_000, tick=0.1))                    # 100 kB/s, burst 10 kB
    sink = Sink(b)
    payload = os.urandom(150_000)
    t0 = time.monotonic()
    a.write(payload)                                           # one write, nobody drains
    sink.wait_for(len(payload))
    elapsed = sink.times[-1] - t0
    expected = (len(payload) - 10_000) / 100_000               # the first tick is free
    assert 0.85 * expected <= elapsed <= 1.15 * expected
    assert sink.data == payload


def test_write_larger_than_the_burst_completes_in_pieces(keep):
    a, b = keep(*pair_new())
    sink = Sink(b)
    a.set_rate_limit(TokenBucketConfig(4000, 8000, 4000, 8000, 0.02))
    payload = os.urandom(40_000)                               # 5 bursts
    a.write(payload)
    sink.wait_for(len(payload))
    assert sink.data == payload
    assert len(sink.chunks) >= 5 and max(map(len, sink.chunks)) <= 8000


def test_heartbeat_keeps_its_rhythm_during_throttled_transfers():
    """Three rate-limited server connections (``BuffereventServer(rate_limit=)``),
    clients blocked in sendall(); a 10 ms heartbeat greenlet is never held up."""
    got = {}
    all_done = gevent.event.Event()

    def handle(bev, address):
        n = 0
        while True:
            data = bev.recv(65536)
            if not data:
                break
            n += len(data)
        got[address] = n
        if len(got) == 3:
            all_done.set()

    server = BuffereventServer(("127.0.0.1", 0), handle,
                               rate_limit=TokenBucketConfig(2000, 2000, 2000, 2000, 0.01))
    server.start()
    gaps = []

    def heartbeat():
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = gevent.spawn(heartbeat)
    clients = [create_connection(server.address, timeout=5) for _ in range(3)]
    try:
        t0 = time.monotonic()
        senders = [gevent.spawn(c.sendall, b"h" * 120_000) for c in clients]
        gevent.joinall(senders, timeout=10, raise_error=True)
        for c in clients:
            c.close()
        assert all_done.wait(5)           # the server greenlets finish on EOF
        elapsed = time.monotonic() - t0
    finally:
        beat.kill()
        server.stop()
    assert sorted(got.values()) == [120_000] * 3
    assert elapsed >= 0.5                     # 200 kB/s each: throttled indeed
    assert len(gaps) >= 0.5 * elapsed / 0.01 and max(gaps) < 0.1


# -- groups ------------------------------------------------------------------------

def test_group_values_min_share_and_set_cfg(keep):
    big = TokenBucketConfig(3000, 12000, 2000, 8000, LONG)
    g = keep(RateLimitGroup(big))
    assert (g.get_read_limit(), g.get_write_limit()) == (3000, 2000)
    assert g.get_totals() == (0, 0) and g.get_min_share() == 64 and len(g) == 0
    assert g.set_cfg(TokenBucketConfig(10, 1000, 10, 1000, LONG)) == 0
    assert (g.get_read_limit(), g.get_write_limit()) == (1000, 1000)   # clipped
    assert g.get_min_share() == 10                                     # <= the rates
    g.set_cfg(big)
    assert (g.get_read_limit(), g.get_write_limit()) == (1000, 1000)   # not reset
    assert g.get_min_share() == 64 and g.cfg is big
    assert g.set_min_share(0) == 0 and g.get_min_share() == 0
    g.set_min_share(100)
    assert g.get_min_share() == 100
    g.decrement_read(5000)
    assert g.get_read_limit() == -4000                                 # may be negative


def test_member_share_and_the_lower_limit_wins(keep):
    g = keep(RateLimitGroup(cfg(3000)))
    members = [keep(*pair_new())[0] for _ in range(30)]
    for m in members:
        assert g.add(m) == 0
    assert {m.get_max_to_read() for m in members} == {100}             # 3000 / 30
    g.decrement_read(2000)
    assert members[0].get_max_to_read() == 64                          # 33 -> min share
    g.set_min_share(0)
    assert members[0].get_max_to_read() == 33
    members[1].set_rate_limit(cfg(20))
    assert members[1].get_max_to_read() == 20                          # own bucket lower
    m = members[0]
    m.set_rate_limit(cfg(500))
    assert m.get_max_to_read() == 33                                   # group share lower
    m.set_max_single_read(10)
    assert m.get_max_to_read() == 10
    assert m.get_read_limit() == 500                                   # the group is not in it


def test_bev_and_group_limits_the_lower_wins_on_transfers(keep):
    for own, group_rate, moved in ((200, 500, 200), (800, 500, 500)):
        g = keep(RateLimitGroup(cfg(group_rate)))
        a, b = keep(*pair_new())
        b.enable(EV_READ)
        a.add_to_rate_limit_group(g)
        a.set_rate_limit(cfg(own))
        a.write(b"w" * 1000)
        assert len(b.input) == moved


def test_group_totals_and_reset(keep):
    g = keep(RateLimitGroup(cfg(100_000)))
    a, b = keep(*pair_new())
    g.add(a)
    g.add(b)
    b.enable(EV_READ)
    a.write(b"t" * 700)
    assert g.get_totals() == (700, 700)
    a.enable(EV_READ)
    b.write(b"u" * 300)
    assert g.get_totals() == (1000, 1000)
    g.decrement_read(50)
    g.decrement_write(-50)
    assert g.get_totals() == (1000, 1000)                      # manual decrements do not count
    g.remove(b)
    assert g.get_totals() == (1000, 1000)                      # bytes stay counted
    a.write(b"v" * 10)
    assert g.get_totals() == (1000, 1010)                      # b's reads no longer count
    a._charge_write(5 * 2 ** 32)                               # as a kind reports bytes
    assert g.get_totals() == (1000, 1010 + 5 * 2 ** 32)        # no 32-bit wrap
    g.reset_totals()
    assert g.get_totals() == (0, 0)


def test_membership_move_remove_and_member_free(keep):
    g1, g2 = keep(RateLimitGroup(cfg(3000))), keep(RateLimitGroup(cfg(3000)))
    a1, a2, a3 = (keep(*pair_new())[0] for _ in range(3))
    for m in (a1, a2, a3):
        g1.add(m)
    assert len(g1) == 3 and a1.get_max_to_read() == 1000
    assert a3.add_to_rate_limit_group(g2) == 0                 # moves it
    assert len(g1) == 2 and len(g2) == 1 and a3 in g2 and a3 not in g1
    assert a1.get_max_to_read() == 1500                        # g1's share grew
    a3.add_to_rate_limit_group(g2)                             # same group: no-op
    assert len(g2) == 1
    assert a3.remove_from_rate_limit_group() == 0
    assert len(g2) == 0 and a3.get_max_to_read() == 16384
    assert a3.remove_from_rate_limit_group() == 0              # in no group: fine
    with pytest.raises(ValueError):
        g1.remove(a3)
    a2.free()                                                  # a freed member leaves
    assert len(g1) == 1 and a1.get_max_to_read() == 3000


def test_group_exhaustion_holds_members_remove_and_free_release_them(keep):
    g = keep(RateLimitGroup(cfg(1000)))
    (a, b), (c, d) = keep(*pair_new()), keep(*pair_new())
    for m in (a, c):
        g.add(m)
    b.enable(EV_READ)
    d.enable(EV_READ)
    g.decrement_write(1000)                                    # bucket 0: everyone held
    assert a.get_max_to_write() == c.get_max_to_write() == 0
    a.write(b"e" * 100)
    c.write(b"k" * 100)
    assert len(b.input) == len(d.input) == 0
    late, _ = keep(*pair_new())
    g.add(late)                                                # joins suspended
    assert late.get_max_to_write() == 0
    g.decrement_write(-700)                                    # back above 0: resume now
    assert len(b.input) == len(d.input) == 100
    g.decrement_write(10_000)
    a.write(b"e" * 50)
    c.write(b"k" * 50)
    assert g.remove(c) == 0                                    # leaving lifts the hold
    assert len(d.input) == 150 and len(b.input) == 100
    g.free()                                                   # members leave, unthrottled
    assert len(b.input) == 150 and len(g) == 0
    assert a.get_max_to_write() == 16384
    with pytest.raises(RuntimeError, match="freed"):
        g.add(a)
    g.free()                                                   # idempotent


def test_group_aggregate_rate_and_members_finish_together(keep):
    """Five loopback connections read through one 100 kB/s group."""
    g = keep(RateLimitGroup(cfg(10_000, tick=0.1)))
    finished = {}
    all_done = gevent.event.Event()

    def handle(bev, address):
        bev.readexactly(30_000)
        finished[address] = time.monotonic()
        if len(finished) == 5:
            all_done.set()

    server = BuffereventServer(("127.0.0.1", 0), handle, rate_limit_group=g)
    server.start()
    clients = [create_connection(server.address, timeout=5) for _ in range(5)]
    try:
        t0 = time.monotonic()
        for c in clients:
            c.write(b"m" * 30_000)
        assert all_done.wait(10)
    finally:
        for c in clients:
            c.free()
        server.stop()
    times = sorted(t - t0 for t in finished.values())
    expected = (150_000 - 10_000) / 100_000                   # first tick's worth is free
    assert 0.85 * expected <= times[-1] <= 1.15 * expected
    assert times[-1] <= 1.5 * times[0]
    assert g.get_totals()[0] == 150_000


def test_2000_members_share_a_group_cheaply_and_nobody_starves(keep):
    # 128 kB/s: 6400 B per 50 ms tick, i.e. 100 min-share steps of 64 B a tick
    g = keep(RateLimitGroup(TokenBucketConfig(6400, 6400, 6400, 6400, 0.05)))
    n = 2000
    counts = [0] * n
    served = gevent.event.Event()
    left = [n]

    def readcb(bev, i):
        if not counts[i]:
            left[0] -= 1
            if not left[0]:
                served.set()
        counts[i] += len(bev.read())

    made = [pair_new() for _ in range(n)]
    try:
        for i, (a, b) in enumerate(made):
            g.add(a)
            b.setcb(readcb, None, None, i)
            b.enable(EV_READ)
        c0, t0 = time.process_time(), time.monotonic()
        for a, _ in made:
            a.write(b"s" * 2048)
        assert served.wait(5), f"{left[0]} members never got a byte"
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    finally:
        for a, b in made:
            a.free()
            b.free()
    assert wall >= 0.5                         # 2000 x 64 B at 128 kB/s: really throttled
    assert cpu < 0.5 * wall
    assert max(counts) <= 2048


def test_min_share_subsets_take_turns_so_no_member_starves(keep):
    """40 loopback connections read through a group that serves only 4
    min-share steps a tick: each tick wakes a different random subset, so all
    get their turn (waking everyone would let the loop's fixed order pick the
    same few winners every tick)."""
    n, total = 40, 25_600                                     # 100 ticks' worth
    g = keep(RateLimitGroup(cfg(256, tick=0.02)))
    counts, enough, readcb = member_counters(n, total)
    for i in range(n):
        a, b = keep(*tcp_pair())
        g.add(b)
        a.write(b"x" * 20_000)
        b.setcb(readcb, None, None, i)
        b.enable(EV_READ)
    assert enough.wait(10)
    assert min(counts) > 0, f"{counts.count(0)} members starved"
    # random subsets: over 100 ticks every member gets a comparable part
    # (the spread of a random draw, not an exact round robin)
    assert min(counts) >= max(counts) / 5, counts


def test_min_share_0_with_fewer_bytes_than_members_still_delivers_the_rate(keep):
    """set_min_share(0) only disables the floor: with 5 bytes a tick for 10
    members the share is 1 byte (not 5 // 10 = 0), a random 5 are woken each
    tick, and the group moves its 5 bytes per tick with nobody starving."""
    g = keep(RateLimitGroup(TokenBucketConfig(5, 5, 5, 5, tick_len=0.02)))
    g.set_min_share(0)
    n, target = 10, 200                                       # 40 ticks' worth
    counts, enough, readcb = member_counters(n, target)
    made = [keep(*pair_new()) for _ in range(n)]
    for a, _ in made:
        g.add(a)
    assert {a.get_max_to_write() for a, _ in made} == {1}    # 5 // 10 raised to 1 byte
    for i, (a, b) in enumerate(made):
        b.setcb(readcb, None, None, i)
        b.enable(EV_READ)
        a.write(b"x" * 100)
    t0 = time.monotonic()
    assert enough.wait(5), f"only {sum(counts)} bytes moved: the group starved"
    elapsed = time.monotonic() - t0
    assert elapsed >= 0.5                                     # still throttled (~0.8 s)
    assert min(counts) > 0, f"{counts.count(0)} members starved"
    assert g.get_totals()[1] == sum(counts)


# -- the scheduler ---------------------------------------------------------------

def test_scheduler_runs_one_timer_per_tick_length_and_none_when_idle(keep):
    sched = TokenScheduler.for_hub()
    assert TokenScheduler.for_hub() is sched
    timers0, waiting0 = sched.active_timers(), sched.waiting()
    fast, slow, idle = cfg(100, tick=0.05), cfg(100, tick=0.07), cfg(100, tick=0.03)
    held = []
    for c, k in ((fast, 20), (slow, 10)):
        for _ in range(k):
            a, _ = keep(*pair_new())
            a.set_rate_limit(c)
            a.decrement_read_limit(10 ** 9)                  # waits for ticks
            held.append(a)
    for _ in range(10):
        keep(*pair_new())[0].set_rate_limit(idle)                      # limited, not waiting
    assert sched.active_timers() == timers0 + 2
    assert sched.waiting() == waiting0 + 30
    for a in held:
        a.set_rate_limit(None)
    assert sched.active_timers() == timers0 and sched.waiting() == waiting0


def test_limit_calls_from_another_thread_follow_threadsafe(keep):
    """Like every mutator: handed to the hub with BEV_OPT_THREADSAFE, else raise."""
    from gbufferevent import BEV_OPT_THREADSAFE
    a, _ = keep(*pair_new(BEV_OPT_THREADSAFE))
    c, _ = keep(*pair_new())
    c1 = cfg(100)
    errors = []

    def other_thread():
        a.set_rate_limit(c1)
        try:
            c.set_rate_limit(c1)
        except RuntimeError as exc:
            errors.append(exc)

    in_other_thread(other_thread)
    assert a.get_token_bucket_cfg() is c1       # ran on this hub, before done.send()
    assert errors and "another thread" in str(errors[0])
    assert c.get_token_bucket_cfg() is None


def test_group_calls_from_another_thread_raise_like_a_bufferevents():
    """A group belongs to its hub: its mutators raise RuntimeError from another
    thread (they would arm this hub's timers from there) and change nothing."""
    g = RateLimitGroup(cfg(1000))
    a, b = pair_new()
    calls = dict(group_mutators(g, a), free=g.free)
    errors = {}
    sched = TokenScheduler.for_hub()
    timers = sched.active_timers()

    def other_thread():
        for name, call in calls.items():
            try:
                call()
            except RuntimeError as exc:
                errors[name] = str(exc)

    try:
        in_other_thread(other_thread)
        assert set(errors) == set(calls)
        assert all("another thread" in msg for msg in errors.values())
        assert len(g) == 0 and a not in g and g.cfg.read_rate == 1000
        assert (g.get_read_limit(), g.get_write_limit()) == (1000, 1000)
        assert g.get_min_share() == 64 and sched.active_timers() == timers
        assert g.add(a) == 0                          # fine on its own hub
        g.free()
    finally:
        a.free()
        b.free()


def test_a_freed_group_raises_on_every_change_and_stays_readable():
    g = RateLimitGroup(cfg(1000))
    a, b = pair_new()
    g.add(a)
    g.free()
    sched = TokenScheduler.for_hub()
    timers = sched.active_timers()
    for call in group_mutators(g, a).values():
        with pytest.raises(RuntimeError, match="freed"):
            call()
    assert sched.active_timers() == timers           # no timer armed for a freed group
    assert (g.get_read_limit(), g.get_write_limit()) == (1000, 1000)
    assert g.get_totals() == (0, 0) and len(g) == 0 and g.cfg.read_rate == 1000
    assert a not in g and a.get_max_to_write() == 16384    # unthrottled
    g.free()                                         # idempotent
    a.free()
    b.free()
