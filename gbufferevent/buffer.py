"""Buffer: the evbuffer byte queue.

A :class:`Buffer` is a FIFO of immutable ``bytes`` chunks plus an offset into
the first one.  Appending a ``bytes`` object stores a reference (no copy);
draining advances the offset or drops whole chunks.  Moving data between
buffers (:meth:`Buffer.add_buffer`, :meth:`Buffer.remove_buffer`) moves chunk
references; only a chunk cut in two is copied, once.  Every operation is
therefore amortised O(1) in the bytes it moves, whatever the sizes of the
appends and the drains.

This is pure data structure code: no I/O and no hub.  Its owner (a
bufferevent) may set two hooks, ``_on_add`` and ``_on_drain``, plain callables
run after bytes were added or removed; libevent's evbuffer callbacks play the
same role.
"""
from __future__ import annotations

from collections import deque
from itertools import islice
from typing import Callable, Deque, List, Optional

from ._typing import BytesLike

__all__ = ["Buffer"]


def _as_bytes(data: BytesLike, argname: str = "data") -> bytes:
    """Return *data* as an immutable ``bytes`` object (no copy for ``bytes``)."""
    if type(data) is bytes:
        return data
    if isinstance(data, str):
        raise TypeError(f"{argname} must be a bytes-like object, not str")
    if isinstance(data, bytes):  # bytes subclass
        return bytes(data)
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(
            f"{argname} must be a bytes-like object, not {type(data).__name__}"
        ) from None
    # Mutable or foreign memory is copied: the caller may change it later.
    return view.tobytes()


