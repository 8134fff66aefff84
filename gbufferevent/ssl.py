"""TLS bufferevents over pyOpenSSL (libevent's ``bufferevent_openssl.c``).

Two kinds, as in libevent, sharing one core:

* :func:`openssl_socket_new` -- a TLS bufferevent on a socket
  (:class:`SSLSocketBufferevent`, a :class:`~gbufferevent.SocketBufferevent`
  that encrypts): it reads and writes the fd itself on the hub's io watchers;
* :func:`openssl_filter_new` -- TLS over any other bufferevent
  (:class:`SSLFilterBufferevent`): a pair member, a socket bufferevent, a zlib
  filter, another TLS bufferevent.  It takes over the underlying's callbacks,
  enables it ``EV_READ|EV_WRITE`` and moves ciphertext between the
  underlying's ``input``/``output`` and OpenSSL.

The core drives an ``OpenSSL.SSL.Connection`` over memory BIOs
(``Connection(ctx, None)``, pyOpenSSL's ``SSL_new``): ciphertext goes in with
``bio_write`` and comes out with ``bio_read``; plaintext is what the
bufferevent's ``input`` and ``output`` hold.  So every wire byte, handshake
included, passes through the bufferevent and is charged to its rate limits
(``_charge_read``/``_charge_write``), and each step is sized by
``_read_allowance``/``_write_allowance`` (max single read/write, buckets).

Semantics (libevent's, with the seed's and this project's decisions):

* ``BEV_EVENT_CONNECTED`` once the handshake is done (none for a bufferevent
  created ``BUFFEREVENT_SSL_OPEN``); a failed handshake is
  ``ERROR|READING`` with :meth:`~_TLSCore.get_openssl_error` non-zero; a
  handshake stalled past the read or write timeout is a bare
  ``BEV_EVENT_TIMEOUT`` (both directions are then disabled).
* Reading never stalls on bytes OpenSSL already holds: after each transport
  read every complete record is decrypted into ``input``, even past max
  single read or the read high watermark (by at most one record, as libevent).
* A write that OpenSSL cannot finish (``WANT_READ`` during a renegotiation)
  is retried with the very same chunk once input arrives.
* The peer's ``close_notify`` is ``EOF|READING``, and is answered with ours
  once ``output`` has been encrypted.  A transport that ends without it is a
  *dirty shutdown*: ``ERROR|READING`` (``SSLEOFError``), or ``EOF|READING``
  with :meth:`~_TLSCore.set_allow_dirty_shutdown`.  Data received before
  either is delivered first.
* A transport that vanishes without an event -- the filter kind's
  underlying freed, a pair partner somewhere below freed -- is a transport
  EOF (so a dirty shutdown unless ``close_notify`` came first); libevent's
  TLS filter would wait forever.
* Flushing (beyond libevent, whose TLS flush does nothing): at the end of
  each flight or burst the filter kind flushes a layered underlying
  (``BEV_FLUSH``), so a compressing filter below never holds TLS records
  back; ``flush()`` encrypts the pending output as far as the transport has
  room and the filter kind passes it on (``underlying.flush(iotype,
  mode)``); ``BEV_FINISHED`` on ``EV_WRITE`` is our ``close_notify``
  (once the output is encrypted), and on the filter kind then ends the
  underlying's stream the same way.
* :meth:`~_TLSCore.close` is a clean, bounded TLS close (libevent has none):
  pending plaintext is delivered, ``close_notify`` sent, the peer's awaited
  for at most :meth:`~_TLSCore.set_shutdown_timeout` seconds (data arriving
  meanwhile is discarded), then the transport is closed (with
  ``BEV_OPT_CLOSE_ON_FREE``), so sessions stay resumable.  :meth:`free` is
  libevent's abrupt free: no ``close_notify``.

Threading: libevent's chapter shows how to install OpenSSL locking callbacks.
They are not needed here: OpenSSL >= 1.1.0 (which pyOpenSSL/cryptography
bundle) locks its own global state, and pyOpenSSL releases no object to other
threads by itself.  What still holds: a ``Connection`` (like the bufferevent
around it, see :mod:`gbufferevent.bufferevent`) belongs to one hub, i.e. one
thread; with a hub per thread, give each thread its own bufferevents and
Connections.  ``Context`` objects may be shared between threads once
configured.
"""
from __future__ import annotations

import socket as _socket
import weakref
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any, Deque, List, Optional, Union

from OpenSSL import SSL

from .bufferevent import SUSPEND_FILTER, SUSPEND_LOOKUP, Bufferevent, _owned
from .constants import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_TIMEOUT, BEV_EVENT_WRITING, BEV_FINISHED, BEV_FLUSH, BEV_OPT_CLOSE_ON_FREE,
    BUFFEREVENT_SSL_ACCEPTING, BUFFEREVENT_SSL_CONNECTING, BUFFEREVENT_SSL_OPEN,
    EV_READ, EV_WRITE, SSLState,
)
from .errors import (
    BuffereventClosedError, SSLCertVerificationError, SSLEOFError, SSLError,
)
from .socket import _WOULDBLOCK, SocketBufferevent, _is_connected, _is_numeric_host
from .ssl_context import (
    _handshake_host_check, check_hostname, client_context, load_or_generate_cert,
    server_context,
)
from .ssl_errors import (
    Closure, OpenSSLErrorCode, classify, error_codes, pack_error, ssl_exception,
    wrong_version_error,
)
from ._typing import Hub, SocketLike

if TYPE_CHECKING:
    # For the type checker the mixin is a Bufferevent (it is only ever mixed
    # into one); at runtime it is a plain class.
    _TLSBase = Bufferevent
else:
    _TLSBase = object

__all__ = [
    "openssl_socket_new", "openssl_filter_new", "set_verify_name", "SSLSocketBufferevent",
    "SSLFilterBufferevent", "server_bufferevent", "server_context", "client_context",
    "load_or_generate_cert", "SSLError", "SSLEOFError", "SSLCertVerificationError",
    "OpenSSLErrorCode", "DEFAULT_SHUTDOWN_TIMEOUT", "HANDSHAKE_TIMEOUT",
]

