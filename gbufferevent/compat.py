"""libevent's C names, as thin functions over gbufferevent's classes.

For code ported from C, or read side by side with the libevent book: every
function and constant of the "Bufferevents: advanced topics" chapter, plus
what its examples call, under its C name.  Nothing here is a second
implementation; each function calls the method it names.

Conventions (as in libevent):

* ``base`` is a gevent hub, or None for the current thread's hub
  (:func:`event_base_new` returns the current hub).
* Functions return 0 on success and -1 where libevent reports a normal
  failure; functions returning a pointer return None for NULL.  Arguments of
  the wrong type or value still raise ``TypeError``/``ValueError``.
* Output parameters become return values: ``bufferevent_pair_new`` returns
  ``[bev0, bev1]``, ``..._get_totals`` returns ``(read, written)``,
  ``bufferevent_read`` returns the bytes read.
* Times (``tick_len``, timeouts) are seconds as a float, or a
  ``(seconds, microseconds)`` tuple like a ``struct timeval``, or None.
"""
import errno
import socket as _stdsocket

import gevent
from gevent.hub import get_hub

from .buffer import Buffer
from .bufferevent import Bufferevent
from .constants import *  # noqa: F401,F403  (BEV_*, EV_*, BUFFEREVENT_SSL_*, ...)
from .constants import EV_SSIZE_MAX
from .pair import PairBufferevent, pair_new
from .socket import SocketBufferevent

#: ``evconnlistener`` flags (event2/listener.h values).
LEV_OPT_LEAVE_SOCKETS_BLOCKING = 1 << 0
LEV_OPT_CLOSE_ON_FREE = 1 << 1
LEV_OPT_CLOSE_ON_EXEC = 1 << 2
LEV_OPT_REUSEABLE = 1 << 3

#: ``event_base_loop`` flags.
EVLOOP_ONCE = 0x01
EVLOOP_NONBLOCK = 0x02

#: ``evbuffer_readln`` end-of-line styles (``enum evbuffer_eol_style``).
EVBUFFER_EOL_ANY = 0
EVBUFFER_EOL_CRLF = 1
EVBUFFER_EOL_CRLF_STRICT = 2
EVBUFFER_EOL_LF = 3
EVBUFFER_EOL_NUL = 4


def _hub(base):
    return get_hub() if base is None else base


def _seconds(tv, argname):
    if tv is None:
        return None
    if isinstance(tv, tuple):
        if len(tv) != 2:
            raise ValueError(f"{argname} must be (seconds, microseconds)")
        sec, usec = tv
        return sec + usec / 1e6
    return tv


# -- event base -------------------------------------------------------------

def event_base_new():
    """The current thread's gevent hub (``event_base_new``): one loop per thread."""
    return get_hub()


def event_base_loop(base, flags=0):
    """Run the hub's loop (``event_base_loop``) from a greenlet.

    ``flags=0`` waits until nothing is left to do (no active watcher, no
    greenlet to run) and returns 1, as libevent does when it runs out of
    events.  ``EVLOOP_NONBLOCK`` runs what is ready now and returns 0;
    ``EVLOOP_ONCE`` waits for one pass of the loop that blocks for events
    (an I/O event, a timer, a callback) and returns 0.
    """
    hub = _hub(base)
    if flags & EVLOOP_NONBLOCK:
        gevent.sleep(0)
        return 0
    if flags & EVLOOP_ONCE:
        from gevent.hub import Waiter
        w = Waiter(hub)
        check = hub.loop.check()          # runs after the loop's next poll
        check.start(w.switch, None)
        try:
            w.get()
        finally:
            check.close()
        return 0
    gevent.wait()
    return 1


def event_base_dispatch(base):
    """``event_base_loop(base, 0)``."""
    return event_base_loop(base, 0)


# -- listeners --------------------------------------------------------------