def _check_size(n: int, argname: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{argname} must be an int, not {type(n).__name__}")
    return n


class Buffer:
    """A byte queue with libevent's evbuffer operations.

    ``len(buf)`` is the number of bytes queued; a buffer is true when it holds
    at least one byte.  Corresponds to ``struct evbuffer`` (``evbuffer_new``).

    :param data: initial contents, any bytes-like object.
    :raises TypeError: *data* is not bytes-like.
    """

    __slots__ = ("_chunks", "_off", "_len", "_on_add", "_on_drain", "__weakref__")

    def __init__(self, data: BytesLike = b"") -> None:
        self._chunks: Deque[bytes] = deque()
        self._off = 0
        self._len = 0
        self._on_add: Optional[Callable[[], object]] = None
        self._on_drain: Optional[Callable[[], object]] = None
        if data:
            self.add(data)

    # -- inspection ---------------------------------------------------------

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def __repr__(self) -> str:
        return f"<Buffer len={self._len} chunks={len(self._chunks)}>"

    def __bytes__(self) -> bytes:
        return self.pullup(-1) or b""

    # -- adding -------------------------------------------------------------

    def add(self, data: BytesLike) -> int:
        """Append *data* (any bytes-like object; ``str`` raises TypeError).

        ``bytes`` are stored by reference; other bytes-like objects are copied
        once.  Returns 0 (``evbuffer_add``).
        """
        if type(data) is not bytes:
            data = _as_bytes(data)
        if data:
            self._chunks.append(data)
            self._len += len(data)
            if self._on_add is not None:
                self._on_add()
        return 0

    def add_buffer(self, other: Buffer) -> int:
        """Move every byte of *other* to the end of this buffer, without copying.

        Returns 0 (``evbuffer_add_buffer``).
        :raises TypeError: *other* is not a Buffer.  :raises ValueError:
            *other* is this buffer.
        """
        if not isinstance(other, Buffer):
            raise TypeError(f"other must be a Buffer, not {type(other).__name__}")
        if other is self:
            raise ValueError("other must not be this buffer")
        return 0 if other.remove_buffer(self, other._len) >= 0 else -1

    # -- removing -----------------------------------------------------------

    def _take(self, n: int) -> List[bytes]:
        """Remove and return exactly *n* (<= len) bytes as a list of chunks."""
        chunks = self._chunks
        out = []
        off = self._off
        while n:
            first = chunks[0]
            avail = len(first) - off
            if n < avail:
                out.append(first[off:off + n])
                off += n
                break
            chunks.popleft()
            out.append(first[off:] if off else first)
            n -= avail
            off = 0
        self._off = off
        return out

    def remove(self, n: int = -1) -> bytes:
        """Remove and return up to *n* bytes from the front (all if ``n < 0``).

        Returns ``b""`` when empty (``evbuffer_remove``).
        :raises TypeError: *n* is not an int.
        """
        if type(n) is not int:
            _check_size(n, "n")
        if n < 0 or n > self._len:
            n = self._len
        if n == 0:
            return b""
        chunks = self._chunks
        first = chunks[0]
        off = self._off
        if off + n < len(first):
            data = first[off:off + n]
            self._off = off + n
        elif off == 0 and n == len(first):
            data = chunks.popleft()
        else:
            parts = self._take(n)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self._len -= n
            if self._on_drain is not None:
                self._on_drain()
            return data
        if self._off == len(first):
            chunks.popleft()
            self._off = 0
        self._len -= n
        if self._on_drain is not None:
            self._on_drain()
        return data

    def remove_buffer(self, dst: Buffer, n: int = -1) -> int:
        """Move up to *n* bytes (all if ``n < 0``) to the end of *dst*.

        Whole chunks move by reference; a chunk cut in two is copied once.
        Returns the number of bytes moved (``evbuffer_remove_buffer``).
        :raises TypeError: *dst* is not a Buffer or *n* not an int.
        :raises ValueError: *dst* is this buffer.
        """
        if not isinstance(dst, Buffer):
            raise TypeError(f"dst must be a Buffer, not {type(dst).__name__}")
        _check_size(n, "n")
        if dst is self:
            raise ValueError("dst must not be this buffer")
        if n < 0 or n > self._len:
            n = self._len
        if n == 0:
            return 0
        dst._chunks.extend(self._take(n))
        self._len -= n
        dst._len += n
        if self._on_drain is not None:
            self._on_drain()
        if dst._on_add is not None:
            dst._on_add()
        return n

    def drain(self, n: int) -> int:
        """Discard up to *n* bytes from the front. Returns 0 (``evbuffer_drain``).

        :raises TypeError: *n* is not an int.  :raises ValueError: negative.
        """
        if type(n) is not int:
            _check_size(n, "n")
        if n < 0:
            raise ValueError("n must be >= 0")
        if n > self._len:
            n = self._len
        if n == 0:
            return 0
        chunks = self._chunks
        off = self._off + n
        first = len(chunks[0])
        if off < first:
            self._off = off
        elif off == first:
            chunks.popleft()
            self._off = 0
        else:
            while chunks and off >= len(chunks[0]):
                off -= len(chunks.popleft())
            self._off = off if chunks else 0
        self._len -= n
        if self._on_drain is not None:
            self._on_drain()
        return 0

    def clear(self) -> int:
        """Discard everything (``evbuffer_drain(buf, evbuffer_get_length(buf))``). Returns 0."""
        return self.drain(self._len)

    # -- peeking ------------------------------------------------------------

    def pullup(self, n: int = -1) -> Optional[bytes]:
        """Return the first *n* bytes (all if ``n < 0``) without removing them.

        Like ``evbuffer_pullup`` the bytes are made contiguous inside the buffer,
        so repeated calls are cheap.  Returns ``None`` if fewer than *n* bytes
        are queued (libevent returns NULL).
        :raises TypeError: *n* is not an int.
        """
        _check_size(n, "n")
        if n < 0:
            n = self._len
        if n > self._len:
            return None
        if n == 0:
            return b""
        chunks = self._chunks
        first = chunks[0]
        off = self._off
        if off + n <= len(first):
            if off == 0 and n == len(first):
                return first
            return first[off:off + n]
        # Linearise: join the chunks covering the first n bytes into one.
        parts = []
        got = 0
        while got < n:
            c = chunks.popleft()
            if off:
                c = c[off:]
                off = 0
            parts.append(c)
            got += len(c)
        joined = b"".join(parts)
        chunks.appendleft(joined)
        self._off = 0
        return joined if got == n else joined[:n]

    def peek(self, n: int) -> bytes:
        """Return up to *n* bytes from the front without removing them.

        Unlike :meth:`pullup` it never rearranges the buffer and returns what
        there is when fewer than *n* bytes are queued (``evbuffer_copyout``).
        Used by the I/O code to hand one step of output to a transport.
        """
        chunks = self._chunks
        if not chunks or n <= 0:
            return b""
        first = chunks[0]
        off = self._off
        avail = len(first) - off
        if avail >= n:
            return first if (off == 0 and avail == n) else first[off:off + n]
        if len(chunks) == 1:
            return first[off:] if off else first
        parts = [first[off:] if off else first]
        got = avail
        for c in islice(chunks, 1, None):
            if got >= n:
                break
            need = n - got
            parts.append(c if len(c) <= need else c[:need])
            got += len(parts[-1])
        return b"".join(parts)

    def search(self, pattern: BytesLike, start: int = 0) -> int:
        """Return the index of the first *pattern* at or after *start*, or -1.

        ``evbuffer_search``.  Matches that span chunk boundaries are found;
        an empty *pattern* matches at *start*.
        :raises TypeError: *pattern* is not bytes-like.  :raises ValueError:
            negative *start*.
        """
        pattern = _as_bytes(pattern, "pattern")
        _check_size(start, "start")
        if start < 0:
            raise ValueError("start must be >= 0")
        m = len(pattern)
        if m == 0:
            return start if start <= self._len else -1
        base = 0          # logical index of the current chunk's first byte
        tail = b""        # last m-1 logical bytes seen before this chunk
        off = self._off
        for c in self._chunks:
            lo = off
            clen = len(c) - lo
            if tail:
                joined = tail + c[lo:lo + m - 1]
                r = joined.find(pattern)
                while r != -1 and r < len(tail):
                    g = base - len(tail) + r
                    if g >= start:
                        return g
                    r = joined.find(pattern, r + 1)
            if start < base + clen:
                r = c.find(pattern, lo + max(0, start - base))
                if r != -1:
                    return base + r - lo
            if m > 1:
                if clen >= m - 1:
                    tail = c[len(c) - (m - 1):]
                else:
                    tail = (tail + c[lo:])[-(m - 1):]
            base += clen
            off = 0
        return -1

    def readln(self, eol: Optional[BytesLike] = None) -> Optional[bytes]:
        """Remove and return the next line without its terminator, or None.

        ``eol=None`` ends a line at ``\\n`` optionally preceded by ``\\r``
        (libevent's ``EVBUFFER_EOL_CRLF``); otherwise *eol* is the exact
        terminator (``b"\\n"`` is ``EVBUFFER_EOL_LF``, ``b"\\r\\n"`` is
        ``EVBUFFER_EOL_CRLF_STRICT``).  ``evbuffer_readln``.
        :raises ValueError: empty *eol*.
        """
        if eol is None:
            i = self.search(b"\n")
            if i < 0:
                return None
            line = self.remove(i + 1)[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
            return line
        eol = _as_bytes(eol, "eol")
        if not eol:
            raise ValueError("eol must not be empty")
        i = self.search(eol)
        if i < 0:
            return None
        return self.remove(i + len(eol))[:i]
