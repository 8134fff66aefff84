"""SocketBufferevent: a bufferevent over a stream socket, on the hub's io watchers.

libevent's ``bufferevent_sock.c``.  One read watcher and one write watcher on
the fd; each callback moves at most one step (max single read/write, the read
high watermark, the rate limits) and returns to the loop, so a flooding peer
cannot starve other greenlets.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Optional, Tuple, cast

import _socket
import gevent
import gevent.event
import gevent.socket

from .bufferevent import SUSPEND_LOOKUP, Bufferevent
from .constants import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_WRITING, BEV_FINISHED, BEV_OPT_CLOSE_ON_FREE, EV_READ, EV_WRITE,
)
from ._typing import Address, Hub, SocketLike

__all__ = ["SocketBufferevent", "create_connection"]

_WOULDBLOCK = (BlockingIOError, InterruptedError)
#: Read/write steps one watcher callback may take while the loop is idle.
_BATCH = 8
_CONNECT_PENDING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY)


def _is_numeric_host(host: str) -> bool:
    for fam in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(fam, host)
            return True
        except (OSError, TypeError, ValueError):
            pass
    return False


def _raw_of(sock: SocketLike) -> Tuple[Any, _socket.socket, bool]:
    """Return ``(owner, raw, fd_given)`` for a socket-ish object or an fd."""
    if isinstance(sock, bool):
        raise TypeError("sock must be a socket, an fd or None, not bool")
    if isinstance(sock, int):
        if sock < 0:
            raise ValueError("sock must be a valid fd (>= 0), -1 or None")
        raw = _socket.socket(fileno=sock)
        return raw, raw, True
    if isinstance(sock, _socket.socket):           # stdlib socket.socket
        return sock, sock, False
    inner = getattr(sock, "_sock", None)           # gevent.socket.socket
    if isinstance(inner, _socket.socket):
        return sock, inner, False
    raise TypeError(f"sock must be a socket, an fd or None, not {type(sock).__name__}")


class SocketBufferevent(Bufferevent):
    """A bufferevent reading and writing a stream socket (``bufferevent_socket_new``).

    :param sock: a gevent or stdlib socket, an fd (int), or None/-1 to give one
        later with :meth:`setfd` or :meth:`connect`.  The socket is made
        non-blocking; it must not be read or written elsewhere meanwhile.
    :param options: ``BEV_OPT_*``; with ``BEV_OPT_CLOSE_ON_FREE`` :meth:`free`
        closes the socket.  A socket made by :meth:`connect` is always closed.
    :param hub: the gevent hub (default: current).
    :raises TypeError: *sock* is neither a socket, an fd nor None.
    :raises ValueError: a negative fd other than -1; unknown option bits.
    """

    _dns_error: Optional[BaseException]       # set by connect_hostname()

    def __init__(self, sock: Optional[SocketLike] = None, options: int = 0,
                 hub: Optional[Hub] = None) -> None:
        super().__init__(options, hub)
        self._sock: Any = None                          # the object given (or made)
        self._raw: Optional[_socket.socket] = None      # the stdlib socket under it
        self._fd = -1
        self._fd_given = False
        self._own_sock = False
        self._rw: Any = None                            # the loop's io watchers
        self._ww: Any = None
        self._connecting = False
        self._resolver: Any = None                      # the greenlet resolving a host
        if sock is not None and not (isinstance(sock, int) and not isinstance(sock, bool)
                                     and sock == -1):
            self._attach(sock)

    # -- fd management --------------------------------------------------

    def _attach(self, sock):
        owner, raw, fd_given = _raw_of(sock)
        raw.setblocking(False)
        self._sock, self._raw, self._fd_given = owner, raw, fd_given
        self._fd = raw.fileno()
        self._rw = self.loop.io(self._fd, 1)
        self._ww = self.loop.io(self._fd, 2)
        self._eof = False
        self._error = None
        self._update_io()

    def _detach(self, close):
        for w in (self._rw, self._ww):
            if w is not None:
                w.close()
        self._rw = self._ww = None
        sock, raw = self._sock, self._raw
        self._sock = self._raw = None
        self._fd = -1
        self._connecting = False
        if raw is None:
            return
        if close:
            try:
                sock.close()
            except OSError:
                pass
        elif self._fd_given:
            raw.detach()            # the fd is the caller's: do not close it

    def getfd(self) -> int:
        """The socket's fd, or -1 (``bufferevent_getfd``)."""
        return self._fd

    def setfd(self, fd: Optional[SocketLike]) -> int:
        """Use a new socket or fd (``bufferevent_setfd``); the old one is not closed.

        :param fd: a socket, an fd, or -1/None to detach.  Returns 0.
        :raises TypeError: not a socket or fd.
        :raises BuffereventClosedError: the bufferevent was freed.
        """
        self._check_alive()
        self._detach(close=self._own_sock)
        self._own_sock = False
        if fd is not None and not (isinstance(fd, int) and fd == -1):
            self._attach(fd)
        return 0

    @property
    def socket(self) -> Any:
        """The socket object given or created (None if none); no libevent counterpart."""
        return self._sock

    # -- connecting -----------------------------------------------------

    def connect(self, address: Address) -> int:
        """Connect to *address* (``bufferevent_socket_connect``).

        Creates a non-blocking socket if there is none (family from the
        address: a str is AF_UNIX, a host with ':' is AF_INET6, else AF_INET).
        Returns 0 at once; ``BEV_EVENT_CONNECTED`` follows on success, a
        ``BEV_EVENT_ERROR`` event if the connection fails (refused,
        unreachable).  A host that is not a numeric address is resolved with
        gevent's resolver first, as :meth:`connect_hostname` does.
        :raises TypeError: a malformed address.  :raises ValueError: a port
            outside 0..65535.  :raises RuntimeError: a connect is in
            progress, or already connected.
        :raises BuffereventClosedError: the bufferevent was freed.
        """
        self._check_alive()
        _check_address(address)
        if self._connecting or self._resolver is not None:
            raise RuntimeError("a connect is already in progress on this bufferevent")
        if self._raw is not None and _is_connected(self._raw):
            raise RuntimeError("this bufferevent is already connected")
        if isinstance(address, tuple) and not _is_numeric_host(address[0]):
            return self.connect_hostname(address[0], address[1])
        if self._raw is None:
            if isinstance(address, (str, bytes)):
                family = _socket.AF_UNIX
            elif isinstance(address, tuple) and len(address) >= 2:
                family = _socket.AF_INET6 if ":" in str(address[0]) else _socket.AF_INET
            else:
                raise TypeError(f"address must be a (host, port) tuple or a path, "
                                f"not {address!r}")
            raw = _socket.socket(family, _socket.SOCK_STREAM)
            self._attach(raw)
            self._own_sock = True
        self._suspend_read(SUSPEND_LOOKUP)
        try:
            rc = cast(_socket.socket, self._raw).connect_ex(address)   # attached above
        except OSError as exc:
            rc = exc.errno or errno.EINVAL
        if rc == 0 or rc in _CONNECT_PENDING:
            self._connecting = True
            self._update_io()        # the write watcher reports completion
        else:
            self.loop.run_callback(self._connect_failed, _errno_exception(rc))
        return 0

    def connect_hostname(self, host: str, port: int, family: int = 0) -> int:
        """Resolve *host* with gevent's resolver, then :meth:`connect`
        (``bufferevent_socket_connect_hostname``).

        Returns 0 at once.  A failed lookup is a ``BEV_EVENT_ERROR`` event whose
        exception (a ``socket.gaierror``) is :attr:`last_error` and
        :meth:`get_dns_error`.
        :raises TypeError: *host* not a str, *family* not an int.
        :raises ValueError: *port* outside 0..65535.
        :raises RuntimeError: a connect is already in progress.
        """
        self._check_alive()
        if not isinstance(host, str):
            raise TypeError(f"host must be a str, not {type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, not {port!r}")
        if isinstance(family, bool) or not isinstance(family, int):
            raise TypeError(f"family must be an int (socket.AF_*), not {family!r}")
        if self._connecting or self._resolver is not None:
            raise RuntimeError("a connect is already in progress on this bufferevent")
        self._suspend_read(SUSPEND_LOOKUP)
        self._dns_error = None
        self._resolver = gevent.spawn(self._resolve, host, port, family)
        return 0

    def get_dns_error(self) -> Optional[BaseException]:
        """The lookup error of the last :meth:`connect_hostname`, or None
        (``bufferevent_socket_get_dns_error``; an exception, not an EAI code)."""
        return getattr(self, "_dns_error", None)

    def _resolve(self, host, port, family):
        try:
            infos = gevent.socket.getaddrinfo(host, port, family, _socket.SOCK_STREAM)
        except Exception as exc:  # noqa: BLE001 - reported as an ERROR event
            self._resolver = None
            if not self._freed:
                self._dns_error = exc
                self._trigger_event(BEV_EVENT_ERROR, exc)
            return
        self._resolver = None
        if self._freed:
            return
        fam, _, _, _, addr = infos[0]
        if self._raw is not None and self._raw.family != fam:
            self._detach(close=self._own_sock)
        self.connect(addr)

    def _connect_failed(self, exc):
        if self._freed:
            return
        self._connecting = False
        self._update_io()
        self._trigger_event(BEV_EVENT_ERROR, exc)

    def _finish_connect(self):
        err = self._raw.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        self._connecting = False
        if err:
            self._ww.stop()
            self._trigger_event(BEV_EVENT_ERROR, _errno_exception(err))
            return
        self._susp_r &= ~SUSPEND_LOOKUP
        self._update_io()
        self._on_connected()

    def _on_connected(self):
        """The connection is established: report it (kinds that still have a
        handshake to do, like TLS, start it here instead)."""
        self._trigger_event(BEV_EVENT_CONNECTED)

    # -- I/O ------------------------------------------------------------

    def _update_io(self):
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()
        rw = self._rw
        if rw is None:
            return
        if self._can_read():
            if not rw.active:
                rw.start(self._on_readable)
        elif rw.active:
            rw.stop()
        ww = self._ww
        if self._connecting or (self._can_write() and self.output._len):
            if not ww.active:
                ww.start(self._on_writable)
        elif ww.active:
            ww.stop()

    def _output_added(self):
        ww = self._ww
        if ww is not None and ww.active and not self._wtimeout:
            return                       # already writing: the common case
        self._update_io()

    def _no_transport(self):
        if self._raw is None and not self._connecting and self._resolver is None:
            return OSError(errno.ENOTCONN, "socket bufferevent has no socket "
                                           "(give one with setfd() or connect())")
        return None

    def _write_timeout_wanted(self):
        return self._can_write() and (self._connecting or len(self.output) > 0)

    def _on_readable(self):
        # One read step = at most one allowance (max single read, read high
        # watermark, rate limits), then the triggers (readcb/blocked readers).
        # A callback takes a few steps in a row only while the loop has nothing
        # else to run (no other watcher pending, no callback queued): that
        # saves loop passes in bulk transfers and yields as soon as anything
        # else wants the hub.
        loop = self.loop
        for _ in range(_BATCH):
            if self._rl is None and self._group is None:
                n = self._max_read
                hi = self._rd_hi
                if hi and hi - self.input._len < n:
                    n = hi - self.input._len
            else:
                n = self._read_allowance()
            if n <= 0:
                self._rw.stop()   # resumed by _update_io when the limit lifts
                return
            try:
                data = self._raw.recv(n)
            except _WOULDBLOCK:
                return
            except OSError as exc:
                self._io_failed(BEV_EVENT_READING, exc)
                return
            if not data:
                self._enabled &= ~EV_READ
                self._update_io()
                self._trigger_event(BEV_EVENT_EOF | BEV_EVENT_READING)
                return
            inp = self.input
            inp._chunks.append(data)
            inp._len += len(data)
            if self._rl is not None or self._group is not None:
                self._charge_read(len(data))
            self._trigger_read()
            if len(data) < n or loop.pendingcnt or loop._callbacks \
                    or self._rw is None or not self._rw.active:
                return

    def _on_writable(self):
        if self._connecting:
            self._finish_connect()
            return
        loop = self.loop
        for _ in range(_BATCH):
            out = self.output
            n = self._max_write if (self._rl is None and self._group is None) \
                else self._write_allowance()
            if not out._len or n <= 0:
                self._ww.stop()
                return
            chunk = out.peek(n)
            try:
                sent = self._raw.send(chunk)
            except _WOULDBLOCK:
                return
            except OSError as exc:
                self._io_failed(BEV_EVENT_WRITING, exc)
                return
            out.drain(sent)
            if self._rl is not None or self._group is not None:
                self._charge_write(sent)
            self._trigger_write()
            ww = self._ww
            if ww is None:
                return
            if not self.output._len:
                # After the writecb (which often refills): stop only if still empty.
                if not self._connecting:
                    ww.stop()
                return
            if sent < len(chunk) or loop.pendingcnt or loop._callbacks or not ww.active:
                return

    # -- blocking-layer fast paths (see Bufferevent._direct_recv/_direct_send) --

    def _direct_recv(self, n):
        raw = self._raw
        if raw is None or self._connecting or self._susp_r or self._freed:
            return None
        allow = self._read_allowance()
        if allow <= 0:
            return None
        try:
            data = raw.recv(n if n < allow else allow)
        except _WOULDBLOCK:
            return None
        except OSError as exc:
            self._fail_now(BEV_EVENT_READING, exc)
            raise
        if not data:
            return None                 # EOF: the read watcher reports it
        if self._rl is not None or self._group is not None:
            self._charge_read(len(data))
        if self._rtimeout:
            self._rlast = self.loop.now()
        return data

    def _direct_send(self, data):
        raw = self._raw
        if raw is None or self._connecting or self._freed or self._susp_w \
                or not self._enabled & EV_WRITE:
            return 0
        total = min(len(data), max(self._fast_budget, self._max_write))
        view = memoryview(data)
        pos = 0
        limited = self._rl is not None or self._group is not None
        while pos < total:
            step = self._write_allowance() if limited else self._max_write
            if step <= 0:
                break
            try:
                sent = raw.send(view[pos:pos + step])
            except _WOULDBLOCK:
                break
            except OSError as exc:
                self._fail_now(BEV_EVENT_WRITING, exc)
                raise
            pos += sent
            if limited:
                self._charge_write(sent)
            if sent < step:
                break
        if pos and self._wtimeout:
            self._wlast = self.loop.now()
        return pos

    def _fail_now(self, direction, exc):
        """An error met by a fast path: record it now, report it from the hub."""
        if self._error is None:
            self._error = exc
        self.loop.run_callback(self._io_failed, direction, exc)

    def _io_failed(self, direction, exc):
        self._enabled &= ~(EV_READ if direction == BEV_EVENT_READING else EV_WRITE)
        self._update_io()
        self._trigger_event(BEV_EVENT_ERROR | direction, exc)

    # -- end of stream / teardown -------------------------------------------

    def _be_flush(self, iotype, mode):
        # libevent's socket flush is a no-op; BEV_FINISHED on the write side
        # additionally ends the stream (FIN) once the output has drained.
        if mode == BEV_FINISHED and iotype & EV_WRITE and not self._shut_wr:
            self._shut_wr = True
            if not self.output:
                self._shut_wr_done = True
                self._be_shutdown_write()
            else:
                self._enabled |= EV_WRITE
                self._update_io()
        return 0

    def _be_shutdown_write(self):
        if self._raw is not None:
            try:
                self._raw.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def _be_free(self):
        if self._resolver is not None:
            self._resolver.kill(block=False)
            self._resolver = None
        self._detach(close=bool(self.options & BEV_OPT_CLOSE_ON_FREE) or self._own_sock)


