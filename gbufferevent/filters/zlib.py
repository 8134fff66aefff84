"""zlib filters: deflate on the way out, inflate on the way in.

Python's :mod:`zlib` does the work; these classes map the filter protocol
onto it.  Flush modes map as libevent's own zlib test does:

==============  =============================  ===============================
mode            compressor                     decompressor
==============  =============================  ===============================
BEV_NORMAL      ``compress()``, no flush       inflate what arrived
BEV_FLUSH       ``flush(Z_SYNC_FLUSH)``: the   inflate everything
                bytes so far can be inflated
                on their own at the other end
BEV_FINISHED    ``flush(Z_FINISH)``: end of    inflate everything; a stream
                the stream (trailer written)   that did not end is an error
==============  =============================  ===============================

``wbits`` is as in :mod:`zlib`: 9..15 for a zlib stream, -9..-15 for raw
deflate, 25..31 for gzip (decompressors also take 0, 8 and 40..47 for
"automatic").  A filter that fails returns ``BEV_ERROR`` (and again on every
later call) and leaves the reason in its ``error`` attribute (the filter
bufferevent puts it in the :class:`~gbufferevent.FilterError` it reports);
the decompressor first adds what it inflated before the break.
"""
from __future__ import annotations

import zlib
from typing import Any, Container, Dict, List, Optional, Tuple

from ..buffer import Buffer, _check_size
from ..constants import (
    BEV_ERROR, BEV_FINISHED, BEV_FLUSH, BEV_NEED_MORE, BEV_NORMAL, BEV_OK, FilterResult,
)
from ..filter import input_budget

__all__ = [
    "zlib_compress_filter", "zlib_decompress_filter", "ZlibCompressFilter",
    "ZlibDecompressFilter", "OUTPUT_CHUNK", "INPUT_CHUNK",
]

#: Bytes of inflated output one call adds at most when ``dst_limit`` is -1.
OUTPUT_CHUNK = 64 * 1024
#: Bytes of compressed input one decompressor pass looks at.
INPUT_CHUNK = 64 * 1024

_FLUSH: Dict[int, int] = {BEV_FLUSH: zlib.Z_SYNC_FLUSH, BEV_FINISHED: zlib.Z_FINISH}


def _check_int(value: int, argname: str, valid: Container[int], what: str) -> int:
    _check_size(value, argname)
    if value not in valid:
        raise ValueError(f"{argname} must be {what}, not {value!r}")
    return value


class ZlibCompressFilter:
    """A deflate output filter for one stream (see :func:`zlib_compress_filter`).

    Attributes: ``level``, ``wbits``, ``finished`` (``BEV_FINISHED`` was
    seen), ``total_in``/``total_out`` (bytes), ``error``.
    """

    def __init__(self, level: int = 6, wbits: int = 15) -> None:
        self.level = _check_int(level, "level", range(-1, 10), "-1..9")
        self.wbits = _check_int(
            wbits, "wbits", [*range(9, 16), *range(-15, -8), *range(25, 32)],
            "9..15 (zlib), -9..-15 (raw deflate) or 25..31 (gzip)")
        self._c = zlib.compressobj(level, zlib.DEFLATED, wbits)
        self.finished = False
        self.total_in = self.total_out = 0
        self.error: Optional[BaseException] = None

    def __repr__(self) -> str:
        return f"ZlibCompressFilter(level={self.level}, wbits={self.wbits})"

    def __call__(self, src: Buffer, dst: Buffer, dst_limit: int, mode: int,
                 ctx: Any) -> FilterResult:
        """Compress *src* into *dst*; the filter protocol."""
        if self.finished:
            if src:
                self.error = ValueError("data written after the compressed "
                                        "stream was finished")
                return BEV_ERROR
            return BEV_NEED_MORE
        # Deflate output is at most the input plus a few bytes, so taking
        # about dst_limit bytes keeps (close to) the limit.
        n = input_budget(src, dst_limit, mode)
        if not n and mode == BEV_NORMAL:
            return BEV_NEED_MORE
        data = src.remove(n)
        c = self._c
        out = c.compress(data) if data else b""
        tail = b""
        flush = _FLUSH.get(mode)
        if flush is not None:
            tail = c.flush(flush)
            self.finished = mode == BEV_FINISHED
        dst.add(out)
        dst.add(tail)
        self.total_in += len(data)
        self.total_out += len(out) + len(tail)
        return BEV_OK if (data or out or tail) else BEV_NEED_MORE


