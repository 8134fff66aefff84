"""BuffereventServer: gevent's StreamServer handing out bufferevents.

Each accepted connection becomes a :class:`~gbufferevent.SocketBufferevent`
(closed with the bufferevent, ``BEV_OPT_CLOSE_ON_FREE``) handed to your
handler as ``handle(bev, address)`` in the connection's own greenlet, exactly
where a plain ``StreamServer`` would hand you a socket.  When the handler
returns, the bufferevent is closed the socket-like way: pending output is
delivered first.  Pools (``spawn=Pool(n)``), ``start``/``stop``/
``serve_forever`` and the listener forms are gevent's.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Optional

from gevent.server import StreamServer

from OpenSSL import SSL

from .constants import BEV_OPT_CLOSE_ON_FREE
from .ratelimit import RateLimitGroup, TokenBucketConfig
from .socket import SocketBufferevent

if TYPE_CHECKING:
    from .bufferevent import Bufferevent

__all__ = ["BuffereventServer"]

log = logging.getLogger("gbufferevent.server")


class BuffereventServer(StreamServer):
    """A ``gevent.server.StreamServer`` whose handler gets ``(bev, address)``.

    :param listener: an address ``(host, port)`` or a listening socket, as for
        ``StreamServer``.
    :param handle: ``handle(bev, address)``, run in a new greenlet per
        connection (or ``spawn``'s).
    :param ssl_context: an ``OpenSSL.SSL.Context``; connections are then TLS
        bufferevents, the handshake done in the connection's greenlet before
        ``handle`` runs (see :mod:`gbufferevent.ssl`).
    :param rate_limit_group: a :class:`~gbufferevent.RateLimitGroup` every
        connection joins.
    :param rate_limit: a :class:`~gbufferevent.TokenBucketConfig` applied to
        each connection on its own.
    :param handshake_timeout: seconds a TLS client may take to finish its
        handshake (default 30; None: no limit).
    :param options: ``BEV_OPT_*`` for each bufferevent (default
        ``BEV_OPT_CLOSE_ON_FREE``).
    Other keyword arguments (``spawn``, ``backlog``) go to ``StreamServer``.
    :raises TypeError: *handle* not callable.  :raises ValueError: bad *options*.

    It plays the role of libevent's ``evconnlistener_new_bind`` with a
    callback that calls ``bufferevent_socket_new`` (or
    ``bufferevent_openssl_socket_new``).
    """

    def __init__(self, listener: Any,
                 handle: Optional[Callable[[Bufferevent, Any], object]] = None,
                 ssl_context: Optional[SSL.Context] = None,
                 rate_limit_group: Optional[RateLimitGroup] = None,
                 rate_limit: Optional[TokenBucketConfig] = None,
                 options: int = BEV_OPT_CLOSE_ON_FREE,
                 handshake_timeout: Optional[float] = 30.0, **kwargs: Any) -> None:
        if handle is not None and not callable(handle):
            raise TypeError("handle must be callable")
        if ssl_context is not None and not isinstance(ssl_context, SSL.Context):
            raise TypeError("ssl_context must be an OpenSSL.SSL.Context (see "
                            "gbufferevent.server_context), not "
                            f"{type(ssl_context).__module__}.{type(ssl_context).__name__}")
        if rate_limit is not None and not isinstance(rate_limit, TokenBucketConfig):
            raise TypeError("rate_limit must be a TokenBucketConfig")
        if rate_limit_group is not None and not isinstance(rate_limit_group, RateLimitGroup):
            raise TypeError("rate_limit_group must be a RateLimitGroup")
        if handshake_timeout is not None and (
                isinstance(handshake_timeout, bool)
                or not isinstance(handshake_timeout, (int, float))
                or not handshake_timeout > 0):
            raise ValueError("handshake_timeout must be a number of seconds > 0, or None")
        self.handshake_timeout = handshake_timeout
        from .constants import _ALL_OPTIONS
        if isinstance(options, bool) or not isinstance(options, int) \
                or options & ~_ALL_OPTIONS or options < 0:
            raise ValueError(f"options must be BEV_OPT_* flags, not {options!r}")
        self.bev_handle = handle
        self.ssl_context = ssl_context
        self.rate_limit_group = rate_limit_group
        self.rate_limit = rate_limit
        self.bev_options = options | BEV_OPT_CLOSE_ON_FREE
        super().__init__(listener, handle=self._handle_socket, **kwargs)

    def make_bufferevent(self, sock: Any, address: Any) -> Bufferevent:
        """Build the bufferevent for an accepted socket (override to customise):
        a :class:`~gbufferevent.SocketBufferevent`, or a TLS one with
        *ssl_context*, with the rate limit and group applied."""
        bev: SocketBufferevent
        if self.ssl_context is not None:
            from .ssl import server_bufferevent
            bev = server_bufferevent(self.ssl_context, sock, self.bev_options)
        else:
            bev = SocketBufferevent(sock, self.bev_options)
        if self.rate_limit is not None:
            bev.set_rate_limit(self.rate_limit)
        if self.rate_limit_group is not None:
            bev.add_to_rate_limit_group(self.rate_limit_group)
        return bev

    def handle_bufferevent(self, bev: Bufferevent, address: Any) -> None:
        """Called per connection; calls the ``handle`` given to the constructor.

        :raises TypeError: no ``handle`` was given (override this method instead).
        """
        if self.bev_handle is None:
            raise TypeError("BuffereventServer needs a handle(bev, address)")
        self.bev_handle(bev, address)

    def _handle_socket(self, sock, address):
        try:
            bev = self.make_bufferevent(sock, address)
        except Exception:
            sock.close()
            raise
        try:
            if self.ssl_context is not None and \
                    not bev.wait_handshake(self.handshake_timeout):
                log.warning("TLS handshake with %s failed: %s", address, bev.last_error)
                return
            self.handle_bufferevent(bev, address)
        except OSError as exc:
            # The peer went away, reset, or broke TLS: that costs this
            # connection and one log line, not a traceback.
            log.info("connection from %s ended: %s: %s", address,
                     type(exc).__name__, exc)
        finally:
            bev.close()

    def do_close(self, sock: Any, *args: Any) -> None:
        """``StreamServer`` hook: does nothing.  The bufferevent owns the socket
        and closes it once its output is delivered; closing it here would cut
        that short."""
