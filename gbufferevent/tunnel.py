"""The tunnel: relay TCP connections through optional TLS, compression and rate limits.

``python -m gbufferevent tunnel --listen HOST:PORT --connect HOST:PORT`` accepts
connections and relays each to the target, both ways, half-closes included.
Two tunnel processes make an encrypted, compressed, capped tunnel:

    client end:  plain in  ->  --tls-out --compress  ->  server end
    server end:  --tls-in --compress in  ->  plain out  ->  target

Each connection is two stacks of bufferevents, one facing the client
("down") and one facing the target ("up"); the relay moves chunk references
from one stack's input to the other's output in callbacks, on the hub, with
backpressure (reading from a side pauses while the other side's output is
above :data:`RELAY_HIGH` and resumes below :data:`RELAY_LOW`).  The layers of
a stack are the library's own kinds: a zlib :mod:`filter <gbufferevent.filter>`
inside a TLS bufferevent (:mod:`gbufferevent.ssl`) over a
:class:`~gbufferevent.SocketBufferevent`; a :class:`RateLimitGroup` caps all
connections together and a per-connection :class:`TokenBucketConfig` each one.

:class:`Tunnel` is the same machinery for use inside a program:
:meth:`Tunnel.open` returns a bufferevent whose partner (a pair) enters the
pipeline exactly like an accepted connection, so a program can carry its own
connections through its tunnel without a loopback socket.
"""
import logging
import math
import socket as _socket
import struct
import time

import gevent
import gevent.event
from gevent.server import StreamServer

from .constants import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_TIMEOUT,
    BEV_FINISHED, BEV_FLUSH, BEV_OPT_CLOSE_ON_FREE, EV_READ, EV_WRITE,
)
from .pair import pair_new
from .socket import SocketBufferevent

__all__ = ["Tunnel", "RELAY_HIGH", "RELAY_LOW", "parse_size"]

log = logging.getLogger("gbufferevent.tunnel")

#: Bytes queued towards one side before reading from the other side pauses.
RELAY_HIGH = 512 * 1024
#: Reading resumes once that queue is down to this many bytes.
RELAY_LOW = 128 * 1024
#: Max single read/write of the sockets a tunnel relays between, in bytes.
RELAY_STEP = 64 * 1024

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9,
          "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_size(text):
    """``"512k"`` -> 512000, ``"10M"`` -> 10000000, ``"1Mi"`` -> 1048576,
    ``"2000"`` -> 2000 (decimal k/M/G, binary Ki/Mi/Gi; a trailing ``B`` or
    ``/s`` is ignored).  :raises ValueError: anything else, or a value < 1."""
    s = str(text).strip().lower().replace("/s", "")
    if s.endswith("b"):
        s = s[:-1]
    num = s.rstrip("kmgi")
    unit = s[len(num):]
    if unit not in _UNITS:
        raise ValueError(f"bad size {text!r}: use e.g. 512k, 10M, 1Mi")
    try:
        value = float(num) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"bad size {text!r}: use e.g. 512k, 10M, 1Mi") from None
    if not math.isfinite(value) or value >= 2**62:
        raise ValueError(f"size {text!r} is not a finite size")
    if value < 1:
        raise ValueError(f"size {text!r} must be at least 1 byte")
    return int(value)


class _Side:
    """One direction's bookkeeping: bytes moved, EOF seen."""

    __slots__ = ("bytes", "eof")

    def __init__(self):
        self.bytes = 0
        self.eof = False


