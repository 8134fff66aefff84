"""Filtering bufferevents: a bufferevent that transforms the bytes of another.

libevent's ``bufferevent_filter.c``.  A :class:`FilterBufferevent` wraps any
bufferevent (socket, pair, TLS, another filter), its *underlying*: bytes the
underlying reads pass the *input filter* into the filter's ``input``; bytes
written to the filter pass the *output filter* into the underlying's
``output``.  A filter function is called as::

    f(source: Buffer, destination: Buffer, dst_limit: int, mode: FlushMode, ctx)
        -> FilterResult

and moves what it can from *source* to *destination*: ``BEV_OK`` when it
wrote something, ``BEV_NEED_MORE`` when nothing more comes out until more
input arrives or a flush is asked for, ``BEV_ERROR`` when the stream is
broken.  ``None`` passes bytes through unchanged; an object with a
``process(data, mode) -> bytes`` method is adapted by :class:`ProcessFilter`.

The pipeline is driven by the hub in bounded steps.  Each direction is a
:class:`FilterStage` (pure logic: no hub, no I/O); one step shows the filter
at most ``max_single_read`` (input) or ``max_single_write`` (output) bytes of
its source, and never more than ``dst_limit`` room; the next step runs from
``loop.run_callback``, so pushing hundreds of megabytes through a compressor
never holds the hub for longer than one small step.  (A pass-through does
no per-byte work: its step moves chunk references up to the room below.)
A user's ``write()`` runs the first output step at once, as libevent does;
writes made from inside a filter or a callback only schedule the next step,
so a filter is never re-entered.

Where this module differs from libevent (the issue decided):

* ``BEV_ERROR`` (or a filter that raises anything but ``KeyboardInterrupt``/
  ``SystemExit``, ``GreenletExit`` included, which is logged) is an
  ``ERROR|READING`` or ``ERROR|WRITING`` event and stops that direction for
  good: no further events for that direction (an EOF that follows is not
  reported).  Output the failing call still produced is delivered first;
* an EOF from the underlying runs the input filter with ``BEV_FINISHED``
  before the EOF event reaches the user, so bytes a filter held back are
  delivered;
* nothing gets stuck below a full watermark (libevent issue #362), and
  enabling reading picks up bytes already waiting in the underlying;
* without a write high watermark on the underlying, the output stage pauses
  while the underlying holds :data:`~gbufferevent.DEFAULT_SEND_BUFFER` bytes, so
  a peer that does not read cannot make memory grow without bound;
* :meth:`~FilterBufferevent.close` delivers every layer's pending output.
"""
from __future__ import annotations

import errno
import logging
import socket as _socket
from typing import Any, NamedTuple, Optional, Union

from .buffer import Buffer, _as_bytes
from .bufferevent import DEFAULT_SEND_BUFFER, SUSPEND_FILTER, Bufferevent
from .constants import (
    BEV_ERROR, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_WRITING, BEV_FINISHED, BEV_NEED_MORE, BEV_NORMAL, BEV_OK,
    BEV_OPT_CLOSE_ON_FREE, EV_READ, EV_WRITE, FilterResult, FlushMode,
)
from .errors import BuffereventClosedError
from ._typing import FilterFunc, FilterSpec, FreeContext, SocketLike, SupportsProcess

__all__ = [
    "FilterBufferevent", "filter_new", "FilterStage", "StepResult",
    "ProcessFilter", "FilterError", "input_budget",
]

log = logging.getLogger("gbufferevent.filter")


class FilterError(OSError):
    """A filter returned ``BEV_ERROR`` or raised (``errno.EPROTO``); any
    exception but ``KeyboardInterrupt``/``SystemExit`` counts (``GreenletExit`` too).

    Stored as the filter bufferevent's :attr:`~Bufferevent.last_error` and
    raised by its blocking calls.  ``__cause__`` is the exception the filter
    raised, or the one it left in its ``error`` attribute (the ready zlib
    filters do that to say why).
    """

    def __init__(self, msg: str, cause: Optional[BaseException] = None) -> None:
        super().__init__(errno.EPROTO, msg)
        self.__cause__ = cause


