"""``Bufferevent.makefile``: file objects over the greenlet-blocking layer."""
import io

__all__ = ["makefile"]


class BuffereventIO(io.RawIOBase):
    """A raw I/O object reading with ``recv_into`` and writing with ``sendall``."""

    def __init__(self, bev, mode):
        super().__init__()
        if mode not in ("r", "w", "rw", "rb", "wb", "rwb"):
            raise ValueError(f"invalid mode: {mode!r}")
        self._bev = bev
        self._reading = "r" in mode
        self._writing = "w" in mode
        self._timed_out = False

    def readable(self):
        return self._reading

    def writable(self):
        return self._writing

    def readinto(self, b):
        self._checkClosed()
        if self._timed_out:
            # as socket.SocketIO: bytes already buffered above us would be
            # out of order after a timeout, so refuse instead of losing them
            raise OSError("cannot read from timed out object")
        try:
            return self._bev.recv_into(b)
        except TimeoutError:
            self._timed_out = True
            raise

    def write(self, b):
        self._checkClosed()
        data = bytes(b)
        self._bev.sendall(data)
        return len(data)

    def fileno(self):
        return self._bev.getfd()


def makefile(bev, mode="r", buffering=None, encoding=None, errors=None, newline=None):
    if not set(mode) <= {"r", "w", "b"}:
        raise ValueError(f"invalid mode {mode!r} (only 'r', 'w', 'b')")
    writing = "w" in mode
    reading = "r" in mode or not writing
    rawmode = ("r" if reading else "") + ("w" if writing else "")
    raw = BuffereventIO(bev, rawmode)
    if buffering is None:
        buffering = -1
    if buffering < 0:
        buffering = io.DEFAULT_BUFFER_SIZE
    if buffering == 0:
        if "b" not in mode:
            raise ValueError("unbuffered streams must be binary")
        return raw
    if reading and writing:
        buf = io.BufferedRWPair(raw, raw, buffering)
    elif reading:
        buf = io.BufferedReader(raw, buffering)
    else:
        buf = io.BufferedWriter(raw, buffering)
    if "b" in mode:
        return buf
    text = io.TextIOWrapper(buf, encoding, errors, newline)
    text.mode = mode
    return text
