"""Paired bufferevents: two bufferevents wired to each other, no socket at all.

libevent's ``bufferevent_pair.c``.  Bytes written on one member move, as
chunk references (no copy), from its ``output`` to the partner's ``input``.  A
move happens when both sides allow it (sender: WRITE enabled, not suspended;
receiver: READ enabled, not suspended, below its read high watermark), one
step at a time: a step moves at most the smaller of the sender's max single
write and the receiver's max single read (and what rate limits allow); the
next step runs from the hub, so a big write does not hog it.

Callbacks are always deferred (``BEV_OPT_DEFER_CALLBACKS`` is forced on): a
readcb never runs inside the ``write()`` that caused it, so two members that
answer each other from callbacks never grow the stack.
"""
from __future__ import annotations

from typing import Optional, Tuple

from ._typing import Hub
from .bufferevent import Bufferevent, _owned
from .constants import (
    BEV_EVENT_EOF, BEV_EVENT_READING, BEV_EVENT_WRITING, BEV_FINISHED,
    BEV_OPT_DEFER_CALLBACKS, EV_READ, EV_WRITE, FlushMode,
)

__all__ = ["PairBufferevent", "pair_new"]


class PairBufferevent(Bufferevent):
    """One member of a pair made by :func:`pair_new` (``bufferevent_pair.c``).

    Create pairs with :func:`pair_new`; a member made alone has no partner.
    """

    def __init__(self, options: int = 0, hub: Optional[Hub] = None) -> None:
        super().__init__(options, hub)
        # Forced on, as in libevent; BEV_OPT_CLOSE_ON_FREE is accepted and ignored.
        self.options |= BEV_OPT_DEFER_CALLBACKS
        self._deferred = True
        self._partner: Optional[PairBufferevent] = None
        self._unlinked = False
        self._pumping = False
        self._pump_scheduled = False

    def get_partner(self) -> Optional[PairBufferevent]:
        """The other member, or None once it was freed (``bufferevent_pair_get_partner``)."""
        return self._partner

    # -- moving bytes -----------------------------------------------------

    def _pump(self):
        """Move one step from our output to the partner's input, if allowed."""
        p = self._partner
        if p is None or self._pumping or not self.output._len:
            return
        if self._susp_w or not self._enabled & EV_WRITE or p._susp_r \
                or not p._enabled & EV_READ or self._freed or p._freed:
            return
        limited = self._rl is not None or self._group is not None \
            or p._rl is not None or p._group is not None
        if limited or p._rd_hi:
            n = min(self._write_allowance(), p._read_allowance())
            if n <= 0:
                return
        else:
            n = self._max_write if self._max_write < p._max_read else p._max_read
        self._pumping = True
        try:
            moved = self.output.remove_buffer(p.input, n)
            if limited:
                self._charge_write(moved)
                p._charge_read(moved)
            p._trigger_read()
            self._trigger_write()
        finally:
            self._pumping = False
        if self.output._len and not self._pump_scheduled and not self._freed:
            self._pump_scheduled = True
            self.loop.run_callback(self._pump_later)

    def _pump_later(self):
        self._pump_scheduled = False
        if not self._freed:
            self._pump()

    def _output_added(self):
        if self._wtimeout:
            self._adj_timeouts()
        self._pump()

    def _update_io(self):
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()
        if self._freed:
            return
        self._pump()
        p = self._partner
        if p is not None:
            p._pump()

    # -- flush / end of stream ------------------------------------------------

    def _be_flush(self, iotype: int, mode: FlushMode) -> int:
        """Force pending bytes across, ignoring watermarks and enable state.

        ``BEV_NORMAL`` and ``BEV_FLUSH`` both force the transfer (as the spec
        says; libevent's code does nothing for ``BEV_NORMAL``).
        ``BEV_FINISHED`` then tells the partner no more data follows: EOF with
        READING when we flushed ``EV_WRITE``, with WRITING for ``EV_READ``.
        Returns -1 if the partner is gone, 1 if bytes moved, else 0.
        """
        p = self._partner
        if p is None:
            return -1
        moved = 0
        if iotype & EV_WRITE:
            moved += self._force(self, p)
        if iotype & EV_READ:
            moved += self._force(p, self)
        if mode == BEV_FINISHED:
            what = BEV_EVENT_EOF
            if iotype & EV_WRITE:
                what |= BEV_EVENT_READING
            if iotype & EV_READ:
                what |= BEV_EVENT_WRITING
            p._trigger_event(what)
        return 1 if moved else 0

    @staticmethod
    def _force(src, dst):
        moved = src.output.remove_buffer(dst.input, -1)
        if moved:
            src._charge_write(moved)
            dst._charge_read(moved)
            dst._trigger_read()
            src._trigger_write()
        return moved

    def _be_shutdown_write(self):
        p = self._partner
        if p is not None:
            p._trigger_event(BEV_EVENT_EOF | BEV_EVENT_READING)

    def _be_close_ready(self):
        # Socket-like close: our output has been delivered; the partner now
        # sees EOF after the data, then we go away.
        if not self._shut_wr_done:
            self._shut_wr_done = True
            self._be_shutdown_write()
        self.free()

    @_owned
    def close(self) -> None:
        """Deliver pending output to the partner (even past its read high
        watermark, as a ``BEV_FINISHED`` flush would), give it EOF, then free.
        Never blocks; a member without partner is simply freed.  Idempotent.
        No libevent counterpart (``bufferevent_free`` drops the output)."""
        if self._freed or self._closing:
            return
        p = self._partner
        if p is None:
            self.free()                  # nobody to deliver to
            return
        if self.output._len:
            self._force(self, p)
        super().close()

    def _be_free(self):
        p = self._partner
        self._partner = None
        if p is not None:
            p._partner = None
            p._unlink()

    def _unlink(self):
        """Our partner was freed: no more data, no event; wake blocked greenlets."""
        self._unlinked = True
        for t in (self._rtimer, self._wtimer):
            if t is not None:
                t.stop()
        self._wake_all(self._readers)
        self._wake_all(self._writers)

    def _adj_timeouts(self):
        if not self._unlinked:       # an unlinked member gets no events
            super()._adj_timeouts()

    def _trigger_event(self, what, exc=None):
        if self._unlinked and not self._closing:
            self._wake_all(self._readers)
            self._wake_all(self._writers)
            return
        super()._trigger_event(what, exc)

    def _no_transport(self):
        if self._partner is None and not self._unlinked:
            return OSError(107, "pair member has no partner")
        return None

    # -- blocking layer on a survivor -----------------------------------------

    def _read_ready(self):
        # A member whose partner was freed reads as EOF (recv returns b"").
        if self._unlinked and self._error is None and not self._freed:
            return True
        return super()._read_ready()

    def _check_sendable(self):
        if self._unlinked and not self._freed:
            raise BrokenPipeError(32, "the pair partner was freed")
        super()._check_sendable()

    def _write_wait_check(self):
        if self._unlinked and not self._freed:
            raise BrokenPipeError(32, "the pair partner was freed")
        super()._write_wait_check()


def pair_new(options: int = 0, hub: Optional[Hub] = None
             ) -> Tuple[PairBufferevent, PairBufferevent]:
    """Create two bufferevents connected to each other (``bufferevent_pair_new``).

    :param options: ``BEV_OPT_*``; ``BEV_OPT_DEFER_CALLBACKS`` is always on and
        ``BEV_OPT_CLOSE_ON_FREE`` means nothing for a pair.
    :param hub: the gevent hub (default: current).
    :returns: ``(bev0, bev1)``.
    :raises TypeError: *options* is not an int.  :raises ValueError: unknown
        option bits.
    """
    a = PairBufferevent(options, hub)
    b = PairBufferevent(options, a.hub)
    a._partner, b._partner = b, a
    return a, b