# ----------------------------------------------------------------------------
# Pure stepping logic (no hub)
# ----------------------------------------------------------------------------


class StepResult(NamedTuple):
    """What one :meth:`FilterStage.step` did.

    ``result`` is the :class:`~gbufferevent.FilterResult` (a raising or
    misbehaving filter counts as ``BEV_ERROR``); ``consumed``/``produced`` are
    the bytes taken from the source and added to the destination; ``more`` is
    True when another step right away could make progress.
    """

    result: FilterResult
    consumed: int
    produced: int
    more: bool


def input_budget(src: Buffer, dst_limit: int, mode: int) -> int:
    """How many bytes of *src* a size-preserving filter takes in one call.

    All of it, except in ``BEV_NORMAL`` with a ``dst_limit``: then about
    ``dst_limit`` bytes (at least 1), so the output roughly keeps the limit.
    0 means there is nothing to take.  A helper for filter writers (no
    libevent counterpart); the zlib compressor and :class:`ProcessFilter`
    use it.
    """
    n = len(src)
    if mode == BEV_NORMAL and dst_limit >= 0 and n:
        n = min(n, max(dst_limit, 1))
    return n


def _check_filter(f: FilterSpec, argname: str) -> Optional[FilterFunc]:
    if f is None or callable(f):
        return f
    if callable(getattr(f, "process", None)):
        return ProcessFilter(f)
    raise TypeError(f"{argname} must be a filter callable, an object with a "
                    f"process(data, mode) method, or None, not {type(f).__name__}")


