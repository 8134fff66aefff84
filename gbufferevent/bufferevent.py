"""The bufferevent base class: what every kind shares.

A :class:`Bufferevent` owns two :class:`~gbufferevent.buffer.Buffer` objects
(``input`` and ``output``), the callbacks and their watermarks, the
enabled/suspended state of each direction, the generic read/write timeouts, the
per-step caps (max single read/write), the hooks that rate limiting plugs into,
and a greenlet-blocking, socket-like API built on top of all that.

Kinds (socket, pair, filter, TLS) subclass it the way libevent's
``bufferevent_*.c`` files implement ``struct bufferevent_ops``.  A kind:

* calls :meth:`_trigger_read` after it appended bytes to ``input``,
  :meth:`_trigger_write` after it took bytes out of ``output``, and
  :meth:`_trigger_event` for EOF/ERROR/TIMEOUT/CONNECTED;
* overrides :meth:`_update_io` to start or stop its I/O whenever
  :meth:`_can_read`/:meth:`_can_write` or the output may have changed
  (it must call ``super()._update_io()`` so timeouts follow);
* asks :meth:`_read_allowance`/:meth:`_write_allowance` how much one step may
  move, and reports what it moved with :meth:`_charge_read`/:meth:`_charge_write`;
* may override ``_be_flush``, ``_be_free``, ``_be_shutdown_write``,
  ``_be_close_ready``, ``getfd``, ``setfd``, ``get_underlying``.

Everything that waits waits on the hub: watchers, timers and
``loop.run_callback``; blocked greenlets wait on gevent ``Waiter`` objects.
"""
from __future__ import annotations

import functools
import logging
import math
import socket as _socket
from typing import (
    IO, TYPE_CHECKING, Any, Callable, List, Optional, Tuple, TypeVar, cast,
)

from gevent import getcurrent
from gevent._hub_local import get_hub_if_exists
from gevent.hub import Waiter, get_hub

from .buffer import Buffer, _as_bytes, _check_size
from .constants import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_TIMEOUT, BEV_EVENT_WRITING, BEV_FINISHED, BEV_FLUSH, BEV_NORMAL,
    BEV_OPT_DEFER_CALLBACKS, BEV_OPT_THREADSAFE, EV_READ, EV_SSIZE_MAX, EV_WRITE,
    MAX_SINGLE_READ_DEFAULT, MAX_SINGLE_WRITE_DEFAULT, Event, FlushMode, Options,
    _ALL_EVENTS, _ALL_OPTIONS,
)
from .errors import (
    BuffereventClosedError, CallbackError, IncompleteReadError, LimitOverrunError,
)
from ._typing import BytesLike, DataCallback, EventCallback, Hub, SocketLike

if TYPE_CHECKING:
    from .ratelimit import _BevLimit

__all__ = ["Bufferevent", "DEFAULT_SEND_BUFFER", "DEFAULT_RECV_BUFFER"]

log = logging.getLogger("gbufferevent")

#: Reasons a direction can be suspended (libevent's ``BEV_SUSPEND_*``); each is
#: an independent bit, the direction runs only when none is set.
SUSPEND_WM = 0x01          # read high watermark reached
SUSPEND_BW = 0x02          # own token bucket empty
SUSPEND_BW_GROUP = 0x04    # group token bucket empty
SUSPEND_LOOKUP = 0x08      # waiting for DNS / connect
SUSPEND_FILTER = 0x10      # a filter above does not want data yet

#: Read-ahead of the blocking layer: once a blocking read has enabled
#: ``EV_READ``, a bufferevent with no read high watermark of its own stops
#: reading while this many bytes wait in ``input`` (so a peer cannot make a
#: greenlet that reads line by line buffer without bound), in bytes.  A call
#: that needs more (``readexactly(n)``, a long line) raises it for itself.
DEFAULT_RECV_BUFFER = 256 * 1024

#: How many bytes the blocking layer lets queue in ``output`` before
#: ``send``/``sendall`` wait (unless a write high watermark is set), in bytes.
DEFAULT_SEND_BUFFER = 256 * 1024

#: A closing bufferevent whose output makes no progress for this many seconds
#: (and has no write timeout of its own) gives up and is freed.
CLOSE_LINGER = 60.0
#: Bytes the blocking layer may move through its fast paths before it yields
#: to the hub once, so a greenlet that always finds data cannot starve others.
FAST_PATH_BUDGET = 512 * 1024

_PEND_READ = 1
_PEND_WRITE = 2
_TIMED_OUT = object()
_F = TypeVar("_F", bound=Callable[..., Any])
_B = TypeVar("_B", bound="Bufferevent")


def _check_events(events: int, argname: str = "events") -> int:
    if isinstance(events, bool) or not isinstance(events, int):
        raise TypeError(f"{argname} must be an int (EV_READ|EV_WRITE), "
                        f"not {type(events).__name__}")
    if events & ~_ALL_EVENTS or events < 0:
        raise ValueError(f"{argname} has unknown bits: {events:#x} "
                         "(only EV_READ=0x02 and EV_WRITE=0x04 are allowed)")
    return events


def _check_timeout(value: Optional[float], argname: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{argname} must be a number of seconds or None, "
                        f"not {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{argname} must be a finite number of seconds >= 0, "
                         f"not {value!r}")
    return float(value) or None


def _check_cb(cb, argname):
    if cb is not None and not callable(cb):
        raise TypeError(f"{argname} must be callable or None, not {type(cb).__name__}")
    return cb


def _owned(method: _F) -> _F:
    """Run *method* on the bufferevent's own hub.

    A bufferevent belongs to the hub (thread) that made it.  Called from
    another thread, the call is handed to that hub with
    ``loop.run_callback_threadsafe`` if the bufferevent has
    ``BEV_OPT_THREADSAFE`` (and returns 0 at once), else it raises
    ``RuntimeError``.
    """
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any) -> Any:
        if get_hub_if_exists() is self.hub:
            return method(self, *args)
        if not self.options & BEV_OPT_THREADSAFE:
            raise _foreign_thread_error(name)
        self.loop.run_callback_threadsafe(method, self, *args)
        return 0
    return cast(_F, wrapper)


def _foreign_thread_error(name: str) -> RuntimeError:
    """The error of public call *name* made from a thread that does not own
    the bufferevent (no ``BEV_OPT_THREADSAFE``)."""
    return RuntimeError(
        f"{name}() called from another thread: a bufferevent belongs to the "
        "hub that made it (create it with BEV_OPT_THREADSAFE to allow this)")