#: Seconds :meth:`close` waits for the peer's ``close_notify`` by default.
DEFAULT_SHUTDOWN_TIMEOUT = 3.0
#: Seconds :meth:`wait_handshake` waits by default (unless :meth:`settimeout` was set).
HANDSHAKE_TIMEOUT = 30.0
#: Largest TLS record payload: one ``SSL_read`` returns at most this much.
_RECORD = 16384
#: Ciphertext taken from the out-BIO per ``bio_read``.
_BIO_CHUNK = 1 << 17
#: Ciphertext a filter lets queue in an underlying without a write high
#: watermark before waiting for it to drain, in bytes (at least 4 of the
#: underlying's write steps).
FILTER_WINDOW = 1 << 16
_MAX_ERRORS = 3            # libevent's NUM_ERRORS
#: Socket kind: at most this many read/write steps (each capped by max single
#: read/write and the rate limits) and this many bytes per io callback.
_STEPS = 16
_CALLBACK_BYTES = 256 * 1024
_BATCH = 4
_DEFAULT: Any = object()
_DIRECTIONS = BEV_EVENT_READING | BEV_EVENT_WRITING
_verify_names: weakref.WeakKeyDictionary[SSL.Connection, str] = \
    weakref.WeakKeyDictionary()     # Connection -> host name or IP


def set_verify_name(ssl: SSL.Connection, name: Optional[str]) -> None:
    """Have TLS bufferevents check the peer certificate of *ssl* against *name*.

    OpenSSL's ``SSL_set1_host``, which pyOpenSSL does not offer: if the
    Connection verifies its peer (``VERIFY_PEER``), the certificate must be
    valid for *name* (a DNS name, wildcards per RFC 6125, or an IP literal),
    else the handshake fails with ``SSLCertVerificationError`` (an ERROR
    event).  OpenSSL checks the name during the handshake, so the checking
    side sends an alert and the peer's handshake fails as well (an ERROR
    there too); the name is checked once more when the handshake is done.
    ``server_hostname=`` and ``connect_hostname()`` do the same.

    :param ssl: an ``OpenSSL.SSL.Connection``.
    :param name: str, or None to check no name.
    :raises TypeError: *ssl* is not a Connection, *name* not a non-empty str.
    """
    if not isinstance(ssl, SSL.Connection):
        raise TypeError(f"ssl must be an OpenSSL.SSL.Connection, not {type(ssl).__name__}")
    if name is None:
        _verify_names.pop(ssl, None)
    elif isinstance(name, str) and name:
        _verify_names[ssl] = name
    else:
        raise TypeError("name must be a non-empty str or None")
    _handshake_host_check(ssl, name)


def _check_connection(ssl: SSL.Connection) -> SSL.Connection:
    if not isinstance(ssl, SSL.Connection):
        raise TypeError(f"ssl must be an OpenSSL.SSL.Connection, not {type(ssl).__name__}")
    # pyOpenSSL keeps the socket of Connection(ctx, sock) here; such a
    # Connection has socket BIOs, and this module needs memory BIOs.
    if getattr(ssl, "_socket", None) is not None:
        raise ValueError("ssl must be created as Connection(ctx, None) (memory BIOs); "
                         "pass the socket as sock instead")
    return ssl


def _check_state(state: int) -> SSLState:
    if isinstance(state, bool) or not isinstance(state, int):
        raise TypeError(f"state must be a BUFFEREVENT_SSL_* value, not {type(state).__name__}")
    try:
        return SSLState(state)
    except ValueError:
        raise ValueError(f"state must be BUFFEREVENT_SSL_OPEN, _CONNECTING or "
                         f"_ACCEPTING, not {state!r}") from None


