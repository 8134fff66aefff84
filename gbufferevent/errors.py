"""Exceptions raised by gbufferevent.

The blocking (socket-like) layer raises the ``OSError`` subclass a socket
would; the classes here cover what sockets have no word for.
"""
from __future__ import annotations

import errno
import ssl as _stdssl
from typing import Optional, Sequence

__all__ = [
    "BuffereventClosedError", "IncompleteReadError", "LimitOverrunError",
    "CallbackError", "SSLError", "SSLEOFError", "SSLCertVerificationError",
]


class BuffereventClosedError(OSError, RuntimeError):
    """The bufferevent was closed or freed (``errno.EBADF``, like a closed socket).

    Also a ``RuntimeError``: using a freed bufferevent is a wrong-state error.
    """

    def __init__(self, msg: str = "bufferevent is closed") -> None:
        super().__init__(errno.EBADF, msg)


class IncompleteReadError(EOFError):
    """EOF came before :meth:`readexactly`/:meth:`readuntil` could finish.

    ``partial`` holds the bytes read before EOF, ``expected`` the number asked
    for (or ``None`` for ``readuntil``), as in asyncio.
    """

    def __init__(self, partial: bytes, expected: Optional[int]) -> None:
        self.partial = partial
        self.expected = expected
        super().__init__(
            f"{len(partial)} bytes read on a total of "
            f"{expected if expected is not None else 'undefined'} expected bytes")


class LimitOverrunError(ValueError):
    """``readuntil``/``readline`` found no separator within the read high watermark."""


class CallbackError(OSError):
    """A user callback raised; stored as the bufferevent's error (``errno.EIO``).

    The original exception is ``__cause__``.
    """

    def __init__(self, where: str, exc: BaseException) -> None:
        super().__init__(errno.EIO, f"{where} raised {type(exc).__name__}: {exc}")
        self.__cause__ = exc


class SSLError(_stdssl.SSLError):
    """A TLS failure on a TLS bufferevent; also an ``ssl.SSLError`` (an ``OSError``).

    ``reason`` is the first OpenSSL reason in the ``ssl`` module's spelling
    (e.g. ``"WRONG_VERSION_NUMBER"``), ``openssl_errors`` the OpenSSL error
    codes (:class:`~gbufferevent.ssl_errors.OpenSSLErrorCode`), oldest first.
    """

    reason: Optional[str] = None  # type: ignore[assignment]  # ssl.SSLError says str
    library: str = "SSL"
    openssl_errors: Sequence[int] = ()


class SSLEOFError(SSLError, _stdssl.SSLEOFError):
    """The peer closed the transport without ``close_notify`` (a dirty shutdown)."""


class SSLCertVerificationError(SSLError, _stdssl.SSLCertVerificationError):
    """The peer's certificate (or host name) did not verify."""
