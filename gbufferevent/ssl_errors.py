"""TLS error classification and OpenSSL error codes: pure logic, no I/O, no hub.

A TLS bufferevent ends in one of three ways (libevent's ``conn_closed``):

* :attr:`Closure.CLEAN` -- the peer sent ``close_notify``: always
  ``BEV_EVENT_EOF``;
* :attr:`Closure.DIRTY` -- the transport ended (EOF, reset) without
  ``close_notify``: ``BEV_EVENT_EOF`` if dirty shutdowns are allowed, else
  ``BEV_EVENT_ERROR``.  Both spellings OpenSSL has for it count: the old
  ``SSL_ERROR_SYSCALL`` with no error queued (pyOpenSSL's
  ``SysCallError(-1, "Unexpected EOF")``) and OpenSSL 3's
  ``SSL_R_UNEXPECTED_EOF_WHILE_READING`` ("unexpected eof while reading");
* :attr:`Closure.ERROR` -- a protocol or certificate failure:
  ``BEV_EVENT_ERROR``.

pyOpenSSL hands out the error queue as ``(library, function, reason)`` text
triples; :func:`error_codes` turns them back into the unsigned numbers
``ERR_get_error()`` returned (OpenSSL 3 packing: ``lib << 23 | reason``,
system errors ``0x80000000 | errno``), as :class:`OpenSSLErrorCode`, an
``int`` that also carries its text.
"""
from __future__ import annotations

import enum
import os
import ssl as _stdssl
from typing import Dict, List, Optional, Tuple

from OpenSSL import SSL

from .errors import SSLCertVerificationError, SSLEOFError, SSLError

__all__ = [
    "Closure", "OpenSSLErrorCode", "classify", "error_codes", "pack_error",
    "ssl_exception", "ERR_LIB_SSL", "ERR_SYSTEM_FLAG",
]

#: OpenSSL's library number of "SSL routines" (``ERR_LIB_SSL``).
ERR_LIB_SSL = 20
#: Marks a system (errno) error in OpenSSL 3's packed codes (``ERR_SYSTEM_FLAG``).
ERR_SYSTEM_FLAG = 0x80000000
_LIB_OFFSET = 23
_REASON_MASK = 0x7FFFFF
_RFLAG_COMMON = 0x2 << 18         # ERR_RFLAG_COMMON: reasons shared by all libs
_SSL_R_UNEXPECTED_EOF = 294       # SSL_R_UNEXPECTED_EOF_WHILE_READING
_SSL_R_WRONG_SSL_VERSION = 266
_UNEXPECTED_EOF_TEXT = "unexpected eof while reading"
_CERT_FAILED_TEXT = "certificate verify failed"


class Closure(enum.Enum):
    """How a TLS stream ended (see the module docstring)."""

    CLEAN = "clean"
    DIRTY = "dirty"
    ERROR = "error"


class OpenSSLErrorCode(int):
    """An OpenSSL error code as ``ERR_get_error()`` returns it, plus its text.

    Compares equal to the plain number; ``lib`` and ``reason`` are OpenSSL's
    strings (``ERR_lib_error_string``/``ERR_reason_error_string``) and
    ``str()`` gives ``ERR_error_string``'s form,
    ``"error:0A00009C:SSL routines::http request"``.
    """

    lib: str
    reason: str

    def __new__(cls, code: int, lib: str = "", reason: str = "") -> OpenSSLErrorCode:
        self = super().__new__(cls, code)
        self.lib = lib
        self.reason = reason
        return self

    def __str__(self) -> str:
        return f"error:{int(self):08X}:{self.lib}::{self.reason}"

    def __repr__(self) -> str:
        return f"OpenSSLErrorCode(0x{int(self):08X}, {self.lib!r}, {self.reason!r})"


# -- text -> number ---------------------------------------------------------

_lib_numbers: Dict[str, int] = {}                 # library text -> number
_reason_numbers: Dict[Tuple[int, str], int] = {}  # (library number, reason text) -> number


def _strings():
    """OpenSSL's error-string functions (cryptography's bindings, as pyOpenSSL uses)."""
    from cryptography.hazmat.bindings.openssl.binding import Binding
    lib, ffi = Binding.lib, Binding.ffi
    SSL.Context(SSL.TLS_METHOD)      # OPENSSL_init_ssl: loads the SSL reason strings

    def text(p):
        return ffi.string(p).decode("ascii", "replace") if p != ffi.NULL else None

    return (lambda code: text(lib.ERR_lib_error_string(code)),
            lambda code: text(lib.ERR_reason_error_string(code)))


def _lib_number(name):
    if not _lib_numbers:
        lib_string, _ = _strings()
        for n in range(1, 128):
            s = lib_string(n << _LIB_OFFSET)
            if s is not None:
                _lib_numbers.setdefault(s, n)
    return _lib_numbers.get(name, 0)


def _reason_number(libno, reason):
    key = (libno, reason)
    if key not in _reason_numbers:
        _, reason_string = _strings()
        found = 0
        base = libno << _LIB_OFFSET
        for r in list(range(1, 4096)) + [_RFLAG_COMMON | r for r in range(1, 1024)]:
            if reason_string(base | r) == reason:
                found = r
                break
        _reason_numbers[key] = found
    return _reason_numbers[key]