class evconnlistener:
    """A listening socket calling ``cb(listener, fd, address, socklen, arg)``
    from the hub for each accepted connection (``struct evconnlistener``).

    The callee owns *fd* (an int), as in C.
    """

    def __init__(self, base, cb, arg, flags, backlog, address):
        if not callable(cb):
            raise TypeError("cb must be callable")
        self.base = _hub(base)
        self.flags = flags
        self.cb, self.arg = cb, arg
        family = _stdsocket.AF_INET6 if ":" in str(address[0]) else _stdsocket.AF_INET
        sock = _stdsocket.socket(family, _stdsocket.SOCK_STREAM)
        try:
            if flags & LEV_OPT_REUSEABLE:
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(backlog if backlog > 0 else 128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.sock = sock
        self._watcher = self.base.loop.io(sock.fileno(), 1)
        self._watcher.start(self._accept)

    def _accept(self):
        for _ in range(64):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM,
                                 errno.ECONNABORTED):
                    return
                raise
            if not self.flags & LEV_OPT_LEAVE_SOCKETS_BLOCKING:
                conn.setblocking(False)
            socklen = 28 if conn.family == _stdsocket.AF_INET6 else 16
            self.cb(self, conn.detach(), addr, socklen, self.arg)

    def free(self):
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
            self.sock.close()


def evconnlistener_new_bind(base, cb, arg, flags, backlog, address):
    """Listen on *address* ``(host, port)`` and call *cb* per connection
    (``evconnlistener_new_bind``).  Raises ``OSError`` if it cannot listen."""
    return evconnlistener(base, cb, arg, flags, backlog, address)


def evconnlistener_get_base(listener):
    """The hub the listener runs on (``evconnlistener_get_base``)."""
    return listener.base


def evconnlistener_get_fd(listener):
    return listener.sock.fileno()


def evconnlistener_free(listener):
    """Stop listening and close the socket (``evconnlistener_free``)."""
    listener.free()


# -- bufferevents: generic ------------------------------------------------------

def bufferevent_socket_new(base, fd, options):
    """``bufferevent_socket_new``: *fd* an int (-1: none yet) or a socket."""
    return SocketBufferevent(None if fd == -1 else fd, options, _hub(base))


def bufferevent_socket_connect(bev, address):
    return bev.connect(address)


def bufferevent_socket_connect_hostname(bev, evdns_base, family, hostname, port):
    """``evdns_base`` is ignored: gevent's resolver is used."""
    return bev.connect_hostname(hostname, port, family)


def bufferevent_get_base(bev):
    return bev.hub


def bufferevent_setcb(bev, readcb, writecb, eventcb, cbarg):
    bev.setcb(readcb, writecb, eventcb, cbarg)


def bufferevent_getcb(bev):
    return bev.getcb()


def bufferevent_enable(bev, events):
    return bev.enable(events)


def bufferevent_disable(bev, events):
    return bev.disable(events)


def bufferevent_get_enabled(bev):
    return bev.get_enabled()


def bufferevent_get_input(bev):
    return bev.input


def bufferevent_get_output(bev):
    return bev.output


def bufferevent_write(bev, data, size=-1):
    """Append *data* (the first *size* bytes if given). Returns 0."""
    if size is not None and size >= 0:
        data = memoryview(data)[:size]
    return bev.write(data)


def bufferevent_write_buffer(bev, buf):
    return bev.write_buffer(buf)


def bufferevent_read(bev, size):
    """Remove and return up to *size* bytes of input (C fills a buffer)."""
    return bev.read(size)


def bufferevent_read_buffer(bev, buf):
    return bev.read_buffer(buf)


def bufferevent_free(bev):
    bev.free()


def bufferevent_flush(bev, iotype, mode):
    return bev.flush(iotype, mode)


def bufferevent_setfd(bev, fd):
    return bev.setfd(fd)


def bufferevent_getfd(bev):
    return bev.getfd()


def bufferevent_get_underlying(bev):
    return bev.get_underlying()


def bufferevent_setwatermark(bev, events, lowmark, highmark):
    bev.setwatermark(events, lowmark, highmark)


def bufferevent_getwatermark(bev, events):
    """Returns ``(low, high)``, or -1 if *events* names both directions."""
    try:
        return bev.getwatermark(events)
    except ValueError:
        if events and not events & ~(EV_READ | EV_WRITE):  # noqa: F405
            return -1
        raise


