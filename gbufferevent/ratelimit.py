"""Token-bucket rate limits for bufferevents and groups (libevent's ``bufferevent_ratelim.c``).

Three layers, from plain arithmetic to the hub:

* **Pure logic**, testable without a hub: :class:`TokenBucketConfig`
  (``ev_token_bucket_cfg``), :class:`TokenBucket` (``ev_token_bucket``),
  :func:`tick_of`, :func:`next_tick_delay`, :func:`effective_min_share`,
  :func:`member_share`, :func:`wake_count` and :class:`ShuffledRounds` (which
  waiting group members a tick wakes).
* **The token scheduler** (:class:`TokenScheduler`): one per hub.  A limit
  registers with it only while something waits for tokens; at each tick
  boundary it refills what waits and lifts the suspensions that can go.  It
  runs one one-shot timer per distinct tick length, and none at all while
  nothing waits.
* **Limits on bufferevents** (:func:`set_rate_limit` and the functions below
  it, reached through the ``Bufferevent`` methods of the same names) and
  :class:`RateLimitGroup`.

How a bufferevent is held back, on every kind (socket, pair, filter, TLS):
before a step the kind asks ``_read_allowance()``/``_write_allowance()``, which
with a limit call :func:`max_step`: min(max single read/write, own bucket,
group share).  When that is 0 the direction is *suspended*
(``SUSPEND_BW``/``SUSPEND_BW_GROUP``) and registered with the scheduler; the
kind attempts no zero-length read or write, it stops (a socket stops its
watcher).  After a step the kind reports the bytes (``_charge_read``/
``_charge_write`` -> :func:`charge`), which lowers the buckets and suspends a
direction whose bucket reached 0 or less.  When the scheduler lifts the
suspension, the base class's ``_unsuspend_*`` calls the kind's
``_update_io()``, which restarts its I/O (watchers restarted, pair transfers
resumed, blocked greenlets woken by the bytes that then move).

Nothing polls.  Buckets refill lazily from the tick number whenever they are
looked at (ticks are epoch-aligned as in libevent: tick = floor(now in ms /
tick in ms), "now" being the loop's clock ``loop.now()``), so a bufferevent
that has tokens costs nothing extra, and a tick touches only what waits.
"""
from __future__ import annotations

import functools
import logging
import math
import numbers
import random
import weakref
from typing import (
    Any, Callable, Collection, Dict, Hashable, List, Optional, Protocol, Tuple, TypeVar,
    cast,
)

from gevent._hub_local import get_hub_if_exists
from gevent.hub import get_hub

from .bufferevent import SUSPEND_BW, SUSPEND_BW_GROUP, Bufferevent
from .constants import EV_RATE_LIMIT_MAX, EV_SSIZE_MAX
from ._typing import Hub

__all__ = [
    "TokenBucketConfig", "TokenBucket", "RateLimitGroup", "TokenScheduler",
    "ShuffledRounds", "DEFAULT_MIN_SHARE", "tick_of", "effective_min_share",
    "member_share", "wake_count", "next_tick_delay", "TICK_SLACK",
]

log = logging.getLogger("gbufferevent")

#: A group's default minimum share, in bytes (libevent's 64).
DEFAULT_MIN_SHARE = 64
#: libevent rejects a tick of more than INT_MAX / 1000 seconds.
_MAX_TICK_SECONDS = 2147483
#: Seconds a scheduler timer fires after the tick boundary, so that
#: floor(now / tick) has certainly moved on when it runs: 5 us is about 20
#: ulps of an epoch-scale ``loop.now()``.  Keep it tiny: libev's epoll backend
#: rounds every wait *up* to whole milliseconds, so a delay of 1 ms + 0.2 ms
#: sleeps 2 ms and, at 1 ms ticks, loses a tick (it made 1 B/ms run 29% slow).
TICK_SLACK = 0.000005
_T = TypeVar("_T")
_M = TypeVar("_M", bound=Hashable)
_F = TypeVar("_F", bound=Callable[..., Any])


class TickClient(Protocol):
    """What :meth:`TokenScheduler.wait` calls at each tick boundary: a limit or
    a group, whose ``_on_tick()`` returns True while it still waits."""

    def _on_tick(self) -> bool: ...