class _Connection:
    """One relayed connection: a client-facing stack and a target-facing stack.

    With TLS towards the client, the target is dialled only once the client's
    handshake is done, and a handshake must finish within the tunnel's
    ``handshake_timeout``.  A side that ends with an error (a reset, a TLS
    failure) is passed on as an abort (RST, or TLS without close_notify)
    after the bytes it delivered, so a cut-off stream never looks complete.
    """

    def __init__(self, tunnel, transport, peer, user_bev=None):
        self.tunnel = tunnel
        self.peer = peer
        self.user_bev = user_bev     # the program's own end for Tunnel.open()
        self.started = time.monotonic()
        self.closed = False
        self.up_connected = False
        self.done = gevent.event.Event()
        self.c2t = _Side()      # client -> target
        self.t2c = _Side()      # target -> client
        down, self.down = tunnel._down_stack(transport)
        self.down_raw = down
        up_raw, self.up = tunnel._up_stack()
        self.up_raw = up_raw
        self._compressed = set()
        if tunnel.compress is not None:
            self._compressed.add(self.up if tunnel.compress_side == "up" else self.down)
        tunnel._limit(down)
        for raw in (down, up_raw):
            # A relay moves bulk data: larger steps mean fewer loop passes
            # (the rate limits, if any, still cap every step).
            raw.set_max_single_read(RELAY_STEP)
            raw.set_max_single_write(RELAY_STEP)
        for bev in (self.down, self.up):
            bev.setwatermark(EV_WRITE, RELAY_LOW, 0)
        self.down.setcb(self._read_down, self._wrote_down, self._event_down)
        self.up.setcb(self._read_up, self._wrote_up, self._event_up)
        self.down.enable(EV_READ | EV_WRITE)
        self.up.enable(EV_READ | EV_WRITE)
        self._hs_timer = None
        if tunnel.tls_in is not None:
            self._hs_timer = tunnel.hub.loop.timer(tunnel.handshake_timeout)
            self._hs_timer.start(self._handshake_timed_out)
        else:
            up_raw.connect(tunnel.target)

    def _handshake_timed_out(self):
        if not self.closed:
            log.warning("%s: no TLS handshake within %.0f s", self.peer,
                        self.tunnel.handshake_timeout)
            self.close(abort=self.down)

    # -- data ----------------------------------------------------------------

    def _move(self, src, dst, side):
        n = len(src.input)
        if n:
            side.bytes += n
            dst.write_buffer(src.input)
            if dst in self._compressed:
                # Z_SYNC_FLUSH: what arrived so far can be inflated at the far
                # end now, instead of waiting in the compressor for more.
                dst.flush(EV_WRITE, BEV_FLUSH)
            if len(dst.output) >= RELAY_HIGH:
                src.disable(EV_READ)        # backpressure: resumes in _wrote_*

    def _read_down(self, bev, arg):
        self._move(self.down, self.up, self.c2t)

    def _read_up(self, bev, arg):
        self._move(self.up, self.down, self.t2c)

    def _wrote_up(self, bev, arg):
        if not self.c2t.eof and not self.closed:
            self.down.enable(EV_READ)
        self._maybe_finish()

    def _wrote_down(self, bev, arg):
        if not self.t2c.eof and not self.closed:
            self.up.enable(EV_READ)
        self._maybe_finish()

    # -- events ----------------------------------------------------------------

    def _event_down(self, bev, what, arg):
        if what & BEV_EVENT_CONNECTED:
            # the client's TLS handshake is done: now dial the target
            if self._hs_timer is not None:
                self._hs_timer.close()
                self._hs_timer = None
                if not self.closed:
                    self.up_raw.connect(self.tunnel.target)
            return
        self._event(what, self.down, self.up, self.c2t, "client")

    def _event_up(self, bev, what, arg):
        if what & BEV_EVENT_CONNECTED:
            self.up_connected = True
            return
        self._event(what, self.up, self.down, self.t2c, "target")

    def _event(self, what, src, dst, side, name):
        if self.closed:
            return
        if what & BEV_EVENT_EOF:
            self._move(src, dst, side)
            side.eof = True
            dst.flush(EV_WRITE, BEV_FINISHED)     # half-close travels on
            self._maybe_finish()
            return
        if what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT):
            err = src.last_error or ("timeout" if what & BEV_EVENT_TIMEOUT else "error")
            if name == "target" and not self.up_connected:
                log.warning("%s: target %s:%s unreachable: %s", self.peer,
                            *self.tunnel.target[:2], err)
            else:
                log.warning("%s: %s side failed: %s", self.peer, name, err)
            self._move(src, dst, side)
            if self.user_bev is not None and name == "target" and \
                    not self.user_bev.closed:
                # tell the program why its connection ends (Tunnel.open())
                self.user_bev._trigger_event(BEV_EVENT_ERROR | BEV_EVENT_READING,
                                             err if isinstance(err, BaseException)
                                             else ConnectionAbortedError(str(err)))
            self.close(abort=src, pass_abort=True)

    def _maybe_finish(self):
        if self.c2t.eof and self.t2c.eof and not self.closed:
            self.close()

    def close(self, abort=None, pass_abort=False):
        """Close both stacks, each delivering its pending output first; the
        side that failed (*abort*) is freed at once, and with *pass_abort* the
        other side is reset after its output (RST, or TLS without close_notify)."""
        if self.closed:
            return
        self.closed = True
        if self._hs_timer is not None:
            self._hs_timer.close()
            self._hs_timer = None
        for bev, raw in ((self.down, self.down_raw), (self.up, self.up_raw)):
            if bev is abort:
                _reset(raw)
                bev.free()
            elif pass_abort:
                _reset(raw)
                if bev is raw and not hasattr(raw, "get_ssl"):
                    bev.close()          # plain socket: our bytes, then RST
                else:
                    bev.free()           # no clean TLS/zlib end for an abort
            else:
                bev.close()
        self.tunnel._connection_closed(self)
        self.done.set()

    def stats(self):
        """Bytes relayed each way (handed past this tunnel: what still waits
        in the far side's output is not counted yet)."""
        return {"peer": self.peer, "seconds": time.monotonic() - self.started,
                "client_to_target": max(0, self.c2t.bytes - len(self.up.output)),
                "target_to_client": max(0, self.t2c.bytes - len(self.down.output))}