def bufferevent_set_timeouts(bev, timeout_read, timeout_write):
    return bev.set_timeouts(_seconds(timeout_read, "timeout_read"),
                            _seconds(timeout_write, "timeout_write"))


# -- pairs ----------------------------------------------------------------------

def bufferevent_pair_new(base, options):
    """``[bev0, bev1]``, connected to each other (``bufferevent_pair_new``)."""
    return list(pair_new(options, _hub(base)))


def bufferevent_pair_get_partner(bev):
    """The partner of a pair member, None if freed or not a pair member."""
    return bev.get_partner() if isinstance(bev, PairBufferevent) else None


# -- filters ----------------------------------------------------------------------

def bufferevent_filter_new(underlying, input_filter, output_filter, options,
                           free_context, ctx):
    """A filtering bufferevent over *underlying*; None if *underlying* is None."""
    if underlying is None:
        return None
    from .filter import FilterBufferevent
    return FilterBufferevent(underlying, input_filter, output_filter, options,
                             free_context, ctx)


# -- max single read/write ------------------------------------------------------------

def bufferevent_set_max_single_read(bev, size):
    return bev.set_max_single_read(size)


def bufferevent_set_max_single_write(bev, size):
    return bev.set_max_single_write(size)


def bufferevent_get_max_single_read(bev):
    return bev.get_max_single_read()


def bufferevent_get_max_single_write(bev):
    return bev.get_max_single_write()


# -- rate limits ------------------------------------------------------------------

def ev_token_bucket_cfg_new(read_rate, read_burst, write_rate, write_burst, tick_len):
    """A token-bucket config, or None for values libevent rejects (rate < 1,
    rate > burst, above ``EV_RATE_LIMIT_MAX``, tick under 1 ms).  *tick_len*:
    seconds, a ``(sec, usec)`` tuple, or None for 1 s."""
    from .ratelimit import TokenBucketConfig
    try:
        return TokenBucketConfig(read_rate, read_burst, write_rate, write_burst,
                                 _seconds(tick_len, "tick_len"))
    except ValueError:
        return None


def ev_token_bucket_cfg_free(cfg):
    """Nothing to do: configs are garbage-collected."""


def bufferevent_set_rate_limit(bev, cfg):
    return bev.set_rate_limit(cfg)


def bufferevent_get_token_bucket_cfg(bev):
    return bev.get_token_bucket_cfg()


def bufferevent_rate_limit_group_new(base, cfg):
    from .ratelimit import RateLimitGroup
    return RateLimitGroup(cfg, _hub(base))


def bufferevent_rate_limit_group_set_cfg(group, cfg):
    return group.set_cfg(cfg)


def bufferevent_rate_limit_group_free(group):
    group.free()


def bufferevent_rate_limit_group_get_read_limit(group):
    return group.get_read_limit()


def bufferevent_rate_limit_group_get_write_limit(group):
    return group.get_write_limit()


def bufferevent_rate_limit_group_get_totals(group):
    """``(total_read, total_written)`` in bytes."""
    return group.get_totals()


def bufferevent_rate_limit_group_reset_totals(group):
    group.reset_totals()


def bufferevent_rate_limit_group_decrement_read(group, decr):
    return group.decrement_read(decr)


def bufferevent_rate_limit_group_decrement_write(group, decr):
    return group.decrement_write(decr)


def bufferevent_rate_limit_group_set_min_share(group, min_share):
    return group.set_min_share(min_share)


def bufferevent_add_to_rate_limit_group(bev, group):
    return bev.add_to_rate_limit_group(group)


def bufferevent_remove_from_rate_limit_group(bev):
    return bev.remove_from_rate_limit_group()


def bufferevent_get_read_limit(bev):
    return bev.get_read_limit()


def bufferevent_get_write_limit(bev):
    return bev.get_write_limit()


def bufferevent_get_max_to_read(bev):
    return bev.get_max_to_read()


def bufferevent_get_max_to_write(bev):
    return bev.get_max_to_write()


def bufferevent_decrement_read_limit(bev, decr):
    return bev.decrement_read_limit(decr)


def bufferevent_decrement_write_limit(bev, decr):
    return bev.decrement_write_limit(decr)