class Bufferevent:
    """Base of every bufferevent kind (``struct bufferevent``).

    :param options: ``BEV_OPT_*`` flags (:class:`~gbufferevent.Options`).
    :param hub: the gevent hub whose loop drives this bufferevent
        (default: the current thread's hub).
    :raises TypeError: *options* is not an int.
    :raises ValueError: unknown option bits.
    """

    def __init__(self, options: int = 0, hub: Optional[Hub] = None) -> None:
        if isinstance(options, bool) or not isinstance(options, int):
            raise TypeError(f"options must be an int, not {type(options).__name__}")
        if options & ~_ALL_OPTIONS or options < 0:
            raise ValueError(f"options has unknown bits: {options:#x}")
        self.options = Options(options)
        self.hub = hub if hub is not None else get_hub()
        self.loop = self.hub.loop
        self.input = Buffer()
        self.output = Buffer()
        self.input._on_drain = self._input_drained
        self.output._on_add = self._output_added
        self._enabled = EV_WRITE
        self._susp_r = 0
        self._susp_w = 0
        self._rd_lo = self._rd_hi = 0
        self._rd_hi_implicit = False   # _rd_hi is the blocking layer's read-ahead
        self._wr_lo = self._wr_hi = 0
        self._readcb: Optional[DataCallback] = None
        self._writecb: Optional[DataCallback] = None
        self._eventcb: Optional[EventCallback] = None
        self._cbarg: Any = None
        self._max_read = MAX_SINGLE_READ_DEFAULT
        self._max_write = MAX_SINGLE_WRITE_DEFAULT
        self._deferred = bool(options & BEV_OPT_DEFER_CALLBACKS)
        self._pend = 0
        self._pend_events = 0
        self._pend_scheduled = False
        # generic timeouts (seconds), their timers, last activity (loop time)
        self._rtimeout: Optional[float] = None
        self._wtimeout: Optional[float] = None
        self._rtimer: Any = None      # loop timers (gevent watchers)
        self._wtimer: Any = None
        self._rlast = self._wlast = 0.0
        # rate limiting (filled in by gbufferevent.ratelimit)
        self._rl: Optional[_BevLimit] = None
        self._group: Optional[RateLimitGroup] = None
        # lifecycle
        self._freed = False
        self._closing = False
        self._shut_wr = False      # shutdown(SHUT_WR) asked, not yet done
        self._shut_wr_done = False
        self._eof = False
        self._error: Optional[BaseException] = None
        # blocking layer
        self._readers: List[Any] = []
        self._writers: List[Any] = []         # (waiter, threshold)
        self._sock_timeout: Optional[float] = None
        self._fast_budget = FAST_PATH_BUDGET

    def __repr__(self) -> str:
        state = "freed" if self._freed else f"enabled={self._enabled:#x}"
        return (f"<{type(self).__name__} {state} in={len(self.input)} "
                f"out={len(self.output)}>")

    # ------------------------------------------------------------------
    # Callbacks
    # ------------------------------------------------------------------

    @_owned
    def setcb(self, readcb: Optional[DataCallback], writecb: Optional[DataCallback],
              eventcb: Optional[EventCallback], cbarg: Any = None) -> int:
        """Set the callbacks (``bufferevent_setcb``).

        ``readcb(bev, cbarg)`` runs when ``input`` reaches the read low
        watermark, ``writecb(bev, cbarg)`` when ``output`` drops to the write
        low watermark, ``eventcb(bev, events, cbarg)`` on EOF, ERROR, TIMEOUT
        and CONNECTED (``events`` is a :class:`~gbufferevent.Event`).  Any may
        be None.  Callbacks run in the hub and must not block.
        """
        readcb = _check_cb(readcb, "readcb")
        writecb = _check_cb(writecb, "writecb")
        eventcb = _check_cb(eventcb, "eventcb")
        if self._freed and (readcb or writecb or eventcb):
            self._check_alive()
        self._readcb, self._writecb, self._eventcb = readcb, writecb, eventcb
        self._cbarg = cbarg
        return 0

    def getcb(self) -> Tuple[Optional[DataCallback], Optional[DataCallback],
                             Optional[EventCallback], Any]:
        """Return ``(readcb, writecb, eventcb, cbarg)`` (``bufferevent_getcb``)."""
        return self._readcb, self._writecb, self._eventcb, self._cbarg

    # ------------------------------------------------------------------
    # Enable / disable / suspension
    # ------------------------------------------------------------------

    @_owned
    def enable(self, events: int) -> int:
        """Enable reading and/or writing (``bufferevent_enable``).

        :param events: ``EV_READ``, ``EV_WRITE`` or both.
        :raises ValueError: unknown bits.
        :returns: 0.
        """
        _check_events(events)
        self._check_alive()
        self._enabled |= events
        self._update_io()
        return 0

    @_owned
    def disable(self, events: int) -> int:
        """Disable reading and/or writing (``bufferevent_disable``). Returns 0.

        :param events: ``EV_READ``, ``EV_WRITE`` or both.
        :raises ValueError: unknown bits.  A freed bufferevent is a no-op.
        """
        _check_events(events)
        if self._freed:
            return 0
        self._enabled &= ~events
        self._update_io()
        return 0

    def get_enabled(self) -> int:
        """Return the enabled directions as ``EV_READ``/``EV_WRITE`` bits
        (``bufferevent_get_enabled``)."""
        return self._enabled

    def _can_read(self):
        return bool(self._enabled & EV_READ) and not self._susp_r and not self._freed

    def _can_write(self):
        return bool(self._enabled & EV_WRITE) and not self._susp_w and not self._freed

    def _suspend_read(self, reason):
        if not self._susp_r & reason:
            self._susp_r |= reason
            self._update_io()

    def _unsuspend_read(self, reason):
        if self._susp_r & reason:
            self._susp_r &= ~reason
            self._update_io()

    def _suspend_write(self, reason):
        if not self._susp_w & reason:
            self._susp_w |= reason
            self._update_io()

    def _unsuspend_write(self, reason):
        if self._susp_w & reason:
            self._susp_w &= ~reason
            self._update_io()

    def _update_io(self):
        """Start/stop the kind's I/O to match the state. Kinds extend this."""
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()

    def _output_added(self):
        """``output`` grew (user write): kinds start writing."""
        self._update_io()

    def _input_drained(self):
        """``input`` shrank (user read): lift the high-watermark suspension.

        A user's read high watermark resumes reading as soon as ``input`` is
        below it (libevent); the blocking layer's read-ahead bound waits until
        half of it is free, so bulk readers wake writers in large batches."""
        if self._susp_r & SUSPEND_WM:
            n = len(self.input)
            if n < self._rd_hi and (not self._rd_hi_implicit or n <= self._rd_hi // 2):
                self._unsuspend_read(SUSPEND_WM)

    # ------------------------------------------------------------------
    # Watermarks
    # ------------------------------------------------------------------

    @_owned
    def setwatermark(self, events: int, lowmark: int, highmark: int) -> int:
        """Set the watermarks of one or both directions (``bufferevent_setwatermark``).

        :param events: ``EV_READ`` and/or ``EV_WRITE``.
        :param lowmark: bytes; read: readcb runs once ``input`` holds at least
            this many; write: writecb runs once ``output`` holds at most this many.
        :param highmark: bytes, 0 = unlimited; read: reading stops while
            ``input`` holds this many; write: kinds stacked on this one
            (filters) stop adding while ``output`` holds this many.
        :raises ValueError: negative marks or unknown bits.
        """
        _check_events(events)
        if not events:
            raise ValueError("events must include EV_READ and/or EV_WRITE")
        self._check_alive()
        for name, v in (("lowmark", lowmark), ("highmark", highmark)):
            _check_size(v, name)
            if v < 0:
                raise ValueError(f"{name} must be >= 0")
        if events & EV_WRITE:
            self._wr_lo, self._wr_hi = lowmark, highmark
        if events & EV_READ:
            if highmark and lowmark > highmark:
                lowmark = highmark     # libevent clamps the same way
            self._rd_lo, self._rd_hi = lowmark, highmark
            self._rd_hi_implicit = False
            if highmark and len(self.input) >= highmark:
                self._suspend_read(SUSPEND_WM)
            else:
                self._unsuspend_read(SUSPEND_WM)
        self._update_io()
        return 0

    def getwatermark(self, events: int) -> Tuple[int, int]:
        """Return ``(low, high)`` of one direction, in bytes (``bufferevent_getwatermark``).

        :raises ValueError: *events* is not exactly ``EV_READ`` or ``EV_WRITE``.
        """
        _check_events(events)
        if events == EV_READ:
            return self._rd_lo, 0 if self._rd_hi_implicit else self._rd_hi
        if events == EV_WRITE:
            return self._wr_lo, self._wr_hi
        raise ValueError("events must be exactly one of EV_READ or EV_WRITE")

    # ------------------------------------------------------------------
    # Data
    # ------------------------------------------------------------------

    def write(self, data: BytesLike) -> int:
        """Append *data* to ``output``; never blocks (``bufferevent_write``).

        From another thread (with ``BEV_OPT_THREADSAFE``) the bytes are copied
        at once and appended by the bufferevent's hub.

        :param data: a bytes-like object (``str`` raises TypeError).
        :raises BuffereventClosedError: the bufferevent was freed or closed.
        :returns: 0.
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        if get_hub_if_exists() is not self.hub:
            return self._write_from_thread(data, "write")
        if self._freed or self._closing or self._shut_wr:
            self._check_alive(writing=True)
        self.output.add(data)
        return 0

    def _write_from_thread(self, data: bytes, caller: str) -> int:
        """*caller* (``write``/``write_buffer``) from another thread: hand
        *data* to the owning hub (``BEV_OPT_THREADSAFE``) or raise."""
        if not self.options & BEV_OPT_THREADSAFE:
            raise _foreign_thread_error(caller)
        self.loop.run_callback_threadsafe(self._append_in_hub, data)
        return 0

    def _append_in_hub(self, data: bytes) -> None:
        self._check_alive(writing=True)
        self.output.add(data)

    def write_buffer(self, buf: Buffer) -> int:
        """Move all of *buf* (a :class:`~gbufferevent.Buffer`) to ``output``
        without copying; never blocks (``bufferevent_write_buffer``). Returns 0.

        :raises TypeError: *buf* is not a Buffer.
        :raises BuffereventClosedError: the bufferevent was freed or closed.
        """
        if get_hub_if_exists() is not self.hub:
            if not self.options & BEV_OPT_THREADSAFE:
                raise _foreign_thread_error("write_buffer")   # buf keeps its bytes
            taken = Buffer()
            taken.add_buffer(buf)
            return self._write_from_thread(taken.remove(), "write_buffer")
        self._check_alive(writing=True)
        return self.output.add_buffer(buf)

    def read(self, size: int = -1) -> bytes:
        """Remove and return up to *size* bytes of ``input`` (all if negative).

        Never blocks; ``b""`` when nothing is buffered (``bufferevent_read``).
        :raises TypeError: *size* is not an int.
        """
        return self.input.remove(size)

    def read_buffer(self, buf: Buffer) -> int:
        """Move all of ``input`` to *buf* (a :class:`~gbufferevent.Buffer`)
        without copying (``bufferevent_read_buffer``). Returns 0.

        :raises TypeError: *buf* is not a Buffer.
        """
        self.input.remove_buffer(buf)
        return 0

    @_owned
    def flush(self, iotype: int = EV_READ | EV_WRITE, mode: int = BEV_FLUSH) -> int:
        """Force bytes through, as far as this kind can (``bufferevent_flush``).

        :param iotype: ``EV_READ``, ``EV_WRITE`` or both.
        :param mode: :class:`~gbufferevent.FlushMode`; ``BEV_FINISHED`` also
            tells the other end that no more data follows.
        :returns: -1 on error (e.g. freed), 0 if nothing was flushed, 1 if
            something was.
        :raises ValueError: unknown *iotype* bits, or *mode* not a FlushMode.
        """
        _check_events(iotype, "iotype")
        if isinstance(mode, bool) or not isinstance(mode, int) or mode not in (
                BEV_NORMAL, BEV_FLUSH, BEV_FINISHED):
            raise ValueError(f"mode must be a FlushMode, not {mode!r}")
        if self._freed:
            return -1
        return self._be_flush(iotype, FlushMode(mode))

    def _be_flush(self, iotype: int, mode: FlushMode) -> int:
        return 0

    # ------------------------------------------------------------------
    # Timeouts
    # ------------------------------------------------------------------

    @_owned
    def set_timeouts(self, read: Optional[float], write: Optional[float]) -> int:
        """Set the read and write timeouts in seconds; None or 0 turns one off.

        A read timeout fires ``BEV_EVENT_TIMEOUT|BEV_EVENT_READING`` when reading
        is enabled and nothing arrived for that long; a write timeout fires
        ``TIMEOUT|WRITING`` when output is pending and nothing could be written.
        The direction that timed out is disabled until enabled again
        (``bufferevent_set_timeouts``).

        :raises TypeError: not a number or None.  :raises ValueError:
            negative or not finite.  :raises BuffereventClosedError: freed.
        :returns: 0.
        """
        self._rtimeout = _check_timeout(read, "read")
        self._wtimeout = _check_timeout(write, "write")
        self._check_alive()
        now = self.loop.now()
        self._rlast = self._wlast = now
        for attr in ("_rtimer", "_wtimer"):
            t = getattr(self, attr)
            if t is not None:
                t.stop()
        self._adj_timeouts()
        return 0

    def _read_timeout_wanted(self):
        """Should the read timeout run now? (kinds with a handshake extend this)"""
        return self._can_read()

    def _write_timeout_wanted(self):
        return self._can_write() and len(self.output) > 0

    def _adj_timeouts(self):
        if self._freed:
            return
        if self._rtimeout and self._read_timeout_wanted():
            if self._rtimer is None or not self._rtimer.active:
                self._rlast = self.loop.now()
                self._arm("_rtimer", self._rtimeout, self._on_rtimeout)
        elif self._rtimer is not None:
            self._rtimer.stop()
        if self._wtimeout and self._write_timeout_wanted():
            if self._wtimer is None or not self._wtimer.active:
                self._wlast = self.loop.now()
                self._arm("_wtimer", self._wtimeout, self._on_wtimeout)
        elif self._wtimer is not None:
            self._wtimer.stop()

    def _arm(self, attr, after, cb):
        """(Re)start the timer stored in *attr* to fire *after* seconds from now."""
        old = getattr(self, attr)
        if old is not None:
            old.close()
        timer = self.loop.timer(max(after, 0.0))
        setattr(self, attr, timer)
        timer.start(cb)

    def _note_read(self):
        """Reset the read timeout after progress."""
        if self._rtimeout:
            self._rlast = self.loop.now()

    def _note_write(self):
        if self._wtimeout:
            self._wlast = self.loop.now()

    def _on_rtimeout(self):
        left = self._rlast + self._rtimeout - self.loop.now()
        if left > 0.0005:
            self._arm("_rtimer", left, self._on_rtimeout)
            return
        self._enabled &= ~EV_READ
        self._update_io()
        self._trigger_event(BEV_EVENT_TIMEOUT | BEV_EVENT_READING)

    def _on_wtimeout(self):
        left = self._wlast + self._wtimeout - self.loop.now()
        if left > 0.0005:
            self._arm("_wtimer", left, self._on_wtimeout)
            return
        if self._closing:
            log.info("%r: output made no progress for %.1f s while closing; "
                     "dropping %d bytes", self, self._wtimeout, len(self.output))
            self.free()
            return
        self._enabled &= ~EV_WRITE
        self._update_io()
        self._trigger_event(BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING)

    # ------------------------------------------------------------------
    # Per-step caps and rate-limit hooks
    # ------------------------------------------------------------------

    def set_max_single_read(self, size: int) -> int:
        """Cap each read step at *size* bytes (``bufferevent_set_max_single_read``).

        0 or >= ``EV_SSIZE_MAX`` restores the default (16384).
        :raises TypeError: not an int.  :raises ValueError: negative.
        :returns: 0.
        """
        self._max_read = self._check_max(size, MAX_SINGLE_READ_DEFAULT)
        return 0

    def set_max_single_write(self, size: int) -> int:
        """Cap each write step at *size* bytes (``bufferevent_set_max_single_write``).

        0 or >= ``EV_SSIZE_MAX`` restores the default (16384).
        :raises TypeError: not an int.  :raises ValueError: negative.
        :returns: 0.
        """
        self._max_write = self._check_max(size, MAX_SINGLE_WRITE_DEFAULT)
        return 0

    @staticmethod
    def _check_max(size: int, default: int) -> int:
        _check_size(size, "size")
        if size < 0:
            raise ValueError("size must be >= 0")
        if size == 0 or size >= EV_SSIZE_MAX:
            return default
        return size

    def get_max_single_read(self) -> int:
        """Bytes one read step may take (``bufferevent_get_max_single_read``)."""
        return self._max_read

    def get_max_single_write(self) -> int:
        """Bytes one write step may hand on (``bufferevent_get_max_single_write``)."""
        return self._max_write

    def get_max_to_read(self) -> int:
        """Bytes this bufferevent would read right now: the minimum of max single
        read, its token bucket and its group share, never negative
        (``bufferevent_get_max_to_read``)."""
        if self._rl is None and self._group is None:
            return self._max_read
        return self._rl_max(True)

    def get_max_to_write(self) -> int:
        """Bytes this bufferevent would write right now: the minimum of max
        single write, its token bucket and its group share, never negative
        (``bufferevent_get_max_to_write``)."""
        if self._rl is None and self._group is None:
            return self._max_write
        return self._rl_max(False)

    def _rl_max(self, reading: bool) -> int:
        """Step size under rate limits (:func:`gbufferevent.ratelimit.max_step`);
        0 suspends the direction until the scheduler refills it."""
        return _ratelimit.max_step(self, reading)

    def _read_allowance(self) -> int:
        """Bytes one read step may add to ``input`` now (0: do not read)."""
        n = self._max_read if (self._rl is None and self._group is None) \
            else self._rl_max(True)
        hi = self._rd_hi
        if hi:
            room = hi - len(self.input)
            if room < n:
                n = room
        return n if n > 0 else 0

    def _write_allowance(self) -> int:
        """Bytes one write step may take from ``output`` now."""
        if self._rl is None and self._group is None:
            return self._max_write
        n = self._rl_max(False)
        return n if n > 0 else 0

    def _charge_read(self, n):
        """Report *n* bytes read (rate limits, group totals)."""
        if self._rl is not None or self._group is not None:
            _ratelimit.charge(self, n, True)

    def _charge_write(self, n):
        """Report *n* bytes written (rate limits, group totals)."""
        if self._rl is not None or self._group is not None:
            _ratelimit.charge(self, n, False)

    # ------------------------------------------------------------------
    # Rate limits (the logic lives in gbufferevent.ratelimit)
    # ------------------------------------------------------------------

    @_owned
    def set_rate_limit(self, cfg: Optional[TokenBucketConfig]) -> int:
        """Limit this bufferevent with token buckets (``bufferevent_set_rate_limit``).

        :param cfg: a :class:`~gbufferevent.TokenBucketConfig` (rates and
            bursts in bytes per tick), or None to remove the limit (lifting any
            suspension it caused; group membership stays).  The buckets start
            with one tick's worth; setting the same cfg again is a no-op, a
            different one keeps the levels clipped to its bursts.  Bytes are
            counted where they leave ``output`` and enter ``input``, on every
            kind of bufferevent.
        :raises TypeError: *cfg* is neither.
        :raises BuffereventClosedError: the bufferevent was freed.
        :returns: 0.
        """
        return _ratelimit.set_rate_limit(self, cfg)

    def get_token_bucket_cfg(self) -> Optional[TokenBucketConfig]:
        """The :class:`~gbufferevent.TokenBucketConfig` set, or None
        (``bufferevent_get_token_bucket_cfg``)."""
        return None if self._rl is None else self._rl.cfg

    def get_read_limit(self) -> int:
        """This bufferevent's read bucket now, bytes (may be negative);
        ``EV_SSIZE_MAX`` without a limit.  The group is not consulted
        (``bufferevent_get_read_limit``)."""
        return _ratelimit.get_limit(self, True)

    def get_write_limit(self) -> int:
        """This bufferevent's write bucket now, bytes; ``EV_SSIZE_MAX`` without
        a limit (``bufferevent_get_write_limit``)."""
        return _ratelimit.get_limit(self, False)

    @_owned
    def decrement_read_limit(self, decr: int) -> int:
        """Take *decr* bytes from the read bucket, e.g. for traffic sent
        outside the bufferevent; negative adds (``bufferevent_decrement_read_limit``).

        Reaching 0 or less suspends reading until a refill; going back above
        0 resumes it at once.  The group's bucket is not touched.
        :raises TypeError: not an int.  :raises RuntimeError: no rate limit set.
        :returns: 0.
        """
        return _ratelimit.decrement_limit(self, True, decr)

    @_owned
    def decrement_write_limit(self, decr: int) -> int:
        """Take *decr* bytes from the write bucket; negative adds
        (``bufferevent_decrement_write_limit``); see :meth:`decrement_read_limit`."""
        return _ratelimit.decrement_limit(self, False, decr)

    @_owned
    def add_to_rate_limit_group(self, group: RateLimitGroup) -> int:
        """Join *group* (a :class:`~gbufferevent.RateLimitGroup`), leaving any
        other group (``bufferevent_add_to_rate_limit_group``).  Returns 0.

        :raises TypeError: *group* is not a RateLimitGroup.
        """
        if not isinstance(group, _ratelimit.RateLimitGroup):
            raise TypeError(f"group must be a RateLimitGroup, not {type(group).__name__}")
        return group.add(self)

    @_owned
    def remove_from_rate_limit_group(self) -> int:
        """Leave the group, if any (``bufferevent_remove_from_rate_limit_group``). Returns 0."""
        if self._group is not None:
            self._group.remove(self)
        return 0

    # ------------------------------------------------------------------
    # Triggers (called by kinds)
    # ------------------------------------------------------------------

    def _trigger_read(self):
        """Bytes were appended to ``input``: readcb, blocked readers, watermark."""
        if self._rtimeout:
            self._rlast = self.loop.now()
        n = self.input._len
        if self._rd_hi and n >= self._rd_hi:
            self._suspend_read(SUSPEND_WM)
        if self._readers:
            self._wake_readers()
        if self._readcb is not None and n >= self._rd_lo:
            if self._deferred:
                self._pend |= _PEND_READ
                self._schedule()
            else:
                self._call_readcb()

    def _trigger_write(self):
        """Bytes left ``output``: writecb, blocked writers, close/shutdown."""
        if self._wtimeout:
            self._wlast = self.loop.now()
        n = self.output._len
        if not n:
            if self._shut_wr and not self._shut_wr_done:
                self._shut_wr_done = True
                self._be_shutdown_write()
            if self._closing:
                self._be_close_ready()
                return
        if self._writers:
            self._wake_writers(n)
        if self._writecb is not None and n <= self._wr_lo:
            if self._deferred:
                self._pend |= _PEND_WRITE
                self._schedule()
            else:
                self._call_writecb()
        if self._wtimeout:
            self._adj_timeouts()

    def _trigger_event(self, what, exc=None):
        """Report EOF/ERROR/TIMEOUT/CONNECTED (with READING/WRITING bits)."""
        what = Event(what)
        if self._closing and what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT):
            # close() was waiting to deliver output that now cannot go out
            if what & BEV_EVENT_ERROR and self._error is None:
                self._error = exc
            self.free()
            return
        if what & BEV_EVENT_EOF and what & BEV_EVENT_READING:
            self._eof = True
        if what & BEV_EVENT_ERROR and self._error is None:
            self._error = exc if exc is not None else ConnectionResetError(
                "bufferevent error")
        if what & BEV_EVENT_TIMEOUT:
            tmo = TimeoutError("bufferevent %s timeout" % (
                "read" if what & BEV_EVENT_READING else "write"))
            if what & BEV_EVENT_READING:
                self._wake_all(self._readers, tmo)
            if what & BEV_EVENT_WRITING:
                self._wake_all(self._writers, tmo)
        else:
            self._wake_all(self._readers)
            self._wake_all(self._writers)
        if self._eventcb is None:
            return
        if self._deferred:
            self._pend_events |= what
            self._schedule()
        else:
            self._call_eventcb(what)

    def _schedule(self):
        if not self._pend_scheduled:
            self._pend_scheduled = True
            self.loop.run_callback(self._run_deferred)

    def _run_deferred(self):
        """Run the coalesced callbacks: CONNECTED, read, write, other events."""
        self._pend_scheduled = False
        pend, events = self._pend, self._pend_events
        self._pend = self._pend_events = 0
        if self._freed:
            return
        if events & BEV_EVENT_CONNECTED:
            self._call_eventcb(Event(BEV_EVENT_CONNECTED))
            events &= ~BEV_EVENT_CONNECTED
        if pend & _PEND_READ and not self._freed:
            self._call_readcb()
        if pend & _PEND_WRITE and not self._freed:
            self._call_writecb()
        if events and not self._freed:
            self._call_eventcb(Event(events))

    def _call_readcb(self):
        cb = self._readcb
        if cb is None:
            return
        before = len(self.input)
        try:
            cb(self, self._cbarg)
        except Exception as exc:  # noqa: BLE001 - user code
            self._callback_failed("readcb", exc, BEV_EVENT_READING)
            return
        # libevent's bufferevent_inbuf_wm_check: input still at the high
        # watermark (so reading is stopped) but the callback made progress ->
        # run it again, or the remaining bytes would sit there forever.
        hi = self._rd_hi
        if hi and not self._freed and self._enabled & EV_READ:
            n = len(self.input)
            if n >= hi and n < before:
                self._pend |= _PEND_READ
                self._schedule()

    def _call_writecb(self):
        cb = self._writecb
        if cb is None:
            return
        try:
            cb(self, self._cbarg)
        except Exception as exc:  # noqa: BLE001
            self._callback_failed("writecb", exc, BEV_EVENT_WRITING)

    def _call_eventcb(self, what):
        cb = self._eventcb
        if cb is None:
            return
        try:
            cb(self, what, self._cbarg)
        except Exception:  # noqa: BLE001
            log.exception("eventcb of %r raised (events %r)", self, what)

    def _callback_failed(self, where, exc, direction):
        log.error("%s of %r raised %s: %s", where, self, type(exc).__name__, exc,
                  exc_info=exc)
        if self._freed:
            return
        err = CallbackError(where, exc)
        self._enabled &= ~(EV_READ if direction == BEV_EVENT_READING else EV_WRITE)
        self._update_io()
        self._trigger_event(BEV_EVENT_ERROR | direction, err)

    # ------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------

    def _check_alive(self, writing=False):
        if self._freed or (writing and (self._closing or self._shut_wr)):
            raise BuffereventClosedError(
                "bufferevent is freed" if self._freed else
                "bufferevent is closed for writing")

    @_owned
    def free(self) -> None:
        """Release the bufferevent now (``bufferevent_free``).

        Callbacks are cleared first, so none runs afterwards; pending output is
        dropped (use :meth:`close` to deliver it first).  With
        ``BEV_OPT_CLOSE_ON_FREE`` the transport is closed too.  Greenlets blocked
        on it get :class:`~gbufferevent.BuffereventClosedError`.  Idempotent.
        """
        if self._freed:
            return
        self._readcb = self._writecb = self._eventcb = None
        self._freed = True
        for t in (self._rtimer, self._wtimer):
            if t is not None:
                t.close()
        self._rtimer = self._wtimer = None
        if self._group is not None:
            self._group._remove_member(self, unsuspend=False)
        if self._rl is not None:
            self._rl.detach(self)
        try:
            self._be_free()
        finally:
            err = BuffereventClosedError("bufferevent was freed while this call waited")
            self._wake_all(self._readers, err)
            self._wake_all(self._writers, err)

    def _be_free(self):
        """Kind-specific teardown (stop watchers, close the transport)."""

    def _be_shutdown_write(self):
        """Output drained after shutdown(SHUT_WR)/FINISHED: send end-of-stream."""

    def _be_close_ready(self):
        """Output drained after close(): finish closing."""
        self.free()

    @property
    def closed(self) -> bool:
        """True once the bufferevent was freed or closed (no libevent counterpart)."""
        return self._freed or self._closing

    def get_underlying(self) -> Optional[Bufferevent]:
        """The bufferevent this one wraps, or None (``bufferevent_get_underlying``)."""
        return None

    def getfd(self) -> int:
        """The file descriptor, or -1 if there is none (``bufferevent_getfd``)."""
        return -1

    def fileno(self) -> int:
        """Same as :meth:`getfd` (``bufferevent_getfd``), so ``select``-style
        code can use a bufferevent; -1 if there is no fd."""
        return self.getfd()

    def setfd(self, fd: Optional[SocketLike]) -> int:
        """Give the bufferevent a new fd (``bufferevent_setfd``).

        Returns 0, or -1 where the kind has no fd (pairs)."""
        return -1

    @property
    def last_error(self) -> Optional[BaseException]:
        """The exception behind the last ERROR event, or None (what libevent
        leaves in ``EVUTIL_SOCKET_ERROR()``)."""
        return self._error

    # ------------------------------------------------------------------
    # Greenlet-blocking, socket-like layer
    # ------------------------------------------------------------------

    def settimeout(self, timeout: Optional[float]) -> None:
        """Timeout in seconds for the blocking calls (``socket.settimeout``;
        no libevent counterpart).  None waits forever; 0 makes a call that
        would block raise ``BlockingIOError``.

        A blocking call that runs out raises ``TimeoutError``.
        :raises TypeError: not a number or None.  :raises ValueError:
            negative or not finite.
        """
        self._sock_timeout = _check_timeout(timeout, "timeout")
        if timeout == 0:
            self._sock_timeout = 0.0

    def gettimeout(self) -> Optional[float]:
        """The blocking-call timeout in seconds, or None (``socket.gettimeout``)."""
        return self._sock_timeout

    def _deadline(self):
        t = self._sock_timeout
        return None if t is None else self.loop.now() + t

    def _wait(self, waiters, entry_extra=None, deadline=None):
        """Block the current greenlet until a trigger wakes it."""
        hub = self.hub
        if getcurrent() is hub:
            raise RuntimeError(
                "blocking bufferevent call from the hub (a callback); "
                "use the callback API there or spawn a greenlet")
        if get_hub_if_exists() is not hub:
            raise RuntimeError("blocking bufferevent calls must come from a greenlet "
                               "of the thread (hub) that made the bufferevent")
        if self._sock_timeout == 0.0:
            raise BlockingIOError(11, "bufferevent is non-blocking (timeout 0) and "
                                      "the call would block")
        self._fast_budget = FAST_PATH_BUDGET
        w = Waiter(hub)
        entry = w if entry_extra is None else (w, entry_extra)
        waiters.append(entry)
        timer = None
        if deadline is not None:
            left = deadline - self.loop.now()
            if left <= 0:
                waiters.remove(entry)
                raise TimeoutError("timed out")
            timer = self.loop.timer(left)
            timer.start(w.switch, _TIMED_OUT)
        try:
            result = w.get()
        finally:
            if timer is not None:
                timer.close()
            try:
                waiters.remove(entry)
            except ValueError:
                pass
        if result is _TIMED_OUT:
            raise TimeoutError("timed out")
        if isinstance(result, BaseException):
            raise result

    def _fast_path_used(self, n):
        """Count bytes moved without waiting; yield to the hub once the budget
        is spent (other greenlets and timers run, then we continue)."""
        self._fast_budget -= n
        if self._fast_budget <= 0:
            self._fast_budget = FAST_PATH_BUDGET
            w = Waiter(self.hub)
            self.loop.run_callback(w.switch, None)
            w.get()

    def _wake_all(self, waiters, value=None):
        if not waiters:
            return
        run = self.loop.run_callback
        for entry in waiters:
            w = entry[0] if type(entry) is tuple else entry
            run(w.switch, value)
        waiters.clear()

    def _wake_readers(self):
        self._wake_all(self._readers)

    def _wake_writers(self, n):
        writers = self._writers
        keep = []
        run = self.loop.run_callback
        for entry in writers:
            if n <= entry[1]:
                run(entry[0].switch, None)
            else:
                keep.append(entry)
        writers[:] = keep

    def _no_transport(self):
        """Kind hook: an OSError if this bufferevent has no way to move bytes
        (e.g. a socket bufferevent with no fd and no connect in progress), so
        blocking calls fail instead of waiting forever; else None."""
        return None

    def _read_ready(self):
        """For blocked readers: True to return b"" (EOF), raise on error."""
        if self._error is not None:
            raise self._error
        if self._freed or self._closing:
            raise BuffereventClosedError()
        if not self._eof:
            err = self._no_transport()
            if err is not None:
                raise err
        return self._eof

    def _read_ahead(self, need=0):
        """Bound what reading may buffer for blocking readers (see
        :data:`DEFAULT_RECV_BUFFER`), at least *need* bytes; a read high
        watermark set by the user is left alone."""
        if self._rd_hi and not self._rd_hi_implicit:
            return
        hi = max(DEFAULT_RECV_BUFFER, need)
        if hi != self._rd_hi:
            self._rd_hi, self._rd_hi_implicit = hi, True
            if len(self.input) >= hi:
                self._suspend_read(SUSPEND_WM)
            else:
                self._unsuspend_read(SUSPEND_WM)

    def _await_data(self, deadline):
        """Enable reading if needed; block until something may have changed."""
        if not self._rd_hi or self._rd_hi_implicit:
            self._read_ahead(self._rd_hi if self._rd_hi_implicit else 0)
        if not self._enabled & EV_READ:
            n = len(self.input)
            self.enable(EV_READ)
            if len(self.input) != n:
                return        # enabling moved bytes at once (pairs, filters)
        self._wait(self._readers, deadline=deadline)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        """Block until bytes arrive; return up to *bufsize* bytes
        (``socket.recv``; libevent has no blocking calls).

        Returns ``b""`` at EOF.  Raises the transport's ``OSError`` (e.g.
        ``ConnectionResetError``), ``TimeoutError`` after :meth:`settimeout`
        seconds, :class:`~gbufferevent.BuffereventClosedError` once closed,
        ``ValueError`` for a negative *bufsize*.
        Enables ``EV_READ`` if needed.  Data received before an error is
        returned first.
        """
        _check_size(bufsize, "bufsize")
        if bufsize < 0:
            raise ValueError("bufsize must be >= 0")
        if bufsize == 0:
            return b""
        if self._rd_hi_implicit:
            self._read_ahead()
        deadline = None
        while True:
            if self.input._len:
                return self.input.remove(bufsize)
            if self._read_ready():
                return b""
            if self._readcb is None:
                data = self._direct_recv(bufsize)
                if data:
                    self._fast_path_used(len(data))
                    return data
            if deadline is None:
                deadline = self._deadline()
            self._await_data(deadline)

    def _direct_recv(self, n):
        """Kind hook: read up to *n* bytes straight from the transport for a
        blocked reader when ``input`` is empty and no readcb is set (same
        caps, limits and accounting as a read step).  None: not possible now."""
        return None

    def _direct_send(self, data):
        """Kind hook: hand *data* (bytes) straight to the transport when
        ``output`` is empty and no writecb is set, step by step within the
        same caps and limits.  Returns the number of bytes taken (0: none)."""
        return 0

    def recv_into(self, buffer: BytesLike, nbytes: int = 0, flags: int = 0) -> int:
        """Like :meth:`recv`, into a writable buffer (``socket.recv_into``).

        :param nbytes: at most this many bytes; 0 = ``len(buffer)``.
        :returns: the number of bytes stored (0 at EOF).
        :raises TypeError: *buffer* is read-only.
        :raises ValueError: *nbytes* outside 0..len(buffer).
        Other errors as :meth:`recv`.
        """
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError("recv_into() needs a writable buffer")
        view = view.cast("B")
        _check_size(nbytes, "nbytes")
        if nbytes < 0 or nbytes > len(view):
            raise ValueError("nbytes must be between 0 and len(buffer)")
        n = nbytes or len(view)
        if n == 0:
            return 0
        data = self.recv(n)
        view[:len(data)] = data
        return len(data)

    def _fill(self, want, deadline):
        """Wait until ``input`` holds *want* bytes; False at EOF."""
        if self._rd_hi_implicit or not self._rd_hi:
            self._read_ahead(max(want, self._rd_hi))
        while len(self.input) < want:
            if self._read_ready():
                return False
            if self._rd_hi and len(self.input) >= self._rd_hi:
                raise LimitOverrunError(
                    f"{want} bytes wanted but the read high watermark is {self._rd_hi}")
            self._await_data(deadline)
        return True

    def readexactly(self, n: int) -> bytes:
        """Block until exactly *n* bytes arrived and return them (as
        asyncio's ``StreamReader.readexactly``).

        :raises IncompleteReadError: EOF first (``.partial`` has what came).
        :raises LimitOverrunError: *n* exceeds the read high watermark.
        :raises ValueError: negative *n*.  Timeouts and transport errors as
            :meth:`recv`.
        """
        _check_size(n, "n")
        if n < 0:
            raise ValueError("n must be >= 0")
        if self._rd_hi_implicit:
            self._read_ahead()
        if not self._fill(n, self._deadline()):
            raise IncompleteReadError(self.input.remove(), n)
        return self.input.remove(n)

    def readuntil(self, separator: BytesLike = b"\n", limit: int = -1) -> bytes:
        """Block until *separator* arrives; return the bytes up to and including it
        (as asyncio's ``StreamReader.readuntil``).

        :raises IncompleteReadError: EOF first (``.partial`` has what came).
        :raises LimitOverrunError: no separator within *limit* bytes (if >= 0)
            or within the read high watermark.
        :raises ValueError: empty *separator*.  Timeouts and transport errors
            as :meth:`recv`.
        """
        sep = _as_bytes(separator, "separator")
        _check_size(limit, "limit")
        if not sep:
            raise ValueError("separator must not be empty")
        deadline = self._deadline()
        if self._rd_hi_implicit:
            self._read_ahead()        # back to the default read-ahead
        scanned = 0
        inp = self.input
        while True:
            i = inp.search(sep, scanned)
            if i >= 0:
                end = i + len(sep)
                if 0 <= limit < end:
                    raise LimitOverrunError(f"separator not found within {limit} bytes")
                return inp.remove(end)
            scanned = max(0, len(inp) - len(sep) + 1)
            if self._rd_hi_implicit or not self._rd_hi:
                self._read_ahead(len(inp) + DEFAULT_RECV_BUFFER)   # a long record
            if 0 <= limit < len(inp):
                raise LimitOverrunError(f"separator not found within {limit} bytes")
            if not self._fill(len(inp) + 1, deadline):
                raise IncompleteReadError(inp.remove(), None)

    def readline(self, limit: int = -1) -> bytes:
        """Block until a whole line arrived; return it with its ``b"\\n"``.

        At most *limit* bytes if ``limit >= 0`` (like a file's readline).  At
        EOF returns what is left (possibly without newline, or ``b""``); a
        line longer than the read high watermark is returned in pieces.
        Timeouts and transport errors as :meth:`recv`.
        """
        _check_size(limit, "limit")
        deadline = self._deadline()
        if self._rd_hi_implicit:
            self._read_ahead()        # back to the default read-ahead
        scanned = 0
        inp = self.input
        while True:
            i = inp.search(b"\n", scanned)
            if i >= 0:
                end = i + 1
                return inp.remove(end if limit < 0 else min(end, limit))
            if 0 <= limit <= len(inp):
                return inp.remove(limit)
            scanned = len(inp)
            if self._rd_hi_implicit or not self._rd_hi:
                self._read_ahead(len(inp) + DEFAULT_RECV_BUFFER)   # a long line
            elif len(inp) >= self._rd_hi:
                return inp.remove()    # no newline fits: hand out what we have
            if self._read_ready():
                return inp.remove()
            self._await_data(deadline)

    def _send_limit(self):
        return self._wr_hi or DEFAULT_SEND_BUFFER

    def _wait_writable(self, threshold, deadline):
        """Wait until ``len(output) <= threshold``; raise if it never will."""
        while len(self.output) > threshold:
            self._write_wait_check()
            if not self._enabled & EV_WRITE:
                self.enable(EV_WRITE)
                continue      # enabling may have moved bytes at once
            self._wait(self._writers, threshold, deadline)
        if self._error is not None:
            raise self._error

    def _write_wait_check(self):
        """Raise if queued output can never drain (error, freed)."""
        if self._error is not None:
            raise self._error
        if self._freed:
            raise BuffereventClosedError()
        err = self._no_transport()
        if err is not None:
            raise err

    def _check_sendable(self):
        if self._error is not None:
            raise self._error
        if self._freed or self._closing or self._shut_wr:
            raise BrokenPipeError(32, "bufferevent is closed for writing")

    def send(self, data: BytesLike, flags: int = 0) -> int:
        """Queue as much of *data* as fits in the send buffer; return how many
        bytes (``socket.send``).

        Blocks only while the output is full (see :data:`DEFAULT_SEND_BUFFER`
        and the write high watermark).  Raises like :meth:`sendall`.
        """
        data = _as_bytes(data)
        self._check_sendable()
        if not self.output._len and self._writecb is None and data:
            n = self._direct_send(data)
            if n:
                self._fast_path_used(n)
                return n
        limit = self._send_limit()
        self._wait_writable(limit - 1, self._deadline())
        self._check_sendable()
        n = min(len(data), limit - len(self.output))
        self.write(data if n == len(data) else data[:n])
        return n

    def sendall(self, data: BytesLike, flags: int = 0) -> None:
        """Send all of *data*; return once it has been handed on.

        Applies backpressure: at most one send buffer's worth is queued at a
        time, and the call returns when ``output`` has drained to the write
        low watermark.  Raises ``BrokenPipeError``/``ConnectionResetError`` (or
        the transport's error) if the data cannot be delivered, ``TimeoutError``
        after :meth:`settimeout` seconds, ``TypeError`` for a ``str``
        (``socket.sendall``).
        """
        data = _as_bytes(data)
        total = len(data)
        pos = 0
        if not self.output._len and self._writecb is None and total:
            self._check_sendable()
            pos = self._direct_send(data)
            if pos:
                self._fast_path_used(pos)
            if pos == total:
                return
        deadline = self._deadline()
        limit = self._send_limit()
        view = memoryview(data) if total > limit else None
        while pos < total:
            self._check_sendable()
            room = limit - len(self.output)
            if room <= 0:
                self._wait_writable(limit - 1, deadline)
                continue
            if view is None:
                self.write(data if not pos else data[pos:])
                pos = total
            else:
                chunk = view[pos:pos + room].tobytes()
                self.write(chunk)
                pos += len(chunk)
        self._wait_writable(self._wr_lo, deadline)

    def drain(self) -> None:
        """Block until ``output`` is empty (everything handed to the transport;
        as asyncio's ``StreamWriter.drain``).

        Raises the transport's error, ``BuffereventClosedError`` once freed,
        ``TimeoutError`` after :meth:`settimeout` seconds.
        """
        self._wait_writable(0, self._deadline())

    @_owned
    def shutdown(self, how: int) -> None:
        """``socket.shutdown``: ``SHUT_WR`` delivers pending output, then ends the
        stream for the peer (FIN; EOF on a pair partner); reading goes on.
        ``SHUT_RD`` stops reading. ``SHUT_RDWR`` both.  libevent's nearest is
        ``bufferevent_flush(bev, EV_WRITE, BEV_FINISHED)``.

        :raises ValueError: *how* is not a ``SHUT_*`` constant.
        :raises BuffereventClosedError: the bufferevent was freed.
        """
        if how not in (_socket.SHUT_RD, _socket.SHUT_WR, _socket.SHUT_RDWR):
            raise ValueError(f"how must be SHUT_RD, SHUT_WR or SHUT_RDWR, not {how!r}")
        self._check_alive()
        if how in (_socket.SHUT_RD, _socket.SHUT_RDWR):
            self.disable(EV_READ)
            self._eof = True
            self._wake_all(self._readers)
        if how in (_socket.SHUT_WR, _socket.SHUT_RDWR) and not self._shut_wr:
            self._shut_wr = True
            if not self.output:
                self._shut_wr_done = True
                self._be_shutdown_write()
            else:
                self.enable(EV_WRITE)

    @_owned
    def close(self) -> None:
        """Close like a socket: pending output is delivered, then the transport
        is closed (with ``BEV_OPT_CLOSE_ON_FREE``) and the bufferevent freed.

        Never blocks: delivery goes on in the hub.  Reading stops at once;
        greenlets blocked on this bufferevent get
        :class:`~gbufferevent.BuffereventClosedError`.  Idempotent.  libevent
        has no such call (``bufferevent_free`` drops pending output).
        """
        if self._freed or self._closing:
            return
        self._closing = True
        self._readcb = None
        self._enabled &= ~EV_READ
        err = BuffereventClosedError("bufferevent was closed while this call waited")
        self._wake_all(self._readers, err)
        self._wake_all(self._writers, err)
        if self.output and self._error is None:
            if not self._wtimeout:
                self._wtimeout = CLOSE_LINGER
            self._enabled |= EV_WRITE
            self._update_io()
            if self._wtimeout and not self._freed:
                self._adj_timeouts()
        else:
            self._be_close_ready()

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def makefile(self, mode: str = "r", buffering: Optional[int] = None, *,
                 encoding: Optional[str] = None, errors: Optional[str] = None,
                 newline: Optional[str] = None) -> IO[Any]:
        """A file object reading/writing through the blocking layer (``socket.makefile``).

        :param mode: ``"r"``, ``"w"``, ``"rw"``, with ``"b"`` for binary.
        :param buffering: buffer size in bytes; None/-1 = default, 0 =
            unbuffered (binary only).
        :raises ValueError: a bad *mode*, or unbuffered text.
        """
        from ._fileio import makefile
        return makefile(self, mode, buffering, encoding, errors, newline)


# Rate limiting builds on the SUSPEND_* bits above; imported last because
# gbufferevent.ratelimit imports this module.
from . import ratelimit as _ratelimit  # noqa: E402
from .ratelimit import RateLimitGroup, TokenBucketConfig  # noqa: E402,F401  (annotations)