def _reset(raw):
    """Make closing *raw*'s socket send RST (SO_LINGER 0) instead of FIN."""
    sock = getattr(raw, "_raw", None)
    if sock is not None:
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


class _Acceptor(StreamServer):
    """Accepts in the hub and hands the socket over; the relay is all callbacks."""

    def __init__(self, listener, tunnel):
        self._tunnel = tunnel
        super().__init__(listener, handle=self._accepted, spawn=None)

    def _accepted(self, sock, address):
        try:
            self._tunnel._new_connection(sock, f"{address[0]}:{address[1]}")
        except Exception:  # noqa: BLE001 - one connection, one log line
            log.exception("cannot set up a connection from %s", address)
            sock.close()

    def do_close(self, sock, *args):
        pass          # the connection's bufferevents own the socket


class Tunnel:
    """Relay connections to *connect* through optional TLS, zlib and rate limits.

    :param connect: the target ``(host, port)``.
    :param listen: ``(host, port)`` to accept TCP connections on, or None for
        in-process use only (:meth:`open`).
    :param tls_out: wrap the target side in TLS (client); an
        ``OpenSSL.SSL.Context`` or True for :func:`gbufferevent.ssl.client_context`
        built from *ca*/*insecure*.
    :param tls_in: terminate TLS on the client side: an ``OpenSSL.SSL.Context``
        (server), or ``(certfile, keyfile)``.
    :param server_hostname: the name to verify (and send as SNI) with *tls_out*;
        default: the target host.
    :param compress: zlib level (0-9, True = 6) for the tunnel side, or None.
        Both tunnel ends must compress the link between them: the client end
        compresses "up" (towards its target, the server end) and the server
        end "down" (towards its clients).
    :param compress_side: ``"up"`` or ``"down"``; default ``"down"`` with
        *tls_in*, else ``"up"`` (give it explicitly for a server end without TLS).
    :param rate: bytes per second for all connections together (a group).
    :param conn_rate: bytes per second for each connection.
    :param burst: bucket size in bytes (default: one tick's worth, at least 64 KiB).
    :param tick: the token-bucket tick in seconds (default 0.1).
    :param min_share: the group's minimum share in bytes (default libevent's 64;
        0 disables the floor).
    :param handshake_timeout: seconds a client may take for its TLS handshake
        with *tls_in* (the target is dialled only after it).
    :raises ValueError: a bad target, level, rate, burst or tick.
    """

    def __init__(self, connect, listen=None, *, tls_out=None, tls_in=None, ca=None,
                 insecure=False, server_hostname=None, compress=None,
                 compress_side=None, rate=None, conn_rate=None, burst=None, tick=0.1,
                 min_share=None, handshake_timeout=30.0, hub=None):
        from gevent.hub import get_hub
        self.hub = hub if hub is not None else get_hub()
        if not isinstance(connect, tuple) or len(connect) != 2 \
                or not isinstance(connect[0], str) or isinstance(connect[1], bool) \
                or not isinstance(connect[1], int) or not 0 < connect[1] <= 65535:
            raise ValueError(f"connect must be a (host, port) tuple with a port "
                             f"1..65535, not {connect!r}")
        self.target = connect
        self.listen = listen
        if compress is True:
            compress = 6
        if compress is not None and (isinstance(compress, bool)
                                     or not isinstance(compress, int)
                                     or not 0 <= compress <= 9):
            raise ValueError(f"compress must be a zlib level 0..9, not {compress!r}")
        self.compress = compress
        for name, value in (("rate", rate), ("conn_rate", conn_rate), ("burst", burst)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or not 1 <= value < 2**62):
                raise ValueError(f"{name} must be a number of bytes (per second) >= 1, "
                                 f"not {value!r}")
        if not isinstance(tick, (int, float)) or not 0.001 <= tick <= 3600:
            raise ValueError(f"tick must be 0.001..3600 seconds, not {tick!r}")
        if not isinstance(handshake_timeout, (int, float)) or not handshake_timeout > 0:
            raise ValueError("handshake_timeout must be a number of seconds > 0")
        self.handshake_timeout = float(handshake_timeout)
        self.compress_side = compress_side or ("down" if tls_in else "up")
        if self.compress_side not in ("up", "down"):
            raise ValueError("compress_side must be 'up' or 'down'")
        self.server_hostname = server_hostname or self.target[0]
        self.tls_out = self._client_ctx(tls_out, ca, insecure) if tls_out else None
        self.tls_in = self._server_ctx(tls_in) if tls_in else None
        self.group = None
        self.conn_cfg = None
        if rate is not None or conn_rate is not None:
            from .ratelimit import RateLimitGroup
            if rate is not None:
                self.group = RateLimitGroup(self._cfg(rate, burst, tick), self.hub)
                if min_share is not None:
                    self.group.set_min_share(min_share)
            if conn_rate is not None:
                self.conn_cfg = self._cfg(conn_rate, burst, tick)
        self._connections = set()
        self._finished = {"connections": 0, "client_to_target": 0, "target_to_client": 0}
        self._server = None
        self.accepting = False

    # -- configuration helpers ------------------------------------------------------

    @staticmethod
    def _cfg(rate, burst, tick):
        from .ratelimit import TokenBucketConfig
        per_tick = max(1, int(rate * tick))
        b = max(per_tick, int(burst) if burst else max(per_tick, 64 * 1024))
        b = max(b, per_tick)
        return TokenBucketConfig(per_tick, b, per_tick, b, tick)

    @staticmethod
    def _client_ctx(tls_out, ca, insecure):
        if tls_out is True:
            from .ssl import client_context
            return client_context(cafile=ca, verify=not insecure)
        return tls_out

    @staticmethod
    def _server_ctx(tls_in):
        if isinstance(tls_in, tuple):
            from .ssl import server_context
            return server_context(*tls_in)
        return tls_in

    # -- stacks ---------------------------------------------------------------------

    def _compressed(self, bev):
        from .filter import FilterBufferevent
        from .filters import zlib_compress_filter, zlib_decompress_filter
        return FilterBufferevent(bev, zlib_decompress_filter(),
                                 zlib_compress_filter(self.compress),
                                 BEV_OPT_CLOSE_ON_FREE)

    def _tls(self, ctx, state, server_name=None):
        from OpenSSL import SSL
        conn = SSL.Connection(ctx, None)
        if server_name:
            if not _is_ip(server_name):
                conn.set_tlsext_host_name(server_name.encode("idna"))
            _set_verify_name(conn, server_name)
        return conn

    def _down_stack(self, transport):
        """``(raw, top)`` for the client side.  *transport* is an accepted
        socket (TLS then runs on the socket kind, OpenSSL driving the fd) or a
        pair member from :meth:`open` (TLS then runs as a filter)."""
        from .bufferevent import Bufferevent
        from .constants import BUFFEREVENT_SSL_ACCEPTING
        if isinstance(transport, Bufferevent):
            raw = top = transport
            if self.tls_in is not None:
                from .ssl import openssl_filter_new
                top = openssl_filter_new(raw, self._tls(self.tls_in, None),
                                         BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE)
        elif self.tls_in is not None:
            from .ssl import openssl_socket_new
            raw = top = openssl_socket_new(self._tls(self.tls_in, None),
                                           BUFFEREVENT_SSL_ACCEPTING, transport,
                                           BEV_OPT_CLOSE_ON_FREE, self.hub)
        else:
            raw = top = SocketBufferevent(transport, BEV_OPT_CLOSE_ON_FREE, self.hub)
        if self.tls_in is not None:
            top.set_half_close(True)          # half-closes travel through TLS
        if self.compress is not None and self.compress_side == "down":
            top = self._compressed(top)
        return raw, top

    def _up_stack(self):
        """``(raw, top)`` for the target side; *raw* is not connected yet."""
        from .constants import BUFFEREVENT_SSL_CONNECTING
        if self.tls_out is not None:
            from .ssl import openssl_socket_new
            raw = top = openssl_socket_new(
                self._tls(self.tls_out, None, self.server_hostname),
                BUFFEREVENT_SSL_CONNECTING, None, BEV_OPT_CLOSE_ON_FREE, self.hub)
            top.set_half_close(True)
        else:
            raw = top = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE, self.hub)
        if self.compress is not None and self.compress_side == "up":
            top = self._compressed(top)
        return raw, top

    def _limit(self, bev):
        if self.conn_cfg is not None:
            bev.set_rate_limit(self.conn_cfg)
        if self.group is not None:
            bev.add_to_rate_limit_group(self.group)

    def _connection_closed(self, conn):
        if conn in self._connections:
            self._connections.discard(conn)
            f = self._finished
            f["connections"] += 1
            f["client_to_target"] += conn.c2t.bytes
            f["target_to_client"] += conn.t2c.bytes

    def _new_connection(self, transport, peer):
        conn = _Connection(self, transport, peer)
        self._connections.add(conn)
        return conn

    # -- running --------------------------------------------------------------------

    def start(self):
        """Start accepting on *listen*.  :raises OSError: cannot listen.
        :raises RuntimeError: already started."""
        if self.listen is None:
            raise ValueError("this tunnel has no listen address")
        if self._server is not None:
            raise RuntimeError("this tunnel was started already")
        self._server = _Acceptor(self.listen, self)
        self._server.start()
        self.accepting = True
        return self

    @property
    def address(self):
        """The ``(host, port)`` actually listened on."""
        return self._server.address if self._server else None

    def open(self):
        """A bufferevent for the program itself: what is written to it enters the
        tunnel like an accepted connection's bytes; replies arrive in its input.
        Use the blocking API (``sendall``/``recv``) or callbacks on it."""
        mine, theirs = pair_new(0, self.hub)
        self._connections.add(_Connection(self, theirs, "in-process", user_bev=mine))
        return mine

    def connections(self):
        """Per-connection statistics (a list of dicts)."""
        return [c.stats() for c in list(self._connections)]

    def totals(self):
        """Bytes relayed since the start, all connections (open and closed):
        ``{"open": n, "closed": n, "client_to_target": bytes,
        "target_to_client": bytes}`` plus ``"group_read"``/``"group_written"``
        (the rate-limit group's totals) when ``rate`` is set."""
        conns = [c.stats() for c in list(self._connections)]
        f = self._finished
        out = {"open": len(conns), "closed": f["connections"],
               "client_to_target": f["client_to_target"]
               + sum(c["client_to_target"] for c in conns),
               "target_to_client": f["target_to_client"]
               + sum(c["target_to_client"] for c in conns)}
        if self.group is not None:
            out["group_read"], out["group_written"] = self.group.get_totals()
        return out

    def stop(self, grace=5.0):
        """Stop accepting, let open connections finish for up to *grace*
        seconds, then close what is left (from a greenlet)."""
        if self._server is not None:
            self._server.close()
            self.accepting = False
        pending = [c.done for c in list(self._connections)]
        if pending and grace:
            gevent.wait(pending, timeout=grace)
        for conn in list(self._connections):
            conn.close(pass_abort=True)    # cut off: both peers see a reset


def _is_ip(name):
    from .socket import _is_numeric_host
    return _is_numeric_host(name)


def _set_verify_name(conn, name):
    """Ask OpenSSL to check the peer certificate against *name* (host or IP)."""
    from .ssl import set_verify_name
    set_verify_name(conn, name)