class FilterStage:
    """One direction of a filter bufferevent: calls its filter one bounded step
    at a time.  Pure logic over two :class:`~gbufferevent.Buffer` objects.

    :param fn: ``f(source, destination, dst_limit, mode, ctx) -> FilterResult``,
        None (pass-through), or an object with ``process(data, mode)``.
    :param ctx: passed to every call of *fn*.
    :param name: ``"input"`` or ``"output"``, for messages.

    Attributes: ``dead`` (a call failed; the stage is not called again),
    ``finished`` (a call with ``BEV_FINISHED`` was made), ``error`` (the
    exception behind the failure, or None), ``calls`` (how many times *fn* ran).
    """

    def __init__(self, fn: FilterSpec, ctx: Any = None, name: str = "filter") -> None:
        self.fn = _check_filter(fn, f"{name}_filter")
        self.ctx = ctx
        self.name = name
        self.dead = False
        self.finished = False
        self.error: Optional[BaseException] = None
        self.calls = 0
        self.in_call = False
        self._grow = 1
        self._idle_at = -1       # source length when it last said NEED_MORE

    def waiting(self, src: Buffer) -> bool:
        """True if the last call returned ``BEV_NEED_MORE`` on all of *src* and
        nothing was added since: calling again in ``BEV_NORMAL`` is pointless
        (libevent's filter loop stops on ``BEV_NEED_MORE`` the same way)."""
        return self._idle_at == src._len

    def step(self, src: Buffer, dst: Buffer, dst_limit: int = -1, mode: FlushMode = BEV_NORMAL,
             window: int = 0) -> StepResult:
        """Call the filter once and report what happened (one iteration of
        libevent's ``be_filter_process_input``/``be_filter_process_output``).

        :param src: the source :class:`~gbufferevent.Buffer`.
        :param dst: the destination :class:`~gbufferevent.Buffer`.
        :param dst_limit: bytes the filter may add to *dst*, -1 = no limit.
        :param mode: :class:`~gbufferevent.FlushMode`.
        :param window: at most this many bytes of *src* are shown to the
            filter (0 = all).  After ``BEV_NEED_MORE`` on a cut window with
            nothing consumed, the next window is twice as large, so a filter
            that needs a long record still gets it.
        :returns: :class:`StepResult`.

        The buffers' ``_on_add``/``_on_drain`` hooks are held back during the
        call and run once afterwards, so the owner sees one change per step
        and the filter is never re-entered through them.

        :raises RuntimeError: called from inside this stage's own filter
            (e.g. a filter flushing its own bufferevent).
        """
        if self.in_call:
            raise RuntimeError(f"the {self.name} filter was re-entered "
                               "(flushed or closed from inside itself)")
        if self.fn is None:
            # Pass-through: one chunk-reference move, its hooks run once.
            n = src._len if dst_limit < 0 else min(src._len, dst_limit)
            if window and n > window:
                n = window
            self.calls += 1
            if mode == BEV_FINISHED:
                self.finished = True
            moved = src.remove_buffer(dst, n)
            self._idle_at = -1 if moved else src._len
            return StepResult(BEV_OK if moved else BEV_NEED_MORE, moved, moved,
                              moved > 0 and src._len > 0)
        n_src, n_dst = len(src), len(dst)
        add_hook, dst._on_add = dst._on_add, None
        drain_hook, src._on_drain = src._on_drain, None
        cut = False
        try:
            shown = window * self._grow if window else n_src
            if shown < n_src:
                cut = True
                win = Buffer(src.peek(shown))
                res = self._call(win, dst, dst_limit, mode)
                src.drain(max(0, shown - len(win)))
            else:
                res = self._call(src, dst, dst_limit, mode)
        finally:
            dst._on_add = add_hook
            src._on_drain = drain_hook
        consumed = max(0, n_src - len(src))
        produced = max(0, len(dst) - n_dst)
        if consumed or produced:
            self._grow = 1
        self._idle_at = len(src) if res == BEV_NEED_MORE and not cut else -1
        if res == BEV_OK:
            more = bool(len(src)) and bool(consumed or produced)
        elif res == BEV_NEED_MORE:
            more = cut
            if cut and not consumed:
                self._grow *= 2
        else:
            more = False
            self.dead = True
        if mode == BEV_FINISHED and res != BEV_ERROR:
            self.finished = True
        if produced and add_hook is not None:
            add_hook()
        if consumed and drain_hook is not None:
            drain_hook()
        return StepResult(res, consumed, produced, more)

    def _call(self, src: Buffer, dst: Buffer, dst_limit: int, mode: FlushMode) -> FilterResult:
        self.calls += 1
        self.in_call = True
        try:
            # step() calls _call only when fn is not None
            res = self.fn(src, dst, dst_limit, mode, self.ctx)  # type: ignore[misc]
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - user code, GreenletExit too
            log.error("%s filter %r raised %s: %s", self.name, self.fn,
                      type(exc).__name__, exc, exc_info=exc)
            self.error = exc
            return BEV_ERROR
        finally:
            self.in_call = False
        if isinstance(res, bool) or not isinstance(res, int) or res not in (0, 1, 2):
            self.error = TypeError(f"{self.name} filter returned {res!r}, "
                                   "not a FilterResult")
            log.error("%s", self.error)
            return BEV_ERROR
        if res == BEV_ERROR:
            why = getattr(self.fn, "error", None)
            self.error = why if isinstance(why, BaseException) else None
        return FilterResult(res)

    def failure(self) -> FilterError:
        """The :class:`FilterError` (``errno.EPROTO``) describing why the stage died."""
        err = self.error
        why = " (returned BEV_ERROR)" if err is None else f": {str(err) or type(err).__name__}"
        return FilterError(f"{self.name} filter failed{why}", err)


