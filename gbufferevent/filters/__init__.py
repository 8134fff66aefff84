"""Ready filters for :class:`~gbufferevent.FilterBufferevent`.

Each factory returns a new, stateful filter callable (one per direction of
one connection)::

    from gbufferevent import FilterBufferevent
    from gbufferevent.filters import zlib_compress_filter, zlib_decompress_filter

    bev = FilterBufferevent(sock_bev, zlib_decompress_filter(max_output=1 << 30),
                            zlib_compress_filter(level=6))

:class:`~gbufferevent.ProcessFilter` turns an object with
``process(data, mode) -> bytes`` into a filter.
"""
from ..filter import ProcessFilter
from .zlib import (
    ZlibCompressFilter, ZlibDecompressFilter, zlib_compress_filter,
    zlib_decompress_filter,
)

__all__ = [
    "zlib_compress_filter", "zlib_decompress_filter", "ZlibCompressFilter",
    "ZlibDecompressFilter", "ProcessFilter",
]