def _check_int(value, name, lo, hi):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = int(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in {lo}..{hi}, not {value}")
    return value


def _check_cfg(cfg, name="cfg"):
    if not isinstance(cfg, TokenBucketConfig):
        raise TypeError(f"{name} must be a TokenBucketConfig, not {type(cfg).__name__}")
    return cfg


# ----------------------------------------------------------------------
# Pure logic: configuration, bucket arithmetic, group shares
# ----------------------------------------------------------------------

class TokenBucketConfig:
    """Read and write token-bucket settings (``ev_token_bucket_cfg_new``).

    :param read_rate: bytes added to the read bucket per tick (the average
        read rate), an int >= 1.
    :param read_burst: bytes the read bucket holds at most (the largest read
        burst), an int >= *read_rate*.
    :param write_rate: bytes per tick for writing, as *read_rate*.
    :param write_burst: the largest write burst, as *read_burst*.
    :param tick_len: the tick in seconds (float); None means 1 s.  Fractions
        of a millisecond are dropped (1.5 ms acts as 1 ms).
    :raises TypeError: a rate or burst that is not an int, a *tick_len* that
        is not a number.
    :raises ValueError: a rate < 1, a rate above its burst, a value above
        ``EV_RATE_LIMIT_MAX``, a tick under 1 ms (or negative), or over
        2147483 s (libevent's bound).

    Rates are per tick: ``tick_len=0.1, read_rate=300`` is 3000 bytes per
    second.  Immutable: one config may be shared by any number of
    bufferevents (each keeps its own buckets) and groups.
    """

    __slots__ = ("_read_rate", "_read_burst", "_write_rate", "_write_burst", "_tick_ms")

    def __init__(self, read_rate: int, read_burst: int, write_rate: int, write_burst: int,
                 tick_len: Optional[float] = 1.0) -> None:
        vals = {}
        for name, v in (("read_rate", read_rate), ("read_burst", read_burst),
                        ("write_rate", write_rate), ("write_burst", write_burst)):
            vals[name] = _check_int(v, name, 1, EV_RATE_LIMIT_MAX)
        for d in ("read", "write"):
            if vals[f"{d}_rate"] > vals[f"{d}_burst"]:
                raise ValueError(f"{d}_rate ({vals[d + '_rate']}) must not exceed "
                                 f"{d}_burst ({vals[d + '_burst']})")
        if tick_len is None:
            tick_len = 1.0
        if isinstance(tick_len, bool) or not isinstance(tick_len, numbers.Real):
            raise TypeError(f"tick_len must be a number of seconds or None, "
                            f"not {type(tick_len).__name__}")
        if not math.isfinite(tick_len) or tick_len < 0:
            raise ValueError(f"tick_len must be a finite number of seconds >= 0.001, "
                             f"not {tick_len!r}")
        usec = round(tick_len * 1_000_000)       # as a struct timeval would hold it
        if usec // 1_000_000 > _MAX_TICK_SECONDS:
            raise ValueError(f"tick_len must be at most {_MAX_TICK_SECONDS} seconds")
        tick_ms = usec // 1000
        if tick_ms < 1:
            raise ValueError(f"tick_len must be at least 1 ms, not {tick_len!r} s")
        set_ = object.__setattr__
        set_(self, "_read_rate", vals["read_rate"])
        set_(self, "_read_burst", vals["read_burst"])
        set_(self, "_write_rate", vals["write_rate"])
        set_(self, "_write_burst", vals["write_burst"])
        set_(self, "_tick_ms", tick_ms)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("TokenBucketConfig is immutable")

    _read_rate: int
    _read_burst: int
    _write_rate: int
    _write_burst: int
    _tick_ms: int

    @property
    def read_rate(self) -> int:
        """Read bytes per tick."""
        return self._read_rate

    @property
    def read_burst(self) -> int:
        """Largest read bucket, bytes."""
        return self._read_burst

    @property
    def write_rate(self) -> int:
        """Write bytes per tick."""
        return self._write_rate

    @property
    def write_burst(self) -> int:
        """Largest write bucket, bytes."""
        return self._write_burst

    @property
    def tick_ms(self) -> int:
        """Tick length in whole milliseconds."""
        return self._tick_ms

    @property
    def tick_len(self) -> float:
        """Tick length in seconds (whole milliseconds)."""
        return self._tick_ms / 1000.0

    def rate(self, reading: bool) -> int:
        """Bytes per tick of one direction (*reading* True: read, else write)."""
        return self._read_rate if reading else self._write_rate

    def burst(self, reading: bool) -> int:
        """The burst of one direction, bytes."""
        return self._read_burst if reading else self._write_burst

    def __repr__(self) -> str:
        return (f"TokenBucketConfig(read_rate={self._read_rate}, read_burst="
                f"{self._read_burst}, write_rate={self._write_rate}, write_burst="
                f"{self._write_burst}, tick_len={self.tick_len!r})")


def tick_of(now: float, tick_ms: int) -> int:
    """The tick number at loop time *now* (seconds): floor(now in ms / *tick_ms*).

    Ticks are aligned to the clock's origin (the epoch for libev's
    ``loop.now()``), not to when a limit was set (``ev_token_bucket_get_tick_``).
    """
    return int(now * 1000.0) // tick_ms


def next_tick_delay(now: float, tick_ms: int) -> float:
    """Seconds from loop time *now* to just after the next tick boundary:
    the remaining part of the current tick plus :data:`TICK_SLACK` (5 us), so
    a timer with this delay runs in the next tick, and never more than one
    tick + 5 us after *now*.
    """
    now_ms = now * 1000.0
    due = (int(now_ms) // tick_ms + 1) * tick_ms
    return (due - now_ms) / 1000.0 + TICK_SLACK


class TokenBucket:
    """The read and write buckets of one limit (``ev_token_bucket``); plain arithmetic.

    ``read`` and ``write`` are the levels in bytes (signed: deficit spending
    makes them negative); ``last_tick`` is the tick number of the last refill.
    A new bucket holds one tick's worth (the rates, not the bursts).
    """

    __slots__ = ("read", "write", "last_tick")

    def __init__(self, cfg: TokenBucketConfig, tick: int) -> None:
        self.read = cfg.read_rate
        self.write = cfg.write_rate
        self.last_tick = tick

    def refill(self, cfg: TokenBucketConfig, tick: int) -> bool:
        """Add rate x ticks elapsed since ``last_tick``, never above the burst.

        Returns True if at least one tick elapsed.  A tick number that went
        backwards (the clock was set back) only resynchronises ``last_tick``
        (``ev_token_bucket_update_``).
        """
        n = tick - self.last_tick
        if n <= 0:
            if n < 0:
                self.last_tick = tick
            return False
        self.last_tick = tick
        level = self.read + n * cfg.read_rate
        self.read = level if level < cfg.read_burst else cfg.read_burst
        level = self.write + n * cfg.write_rate
        self.write = level if level < cfg.write_burst else cfg.write_burst
        return True

    def clip(self, cfg: TokenBucketConfig) -> None:
        """Lower the levels to *cfg*'s bursts (a new config for a live bucket)."""
        self.read = min(self.read, cfg.read_burst)
        self.write = min(self.write, cfg.write_burst)

    def level(self, reading: bool) -> int:
        """The level of one direction, bytes."""
        return self.read if reading else self.write

    def take(self, reading: bool, n: int) -> int:
        """Remove *n* bytes (negative *n* adds, unclamped); return the new level."""
        if reading:
            self.read -= n
            return self.read
        self.write -= n
        return self.write


def effective_min_share(configured: int, cfg: TokenBucketConfig) -> int:
    """The min share a group applies: min(*configured*, read rate, write rate)."""
    return min(configured, cfg.read_rate, cfg.write_rate)


def member_share(level: int, members: int, min_share: int) -> int:
    """Bytes one member may move in one step from a group bucket at *level*.

    *level* // *members*, raised to *min_share*, and never below 1 byte
    while *level* > 0 (so a *min_share* of 0, which only disables the
    floor, cannot round every member's share down to 0 and starve the
    group); 0 when *level* <= 0 (``bufferevent_get_rlim_max_``).
    """
    if level <= 0:
        return 0
    share = level // members if members > 1 else level
    floor = min_share if min_share > 0 else 1
    return share if share >= floor else floor


def wake_count(level: int, members: int, min_share: int) -> Optional[int]:
    """How many waiting members a group may wake with *level* bytes in its bucket.

    None means all of them: the bucket gives each of the *members* at least
    *min_share* (at least 1 byte: a *min_share* of 0 counts as 1).  Otherwise
    *level* // *min_share* (at least 1 while the level is positive, 0 when it
    is not): that many members get min-share-sized steps this tick and the
    others wait.
    """
    if level <= 0:
        return 0
    floor = min_share if min_share > 0 else 1
    if level >= members * floor:
        return None
    return max(1, level // floor)


class ShuffledRounds:
    """Picks which waiting members a tick wakes when not all can be served.

    Each *round* is a fresh random permutation of the members waiting when
    it starts; every :meth:`pick` takes the next ones that are still waiting.
    So each tick serves a random subset and a member waits at most about two
    rounds: no one starves (libevent only starts its wake-up sweep at a
    random member).  Pure: give it a seeded ``random.Random`` to replay.
    """

    __slots__ = ("_rng", "_round")

    def __init__(self, rng: Optional[random.Random] = None) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._round: List[Any] = []

    def pick(self, waiting: Collection[_M], k: int) -> List[_M]:
        """Return up to *k* distinct members of *waiting* (a set-like collection)."""
        chosen: List[_M] = []
        seen = set()
        fresh = False
        rnd = self._round
        while len(chosen) < k:
            if not rnd:
                if fresh:
                    break
                rnd = [m for m in waiting if m not in seen]
                self._rng.shuffle(rnd)
                self._round = rnd
                fresh = True
                if not rnd:
                    break
            m = rnd.pop()
            if m in waiting and m not in seen:
                seen.add(m)
                chosen.append(m)
        return chosen


def random_rotation(items: List[_T], rng: random.Random) -> List[_T]:
    """*items* (a list) rotated to start at a random index (libevent's sweep)."""
    if len(items) < 2:
        return items
    i = rng.randrange(len(items))
    return items[i:] + items[:i]


# ----------------------------------------------------------------------
# The hub's token scheduler
# ----------------------------------------------------------------------

class _Wheel:
    """Clients waiting on one tick length, and the timer for the next boundary."""

    __slots__ = ("tick_ms", "clients", "timer")

    def __init__(self, tick_ms):
        self.tick_ms = tick_ms
        self.clients = {}      # insertion-ordered set: client -> None
        self.timer = None


class TokenScheduler:
    """The hub's token scheduler: refills buckets at tick boundaries and wakes what waits.

    One per hub (:meth:`for_hub`).  A per-bufferevent limit or a
    :class:`RateLimitGroup` registers with :meth:`wait` only while something
    waits for tokens (a suspended direction, an exhausted group).  There is a
    single one-shot timer per distinct tick length, armed for the next
    epoch-aligned boundary (tick number = floor(``loop.now()`` in ms /
    tick ms)); when it fires each registered client is called once
    (``client._on_tick() -> still waiting?``) and the timer is re-armed only
    if something still waits.  No timer runs while nothing waits: no CPU
    between ticks, none when idle.
    """

    _by_hub: weakref.WeakKeyDictionary[Any, TokenScheduler] = weakref.WeakKeyDictionary()

    def __init__(self, hub: Hub) -> None:
        self.loop = hub.loop
        self._wheels: Dict[int, _Wheel] = {}

    @classmethod
    def for_hub(cls, hub: Optional[Hub] = None) -> TokenScheduler:
        """The scheduler of *hub* (default: the current hub), created on first use.

        No libevent counterpart: libevent arms a timer per limited
        bufferevent and per group instead.
        """
        hub = hub if hub is not None else get_hub()
        sched = cls._by_hub.get(hub)
        if sched is None:
            sched = cls._by_hub[hub] = cls(hub)
        return sched

    def tick(self, tick_ms: int) -> int:
        """The current tick number for ticks of *tick_ms* milliseconds (:func:`tick_of`)."""
        return tick_of(self.loop.now(), tick_ms)

    def wait(self, tick_ms: int, client: TickClient) -> None:
        """Call ``client._on_tick()`` at each *tick_ms* boundary until it returns False."""
        wheel = self._wheels.get(tick_ms)
        if wheel is None:
            wheel = self._wheels[tick_ms] = _Wheel(tick_ms)
        wheel.clients[client] = None
        if wheel.timer is None:
            self._arm(wheel)

    def cancel(self, tick_ms: int, client: TickClient) -> bool:
        """Stop calling *client*; returns True if it was registered."""
        wheel = self._wheels.get(tick_ms)
        if wheel is None or client not in wheel.clients:
            return False
        del wheel.clients[client]
        if not wheel.clients and wheel.timer is not None:
            wheel.timer.close()
            wheel.timer = None
        return True

    def rebase(self, bucket: TokenBucket, old: TokenBucketConfig, new: TokenBucketConfig,
               client: TickClient) -> None:
        """Move a live *bucket* from config *old* to *new* (and *client*'s
        registration, if the tick length changes): refill it with the old
        rates up to now, then keep its levels, clipped to the new bursts."""
        bucket.refill(old, self.tick(old.tick_ms))
        if new.tick_ms != old.tick_ms:
            waiting = self.cancel(old.tick_ms, client)
            bucket.last_tick = self.tick(new.tick_ms)
            if waiting:
                self.wait(new.tick_ms, client)
        bucket.clip(new)

    def active_timers(self) -> int:
        """Number of armed timers (one per tick length that something waits on)."""
        return sum(1 for w in self._wheels.values() if w.timer is not None)

    def waiting(self) -> int:
        """Number of registered clients (limits and groups waiting for a tick)."""
        return sum(len(w.clients) for w in self._wheels.values())

    def _arm(self, wheel):
        timer = self.loop.timer(next_tick_delay(self.loop.now(), wheel.tick_ms))
        wheel.timer = timer
        timer.start(self._fire, wheel)

    def _fire(self, wheel):
        if wheel.timer is not None:
            wheel.timer.close()
            wheel.timer = None
        clients, wheel.clients = wheel.clients, {}
        for client in clients:
            try:
                keep = client._on_tick()
            except Exception:  # noqa: BLE001 - never let one limit stop the others
                log.exception("rate-limit tick of %r failed", client)
                keep = True
            if keep:
                wheel.clients[client] = None
        if wheel.clients and wheel.timer is None:
            self._arm(wheel)


# ----------------------------------------------------------------------
# Per-bufferevent limits
# ----------------------------------------------------------------------

def _suspend(bev, reading, reason):
    if reading:
        bev._suspend_read(reason)
    else:
        bev._suspend_write(reason)


def _unsuspend(bev, reading, reason):
    if reading:
        bev._unsuspend_read(reason)
    else:
        bev._unsuspend_write(reason)


class _BevLimit:
    """A bufferevent's own buckets (libevent's ``struct bufferevent_rate_limit``).

    Stored as ``bev._rl``; registered with the scheduler while a direction is
    suspended for bandwidth (``SUSPEND_BW``).
    """

    __slots__ = ("bev", "cfg", "bucket", "sched")

    def __init__(self, bev, cfg):
        self.bev = bev
        self.cfg = cfg
        self.sched = TokenScheduler.for_hub(bev.hub)
        self.bucket = TokenBucket(cfg, self.sched.tick(cfg.tick_ms))

    def level(self, reading):
        """The bucket after a refill to the current tick, bytes."""
        cfg = self.cfg
        self.bucket.refill(cfg, self.sched.tick(cfg.tick_ms))
        return self.bucket.read if reading else self.bucket.write

    def take(self, reading, n):
        """Remove *n* bytes; return (level before, level after)."""
        old = self.level(reading)
        return old, self.bucket.take(reading, n)

    def suspend(self, reading):
        _suspend(self.bev, reading, SUSPEND_BW)
        self.sched.wait(self.cfg.tick_ms, self)

    def set_cfg(self, cfg):
        """Switch to *cfg*: keep the levels, clipped to its bursts."""
        self.sched.rebase(self.bucket, self.cfg, cfg, self)
        self.cfg = cfg

    def _on_tick(self):
        bev = self.bev
        if bev._rl is not self:
            return False
        self.level(True)
        bucket = self.bucket
        if bev._susp_r & SUSPEND_BW and bucket.read > 0:
            bev._unsuspend_read(SUSPEND_BW)
        if bev._susp_w & SUSPEND_BW and bucket.write > 0:
            bev._unsuspend_write(SUSPEND_BW)
        return bev._rl is self and bool((bev._susp_r | bev._susp_w) & SUSPEND_BW)

    def detach(self, bev):
        """Forget *bev* (freed or limit removed); stop waiting for ticks."""
        self.sched.cancel(self.cfg.tick_ms, self)
        if bev._rl is self:
            bev._rl = None

    def __repr__(self):
        return f"<rate limit {self.cfg!r} of {self.bev!r}>"


def set_rate_limit(bev: Bufferevent, cfg: Optional[TokenBucketConfig]) -> int:
    """``Bufferevent.set_rate_limit`` (``bufferevent_set_rate_limit``): see there.

    :raises TypeError: *cfg* is neither a TokenBucketConfig nor None.
    :raises BuffereventClosedError: *bev* was freed.  Returns 0.
    """
    if cfg is not None:
        _check_cfg(cfg)
    rl = bev._rl
    if cfg is None:
        if rl is not None:
            rl.detach(bev)
            bev._unsuspend_read(SUSPEND_BW)
            bev._unsuspend_write(SUSPEND_BW)
        return 0
    bev._check_alive()
    if rl is None:
        rl = bev._rl = _BevLimit(bev, cfg)
    elif rl.cfg is cfg:
        return 0
    else:
        rl.set_cfg(cfg)
    for reading in (True, False):
        if rl.level(reading) <= 0:
            rl.suspend(reading)
    return 0


def get_limit(bev: Bufferevent, reading: bool) -> int:
    """``get_read_limit``/``get_write_limit`` (``bufferevent_get_read_limit``/
    ``..._write_limit``): the own bucket in bytes, or ``EV_SSIZE_MAX``."""
    rl = bev._rl
    return EV_SSIZE_MAX if rl is None else rl.level(reading)


def decrement_limit(bev: Bufferevent, reading: bool, decr: int) -> int:
    """``decrement_read_limit``/``decrement_write_limit``
    (``bufferevent_decrement_read_limit``/``..._write_limit``): see there.

    :raises TypeError: *decr* not an int.  :raises ValueError: beyond
        +-``EV_SSIZE_MAX``.  :raises RuntimeError: no rate limit set.
    """
    decr = _check_int(decr, "decr", -EV_SSIZE_MAX, EV_SSIZE_MAX)
    rl = bev._rl
    if rl is None:
        raise RuntimeError("the bufferevent has no rate limit (call set_rate_limit first)")
    old, new = rl.take(reading, decr)
    if old > 0 >= new:
        rl.suspend(reading)
    elif old <= 0 < new:
        _unsuspend(bev, reading, SUSPEND_BW)
    return 0


def max_step(bev: Bufferevent, reading: bool) -> int:
    """Bytes one step may move now: min(max single, own bucket, group share)
    (libevent's ``bufferevent_get_read_max_``/``bufferevent_get_write_max_``).

    Never negative.  When the answer is 0 because a bucket is empty, the
    direction is suspended and will be resumed by the scheduler.
    """
    n = bev._max_read if reading else bev._max_write
    rl = bev._rl
    if rl is not None:
        level = rl.level(reading)
        if level <= 0:
            rl.suspend(reading)
            return 0
        if level < n:
            n = level
    group = bev._group
    if group is not None:
        share = group._share(reading)
        if share <= 0:
            group._suspend_member(bev, reading)
            return 0
        if share < n:
            n = share
    return n


def charge(bev: Bufferevent, n: int, reading: bool) -> None:
    """Charge *n* bytes that *bev* moved to its buckets and group
    (``bufferevent_decrease_read_buckets_``/``..._write_buckets_``)."""
    rl = bev._rl
    if rl is not None and rl.take(reading, n)[1] <= 0:
        rl.suspend(reading)
    group = bev._group
    if group is not None:
        group._charge(bev, reading, n)


# ----------------------------------------------------------------------
# Groups
# ----------------------------------------------------------------------

class _Direction:
    """A group's per-direction state."""

    __slots__ = ("reading", "exhausted", "waiting", "rounds", "total", "share", "share_tick")

    def __init__(self, reading, rng):
        self.reading = reading
        self.exhausted = False     # bucket went <= 0; waiting for a refill
        self.waiting = {}          # members suspended for this group: bev -> None
        self.rounds = ShuffledRounds(rng)
        self.total = 0             # bytes moved by members since the last reset
        self.share = 0             # member share fixed for the tick share_tick
        self.share_tick = None


def _group_call(live: bool = True) -> Callable[[_F], _F]:
    """Guard a :class:`RateLimitGroup` method: the group belongs to its hub.

    Called from another thread it raises ``RuntimeError`` (as a bufferevent
    without ``BEV_OPT_THREADSAFE`` does: it would arm timers of a hub that
    runs elsewhere); with *live*, calling it on a freed group raises
    ``RuntimeError`` too.
    """
    def deco(method: _F) -> _F:
        name = method.__name__

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any) -> Any:
            if get_hub_if_exists() is not self.hub:
                raise RuntimeError(
                    f"{name}() called from another thread: a rate-limit group "
                    "belongs to the hub that made it")
            if live and self._freed:
                raise RuntimeError(f"{name}() on a freed rate-limit group")
            return method(self, *args)
        return cast(_F, wrapper)
    return deco


class RateLimitGroup:
    """Bufferevents sharing one pair of token buckets (``bufferevent_rate_limit_group_new``).

    :param cfg: a :class:`TokenBucketConfig` (rates and bursts in bytes per
        tick) for the whole group.
    :param hub: the gevent hub of the members (default: the current hub).
    :raises TypeError: *cfg* is not a TokenBucketConfig.

    Each member's step is the group bucket / number of members (all members,
    busy or idle), raised to the min share (:meth:`set_min_share`, 64 bytes
    by default); it is computed once per tick, from the level the tick starts
    with, so every member gets the same step whatever order the loop serves
    them in (libevent recomputes it at each step).  When the bucket
    cannot give every member its min share, each tick wakes a random subset
    of the waiting members (min-share-sized steps) and the others wait for a
    later tick, in shuffled rounds so that no member starves.  A member with
    its own limit too gets the lower of the two.  The bucket starts with one
    tick's worth (the rates).

    A group belongs to its hub, as a bufferevent does: its methods that
    change it (:meth:`set_cfg`, :meth:`set_min_share`, :meth:`add`,
    :meth:`remove`, :meth:`reset_totals`, :meth:`decrement_read`,
    :meth:`decrement_write`, :meth:`free`) raise ``RuntimeError`` when
    called from another thread.  After :meth:`free` the getters still
    answer, and every one of those methods but :meth:`free` raises
    ``RuntimeError`` (use after free).
    """

    def __init__(self, cfg: TokenBucketConfig, hub: Optional[Hub] = None) -> None:
        _check_cfg(cfg)
        self.hub = hub if hub is not None else get_hub()
        self._sched = TokenScheduler.for_hub(self.hub)
        self._cfg = cfg
        self._bucket = TokenBucket(cfg, self._sched.tick(cfg.tick_ms))
        self._members: Dict[Bufferevent, None] = {}   # insertion-ordered set
        self._rng = random.Random()
        self._dirs = (_Direction(True, self._rng), _Direction(False, self._rng))
        self._min_share_cfg = DEFAULT_MIN_SHARE
        self._min_share = effective_min_share(DEFAULT_MIN_SHARE, cfg)
        self._freed = False

    def __repr__(self) -> str:
        return (f"<RateLimitGroup {len(self._members)} members read={self.get_read_limit()} "
                f"write={self.get_write_limit()} {self._cfg!r}>")

    def __len__(self) -> int:
        """Number of members."""
        return len(self._members)

    def __contains__(self, bev: object) -> bool:
        return bev in self._members

    @property
    def cfg(self) -> TokenBucketConfig:
        """The group's :class:`TokenBucketConfig` (rates and bursts in bytes per tick)."""
        return self._cfg

    # -- configuration ----------------------------------------------------

    @_group_call()
    def set_cfg(self, cfg: TokenBucketConfig) -> int:
        """Use *cfg* from now on (``bufferevent_rate_limit_group_set_cfg``).

        The buckets keep their levels, clipped to the new bursts; the min share
        is recomputed.  :raises TypeError: not a TokenBucketConfig.
        :raises RuntimeError: another thread, or the group was freed.  Returns 0.
        """
        _check_cfg(cfg)
        self._sched.rebase(self._bucket, self._cfg, cfg, self)
        self._cfg = cfg
        self._min_share = effective_min_share(self._min_share_cfg, cfg)
        self._changed()
        return 0

    @_group_call()
    def set_min_share(self, share: int) -> int:
        """Set the smallest step a member gets, bytes
        (``bufferevent_rate_limit_group_set_min_share``).

        Default 64; 0 disables the floor, but a member's step is still at
        least 1 byte while the group bucket is positive (with fewer bytes
        than members, a random subset moves 1 byte each tick, in rounds).
        The share applied is never above the config's rates.
        :raises TypeError: not an int.  :raises ValueError: negative or above
        ``EV_SSIZE_MAX``.  :raises RuntimeError: another thread, or the group
        was freed.  Returns 0.
        """
        self._min_share_cfg = _check_int(share, "share", 0, EV_SSIZE_MAX)
        self._min_share = effective_min_share(self._min_share_cfg, self._cfg)
        self._changed()
        return 0

    def get_min_share(self) -> int:
        """The min share applied now, bytes: min(configured, read rate, write rate).

        No libevent getter; libevent applies the same bound.
        """
        return self._min_share

    # -- membership -------------------------------------------------------

    @_group_call()
    def add(self, bev: Bufferevent) -> int:
        """Make *bev* a member (``bufferevent_add_to_rate_limit_group``).

        A bufferevent is in at most one group: adding it to another moves it;
        adding it again is a no-op.  Joining a group whose bucket is empty
        suspends it at once.
        :raises TypeError: not a Bufferevent.  :raises ValueError: *bev* runs
            on another hub.  :raises RuntimeError: the group was freed, or
            *bev* was (``BuffereventClosedError``), or called from another
            thread.
        :returns: 0.
        """
        if not isinstance(bev, Bufferevent):
            raise TypeError(f"bev must be a Bufferevent, not {type(bev).__name__}")
        bev._check_alive()
        if bev.hub is not self.hub:
            raise ValueError("bev runs on another hub than the rate-limit group")
        old = bev._group
        if old is self:
            return 0
        if old is not None:
            old._remove_member(bev, unsuspend=False)
        self._members[bev] = None
        bev._group = self
        self._changed()
        for d in self._dirs:
            if d.exhausted:
                self._suspend_member(bev, d.reading)
            else:
                _unsuspend(bev, d.reading, SUSPEND_BW_GROUP)
        return 0

    @_group_call()
    def remove(self, bev: Bufferevent) -> int:
        """Take *bev* out of the group, lifting the group's hold on it
        (``bufferevent_remove_from_rate_limit_group``).

        :raises ValueError: *bev* is not a member.  :raises RuntimeError:
            another thread, or the group was freed.  Returns 0.
        """
        if bev not in self._members:
            raise ValueError("bev is not a member of this rate-limit group")
        self._remove_member(bev, unsuspend=True)
        return 0

    def _remove_member(self, bev, unsuspend):
        self._members.pop(bev, None)
        self._changed()
        for d in self._dirs:
            d.waiting.pop(bev, None)
        if bev._group is self:
            bev._group = None
        if unsuspend:
            bev._unsuspend_read(SUSPEND_BW_GROUP)
            bev._unsuspend_write(SUSPEND_BW_GROUP)

    @_group_call(live=False)
    def free(self) -> None:
        """Release the group; its members leave it and are no longer held back
        by it (``bufferevent_rate_limit_group_free``, as the spec says).

        Totals and levels stay readable; the methods that change a group
        raise ``RuntimeError`` afterwards.  Idempotent.
        :raises RuntimeError: called from another thread.
        """
        if self._freed:
            return
        self._freed = True
        self._sched.cancel(self._cfg.tick_ms, self)
        for bev in list(self._members):
            self._remove_member(bev, unsuspend=True)

    # -- buckets and totals ---------------------------------------------

    def _level(self, reading):
        cfg = self._cfg
        self._bucket.refill(cfg, self._sched.tick(cfg.tick_ms))
        return self._bucket.read if reading else self._bucket.write

    def get_read_limit(self) -> int:
        """The group's read bucket now, bytes; may be negative (deficit)
        (``bufferevent_rate_limit_group_get_read_limit``)."""
        return self._level(True)

    def get_write_limit(self) -> int:
        """The group's write bucket now, bytes; may be negative (deficit)
        (``bufferevent_rate_limit_group_get_write_limit``)."""
        return self._level(False)

    def get_totals(self) -> Tuple[int, int]:
        """``(bytes_read, bytes_written)`` by members since creation or the last
        :meth:`reset_totals` (``bufferevent_rate_limit_group_get_totals``).

        Bytes stay counted after a member leaves; manual decrements do not
        count.  Python ints: no wrap-around at 2**32 or 2**64.
        """
        return self._dirs[0].total, self._dirs[1].total

    @_group_call()
    def reset_totals(self) -> None:
        """Set both totals to 0 (``bufferevent_rate_limit_group_reset_totals``).

        :raises RuntimeError: another thread, or the group was freed.
        """
        for d in self._dirs:
            d.total = 0

    @_group_call()
    def decrement_read(self, decr: int) -> int:
        """Take *decr* bytes from the read bucket; negative adds
        (``bufferevent_rate_limit_group_decrement_read``).

        Going to 0 or below holds every member's reading until a refill; going
        back above 0 resumes them at once.  Totals are not touched.
        :raises TypeError: not an int.  :raises ValueError: beyond
            +-``EV_SSIZE_MAX``.  :raises RuntimeError: another thread, or the
            group was freed.  Returns 0.
        """
        return self._decrement(True, decr)

    @_group_call()
    def decrement_write(self, decr: int) -> int:
        """Take *decr* bytes from the write bucket; negative adds
        (``bufferevent_rate_limit_group_decrement_write``; see :meth:`decrement_read`).

        :raises TypeError: not an int.  :raises ValueError: beyond
            +-``EV_SSIZE_MAX``.  :raises RuntimeError: another thread, or the
            group was freed.  Returns 0.
        """
        return self._decrement(False, decr)

    def _decrement(self, reading, decr):
        decr = _check_int(decr, "decr", -EV_SSIZE_MAX, EV_SSIZE_MAX)
        d = self._dirs[0 if reading else 1]
        old = self._level(reading)
        new = self._bucket.take(reading, decr)
        self._changed()
        if old > 0 >= new:
            self._exhaust(d)
        elif old <= 0 < new:
            d.exhausted = False
            self._wake(d, new)
        return 0

    # -- hooks used by max_step/charge and the scheduler --------------------

    def _share(self, reading):
        # The share is computed once per tick from the level the tick starts
        # with (libevent recomputes it at every step, so whoever steps first
        # in a tick gets more); membership and bucket changes recompute it.
        d = self._dirs[0 if reading else 1]
        level = self._level(reading)
        if d.exhausted or level <= 0:
            return 0
        if d.share_tick != self._bucket.last_tick:
            d.share_tick = self._bucket.last_tick
            d.share = member_share(level, len(self._members), self._min_share)
        return d.share

    def _changed(self):
        """Membership or settings changed: recompute the shares at the next step."""
        for d in self._dirs:
            d.share_tick = None

    def _charge(self, bev, reading, n):
        d = self._dirs[0 if reading else 1]
        d.total += n
        self._level(reading)
        if self._bucket.take(reading, n) <= 0:
            self._exhaust(d)
            self._suspend_member(bev, reading)

    def _exhaust(self, d):
        if not d.exhausted:
            d.exhausted = True
            self._sched.wait(self._cfg.tick_ms, self)

    def _suspend_member(self, bev, reading):
        self._dirs[0 if reading else 1].waiting[bev] = None
        _suspend(bev, reading, SUSPEND_BW_GROUP)
        self._sched.wait(self._cfg.tick_ms, self)

    def _wake(self, d, level):
        """Lift the hold on all waiting members, or on a fair subset of them."""
        if not d.waiting:
            return
        k = wake_count(level, len(self._members), self._min_share)
        if k is None:
            chosen = random_rotation(list(d.waiting), self._rng)
        else:
            chosen = d.rounds.pick(d.waiting, k)
        for bev in chosen:
            if bev in d.waiting:
                del d.waiting[bev]
                _unsuspend(bev, d.reading, SUSPEND_BW_GROUP)

    def _on_tick(self):
        if self._freed:
            return False
        threshold = self._min_share or 1
        for d in self._dirs:
            level = self._level(d.reading)
            if d.exhausted and level >= threshold:
                d.exhausted = False
            if not d.exhausted:
                self._wake(d, level)
        return any(d.exhausted or d.waiting for d in self._dirs)