class ProcessFilter:
    """Adapt a plain object to the filter protocol.

    *obj* has a method ``process(data: bytes, mode: FlushMode) -> bytes``: it
    gets the bytes of the source (at most the step's window, and at most
    ``dst_limit`` bytes in ``BEV_NORMAL`` when a limit is set) and returns
    what goes to the destination (``b""`` for nothing yet).  It is called
    with ``b""`` on a flush so it can release what it holds; raising makes
    the direction fail (``BEV_ERROR``).  Returns ``BEV_OK`` when it produced
    bytes, else ``BEV_NEED_MORE``.

    Filter bufferevents adapt such objects by themselves; use this class to
    call one by hand.  :raises TypeError: *obj* has no callable ``process``,
    or ``process`` returned something not bytes-like (when called).
    No libevent counterpart: a ``bufferevent_filter_cb`` written for you.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: SupportsProcess) -> None:
        if not callable(getattr(obj, "process", None)):
            raise TypeError(f"obj must have a process(data, mode) method, "
                            f"not {type(obj).__name__}")
        self.obj = obj

    def __repr__(self) -> str:
        return f"ProcessFilter({self.obj!r})"

    def __call__(self, src: Buffer, dst: Buffer, dst_limit: int, mode: FlushMode,
                 ctx: Any) -> FilterResult:
        n = input_budget(src, dst_limit, mode)
        if not n and mode == BEV_NORMAL:
            return BEV_NEED_MORE
        out = self.obj.process(src.remove(n), mode)
        out = _as_bytes(out, "process() result")
        if out:
            dst.add(out)
            return BEV_OK
        return BEV_NEED_MORE


# ----------------------------------------------------------------------------
# The bufferevent kind
# ----------------------------------------------------------------------------


class _StackWatch:
    """Sits in the writer lists of the layers below a filter.

    Those lists are woken as a whole only when a layer can no longer go on
    (freed, unlinked from its pair partner, an event); the filter then wakes
    its own blocked greenlets so they re-check the stack and never hang.
    """

    __slots__ = ("bev",)

    def __init__(self, bev):
        self.bev = bev

    def switch(self, value=None):
        bev = self.bev
        if not bev._freed:
            bev._wake_all(bev._readers)
            bev._wake_all(bev._writers)


class FilterBufferevent(Bufferevent):
    """A bufferevent that filters another one (``bufferevent_filter_new``).

    :param underlying: the :class:`~gbufferevent.Bufferevent` to wrap.  Its
        callbacks are replaced by the filter's, it is enabled for
        ``EV_READ|EV_WRITE`` and its reading is suspended until ``EV_READ`` is
        enabled on the filter (and again whenever the filter cannot take
        input).  It can still be enabled and disabled on its own.
    :param input_filter: filter for bytes read (underlying's ``input`` ->
        this ``input``); None passes them through.
    :param output_filter: filter for bytes written (this ``output`` ->
        underlying's ``output``); None passes them through.
    :param options: ``BEV_OPT_*``; with ``BEV_OPT_CLOSE_ON_FREE`` freeing (or
        closing) the filter frees (closes) the underlying.
    :param free_context: called as ``free_context(ctx)`` exactly once, just
        before the filter goes away.
    :param ctx: passed to both filters and to *free_context*.
    :raises TypeError: *underlying* is not a bufferevent, a filter is neither
        callable nor an object with ``process``, *free_context* not callable.
    :raises BuffereventClosedError: *underlying* was freed.

    ``dst_limit`` in ``BEV_NORMAL`` is, for the input filter, this
    bufferevent's read high watermark minus its input length (-1 without a
    watermark); for the output filter, the underlying's write high watermark
    minus its output length (-1 without one); a rate limit on this
    bufferevent lowers it further.  A filter is not called in ``BEV_NORMAL``
    while its destination is full or its direction disabled.  In
    ``BEV_FLUSH``/``BEV_FINISHED`` it is -1.

    A filter returning ``BEV_ERROR`` (or raising any exception but
    ``KeyboardInterrupt``/``SystemExit``) gives an ``ERROR|READING`` or
    ``ERROR|WRITING`` event carrying a :class:`FilterError`, and that
    direction stops for good: no further event for it (an EOF or transport
    error that follows is not reported).  Bytes an input filter added to
    ``input`` in the failing call reach the read callback and blocked
    readers before the ERROR event (data received before an error is
    delivered first).  When the underlying reports EOF the input filter is
    called with ``BEV_FINISHED`` before the EOF event reaches you.
    ``flush(iotype, BEV_FLUSH or BEV_FINISHED)`` calls the matching filter at
    least once in that mode (even with empty buffers), then flushes the
    underlying the same way, and returns 1 if a call returned ``BEV_OK``,
    else 0; ``BEV_FINISHED`` on ``EV_WRITE`` ends the stream.  :meth:`close`
    delivers everything first: the output filter is finished, then the
    underlying is closed the same socket-like way (``BEV_OPT_CLOSE_ON_FREE``)
    or handed back; :meth:`free` drops what is pending.  Without
    ``BEV_OPT_CLOSE_ON_FREE`` the underlying survives either way, its
    callbacks cleared.  The greenlet-blocking calls (``recv``, ``sendall``,
    ``readline``...) work as on any bufferevent.

    Rate limits on a filter count, as on every kind, the bytes entering its
    ``input`` (after the input filter) and leaving its ``output`` (before the
    output filter): one step never moves more than the buckets allow.
    Timeouts set on the filter watch the filter's own buffers;
    set them on the underlying to watch the transport (its TIMEOUT events are
    passed on to the filter's event callback).
    """

    def __init__(self, underlying: Bufferevent, input_filter: FilterSpec,
                 output_filter: FilterSpec, options: int = 0,
                 free_context: Optional[FreeContext] = None, ctx: Any = None) -> None:
        if not isinstance(underlying, Bufferevent):
            raise TypeError(f"underlying must be a Bufferevent, "
                            f"not {type(underlying).__name__}")
        if underlying._freed:
            raise BuffereventClosedError("underlying bufferevent is freed")
        if free_context is not None and not callable(free_context):
            raise TypeError(f"free_context must be callable or None, "
                            f"not {type(free_context).__name__}")
        self._in = FilterStage(input_filter, ctx, "input")
        self._out = FilterStage(output_filter, ctx, "output")
        super().__init__(options, underlying.hub)
        self._underlying = underlying
        self._attached = True
        self._ctx = ctx
        self._free_context = free_context
        self._scheduled = False
        self._busy = False           # inside _run/flush: writes only schedule
        self._close_started = False
        self._watch = (_StackWatch(self), -1)
        self._u_waiting = False      # our writecb is on the underlying
        self._ended = 0              # READING/WRITING bits that had their ERROR event
        underlying.setcb(self._u_readcb, None, self._u_eventcb)
        underlying._suspend_read(SUSPEND_FILTER)
        underlying.enable(EV_READ | EV_WRITE)

    # -- plumbing ------------------------------------------------------------

    def get_underlying(self) -> Bufferevent:
        """The wrapped bufferevent (``bufferevent_get_underlying``)."""
        return self._underlying

    def getfd(self) -> int:
        """The underlying's fd, or -1 (``bufferevent_getfd`` forwards)."""
        return self._underlying.getfd() if self._attached else -1

    def setfd(self, fd: Optional[SocketLike]) -> int:
        """Give the underlying a new fd (``bufferevent_setfd`` forwards);
        returns what the underlying's ``setfd`` returns (0, or -1 for a pair).

        :raises BuffereventClosedError: the filter was freed.
        """
        self._check_alive()
        return self._underlying.setfd(fd)

    @property
    def ctx(self) -> Any:
        """The *ctx* given at creation (the ``void *ctx`` of ``bufferevent_filter_new``)."""
        return self._ctx

    @property
    def input_stage(self) -> FilterStage:
        """The :class:`FilterStage` of the input direction (``calls``, ``error``...)."""
        return self._in

    @property
    def output_stage(self) -> FilterStage:
        """The :class:`FilterStage` of the output direction."""
        return self._out

    def _live_underlying(self):
        u = self._underlying
        return u if self._attached and not u._freed else None

    def _update_io(self):
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()
        u = self._live_underlying()
        if u is None or self._freed:
            return
        if self._can_read() and not self._in.dead:
            u._unsuspend_read(SUSPEND_FILTER)
        else:
            u._suspend_read(SUSPEND_FILTER)
        self._kick()

    def _output_added(self):
        # A user write runs the first output step at once, as libevent's
        # output-buffer callback does.  A write made while we are processing
        # (from a filter or a callback) only schedules the next step, so
        # nothing re-enters a filter.
        if self._wtimeout:
            self._adj_timeouts()
        if self._busy or self._scheduled:
            self._kick()
            return
        self._busy = True
        try:
            r = self._step_out()
        finally:
            self._busy = False
        if r is not None and r.more:
            self._kick()

    def _kick(self):
        if not self._scheduled and not self._freed:
            self._scheduled = True
            self.loop.run_callback(self._run)

    def _run(self):
        """One bounded step per direction; reschedules itself while useful."""
        self._scheduled = False
        if not self._attached:
            return
        more = False
        self._busy = True
        try:
            if self._underlying.input._len:
                r = self._step_in()
                more = r is not None and r.more
            if self.output._len and self._attached:
                r = self._step_out()
                more = more or (r is not None and r.more)
        finally:
            self._busy = False
        if more:
            self._kick()

    # -- underlying's callbacks -------------------------------------------------

    def _u_readcb(self, u, arg):
        self._kick()

    def _u_writecb(self, u, arg):
        # Installed only while the output stage waits for room below.
        self._wait_for_room(u, False)
        self._kick()

    def _wait_for_room(self, u, on):
        if on != self._u_waiting:
            self._u_waiting = on
            u.setcb(self._u_readcb, self._u_writecb if on else None, self._u_eventcb)

    def _u_eventcb(self, u, what, arg):
        if self._freed:
            return
        if what & BEV_EVENT_EOF and what & BEV_EVENT_READING and not self._eof:
            # Beyond libevent: the input filter releases what it holds
            # (BEV_FINISHED) before the user hears of the EOF.
            self._flush_in(BEV_FINISHED)
            if self._freed:
                return
        self._trigger_event(what, u._error if what & BEV_EVENT_ERROR else None)

    # -- input direction ---------------------------------------------------------

    def _rate_limited(self):
        return self._rl is not None or self._group is not None

    def _in_limit(self):
        hi = self._rd_hi
        limit = hi - len(self.input) if hi else -1
        if self._rate_limited():
            a = self._read_allowance()
            limit = a if limit < 0 else min(limit, a)
        return limit

    def _step_in(self):
        """One NORMAL input step if allowed: its StepResult, or None."""
        u = self._live_underlying()
        if (u is None or self._in.dead or not u.input._len or not self._can_read()
                or self._in.waiting(u.input)):
            return None
        limit = self._in_limit()
        if limit == 0:
            return None
        return self._do_in(BEV_NORMAL, limit,
                           self._max_read if self._in.fn is not None else 0)

    def _do_in(self, mode, limit, window):
        st = self._in
        r = st.step(self._underlying.input, self.input, limit, mode, window)
        if r.produced:
            self._charge_read(r.produced)
        if r.result == BEV_ERROR:
            # Data received before an error is delivered first: what the
            # failing call still produced reaches readcb/recv before ERROR.
            if r.produced and not self._freed:
                self._trigger_read()
            if not self._freed:
                self._fail(EV_READ, st)
        elif r.result == BEV_OK and not self._freed:
            self._trigger_read()
        return r

    def _flush_in(self, mode):
        """Run the input filter at least once in *mode*; True if any BEV_OK."""
        return self._flush_stage(self._in, self._do_in, mode)

    def _flush_stage(self, stage, do, mode):
        """Call *do* (``_do_in``/``_do_out``) in *mode* at least once and
        until it stops making progress; True if any call returned BEV_OK."""
        if self._live_underlying() is None or stage.dead:
            return False
        ok = False
        busy, self._busy = self._busy, True
        try:
            while True:
                r = do(mode, -1, 0)
                ok = ok or r.result == BEV_OK
                if self._freed or not r.more:
                    return ok
        finally:
            self._busy = busy

    # -- output direction -------------------------------------------------------

    def _step_out(self):
        """One NORMAL output step if allowed: its StepResult, or None.

        While closing, the step that sees the rest of the output is made
        with BEV_FINISHED and completes the close."""
        u = self._underlying
        src = self.output
        if (not src._len or self._out.dead or not self._attached or u._freed
                or not self._can_write() or self._out.waiting(src)):
            return None
        hi = u._wr_hi
        cap = hi or DEFAULT_SEND_BUFFER
        room = cap - u.output._len
        passthrough = self._out.fn is None
        if room <= 0 or (passthrough and room < src._len and room < cap // 2):
            # Full (or, for the pass-through, so full that only a sliver
            # would fit): resumed by the underlying's writecb.
            self._wait_for_room(u, True)
            return None
        limit = room if hi else -1
        # A filter function sees at most max_single_write bytes per step; the
        # pass-through does no per-byte work and moves chunk references up to
        # the room below (at most DEFAULT_SEND_BUFFER without a watermark).
        window = room if passthrough else self._max_write
        if self._rate_limited():
            # The write bucket counts bytes leaving our output: it bounds
            # what one step may take, and lowers dst_limit too.
            a = self._write_allowance()
            if a <= 0:
                return None          # suspended until the scheduler refills
            limit = a if limit < 0 else min(limit, a)
            window = min(window, a)
        if not (self._closing and src._len <= window):
            return self._do_out(BEV_NORMAL, limit, window)
        self._flush_out(BEV_FINISHED)       # the last step of a close
        if not self._freed:
            if self.output:
                log.warning("%r: the output filter left %d bytes at close",
                            self, len(self.output))
                self.output.clear()
            self._be_close_ready()
        return None

    def _do_out(self, mode, limit, window):
        st = self._out
        r = st.step(self.output, self._underlying.output, limit, mode, window)
        if r.consumed:
            self._charge_write(r.consumed)
        if r.result == BEV_ERROR:
            self._fail(EV_WRITE, st)
        elif (r.result == BEV_OK or r.consumed) and not self._freed:
            self._trigger_write()
        return r

    def _flush_out(self, mode):
        """Run the output filter at least once in *mode*; True if any BEV_OK."""
        return self._flush_stage(self._out, self._do_out, mode)

    def _fail(self, direction, stage):
        self._enabled &= ~direction
        self._update_io()
        self._trigger_event(BEV_EVENT_ERROR | (
            BEV_EVENT_READING if direction == EV_READ else BEV_EVENT_WRITING),
            stage.failure())

    def _trigger_event(self, what, exc=None):
        # After an ERROR on a direction, no further events for that
        # direction: a truncated stream's EOF (or the transport's error)
        # that follows the filter's ERROR|READING is not reported again.
        if not self._closing:
            dirs = what & (BEV_EVENT_READING | BEV_EVENT_WRITING)
            if dirs:
                live = dirs & ~self._ended
                if not live:
                    return
                what = (what & ~dirs) | live
                if what & BEV_EVENT_ERROR:
                    self._ended |= live
        super()._trigger_event(what, exc)

    # -- flush / end of stream / teardown -----------------------------------------

    def _be_flush(self, iotype: int, mode: FlushMode) -> int:
        """``bufferevent_flush`` on a filter.

        ``BEV_FLUSH``/``BEV_FINISHED``: the underlying's read side is flushed
        first (``EV_READ``), then the matching filter runs at least once in
        *mode* on everything pending, even with empty buffers or the
        direction disabled, then the underlying's write side is flushed the
        same way (``EV_WRITE``).  ``BEV_FINISHED`` on ``EV_WRITE`` ends the
        stream: later writes raise.  ``BEV_NORMAL`` runs one ordinary step
        now.  Returns 1 if a filter call returned ``BEV_OK``, else 0, -1 if
        the underlying is gone.
        """
        u = self._live_underlying()
        if u is None:
            return -1
        if mode == BEV_NORMAL:
            ok = False
            if iotype & EV_READ:
                r = self._step_in()
                ok = r is not None and r.result == BEV_OK
            if iotype & EV_WRITE and not self._freed:
                r = self._step_out()
                ok = (r is not None and r.result == BEV_OK) or ok
            self._kick()
            return 1 if ok else 0
        ok = False
        if iotype & EV_READ:
            u.flush(EV_READ, mode)
            if not self._freed:
                ok = self._flush_in(mode)
        if iotype & EV_WRITE and not self._freed:
            ok = self._flush_out(mode) or ok
            if mode == BEV_FINISHED:
                self._shut_wr = self._shut_wr_done = True
            u = self._live_underlying()
            if u is not None:
                u.flush(EV_WRITE, mode)
        return 1 if ok else 0

    def _be_shutdown_write(self):
        # shutdown(SHUT_WR): the output filter finishes its stream, then the
        # underlying delivers what it holds and ends the stream below.
        u = self._live_underlying()
        if u is None:
            return
        if not self._out.finished:
            self._flush_out(BEV_FINISHED)
        u = self._live_underlying()
        if u is not None and not (u._shut_wr or u._closing):
            u.shutdown(_socket.SHUT_WR)

    def _be_close_ready(self):
        # Our output is empty: finish the output filter, hand the underlying
        # a socket-like close (it delivers its output first), go away.
        if self._freed or self._close_started:
            return
        self._close_started = True
        if not self._out.finished:
            self._flush_out(BEV_FINISHED)
            if self._freed:
                return
        u = self._live_underlying()
        if u is not None and self.options & BEV_OPT_CLOSE_ON_FREE:
            self._detach()
            u.close()
        self.free()

    def _detach(self):
        """Give the underlying back: our callbacks off, its reading resumed."""
        if not self._attached:
            return
        self._attached = False
        u = self._underlying
        readcb, _, eventcb, _ = u.getcb()
        if (readcb, eventcb) == (self._u_readcb, self._u_eventcb):
            u.setcb(None, None, None)
        lvl = u
        while lvl is not None:
            if self._watch in lvl._writers:
                lvl._writers.remove(self._watch)
            lvl = lvl.get_underlying()
        if not u._freed:
            u._unsuspend_read(SUSPEND_FILTER)
        return u

    def _be_free(self):
        u = self._underlying if self._attached else None
        self._detach()
        try:
            if u is not None and self.options & BEV_OPT_CLOSE_ON_FREE:
                u.free()
        finally:
            fc, self._free_context = self._free_context, None
            if fc is not None:
                try:
                    fc(self._ctx)
                except Exception:  # noqa: BLE001 - user code
                    log.exception("free_context of %r raised", self)

    # -- blocking layer: look down the stack -----------------------------------

    def _wait(self, waiters, entry_extra=None, deadline=None):
        lvl = self._live_underlying()
        while lvl is not None and not lvl._freed:
            if self._watch not in lvl._writers:
                lvl._writers.append(self._watch)
            lvl = lvl.get_underlying()
        return super()._wait(waiters, entry_extra, deadline)

    def _read_ready(self):
        return super()._read_ready() or self._live_underlying() is None

    def _await_data(self, deadline):
        if not self._finish_if_stack_gone():
            super()._await_data(deadline)

    def _finish_if_stack_gone(self):
        """If nothing more can come from below and no event will say so (a
        pair member whose partner was freed), finish the input like an EOF:
        the input filter releases what it holds, then reads see EOF.
        Returns True if it did."""
        if self._eof or self._freed:
            return False
        u = self._live_underlying()
        if u is not None:
            lower = getattr(u, "_finish_if_stack_gone", None)
            if lower is not None:
                lower()
            try:
                if not u._read_ready():
                    return False
            except BuffereventClosedError:
                pass
            except OSError:
                return False     # an error: its event reaches us on its own
        self._eof = True
        self._flush_in(BEV_FINISHED)
        return True

    def _check_stack(self):
        u = self._live_underlying()
        if u is None:
            raise BrokenPipeError(errno.EPIPE, "the underlying bufferevent is gone")
        u._write_wait_check()

    def _write_wait_check(self):
        super()._write_wait_check()
        self._check_stack()

    def _check_sendable(self):
        super()._check_sendable()
        self._check_stack()


def filter_new(underlying: Bufferevent, input_filter: FilterSpec, output_filter: FilterSpec,
               options: int = 0, free_context: Optional[FreeContext] = None,
               ctx: Any = None) -> FilterBufferevent:
    """Create a :class:`FilterBufferevent` (``bufferevent_filter_new``).

    Same arguments, behaviour and errors as the class: *underlying* (a
    bufferevent), *input_filter* and *output_filter* (filter functions,
    objects with ``process``, or None for pass-through), ``BEV_OPT_*``
    *options*, *free_context* (``free_context(ctx)``, once) and *ctx*.
    :raises TypeError: bad *underlying*, filter or *free_context*.
    :raises BuffereventClosedError: *underlying* was freed.
    """
    return FilterBufferevent(underlying, input_filter, output_filter, options,
                             free_context, ctx)