def pack_error(lib: str, reason: str) -> OpenSSLErrorCode:
    """The ``ERR_get_error()`` number of an error given as OpenSSL's texts.

    :param lib: library text, e.g. ``"SSL routines"``.
    :param reason: reason text, e.g. ``"wrong version number"``.
    :returns: an :class:`OpenSSLErrorCode` (reason number 0 if the text is
        unknown to this OpenSSL).
    """
    libno = _lib_number(lib)
    r = _reason_number(libno, reason) if libno else 0
    return OpenSSLErrorCode((libno << _LIB_OFFSET) | (r & _REASON_MASK), lib, reason)


def _system_error(code):
    return OpenSSLErrorCode(ERR_SYSTEM_FLAG | (code & 0x7FFFFFFF), "system library",
                            os.strerror(code))


def _unexpected_eof():
    return OpenSSLErrorCode((ERR_LIB_SSL << _LIB_OFFSET) | _SSL_R_UNEXPECTED_EOF,
                            "SSL routines", _UNEXPECTED_EOF_TEXT)


def wrong_version_error(text: str) -> OpenSSLErrorCode:
    """The code OpenSSL queues when a call needs another protocol version
    (``SSL_R_WRONG_SSL_VERSION``), with *text* as its reason."""
    return OpenSSLErrorCode((ERR_LIB_SSL << _LIB_OFFSET) | _SSL_R_WRONG_SSL_VERSION,
                            "SSL routines", text)


def _queue(exc):
    """The ``(lib, func, reason)`` triples of a pyOpenSSL ``SSL.Error``."""
    if type(exc) is not SSL.Error or not exc.args or not isinstance(exc.args[0], list):
        return []
    return [t for t in exc.args[0] if isinstance(t, tuple) and len(t) == 3]


def error_codes(exc: BaseException) -> List[OpenSSLErrorCode]:
    """The OpenSSL error codes behind *exc*, oldest first.

    :param exc: a pyOpenSSL exception (``SSL.Error``, ``SysCallError``,
        ``ZeroReturnError``) or a transport ``OSError``.
    :returns: a list of :class:`OpenSSLErrorCode`; empty for a clean
        ``close_notify``.  An unexpected EOF gives OpenSSL 3's
        ``SSL_R_UNEXPECTED_EOF_WHILE_READING`` code (pyOpenSSL clears the queue
        when it reports one), a socket error ``ERR_SYSTEM_FLAG | errno``.
    """
    if isinstance(exc, SSL.ZeroReturnError):
        return []
    if isinstance(exc, SSL.SysCallError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
        return [_unexpected_eof() if code <= 0 else _system_error(code)]
    if isinstance(exc, SSL.Error):
        return [pack_error(lib, reason) for lib, _func, reason in _queue(exc)]
    if isinstance(exc, OSError) and exc.errno:
        return [_system_error(exc.errno)]
    return []


def classify(exc: BaseException, received_shutdown: bool = False) -> Closure:
    """Classify what ended a TLS stream.

    :param exc: the pyOpenSSL exception from ``recv``/``send``/
        ``do_handshake`` or the transport's ``OSError``.
    :param received_shutdown: ``Connection.get_shutdown() & RECEIVED_SHUTDOWN``.
    :returns: a :class:`Closure`.
    """
    if isinstance(exc, SSL.ZeroReturnError):
        return Closure.CLEAN if received_shutdown else Closure.DIRTY
    if isinstance(exc, SSL.SysCallError):
        return Closure.DIRTY
    if isinstance(exc, SSL.Error):
        if any(reason == _UNEXPECTED_EOF_TEXT for _l, _f, reason in _queue(exc)):
            return Closure.DIRTY
        return Closure.ERROR
    if isinstance(exc, ConnectionError):
        return Closure.DIRTY
    return Closure.ERROR


def ssl_exception(exc: BaseException, closure: Optional[Closure] = None) -> SSLError:
    """The :class:`~gbufferevent.SSLError` the blocking layer raises for *exc*.

    A dirty shutdown becomes :class:`~gbufferevent.SSLEOFError`, a failed
    certificate check :class:`~gbufferevent.SSLCertVerificationError`; the
    OpenSSL codes are in ``.openssl_errors``, the first reason in ``.reason``
    (upper case, as the ``ssl`` module spells it).
    """
    if closure is None:
        closure = classify(exc)
    codes = error_codes(exc)
    err: SSLError
    if closure is Closure.DIRTY:
        err = SSLEOFError(_stdssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol "
                          "(the peer closed without close_notify)")
        reason = "UNEXPECTED_EOF_WHILE_READING"
    else:
        first = codes[0] if codes else None
        text = first.reason if first is not None else (str(exc) or type(exc).__name__)
        reason = text.upper().replace(" ", "_")
        lib = "SSL" if first is None or first.lib == "SSL routines" else first.lib
        cls = SSLCertVerificationError if text == _CERT_FAILED_TEXT else SSLError
        err = cls(_stdssl.SSL_ERROR_SSL, f"[{lib}: {reason}] {text}")
    err.reason = reason
    err.library = "SSL"
    err.openssl_errors = codes
    err.__cause__ = exc
    return err