# -- TLS ----------------------------------------------------------------------------

def bufferevent_openssl_filter_new(base, underlying, ssl, state, options):
    """A TLS bufferevent over *underlying*; *ssl* an ``OpenSSL.SSL.Connection``."""
    from .ssl import openssl_filter_new
    return openssl_filter_new(underlying, ssl, state, options)


def bufferevent_openssl_socket_new(base, fd, ssl, state, options):
    """A TLS bufferevent on *fd* (-1: none yet; give the socket later with
    ``bufferevent_setfd`` or ``bufferevent_socket_connect``).  *ssl* must be
    a Connection made without a socket (``SSL.Connection(ctx, None)``)."""
    from .ssl import openssl_socket_new
    return openssl_socket_new(ssl, state, None if fd == -1 else fd, options, _hub(base))


def _is_tls(bev):
    return callable(getattr(bev, "get_ssl", None))


def bufferevent_openssl_get_ssl(bev):
    """The ``OpenSSL.SSL.Connection``, or None if *bev* is not a TLS bufferevent."""
    return bev.get_ssl() if _is_tls(bev) else None


def bufferevent_get_openssl_error(bev):
    """The first pending OpenSSL error code of *bev* (popped), 0 if none or not TLS."""
    return bev.get_openssl_error() if _is_tls(bev) else 0


def bufferevent_ssl_renegotiate(bev):
    """Start a renegotiation: 0, or -1 if not TLS or the protocol has none."""
    return bev.renegotiate() if _is_tls(bev) else -1


def bufferevent_openssl_get_allow_dirty_shutdown(bev):
    """1 or 0; -1 if *bev* is not a TLS bufferevent."""
    return int(bool(bev.get_allow_dirty_shutdown())) if _is_tls(bev) else -1


def bufferevent_openssl_set_allow_dirty_shutdown(bev, allow_dirty_shutdown):
    if _is_tls(bev):
        bev.set_allow_dirty_shutdown(bool(allow_dirty_shutdown))


# -- evbuffer ------------------------------------------------------------------------

def evbuffer_new():
    return Buffer()


def evbuffer_free(buf):
    """Nothing to do: buffers are garbage-collected."""


def evbuffer_get_length(buf):
    return len(buf)


def evbuffer_add(buf, data, size=-1):
    if size is not None and size >= 0:
        data = memoryview(data)[:size]
    return buf.add(data)


def evbuffer_add_buffer(dst, src):
    return dst.add_buffer(src)


def evbuffer_remove(buf, size):
    """Remove and return up to *size* bytes (C copies into a buffer)."""
    return buf.remove(size)


def evbuffer_remove_buffer(src, dst, size):
    return src.remove_buffer(dst, size)


def evbuffer_drain(buf, size):
    return buf.drain(size)


def evbuffer_pullup(buf, size):
    """The first *size* bytes (-1: all) without removing them; None if fewer."""
    return buf.pullup(size)


def evbuffer_search(buf, what, start=0):
    return buf.search(what, start)


_EOL = {EVBUFFER_EOL_CRLF: None, EVBUFFER_EOL_CRLF_STRICT: b"\r\n",
        EVBUFFER_EOL_LF: b"\n", EVBUFFER_EOL_NUL: b"\0"}


def evbuffer_readln(buf, eol_style):
    """The next line without its terminator, or None (``evbuffer_readln``)."""
    if eol_style == EVBUFFER_EOL_ANY:
        # any sequence of CR and LF ends a line
        i = min((j for j in (buf.search(b"\r"), buf.search(b"\n")) if j >= 0), default=-1)
        if i < 0:
            return None
        line = buf.remove(i)
        while buf.pullup(1) in (b"\r", b"\n"):
            buf.drain(1)
        return line
    if eol_style not in _EOL:
        raise ValueError(f"unknown eol_style {eol_style!r}")
    return buf.readln(_EOL[eol_style])


__all__ = [name for name in dir() if name.isupper() or name.startswith(
    ("event_", "evconnlistener", "bufferevent_", "ev_token", "evbuffer_"))]
__all__ += ["EV_SSIZE_MAX", "Bufferevent"]