class _TLSCore(_TLSBase):
    """What both TLS kinds share: the handshake, the record loop, closing.

    A kind supplies the transport: ``_tx_write(ciphertext)`` hands bytes on,
    ``_finish_close()`` tears the transport down after a clean close, and its
    ``_update_io`` starts/stops reading the transport (while
    :meth:`_wants_input`) and writing (while ciphertext is queued or
    :meth:`_can_encrypt`).  It feeds what it reads to :meth:`_feed`,
    transport EOF to :meth:`_transport_eof`, errors to :meth:`_transport_failed`.
    """

    _ssl: SSL.Connection           # None only once freed with BEV_OPT_CLOSE_ON_FREE
    _ssl_errors: List[OpenSSLErrorCode]

    def _tls_init(self, ssl, state, server_hostname):
        self._ssl = _check_connection(ssl)
        self._state = _check_state(state)
        if server_hostname is not None and not isinstance(server_hostname, str):
            raise TypeError("server_hostname must be a str or None")
        self._hostname = server_hostname if server_hostname is not None \
            else _verify_names.get(ssl)
        if self._hostname and state != BUFFEREVENT_SSL_OPEN:
            _handshake_host_check(ssl, self._hostname)
        if state == BUFFEREVENT_SSL_CONNECTING:
            ssl.set_connect_state()
            if server_hostname and not _is_numeric_host(server_hostname):
                ssl.set_tlsext_host_name(server_hostname.encode("idna"))
        elif state == BUFFEREVENT_SSL_ACCEPTING:
            ssl.set_accept_state()
        self._hs = state != BUFFEREVENT_SSL_OPEN   # handshake not finished
        self._hs_started = False
        self._hs_timed_out = False
        self._hs_waiters = []
        self._reneg = False         # our renegotiate() awaits completion
        self._wchunk = None         # plaintext SSL_write must be retried with
        self._wblocked = False      # ... once input arrives (WANT_READ)
        self._ssl_errors = []
        self._allow_dirty = False
        self._half_close = False
        self._tls_ended = False     # no more TLS input (close_notify/EOF/error)
        self._dead = False          # transport or TLS failed: no more I/O
        self._cn_sent = self._cn_got = False
        self._close_started = False
        self._shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT
        self._close_timer = None
        self._close_mark = 0
        self._wire_out = 0
        self._failing = False
        self._finish_below = False  # flush(BEV_FINISHED): end the transport too

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------

    def get_ssl(self) -> Optional[SSL.Connection]:
        """The ``OpenSSL.SSL.Connection`` (``bufferevent_openssl_get_ssl``);
        None after :meth:`free` with ``BEV_OPT_CLOSE_ON_FREE``."""
        return self._ssl

    def get_openssl_error(self) -> int:
        """Pop the first (oldest) pending OpenSSL error of this bufferevent
        (``bufferevent_get_openssl_error``); 0 when none.

        At most 3 are kept.  The value is the number ``ERR_get_error()``
        returned, as an :class:`~gbufferevent.ssl_errors.OpenSSLErrorCode`
        whose ``reason``/``str()`` give its text.
        """
        return self._ssl_errors.pop(0) if self._ssl_errors else 0

    def _put_errors(self, codes):
        for code in codes:
            if len(self._ssl_errors) >= _MAX_ERRORS:
                break
            self._ssl_errors.append(code)

    def get_allow_dirty_shutdown(self) -> int:
        """1 if a transport close without ``close_notify`` is reported as EOF,
        else 0 (``bufferevent_openssl_get_allow_dirty_shutdown``)."""
        return int(self._allow_dirty)

    @_owned
    def set_allow_dirty_shutdown(self, allow_dirty_shutdown: bool) -> None:
        """Report a transport close without ``close_notify`` as ``EOF``
        instead of ``ERROR`` (``bufferevent_openssl_set_allow_dirty_shutdown``).
        Default off."""
        self._allow_dirty = bool(allow_dirty_shutdown)

    def get_half_close(self) -> int:
        """1 if a received ``close_notify`` ends only the reading side, else 0
        (no libevent counterpart)."""
        return int(self._half_close)

    @_owned
    def set_half_close(self, half_close: bool) -> None:
        """Choose what a received ``close_notify`` does to the writing side.

        Off (the default, TLS 1.2's rule): the reader gets EOF and our own
        ``close_notify`` answers as soon as the output is encrypted, so two
        ends close each other promptly.  On (TLS 1.3 allows it): the reader
        gets EOF and we may go on writing; our ``close_notify`` goes out when
        we end the stream (:meth:`shutdown` ``SHUT_WR``, ``flush(EV_WRITE,
        BEV_FINISHED)``, :meth:`close`) -- what a relay passing half-closes on
        needs.  No libevent counterpart.
        """
        self._half_close = bool(half_close)

    def get_shutdown_timeout(self) -> float:
        """Seconds :meth:`close` waits for the peer's ``close_notify``
        (:data:`DEFAULT_SHUTDOWN_TIMEOUT` unless set; no libevent counterpart)."""
        return self._shutdown_timeout

    @_owned
    def set_shutdown_timeout(self, seconds: float) -> None:
        """Set how long :meth:`close` waits for the peer's ``close_notify``
        (and at most for undelivered output making no progress), in seconds.

        :raises ValueError: negative.  :raises TypeError: not a number.
        No libevent counterpart.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        self._shutdown_timeout = float(seconds)

    @property
    def handshake_done(self) -> bool:
        """True once the (first) handshake has finished (``SSL_is_init_finished``)."""
        return not self._hs

    @_owned
    def renegotiate(self) -> int:
        """Start a new handshake on an open TLS 1.2 connection
        (``bufferevent_ssl_renegotiate``).

        Data keeps flowing meanwhile; when the new handshake is done this
        side gets a second ``BEV_EVENT_CONNECTED``.  A server refuses
        client-initiated renegotiation by default (OpenSSL 3) with a
        ``no_renegotiation`` warning, which the client's OpenSSL takes as
        fatal: it answers with a ``handshake_failure`` alert, so both ends
        get ``ERROR|READING`` (unless the server's context has
        ``SSL_OP_ALLOW_CLIENT_RENEGOTIATION``, 0x100).

        :returns: 0 once started; -1 if it cannot be: TLS 1.3 has no
            renegotiation, or one is already pending.  The reason is then
            available from :meth:`get_openssl_error`.
        :raises RuntimeError: the first handshake is not finished.
        """
        self._check_alive()
        ssl = self._ssl
        if self._hs:
            raise RuntimeError("renegotiate() before the handshake finished")
        if self._dead or self._tls_ended or self._cn_sent:
            return -1
        version = ssl.get_protocol_version_name()
        if version not in ("TLSv1.2", "TLSv1.1", "TLSv1"):
            self._put_errors([wrong_version_error(
                f"renegotiation does not exist in {version}; it needs TLS 1.2 or older")])
            return -1
        try:
            if not ssl.renegotiate():
                return -1
            ssl.do_handshake()
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self._put_errors(error_codes(exc))
            return -1
        self._reneg = True
        self._flush_tls()
        self._update_io()
        return 0

    def wait_handshake(self, timeout: Optional[float] = _DEFAULT) -> bool:
        """Block the current greenlet until the handshake is done.

        :param timeout: seconds; default :meth:`gettimeout` if set, else
            :data:`HANDSHAKE_TIMEOUT`; None waits as long as it takes.
        :returns: True once connected; False if the handshake failed, timed
            out, the peer went away or the bufferevent was freed.  After a
            timeout here :attr:`last_error` is a ``TimeoutError``.
        :raises RuntimeError: called from the hub (a callback).
        No libevent counterpart (libevent reports ``BEV_EVENT_CONNECTED``;
        so does this bufferevent).
        """
        if timeout is _DEFAULT:
            timeout = self._sock_timeout if self._sock_timeout is not None \
                else HANDSHAKE_TIMEOUT
        deadline = None if timeout is None else self.loop.now() + timeout
        while True:
            if not self._hs:
                return True
            if self._freed or self._error is not None or self._dead \
                    or self._hs_timed_out or self._tls_ended:
                return False
            try:
                self._wait(self._hs_waiters, deadline=deadline)
            except TimeoutError:
                self._error = TimeoutError(
                    f"TLS handshake not finished within {timeout:g} seconds")
                self._enabled = 0
                self._update_io()
                return False
            except OSError:
                return False

    # ------------------------------------------------------------------
    # Gates used by the kinds' _update_io
    # ------------------------------------------------------------------

    def _wants_input(self):
        """Should the transport be read now?"""
        if self._freed or self._tls_ended or self._dead:
            return False
        if self._close_started or self._wblocked or self._reneg:
            return True
        if self._hs:
            return self._hs_started and bool(self._enabled)
        return self._can_read()

    def _can_encrypt(self):
        """Is there plaintext that may be handed to SSL_write now?"""
        return not (self._hs or self._dead or self._cn_sent or self._wblocked) \
            and (self._wchunk is not None or self.output._len > 0) and self._can_write()

    def _batch(self, cap):
        """How many read/write steps of *cap* bytes one transport operation
        may merge: several when no rate limit applies and the cap is at least
        a full TLS record (each step stays within max single read/write),
        else one."""
        if cap >= _RECORD and self._rl is None and self._group is None:
            return _BATCH
        return 1

    def _wire_read_budget(self):
        """Ciphertext bytes one transport read step may take: max single read
        and the rate limits.  The read high watermark only switches reading
        off (:meth:`_wants_input`): TLS hands out whole records, and all that
        was read is decrypted, so ``input`` may pass it by up to one step
        (libevent documents the same overshoot)."""
        if self._rl is None and self._group is None:
            return self._max_read
        return max(self._rl_max(True), 0)

    def _small_overshoot(self):
        """A read high watermark set by the user asks for one step at a time;
        the blocking layer's own read-ahead bound does not."""
        return bool(self._rd_hi) and not self._rd_hi_implicit

    def _read_step(self):
        """Bytes one transport read may take now: a read step, or several
        merged (:meth:`_batch`) unless a read high watermark asks for small
        overshoots."""
        n = self._wire_read_budget()
        return n * self._batch(n) if not self._small_overshoot() else n

    # ------------------------------------------------------------------
    # The record loop
    # ------------------------------------------------------------------

    def _kick_handshake(self):
        """The transport is usable: send the first flight (a ClientHello)."""
        if self._hs and not self._hs_started:
            self._hs_started = True
            self._handshake_step()

    def _handshake_step(self):
        """Run SSL_do_handshake once; True when the handshake is done."""
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush_tls()
            return False
        except Exception as exc:  # noqa: BLE001 - SSL.Error or a verify callback's
            self._flush_alert()
            self._tls_end(exc, BEV_EVENT_READING)
            return False
        self._flush_tls()
        host = self._hostname
        if host and self._ssl.get_verify_mode() & SSL.VERIFY_PEER:
            cert = self._ssl.get_peer_certificate()
            if cert is None or not check_hostname(cert, host):
                self._put_errors([pack_error("SSL routines", "certificate verify failed")])
                err = SSLCertVerificationError(
                    1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate is not valid for {host!r}")
                err.reason = "CERTIFICATE_VERIFY_FAILED"
                self._fail(err, Closure.ERROR, BEV_EVENT_READING)
                return False
        self._hs = False
        self._trigger_event(BEV_EVENT_CONNECTED)
        self._update_io()
        return True

    def _feed(self, data):
        """Ciphertext *data* arrived from the transport."""
        if self._tls_ended:
            return                   # after close_notify or a failure: dropped
        self._ssl.bio_write(data)
        self._process_in()

    def _process_in(self):
        """Advance the handshake, then decrypt every complete record."""
        if self._hs and not self._handshake_step() or self._freed:
            return
        ssl = self._ssl
        inp = self.input
        discard = self._closing
        got = 0
        end = None
        while True:
            try:
                data = ssl.recv(_RECORD)
            except (SSL.WantReadError, SSL.WantWriteError):
                break
            except Exception as exc:  # noqa: BLE001 - closure or failure
                end = exc
                break
            if not discard:
                inp.add(data)
                got += len(data)
        if end is None:
            self._flush_tls()        # renegotiation / key update answers
        else:
            self._flush_alert()
        if self._reneg and not ssl.renegotiate_pending():
            self._reneg = False
            self._trigger_event(BEV_EVENT_CONNECTED)
        if got and not self._freed:
            self._trigger_read()
        if self._freed:
            return
        if end is not None:
            self._tls_end(end, BEV_EVENT_READING)
        elif self._wblocked:
            self._wblocked = False   # retry the blocked write
            self._update_io()

    def _encrypt(self, budget):
        """Hand up to *budget* bytes of ``output`` to SSL_write; return how
        many it took (0: nothing can be written now)."""
        chunk = self._wchunk
        if chunk is None:
            chunk = self.output.peek(budget)
            if not chunk:
                return 0
        try:
            n = self._ssl.send(chunk)
        except (SSL.WantReadError, SSL.WantWriteError):
            self._wchunk = chunk     # the same chunk again, later
            self._wblocked = True
            self._flush_tls()
            self._update_io()
            return 0
        except Exception as exc:  # noqa: BLE001
            self._flush_alert()
            self._tls_end(exc, BEV_EVENT_WRITING)
            return 0
        self._wchunk = None
        self.output.drain(n)
        self._flush_tls()
        return n

    def _encrypt_some(self, more):
        """Encrypt output one write allowance per SSL_write (max single write,
        rate limits) while ``more(bytes_taken_so_far)`` holds and it can;
        return the plaintext bytes taken."""
        moved = 0
        while more(moved) and self._can_encrypt():
            n = self._write_allowance()
            if n <= 0:
                break
            c = self._encrypt(n)
            if c <= 0:
                break
            moved += c
        return moved

    def _wrote(self):
        """Plaintext left ``output``: answer a received close_notify once all
        is encrypted, then the usual write trigger (writecb, close, ...)."""
        if self._cn_got and not self._cn_sent and not self._half_close \
                and not self.output._len and self._wchunk is None:
            self._send_close_notify()
        self._trigger_write()

    def _flush_tls(self):
        """Move the ciphertext OpenSSL produced to the transport; at the end
        of a burst (a handshake flight, an alert, the last of the output)
        ask the transport to push it on (:meth:`_tx_flush`)."""
        ssl = self._ssl
        moved = False
        while True:
            try:
                data = ssl.bio_read(_BIO_CHUNK)
            except SSL.Error:
                break
            moved = True
            self._wire_out += len(data)
            self._tx_write(data)
            if len(data) < _BIO_CHUNK:
                break
        if moved and not (self.output._len and self._can_encrypt()):
            self._tx_flush()

    def _tx_flush(self):
        """Kind hook: the ciphertext handed on so far should not wait for more."""

    def _flush_alert(self):
        """Send the alert of a failure, if the transport still takes it."""
        self._failing = True
        try:
            self._flush_tls()
        finally:
            self._failing = False

    def _send_close_notify(self):
        if self._cn_sent or self._dead:
            return
        self._cn_sent = True
        self._shut_wr = self._shut_wr_done = True
        try:
            self._ssl.shutdown()
        except Exception:  # noqa: BLE001 - e.g. during the handshake: none to send
            pass
        self._flush_tls()

    # ------------------------------------------------------------------
    # Endings
    # ------------------------------------------------------------------

    def _tls_end(self, exc, direction):
        """SSL_read/SSL_write/SSL_do_handshake stopped for good with *exc*."""
        received = bool(self._ssl.get_shutdown() & SSL.RECEIVED_SHUTDOWN)
        closure = classify(exc, received)
        if closure is not Closure.CLEAN:
            self._fail(exc, closure, direction)
            return
        self._cn_got = True
        self._tls_ended = True
        if self._close_started:
            self._finish_close()
            return
        if not self._half_close and not self.output._len and self._wchunk is None:
            self._send_close_notify()
        self._update_io()
        self._trigger_event(BEV_EVENT_EOF | BEV_EVENT_READING)

    def _fail(self, exc, closure, direction):
        """A dirty shutdown or an error: stop all I/O and report it."""
        self._put_errors(error_codes(exc))
        self._tls_ended = self._dead = True
        if self._close_started or self._closing:
            self._finish_close()
            return
        self._update_io()
        if closure is Closure.DIRTY and self._allow_dirty:
            self._trigger_event(BEV_EVENT_EOF | direction)
            return
        if isinstance(exc, OSError) and not isinstance(exc, SSL.Error):
            err = exc                       # a socket error, as a socket raises it
        else:
            err = ssl_exception(exc, closure)
        self._trigger_event(BEV_EVENT_ERROR | direction, err)

    def _transport_eof(self):
        """The transport reported EOF."""
        if self._tls_ended:
            if self._close_started:
                self._finish_close()
            return
        self._ssl.bio_shutdown()
        self._process_in()

    def _transport_failed(self, exc, direction):
        """The transport failed with *exc* (an OSError)."""
        if self._dead or self._failing:
            return                       # already reported (or an alert that failed)
        if self._close_started or self._closing:
            self._dead = True
            self._finish_close()
            return
        if self._tls_ended:
            self._dead = True            # our close_notify answer could not go out
            self._update_io()
            return
        self._fail(exc, classify(exc), direction)

    # ------------------------------------------------------------------
    # Base-class hooks
    # ------------------------------------------------------------------

    def _trigger_event(self, what, exc=None):
        if self._hs_waiters:
            self._wake_all(self._hs_waiters)
        super()._trigger_event(what, exc)

    def _read_ready(self):
        return super()._read_ready() or self._tls_ended

    def _direct_recv(self, n):
        return None                  # the socket carries ciphertext: no fast path

    def _direct_send(self, data):
        return 0

    def _check_sendable(self):
        super()._check_sendable()
        if self._dead or self._cn_sent:
            raise BrokenPipeError(32, "TLS connection is closed for writing")

    def _write_wait_check(self):
        super()._write_wait_check()
        if self._dead or self._cn_sent:
            raise BrokenPipeError(32, "TLS connection is closed for writing")

    def _read_timeout_wanted(self):
        if self._hs:
            return self._hs_started and bool(self._enabled) and not self._dead
        return super()._read_timeout_wanted()

    def _write_timeout_wanted(self):
        if self._hs:
            return self._hs_started and bool(self._enabled) and not self._dead
        return super()._write_timeout_wanted()

    def _on_rtimeout(self):
        if not self._hs:
            return super()._on_rtimeout()
        self._handshake_timeout(self._rlast + self._rtimeout, "_rtimer", self._on_rtimeout)

    def _on_wtimeout(self):
        if not self._hs:
            return super()._on_wtimeout()
        self._handshake_timeout(self._wlast + self._wtimeout, "_wtimer", self._on_wtimeout)

    def _handshake_timeout(self, due, attr, cb):
        if self._hs_timed_out and not self._enabled:
            return                   # the other timer of the same stall
        left = due - self.loop.now()
        if left > 0.0005:
            self._arm(attr, left, cb)
            return
        # libevent's handshake timeout: TIMEOUT without READING/WRITING.
        self._hs_timed_out = True
        self._enabled &= ~(EV_READ | EV_WRITE)
        self._update_io()
        tmo = TimeoutError("TLS handshake timeout")
        self._wake_all(self._readers, tmo)
        self._wake_all(self._writers, tmo)
        self._trigger_event(BEV_EVENT_TIMEOUT)

    def _be_flush(self, iotype, mode):
        """``bufferevent_flush`` on TLS (libevent's does nothing).

        ``EV_WRITE``: the pending plaintext is encrypted now, as far as the
        handshake and the rate limits allow, and the transport is asked to
        push it on; ``BEV_FINISHED`` then ends our stream with
        ``close_notify`` (once the output is encrypted, as a FIN follows the
        data).  The filter kind passes the flush down (``EV_READ`` too): see
        :meth:`_flush_below`.  Returns 1 if bytes were encrypted or the
        transport flushed some, 0 if not, -1 if the TLS connection or the
        underlying is gone.
        """
        if self._dead:
            return -1
        moved = 0
        if iotype & EV_WRITE:
            moved = self._encrypt_now()
            if self._freed:
                return 1 if moved else -1
            if mode == BEV_FINISHED:
                self._finish_below = True
                if not self._shut_wr:
                    self.shutdown(_socket.SHUT_WR)
        if self._freed:
            return 1 if moved else -1
        below = self._flush_below(iotype, mode)
        if below < 0:
            return -1
        return 1 if moved or below else 0

    def _encrypt_now(self):
        """Kind hook: encrypt what the transport has room for now, as one
        ordinary write pass would (backpressure holds); the plaintext bytes
        taken."""
        return 0

    def _flush_below(self, iotype, mode):
        """Kind hook: pass a flush to the transport; its result (-1/0/1)."""
        return 0

    def _be_shutdown_write(self):
        self._send_close_notify()

    @_owned
    def close(self) -> None:
        """Close the TLS connection cleanly, without blocking.

        Pending output is encrypted and sent, then ``close_notify``; the
        peer's ``close_notify`` is awaited at most :meth:`get_shutdown_timeout`
        seconds (data arriving meanwhile is discarded); then the transport is
        closed (``BEV_OPT_CLOSE_ON_FREE``) and the bufferevent freed.  Output
        that makes no progress for that long is dropped.  Idempotent.
        libevent has no clean TLS close (``bufferevent_free`` sends nothing).
        """
        if self._freed or self._closing:
            return
        super().close()
        if not self._freed and self._close_timer is None:
            self._arm_close_timer()

    def _arm_close_timer(self):
        if self._close_timer is not None:
            self._close_timer.close()
        self._close_mark = self._wire_out
        self._close_timer = self.loop.timer(self._shutdown_timeout)
        self._close_timer.start(self._close_expired)

    def _close_expired(self):
        if self._freed:
            return
        if not self._cn_sent and self._wire_out != self._close_mark:
            self._arm_close_timer()      # output still moving: give it time
            return
        self.free()

    def _be_close_ready(self):
        """close(): the output is encrypted; now the TLS close itself."""
        if self._close_started or self._freed:
            return
        self._close_started = True
        if self._hs or self._dead:
            self._finish_close()
            return
        self._send_close_notify()
        if self._cn_got or self._dead:
            self._finish_close()
            return
        self._arm_close_timer()
        self._update_io()            # keep reading for the peer's close_notify

    def _tls_free(self):
        if self._close_timer is not None:
            self._close_timer.close()
            self._close_timer = None
        if self._hs_waiters:
            self._wake_all(self._hs_waiters)
        if self.options & BEV_OPT_CLOSE_ON_FREE:
            self._ssl = None


class SSLSocketBufferevent(_TLSCore, SocketBufferevent):
    """A TLS bufferevent on a socket (``bufferevent_openssl_socket_new``).

    Made by :func:`openssl_socket_new` (same arguments and errors); see the
    module docstring.  It keeps the socket kind's ``connect``,
    ``connect_hostname``, ``setfd``, ``getfd``.
    """

    def __init__(self, ssl: SSL.Connection, state: int, sock: Optional[SocketLike] = None,
                 options: int = 0, hub: Optional[Hub] = None, *,
                 server_hostname: Optional[str] = None) -> None:
        self._tls_init(ssl, state, server_hostname)
        # ciphertext chunks on their way to the socket
        self._wq: Deque[Union[bytes, memoryview]] = deque()
        self._free_when_flushed = False
        self._in_writable = False
        super().__init__(sock, options, hub)

    def connect_hostname(self, host: str, port: int, family: int = 0) -> int:
        """Resolve *host*, connect, then run the TLS handshake
        (``bufferevent_socket_connect_hostname``).

        Unless a ``server_hostname`` was given, *host* is also sent as SNI and,
        if the context verifies peers, checked against the certificate.
        """
        if self._hostname is None and isinstance(host, str):
            self._hostname = host
            if self._hs:
                _handshake_host_check(self._ssl, host)
            if self._hs and self._state == BUFFEREVENT_SSL_CONNECTING \
                    and not _is_numeric_host(host):
                self._ssl.set_tlsext_host_name(host.encode("idna"))
        return super().connect_hostname(host, port, family)

    # -- transport ------------------------------------------------------

    def _update_io(self):
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()
        rw = self._rw
        if rw is None:
            return
        ww = self._ww
        if self._connecting or self._susp_r & SUSPEND_LOOKUP:
            if rw.active:
                rw.stop()
            if self._connecting and not ww.active:
                ww.start(self._on_writable)
            return
        if self._hs and not self._hs_started and _is_connected(self._raw):
            self._kick_handshake()
            if self._rw is None:
                return
        if self._wants_input():
            if not rw.active:
                rw.start(self._on_readable)
        elif rw.active:
            rw.stop()
        if not self._dead and (self._wq or self._can_encrypt()):
            if not ww.active:
                ww.start(self._on_writable)
        elif ww.active:
            ww.stop()

    def _on_connected(self):
        if not self._hs:
            super()._on_connected()  # created OPEN: nothing to negotiate
            return
        self._update_io()            # the handshake starts; CONNECTED comes after it

    def _tx_write(self, data):
        self._wq.append(data)
        if self._in_writable or self._connecting or self._raw is None:
            return
        # Outside the write callback (handshake flights, answers, alerts):
        # send at once, as OpenSSL's socket BIO would; the rest waits.
        while self._send_step():
            pass
        ww = self._ww
        if self._wq and ww is not None and not ww.active:
            ww.start(self._on_writable)

    def _send_step(self, batch=1):
        """One socket send of queued ciphertext: the first *batch* chunks
        (each one write step: a TLS record or a handshake flight) with one
        ``sendmsg``, if the rate limits allow any bytes now.

        Returns the bytes sent if all of them went, else 0 (socket full,
        nothing queued, rate limited, or the transport failed)."""
        wq = self._wq
        if not wq or self._dead or self._write_allowance() <= 0:
            return 0
        try:
            if batch > 1 and len(wq) > 1:
                chunks = list(islice(wq, batch))
                want = sum(map(len, chunks))
                sent = self._raw.sendmsg(chunks)
            else:
                want = len(wq[0])
                sent = self._raw.send(wq[0])
        except _WOULDBLOCK:
            return 0
        except OSError as exc:
            wq.clear()
            self._transport_failed(exc, BEV_EVENT_WRITING)
            return 0
        self._charge_write(sent)
        self._note_write()
        left = sent
        while left:
            first = len(wq[0])
            if left < first:
                wq[0] = memoryview(wq[0])[left:]
                break
            wq.popleft()
            left -= first
        if self._free_when_flushed and not wq:
            self.free()
            return 0
        return sent if sent == want else 0

    def _on_readable(self):
        # Up to _STEPS socket reads of _read_step() bytes (one step with a
        # read high watermark), then one decryption pass.
        raw = self._raw
        got = 0
        eof = False
        for _ in range(1 if self._small_overshoot() else _STEPS):
            n = min(self._read_step(), _CALLBACK_BYTES - got)
            if n <= 0:
                break
            try:
                data = raw.recv(n)
            except _WOULDBLOCK:
                break
            except OSError as exc:
                self._transport_failed(exc, BEV_EVENT_READING)
                return
            if not data:
                eof = True
                break
            got += len(data)
            self._charge_read(len(data))
            self._ssl.bio_write(data)
            if len(data) < n:
                break                # the socket is (most likely) drained
        if got:
            self._note_read()
            self._process_in()
        elif not eof:
            if self._rw is not None and self._wire_read_budget() <= 0:
                self._rw.stop()      # resumed by _update_io when allowed again
            return
        if eof and not self._freed:
            self._transport_eof()

    def _on_writable(self):
        # Up to _STEPS socket sends; before each, encrypt output one write
        # allowance (max single write, rate limits) per TLS record until
        # _batch() records are queued.
        if self._connecting:
            self._finish_connect()
            return
        if self._write_allowance() <= 0:
            self._ww.stop()          # resumed by _update_io when allowed again
            return
        self._write_pass()

    def _write_pass(self):
        """One bounded pass of encrypting and sending; the plaintext bytes taken."""
        wq = self._wq
        batch = self._batch(self._max_write)
        moved = sent = 0
        self._in_writable = True
        try:
            for _ in range(_STEPS):
                moved += self._encrypt_some(lambda _moved: len(wq) < batch)
                step = self._send_step(batch)
                sent += step
                if not step or sent >= _CALLBACK_BYTES:
                    break
        finally:
            self._in_writable = False
        if moved and not self._freed:
            self._wrote()
        if not self._freed:
            self._update_io()
        return moved

    def _encrypt_now(self):
        # flush(): the pass the write callback would make, if the socket is
        # up and we are not inside that callback already.
        if self._raw is None or self._connecting or self._in_writable \
                or self._write_allowance() <= 0:
            return 0
        return self._write_pass()

    def _write_timeout_wanted(self):
        if self._hs:
            return super()._write_timeout_wanted()
        return self._can_write() and (self._connecting or self.output._len > 0
                                      or bool(self._wq))

    def _finish_close(self):
        if self._freed:
            return
        if self._wq and not self._dead and self._raw is not None:
            self._free_when_flushed = True   # close_notify still on its way
            self._tls_ended = True
            self._update_io()
            return
        self.free()

    def _be_free(self):
        self._tls_free()
        super()._be_free()


class _StackWatch:
    """Sits in the writer lists of every layer below a TLS filter (with a
    threshold no write progress reaches).  Those lists are woken as a whole
    when a layer is freed, unlinked from its pair partner or reports an
    event; the TLS filter then checks whether its transport vanished."""

    __slots__ = ("bev",)

    def __init__(self, bev: SSLFilterBufferevent) -> None:
        self.bev = bev

    def switch(self, _value: Any = None) -> None:
        bev = self.bev
        if not bev._freed and bev._under is not None:
            bev._poll_transport()
            if not bev._freed:
                bev._watch_stack(True)


class SSLFilterBufferevent(_TLSCore, Bufferevent):
    """TLS over another bufferevent (``bufferevent_openssl_filter_new``).

    Made by :func:`openssl_filter_new` (same arguments and errors); see the
    module docstring.  ``getfd``/``setfd`` go to the underlying bufferevent.
    """

    def __init__(self, underlying: Bufferevent, ssl: SSL.Connection, state: int,
                 options: int = 0, *, server_hostname: Optional[str] = None) -> None:
        if not isinstance(underlying, Bufferevent):
            raise TypeError(f"underlying must be a Bufferevent, not "
                            f"{type(underlying).__name__}")
        if underlying.closed:
            raise ValueError("underlying bufferevent is freed or closed")
        self._tls_init(ssl, state, server_hostname)
        self._under: Optional[Bufferevent] = None
        self._pull_pending = self._push_pending = False
        super().__init__(options, underlying.hub)
        self._under = underlying
        self._watch = (_StackWatch(self), -1)
        self._vanished = False
        underlying.setcb(self._u_read, self._u_write, self._u_event)
        underlying.setwatermark(EV_READ, 0, 0)
        underlying.enable(EV_READ | EV_WRITE)
        self._watch_stack(True)
        self._kick_handshake()
        self._update_io()

    def get_underlying(self) -> Optional[Bufferevent]:
        """The wrapped bufferevent (``bufferevent_get_underlying``)."""
        return self._under

    def getfd(self) -> int:
        """The underlying bufferevent's fd, or -1 (``bufferevent_getfd`` forwards)."""
        return self._under.getfd() if self._under is not None else -1

    def setfd(self, fd: Optional[SocketLike]) -> int:
        """Forwarded to the underlying bufferevent (``bufferevent_setfd``); -1
        once the underlying is gone."""
        return self._under.setfd(fd) if self._under is not None else -1

    # -- a transport that vanishes silently ----------------------------------

    def _watch_stack(self, on):
        """Put our watch into (on) or take it out of the writer lists of
        every layer below."""
        lvl = self._under
        watch = self._watch
        while lvl is not None and not lvl._freed:
            present = watch in lvl._writers
            if on and not present:
                lvl._writers.append(watch)
            elif not on and present:
                lvl._writers.remove(watch)
            lvl = lvl.get_underlying()

    def _stack_gone(self, u):
        """True if *u* can deliver nothing more (freed, closed, its pair
        partner freed, its own stack gone); an error of *u* is not "gone":
        its event reaches us through :meth:`_u_event`."""
        if u._freed or u._closing:
            return True
        lower = getattr(u, "_finish_if_stack_gone", None)
        if lower is not None:
            lower()                  # a filter below releases what it holds
            if u._freed:
                return True
        try:
            return bool(u._read_ready())
        except BuffereventClosedError:
            return True
        except OSError:
            return False

    def _poll_transport(self):
        # Beyond libevent (whose unlinked pair members and freed underlyings
        # say nothing): a transport that can deliver no more is a transport
        # EOF -- without close_notify a dirty shutdown (ERROR, or EOF with
        # set_allow_dirty_shutdown), so blocked calls never hang.
        u = self._under
        if u is None or self._freed or self._vanished or self._tls_ended \
                or not self._stack_gone(u):
            return
        self._vanished = True
        if not u._freed:
            self._pull(everything=True)
        if not self._freed:
            self._transport_eof()

    def _no_transport(self):
        u = self._under
        if u is None or u._freed or self._tls_ended:
            return None
        return u._no_transport()     # e.g. a socket bufferevent with no socket yet

    # -- transport ------------------------------------------------------

    def _update_io(self):
        if self._rtimeout or self._wtimeout:
            self._adj_timeouts()
        u = self._under
        if u is None or self._freed or u._freed:
            return
        if self._wants_input():
            u._unsuspend_read(SUSPEND_FILTER)
            if u.input._len and not self._pull_pending:
                self._pull_pending = True
                self.loop.run_callback(self._pull)
        else:
            u._suspend_read(SUSPEND_FILTER)
        if self._can_encrypt() and not self._push_pending:
            self._push_pending = True
            self.loop.run_callback(self._push)

    def _tx_write(self, data):
        u = self._under
        if u is None or u._freed:
            return
        u.output.add(data)
        self._charge_write(len(data))
        self._note_write()

    def _tx_flush(self):
        # A layered underlying (a filter, TLS) may hold bytes after they
        # left its output -- a compressor has already taken the ciphertext
        # in -- so a handshake flight, an alert or the end of a burst must be
        # flushed through it, whether its output is empty or not (on an
        # idle filter a cheap call).  A bottom transport (socket, pair)
        # moves its output on its own as fast as the peer takes it; a flush
        # there would only force a pair transfer past the receiver's
        # backpressure.
        u = self._under
        if u is not None and not u._freed and u.get_underlying() is not None:
            u.flush(EV_WRITE, BEV_FLUSH)

    def _flush_below(self, iotype, mode):
        # flush() passes down: EV_READ first (what the transport holds is
        # decrypted, past the read gates, as a flush forces), then EV_WRITE
        # with the same mode; BEV_FINISHED ends the underlying's stream only
        # once our close_notify is in it.
        u = self._under
        if u is None or u._freed:
            return -1
        res = 0
        if iotype & EV_READ:
            res = u.flush(EV_READ, mode)
            n = len(self.input)
            self._pull(everything=True)
            if len(self.input) != n and res >= 0:
                res = 1
        if iotype & EV_WRITE and not self._freed and self._under is not None:
            if mode != BEV_FINISHED:
                w = u.flush(EV_WRITE, mode)
            elif self._finish_below and self._cn_sent:
                w = self._end_below()
            else:
                w = 0                # passed down already, or by _send_close_notify
            res = -1 if w < 0 or res < 0 else max(res, w)
        return res

    def _end_below(self):
        """flush(BEV_FINISHED): our close_notify is in the underlying's
        output; now end its stream the same way."""
        self._finish_below = False
        u = self._under
        if u is None or u._freed:
            return -1
        return u.flush(EV_WRITE, BEV_FINISHED)

    def _send_close_notify(self):
        super()._send_close_notify()
        if self._finish_below and self._cn_sent and not self._freed:
            self._end_below()

    def _u_read(self, u, _arg):
        self._pull()

    def _u_write(self, u, _arg):
        self._push()

    def _u_event(self, u, what, _arg):
        if what & BEV_EVENT_CONNECTED:
            return                   # the TLS handshake's CONNECTED counts
        if what & BEV_EVENT_EOF and what & BEV_EVENT_READING:
            self._pull(everything=True)
            if not self._freed:
                self._transport_eof()
        elif what & BEV_EVENT_ERROR:
            self._pull(everything=True)
            if not self._freed:
                self._transport_failed(u.last_error or ConnectionResetError(
                    "underlying bufferevent failed"), what & _DIRECTIONS)
        else:
            self._trigger_event(what)

    def _pull(self, everything=False):
        """Move ciphertext from the underlying's input into OpenSSL."""
        self._pull_pending = False
        u = self._under
        if u is None or self._freed:
            return
        inp = u.input
        while inp._len and (everything or self._wants_input()):
            n = inp._len if everything else self._read_step()
            if n <= 0:
                break
            data = inp.remove(n)
            self._charge_read(len(data))
            self._note_read()
            self._feed(data)
            if self._freed or self._dead:
                return

    def _push(self):
        """Encrypt output into the underlying's output, a window at a time;
        the plaintext bytes taken."""
        self._push_pending = False
        u = self._under
        if u is None or self._freed or u._freed:
            return 0
        window = u._wr_hi or max(FILTER_WINDOW, _BATCH * u.get_max_single_write())
        moved = self._encrypt_some(lambda m: m < window and len(u.output) < window)
        if moved:
            self._wrote()
        if not self._freed and self._under is not None and len(u.output) < window:
            self._update_io()        # more to encrypt: go on in a later pass
        return moved

    def _encrypt_now(self):
        return self._push()          # flush(): one window now

    def _finish_close(self):
        if self._freed:
            return
        self._watch_stack(False)
        u = self._under
        self._under = None
        if u is not None and not u._freed:
            u.setcb(None, None, None)
            u._unsuspend_read(SUSPEND_FILTER)
            if self.options & BEV_OPT_CLOSE_ON_FREE:
                u.close()            # delivers our close_notify, then frees it
        self.free()

    def _be_free(self):
        self._tls_free()
        self._watch_stack(False)
        u = self._under
        self._under = None
        if u is None or u._freed:
            return
        if self.options & BEV_OPT_CLOSE_ON_FREE:
            u.free()
        elif u.getcb()[0] == self._u_read:
            u.setcb(None, None, None)
            u._unsuspend_read(SUSPEND_FILTER)


def openssl_socket_new(ssl: SSL.Connection, state: int, sock: Optional[SocketLike] = None,
                       options: int = 0, hub: Optional[Hub] = None, *,
                       server_hostname: Optional[str] = None) -> SSLSocketBufferevent:
    """A TLS bufferevent on a socket (``bufferevent_openssl_socket_new``).

    :param ssl: an ``OpenSSL.SSL.Connection`` made as ``Connection(ctx, None)``.
    :param state: ``BUFFEREVENT_SSL_CONNECTING`` (client handshake),
        ``BUFFEREVENT_SSL_ACCEPTING`` (server handshake) or
        ``BUFFEREVENT_SSL_OPEN`` (handshake already done: no CONNECTED event).
    :param sock: a gevent/stdlib socket or an fd; None or -1 to give it later
        with ``setfd()`` or ``connect()``/``connect_hostname()`` -- the
        handshake starts once the connection is up.
    :param options: ``BEV_OPT_*``; ``BEV_OPT_CLOSE_ON_FREE`` makes
        ``free()`` close the socket and drop the Connection.
    :param hub: the gevent hub (default: current).
    :param server_hostname: client side: the name to send as SNI and, if the
        context verifies peers, to check the certificate against.
    :returns: an :class:`SSLSocketBufferevent`.
    :raises TypeError: *ssl* is not a Connection, bad *sock*.
    :raises ValueError: unknown *state*; *ssl* has a socket BIO.
    """
    return SSLSocketBufferevent(ssl, state, sock, options, hub,
                                server_hostname=server_hostname)


def openssl_filter_new(underlying: Bufferevent, ssl: SSL.Connection, state: int,
                       options: int = 0, *, server_hostname: Optional[str] = None
                       ) -> SSLFilterBufferevent:
    """TLS over *underlying*, any bufferevent (``bufferevent_openssl_filter_new``).

    The TLS bufferevent takes over the underlying's callbacks and enables it
    for ``EV_READ|EV_WRITE``; its own ``input``/``output`` hold plaintext.
    With ``BEV_OPT_CLOSE_ON_FREE`` freeing it frees the underlying.

    :param underlying: a :class:`~gbufferevent.Bufferevent`.
    :param ssl, state, options, server_hostname: as for :func:`openssl_socket_new`.
    :returns: an :class:`SSLFilterBufferevent`.
    :raises TypeError: *underlying* is not a bufferevent, or bad *ssl*.
    :raises ValueError: *underlying* is already freed; unknown *state*.
    """
    return SSLFilterBufferevent(underlying, ssl, state, options,
                                server_hostname=server_hostname)


def server_bufferevent(ctx: SSL.Context, sock: SocketLike, options: int = BEV_OPT_CLOSE_ON_FREE
                       ) -> SSLSocketBufferevent:
    """A server-side TLS bufferevent for an accepted socket (used by
    :class:`~gbufferevent.server.BuffereventServer`).

    :param ctx: an ``OpenSSL.SSL.Context`` (see :func:`server_context`).
    :param sock: the accepted socket.
    :returns: an :class:`SSLSocketBufferevent` in state ACCEPTING; call
        :meth:`~_TLSCore.wait_handshake` from a greenlet to finish it.
    :raises TypeError: *ctx* is not an ``OpenSSL.SSL.Context``, bad *sock*.

    libevent: ``bufferevent_openssl_socket_new(base, fd, SSL_new(ctx),
    BUFFEREVENT_SSL_ACCEPTING, options)``.
    """
    if not isinstance(ctx, SSL.Context):
        raise TypeError(f"ctx must be an OpenSSL.SSL.Context, not {type(ctx).__name__}")
    return SSLSocketBufferevent(SSL.Connection(ctx, None), BUFFEREVENT_SSL_ACCEPTING,
                                sock, options)