class ZlibDecompressFilter:
    """An inflate input filter for one stream (see :func:`zlib_decompress_filter`).

    Attributes: ``wbits``, ``max_output``, ``finished`` (the end of the
    compressed stream was read), ``total_in``/``total_out`` (bytes),
    ``error``.
    """

    def __init__(self, wbits: int = 15, max_output: Optional[int] = None) -> None:
        _check_size(wbits, "wbits")
        try:
            self._d = zlib.decompressobj(wbits)
        except ValueError:
            raise ValueError(f"wbits must be 8..15 (zlib), -8..-15 (raw deflate), "
                             f"24..31 (gzip), 40..47 or 0 (automatic), not {wbits!r}"
                             ) from None
        if max_output is not None:
            _check_size(max_output, "max_output")
            if max_output < 0:
                raise ValueError("max_output must be >= 0 bytes or None")
        self.wbits = wbits
        self.max_output = max_output
        self.total_in = self.total_out = 0
        self.error: Optional[BaseException] = None

    def __repr__(self) -> str:
        return f"ZlibDecompressFilter(wbits={self.wbits}, max_output={self.max_output})"

    @property
    def finished(self) -> bool:
        """True once the end of the compressed stream was read."""
        return self._d.eof

    def _fail(self, exc: BaseException) -> FilterResult:
        self.error = exc
        return BEV_ERROR

    def _emit(self, out: bytes, dst: Buffer) -> bool:
        """Add *out* to *dst* within ``max_output``; False (and ``error`` set)
        when it would go beyond: only the bytes up to the cap are added."""
        cap = self.max_output
        if cap is not None and self.total_out + len(out) > cap:
            out = out[:cap - self.total_out]
            self.error = ValueError(f"decompressed output exceeds max_output={cap} bytes")
        self.total_out += len(out)
        dst.add(out)
        return self.error is None

    def __call__(self, src: Buffer, dst: Buffer, dst_limit: int, mode: int,
                 ctx: Any) -> FilterResult:
        """Inflate *src* into *dst*; the filter protocol.

        Adds at most *dst_limit* bytes (``OUTPUT_CHUNK`` when -1), give or take
        the few bytes zlib already decoded; compressed bytes it could not use
        yet stay in *src*, so the next call carries on without new input.
        When the stream breaks (corrupt data, bytes after its end, more than
        ``max_output``, a truncated end), what inflated before the break is
        still added to *dst*, then ``BEV_ERROR`` is returned, and again on
        every later call.
        """
        if self.error is not None:
            return BEV_ERROR
        d = self._d
        if d.eof:
            if src:
                return self._fail(ValueError(
                    f"{len(src)} bytes after the end of the compressed stream"))
            return BEV_NEED_MORE
        if mode == BEV_NORMAL and dst_limit == 0:
            return BEV_NEED_MORE
        cap = dst_limit if dst_limit > 0 else OUTPUT_CHUNK
        out = b""
        broken: Optional[BaseException] = None
        try:
            while True:
                data = src.peek(INPUT_CHUNK)
                if not data:
                    break
                before = d.copy()
                try:
                    out = d.decompress(data, cap)
                    left = d.unused_data if d.eof else d.unconsumed_tail
                    used = len(data) - len(left)
                except zlib.error as exc:
                    # zlib drops a call's output when it fails: redo the call
                    # from the copy on the prefix that still inflates.
                    d, out, used, hit = _salvage(before, data, cap)
                    self._d = d
                    if hit or not (used or out):
                        broken = exc
                src.drain(used)
                self.total_in += used
                if broken is None and d.eof and src:
                    broken = ValueError(
                        f"{len(src)} bytes after the end of the compressed stream")
                if broken is not None or out or d.eof or not used:
                    break
            if broken is None and len(out) == cap and not d.unconsumed_tail and not d.eof:
                # All input used but the output was cut: zlib may still hold
                # a few decoded bytes (a match being copied); take them now,
                # they need no more input and would otherwise wait for it.
                more = d.decompress(b"", OUTPUT_CHUNK)
                while more:
                    out += more
                    more = d.decompress(b"", OUTPUT_CHUNK)
        except zlib.error as exc:
            broken = exc
        if not self._emit(out, dst):
            return BEV_ERROR
        if broken is not None:
            return self._fail(broken)
        if mode == BEV_FINISHED and not src and not d.eof and self.total_in:
            return self._fail(ValueError("compressed stream truncated: "
                                         "its end never arrived"))
        return BEV_OK if out else BEV_NEED_MORE


