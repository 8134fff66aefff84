"""Type aliases used in the annotations of the public API.

Nothing here has runtime behaviour: the names exist so that annotations read
the way the docstrings do (``BytesLike``, ``DataCallback``, ``FilterFunc``...).
A type checker sees the precise protocol where the runtime alias is looser
(``BytesLike`` is ``typing_extensions.Buffer``, the buffer protocol, for the
checker).
"""
from __future__ import annotations

from typing import (
    TYPE_CHECKING, Any, Callable, Optional, Protocol, Tuple, Union,
)

from gevent.hub import Hub

if TYPE_CHECKING:
    from typing_extensions import Buffer as BytesLike

    from .buffer import Buffer
    from .bufferevent import Bufferevent
    from .constants import Event, FlushMode
else:
    #: Any object supporting the buffer protocol (``bytes``, ``bytearray``,
    #: ``memoryview``, ``array.array``...).
    BytesLike = Union[bytes, bytearray, memoryview]

__all__ = [
    "BytesLike", "Hub", "DataCallback", "EventCallback", "FilterFunc",
    "SupportsProcess", "FilterSpec", "FreeContext", "Address", "SocketLike",
]

#: ``readcb(bev, cbarg)`` / ``writecb(bev, cbarg)``; the return value is ignored.
DataCallback = Callable[["Bufferevent", Any], object]
#: ``eventcb(bev, events, cbarg)``; *events* is a :class:`~gbufferevent.Event`.
EventCallback = Callable[["Bufferevent", "Event", Any], object]
#: A filter function (``bufferevent_filter_cb``):
#: ``f(source, destination, dst_limit, mode, ctx) -> FilterResult``
#: (``BEV_OK``/``BEV_NEED_MORE``/``BEV_ERROR``; plain ints 0/1/2 are accepted).
FilterFunc = Callable[["Buffer", "Buffer", int, "FlushMode", Any], int]
#: ``free_context(ctx)``, called once when a filter bufferevent goes away.
FreeContext = Callable[[Any], object]


class SupportsProcess(Protocol):
    """A plain-object filter: ``process(data, mode) -> bytes`` (see
    :class:`~gbufferevent.ProcessFilter`)."""

    def process(self, data: bytes, mode: FlushMode, /) -> BytesLike: ...


#: What a filter argument takes: a filter function, a plain object with
#: ``process``, or None (pass-through).
FilterSpec = Optional[Union[FilterFunc, SupportsProcess]]

#: A socket address: ``(host, port)``, ``(host, port, flowinfo, scope_id)``
#: or a Unix path.
Address = Union[Tuple[str, int], Tuple[str, int, int, int], str, bytes]

#: A socket a socket bufferevent accepts: a gevent or stdlib socket, or an fd.
SocketLike = Any
