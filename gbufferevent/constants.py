"""Flags and enums with libevent's names and numeric values.

Everything here mirrors ``event2/bufferevent.h``, ``event2/bufferevent_ssl.h``
and ``event2/util.h`` so that code ported from C reads the same.  The enums are
:class:`enum.IntFlag`/:class:`enum.IntEnum`, so they compare equal to the plain
integers libevent uses; the module-level names are the same members.
"""
from __future__ import annotations

import enum
import sys
from typing import Final

__all__ = [
    "Options", "Event", "FlushMode", "FilterResult", "SSLState",
    "BEV_OPT_CLOSE_ON_FREE", "BEV_OPT_THREADSAFE", "BEV_OPT_DEFER_CALLBACKS",
    "BEV_OPT_UNLOCK_CALLBACKS", "EV_READ", "EV_WRITE",
    "BEV_EVENT_READING", "BEV_EVENT_WRITING", "BEV_EVENT_EOF", "BEV_EVENT_ERROR",
    "BEV_EVENT_TIMEOUT", "BEV_EVENT_CONNECTED",
    "BEV_NORMAL", "BEV_FLUSH", "BEV_FINISHED",
    "BEV_OK", "BEV_NEED_MORE", "BEV_ERROR",
    "BUFFEREVENT_SSL_OPEN", "BUFFEREVENT_SSL_CONNECTING", "BUFFEREVENT_SSL_ACCEPTING",
    "EV_SSIZE_MAX", "EV_RATE_LIMIT_MAX", "MAX_SINGLE_READ_DEFAULT",
    "MAX_SINGLE_WRITE_DEFAULT",
]


class Options(enum.IntFlag):
    """Options given when a bufferevent is created (``BEV_OPT_*``)."""

    BEV_OPT_CLOSE_ON_FREE = 1
    BEV_OPT_THREADSAFE = 2
    BEV_OPT_DEFER_CALLBACKS = 4
    BEV_OPT_UNLOCK_CALLBACKS = 8


class Event(enum.IntFlag):
    """Flags passed to an event callback (``BEV_EVENT_*``)."""

    BEV_EVENT_READING = 0x01
    BEV_EVENT_WRITING = 0x02
    BEV_EVENT_EOF = 0x10
    BEV_EVENT_ERROR = 0x20
    BEV_EVENT_TIMEOUT = 0x40
    BEV_EVENT_CONNECTED = 0x80


class FlushMode(enum.IntEnum):
    """How hard :meth:`Bufferevent.flush` pushes (``enum bufferevent_flush_mode``)."""

    BEV_NORMAL = 0
    BEV_FLUSH = 1
    BEV_FINISHED = 2


class FilterResult(enum.IntEnum):
    """What a filter function returns (``enum bufferevent_filter_result``)."""

    BEV_OK = 0
    BEV_NEED_MORE = 1
    BEV_ERROR = 2


class SSLState(enum.IntEnum):
    """Where a TLS bufferevent starts (``enum bufferevent_ssl_state``)."""

    BUFFEREVENT_SSL_OPEN = 0
    BUFFEREVENT_SSL_CONNECTING = 1
    BUFFEREVENT_SSL_ACCEPTING = 2


BEV_OPT_CLOSE_ON_FREE: Final = Options.BEV_OPT_CLOSE_ON_FREE
BEV_OPT_THREADSAFE: Final = Options.BEV_OPT_THREADSAFE
BEV_OPT_DEFER_CALLBACKS: Final = Options.BEV_OPT_DEFER_CALLBACKS
BEV_OPT_UNLOCK_CALLBACKS: Final = Options.BEV_OPT_UNLOCK_CALLBACKS

#: Directions for enable/disable/flush/watermarks (``EV_READ``/``EV_WRITE``).
EV_READ: Final[int] = 0x02
EV_WRITE: Final[int] = 0x04

BEV_EVENT_READING: Final = Event.BEV_EVENT_READING
BEV_EVENT_WRITING: Final = Event.BEV_EVENT_WRITING
BEV_EVENT_EOF: Final = Event.BEV_EVENT_EOF
BEV_EVENT_ERROR: Final = Event.BEV_EVENT_ERROR
BEV_EVENT_TIMEOUT: Final = Event.BEV_EVENT_TIMEOUT
BEV_EVENT_CONNECTED: Final = Event.BEV_EVENT_CONNECTED

BEV_NORMAL: Final = FlushMode.BEV_NORMAL
BEV_FLUSH: Final = FlushMode.BEV_FLUSH
BEV_FINISHED: Final = FlushMode.BEV_FINISHED

BEV_OK: Final = FilterResult.BEV_OK
BEV_NEED_MORE: Final = FilterResult.BEV_NEED_MORE
BEV_ERROR: Final = FilterResult.BEV_ERROR

BUFFEREVENT_SSL_OPEN: Final = SSLState.BUFFEREVENT_SSL_OPEN
BUFFEREVENT_SSL_CONNECTING: Final = SSLState.BUFFEREVENT_SSL_CONNECTING
BUFFEREVENT_SSL_ACCEPTING: Final = SSLState.BUFFEREVENT_SSL_ACCEPTING

#: ``EV_SSIZE_MAX``: the largest signed size; "no limit" for rate limits.
EV_SSIZE_MAX: Final[int] = sys.maxsize
#: ``EV_RATE_LIMIT_MAX``: the largest accepted rate or burst.
EV_RATE_LIMIT_MAX: Final[int] = EV_SSIZE_MAX

#: libevent's default per-step caps (``MAX_SINGLE_READ_DEFAULT``), in bytes.
MAX_SINGLE_READ_DEFAULT: Final[int] = 16384
MAX_SINGLE_WRITE_DEFAULT: Final[int] = 16384

_ALL_OPTIONS: Final[int] = 0x0F
_ALL_EVENTS: Final[int] = EV_READ | EV_WRITE