def _check_address(address: Address) -> None:
    """ValueError/TypeError for an address no connect could use."""
    if isinstance(address, (str, bytes)):
        return
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise TypeError(f"address must be (host, port), (host, port, flow, scope) "
                        f"or a path, not {address!r}")
    host, port = address[0], address[1]
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")


def _is_connected(raw: _socket.socket) -> bool:
    try:
        raw.getpeername()
        return True
    except OSError:
        return False


def _errno_exception(code: int) -> OSError:
    """The OSError subclass a socket call would raise for errno *code*."""
    return OSError(code, os.strerror(code)) if code else OSError("connect failed")


def create_connection(address: Address, timeout: Optional[float] = None,
                      options: int = BEV_OPT_CLOSE_ON_FREE,
                      hub: Optional[Hub] = None) -> SocketBufferevent:
    """Connect to *address* and return a connected :class:`SocketBufferevent`.

    The blocking counterpart of ``gevent.socket.create_connection``: waits (at
    most *timeout* seconds) for ``BEV_EVENT_CONNECTED``.  Must be called from a
    greenlet, not from a callback.  In libevent terms:
    ``bufferevent_socket_new`` + ``bufferevent_socket_connect`` and a wait.

    :raises OSError: the connection failed (``ConnectionRefusedError``, a
        ``socket.gaierror`` for an unknown host, ...).
    :raises TimeoutError: not connected within *timeout* seconds.
    """
    bev = SocketBufferevent(None, options, hub)
    result = gevent.event.AsyncResult()

    def on_event(_bev: Any, what: int, _arg: Any) -> None:
        if what & BEV_EVENT_CONNECTED:
            result.set(None)
        elif what & BEV_EVENT_ERROR:
            result.set_exception(_bev.last_error or OSError("connect failed"))

    bev.setcb(None, None, on_event)
    bev.connect(address)
    try:
        result.get(timeout=timeout)
    except gevent.Timeout:
        bev.free()
        raise TimeoutError(f"connect to {address!r} timed out") from None
    except BaseException:
        bev.free()
        raise
    bev.setcb(None, None, None)
    return bev

