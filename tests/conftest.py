import gevent
import gevent.event
import gevent.socket
import pytest

from gbufferevent import BEV_OPT_CLOSE_ON_FREE, SocketBufferevent


class Recorder:
    """Collects callbacks; ``wait_for(pred)`` blocks on an Event with a deadline."""

    def __init__(self):
        self.reads = []
        self.writes = 0
        self.events = []
        self.changed = gevent.event.Event()

    def readcb(self, bev, arg):
        self.reads.append(bev.read())
        self.changed.set()

    def writecb(self, bev, arg):
        self.writes += 1
        self.changed.set()

    def eventcb(self, bev, what, arg):
        self.events.append(int(what))
        self.changed.set()

    def attach(self, bev, read=True, write=True, event=True):
        bev.setcb(self.readcb if read else None, self.writecb if write else None,
                  self.eventcb if event else None)
        return self

    @property
    def data(self):
        return b"".join(self.reads)

    def wait_for(self, pred, timeout=10):
        with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
            while not pred():
                self.changed.clear()
                self.changed.wait()


def wait_for(pred, event, timeout=10):
    """Wait on *event* (set by whoever changes state) until pred() holds."""
    with gevent.Timeout(timeout, AssertionError("condition not reached in time")):
        while not pred():
            event.clear()
            event.wait()


def loopback_pair():
    """Two connected gevent TCP sockets over 127.0.0.1: ``(client, accepted)``."""
    srv = gevent.socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    client = gevent.socket.create_connection(srv.getsockname())
    accepted, _ = srv.accept()
    srv.close()
    return client, accepted


@pytest.fixture
def sockpair():
    made = []

    def make(options=BEV_OPT_CLOSE_ON_FREE):
        a, b = gevent.socket.socketpair()
        ba, bb = SocketBufferevent(a, options), SocketBufferevent(b, options)
        made.extend([ba, bb, a, b])
        return ba, bb

    yield make
    for obj in made:
        if isinstance(obj, SocketBufferevent):
            obj.free()
        else:
            obj.close()


@pytest.fixture
def recorder():
    return Recorder


def roundtrip(addr, payload, timeout=60):
    """Connect to *addr*, send *payload*, shut the write side, and return
    everything received until EOF (the sender runs in its own greenlet)."""
    import socket as _socket
    s = gevent.socket.create_connection(addr, timeout=timeout)
    sender = gevent.spawn(lambda: (s.sendall(payload), s.shutdown(_socket.SHUT_WR)))
    got = bytearray()
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        got += d
    sender.get(timeout=timeout)
    s.close()
    return bytes(got)