def _salvage(d: Any, data: bytes, cap: int) -> Tuple[Any, bytes, int, bool]:
    """Inflate the longest prefix of *data* that decompressor *d* takes
    without a ``zlib.error``, at most *cap* bytes of output, halving the
    pieces it tries (O(log n) calls).  Returns ``(decompressor after that
    prefix, output, bytes of data used, hit)``; *hit* is True when it stopped
    at the bad byte (False: the output cap came first)."""
    out: List[bytes] = []
    n_out = pos = 0
    size = max(1, len(data) // 2)
    while pos < len(data) and n_out < cap and not d.eof:
        piece = data[pos:pos + size]
        trial = d.copy()
        try:
            o = trial.decompress(piece, cap - n_out)
        except zlib.error:
            if size == 1:
                return d, b"".join(out), pos, True
            size //= 2
            continue
        left = trial.unused_data if trial.eof else trial.unconsumed_tail
        d = trial
        out.append(o)
        n_out += len(o)
        pos += len(piece) - len(left)
        if left and not trial.eof:
            break                               # the output cap was reached
    return d, b"".join(out), pos, False


def zlib_compress_filter(level: int = 6, wbits: int = 15) -> ZlibCompressFilter:
    """A new deflate filter for the output side of one connection.

    :param level: compression level, -1 (default, 6) or 0..9.
    :param wbits: window bits as in :func:`zlib.compressobj`: 9..15 zlib,
        -9..-15 raw deflate, 25..31 gzip.
    :raises ValueError: a value out of range (naming the argument).
    :returns: a stateful filter callable (:class:`ZlibCompressFilter`).

    ``BEV_NORMAL`` compresses without flushing, ``BEV_FLUSH`` adds a
    ``Z_SYNC_FLUSH`` (the peer can inflate everything so far), ``BEV_FINISHED``
    ends the stream with ``Z_FINISH``; data after that is ``BEV_ERROR``.
    libevent ships no zlib filter; this is the ``zlib_output_filter`` of its
    ``test/regress_zlib.c``, as a ``bufferevent_filter_cb``.
    """
    return ZlibCompressFilter(level, wbits)


def zlib_decompress_filter(wbits: int = 15, max_output: Optional[int] = None
                           ) -> ZlibDecompressFilter:
    """A new inflate filter for the input side of one connection.

    :param wbits: as in :func:`zlib.decompressobj` (15 zlib, -15 raw deflate,
        31 gzip, 47 automatic zlib/gzip, ...).
    :param max_output: total bytes the stream may inflate to, None = no
        limit; more is ``BEV_ERROR`` (a decompression bomb becomes an ERROR
        event, never a silent truncation or a memory blowup).
    :raises ValueError: a value out of range (naming the argument).
    :returns: a stateful filter callable (:class:`ZlibDecompressFilter`).

    Output per call is bounded by ``dst_limit`` (64 KiB without one); what
    could not be inflated yet stays in the source and is taken on the next
    call, so 1 KiB that inflates to 1 MiB arrives whole.  Corrupt input, data
    after the end of the stream, and a stream cut short by ``BEV_FINISHED``
    (EOF) are ``BEV_ERROR``; what inflated before the break (up to
    *max_output*) is added to the destination first, so the user gets the
    good bytes, then the error.  libevent's counterpart is the
    ``zlib_input_filter`` of its ``test/regress_zlib.c``.
    """
    return ZlibDecompressFilter(wbits, max_output)
