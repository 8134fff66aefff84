import errno
import hashlib
import inspect
import logging
import os
import socket
import struct

import gevent
import gevent.event
import gevent.socket
import pytest

from gbufferevent import (
    BEV_EVENT_CONNECTED, BEV_EVENT_EOF, BEV_EVENT_ERROR, BEV_EVENT_READING,
    BEV_EVENT_TIMEOUT, BEV_EVENT_WRITING, BEV_FINISHED, BEV_OPT_CLOSE_ON_FREE,
    BEV_OPT_DEFER_CALLBACKS, EV_READ, EV_WRITE, BuffereventClosedError,
    CallbackError, IncompleteReadError, SocketBufferevent, create_connection,
)


def listener():
    srv = gevent.socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    return srv


def test_new_bufferevent_has_write_enabled_only(sockpair):
    a, _ = sockpair()
    assert a.get_enabled() == EV_WRITE
    a.enable(EV_READ)
    assert a.get_enabled() == EV_READ | EV_WRITE
    a.disable(EV_WRITE)
    assert a.get_enabled() == EV_READ


def test_blocking_bulk_transfer_sha256(sockpair):
    a, b = sockpair()
    payload = os.urandom(8 << 20)

    def writer():
        a.sendall(payload)
        a.shutdown(socket.SHUT_WR)

    def reader():
        h = hashlib.sha256()
        while True:
            d = b.recv(65536)
            if not d:
                return h.hexdigest()
            h.update(d)

    gs = [gevent.spawn(writer), gevent.spawn(reader)]
    gevent.joinall(gs, timeout=30, raise_error=True)
    assert gs[1].value == hashlib.sha256(payload).hexdigest()


def test_callback_transfer_and_eof(sockpair, recorder):
    a, b = sockpair()
    rec = recorder().attach(b)
    b.enable(EV_READ)
    payload = os.urandom(300_000)
    a.write(payload)
    a.flush(EV_WRITE, BEV_FINISHED)          # FIN once output drained
    rec.wait_for(lambda: rec.events)
    assert rec.data == payload
    assert rec.events == [BEV_EVENT_EOF | BEV_EVENT_READING]
    assert not b.get_enabled() & EV_READ      # EOF disables reading


def test_read_low_watermark_delays_readcb(sockpair, recorder):
    a, b = sockpair()
    sizes = []
    ev = gevent.event.Event()

    def readcb(bev, arg):
        sizes.append(len(bev.input))
        bev.read()
        ev.set()

    b.setcb(readcb, None, None)
    b.setwatermark(EV_READ, 10, 0)
    b.enable(EV_READ)
    a.write(b"12345")
    with gevent.Timeout(0.2, False):
        ev.wait()
    assert sizes == []                         # 5 < low watermark
    a.write(b"67890abc")
    assert ev.wait(5)
    assert sizes == [13]


def test_read_high_watermark_bounds_input_and_resumes(sockpair):
    a, b = sockpair()
    seen = []
    got = [0]
    done = gevent.event.Event()
    total = 200_000

    def readcb(bev, arg):
        seen.append(len(bev.input))
        got[0] += len(bev.read(7))            # drain slowly: reading must resume
        if got[0] + len(bev.input) >= total:
            done.set()

    b.setcb(readcb, None, None)
    b.setwatermark(EV_READ, 0, 100)
    b.enable(EV_READ)
    a.write(os.urandom(total))
    assert done.wait(30)
    assert max(seen) == 100                    # input reached, never passed, the mark
    assert got[0] + len(b.input) == total


def test_writecb_at_write_low_watermark(sockpair):
    a, b = sockpair()
    seen = []
    ev = gevent.event.Event()

    def writecb(bev, arg):
        seen.append(len(bev.output))
        ev.set()

    a.setcb(None, writecb, None)
    a.setwatermark(EV_WRITE, 1000, 0)
    b.enable(EV_READ)
    a.write(os.urandom(100_000))
    assert ev.wait(5)
    assert seen and all(n <= 1000 for n in seen)


def test_connect_refused_is_error_event_never_hang(recorder):
    srv = listener()
    port = srv.getsockname()[1]
    srv.close()                                # nobody listens there now
    bev = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE)
    rec = recorder().attach(bev)
    assert bev.connect(("127.0.0.1", port)) == 0
    rec.wait_for(lambda: rec.events, timeout=5)
    assert rec.events[0] & BEV_EVENT_ERROR
    assert isinstance(bev.last_error, ConnectionRefusedError)
    with pytest.raises(ConnectionRefusedError):
        bev.recv(10)
    bev.free()
    with pytest.raises(ConnectionRefusedError):
        create_connection(("127.0.0.1", port), timeout=5)


def test_connect_and_connect_hostname_emit_connected(recorder):
    srv = listener()
    port = srv.getsockname()[1]
    for how in ("connect", "connect_hostname"):
        bev = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE)
        rec = recorder().attach(bev)
        bev.write(b"queued before connect")
        if how == "connect":
            bev.connect(("127.0.0.1", port))
        else:
            bev.connect_hostname("localhost", port, socket.AF_INET)
        conn, _ = srv.accept()
        rec.wait_for(lambda: rec.events, timeout=10)
        assert rec.events == [BEV_EVENT_CONNECTED]
        assert bev.getfd() >= 0
        conn.settimeout(5)
        assert conn.recv(100) == b"queued before connect"
        conn.close()
        bev.free()
    srv.close()


def test_create_connection_blocking_roundtrip():
    srv = listener()

    def serve():
        c, _ = srv.accept()
        c.sendall(c.recv(100).upper())
        c.close()

    g = gevent.spawn(serve)
    bev = create_connection(srv.getsockname(), timeout=5)
    bev.sendall(b"hello")
    assert bev.readexactly(5) == b"HELLO"
    assert bev.recv(10) == b""
    bev.close()
    g.join(5)
    srv.close()


def test_read_timeout_fires_and_disables(sockpair, recorder):
    a, b = sockpair()
    rec = recorder().attach(b)
    b.set_timeouts(0.1, None)
    b.enable(EV_READ)
    rec.wait_for(lambda: rec.events, timeout=5)
    assert rec.events == [BEV_EVENT_TIMEOUT | BEV_EVENT_READING]
    assert not b.get_enabled() & EV_READ
    # re-enabling re-arms it
    b.enable(EV_READ)
    rec.wait_for(lambda: len(rec.events) == 2, timeout=5)


def test_read_timeout_is_reset_by_traffic(sockpair, recorder):
    a, b = sockpair()
    rec = recorder().attach(b)
    b.set_timeouts(0.3, None)
    b.enable(EV_READ)
    for _ in range(5):                        # 5 x 0.1 s of traffic > 0.3 s
        a.write(b"x")
        gevent.sleep(0.1)                      # the pacing is the behaviour under test
    assert rec.events == []
    rec.wait_for(lambda: rec.events, timeout=5)
    assert rec.events == [BEV_EVENT_TIMEOUT | BEV_EVENT_READING]


def test_write_timeout_when_output_stuck(sockpair, recorder):
    a, b = sockpair()                          # b never reads
    rec = recorder().attach(a)
    a.set_timeouts(None, 0.2)
    a.write(os.urandom(8 << 20))               # more than the socket buffers
    rec.wait_for(lambda: rec.events, timeout=10)
    assert rec.events == [BEV_EVENT_TIMEOUT | BEV_EVENT_WRITING]
    assert not a.get_enabled() & EV_WRITE


def _in_io_callback():
    return any(f.function in ("_on_readable", "_on_writable") for f in inspect.stack())


@pytest.mark.parametrize("deferred", [False, True])
def test_defer_callbacks_runs_from_the_loop(deferred):
    a, b = gevent.socket.socketpair()
    opts = BEV_OPT_CLOSE_ON_FREE | (BEV_OPT_DEFER_CALLBACKS if deferred else 0)
    ba, bb = SocketBufferevent(a, opts), SocketBufferevent(b, opts)
    where = []
    ev = gevent.event.Event()

    def readcb(bev, arg):
        where.append(_in_io_callback())
        bev.read()
        ev.set()

    bb.setcb(readcb, None, None)
    bb.enable(EV_READ)
    ba.write(b"ping")
    assert ev.wait(5)
    assert where == [not deferred]
    ba.free()
    bb.free()


def test_deferred_batch_order_connected_read_write_events():
    from gbufferevent import Bufferevent
    bev = Bufferevent(BEV_OPT_DEFER_CALLBACKS)
    order = []
    bev.setcb(lambda b, a: order.append("read"), lambda b, a: order.append("write"),
              lambda b, w, a: order.append(int(w)))
    bev.input.add(b"x")
    bev._trigger_event(BEV_EVENT_EOF | BEV_EVENT_READING)
    bev._trigger_write()
    bev._trigger_read()
    bev._trigger_event(BEV_EVENT_CONNECTED)
    assert order == []                        # nothing ran inside the triggers
    gevent.sleep(0)
    assert order == [BEV_EVENT_CONNECTED, "read", "write", BEV_EVENT_EOF | BEV_EVENT_READING]


def test_close_on_free_closes_socket_and_free_clears_callbacks():
    a, b = gevent.socket.socketpair()
    ba = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    called = []
    ba.setcb(lambda *x: called.append(x), None, lambda *x: called.append(x))
    ba.enable(EV_READ)
    b.sendall(b"data that will never be read")
    ba.free()
    gevent.sleep(0.05)
    assert called == []
    assert a.fileno() == -1                   # closed
    c, d = gevent.socket.socketpair()
    bc = SocketBufferevent(c, 0)
    bc.free()
    assert c.fileno() >= 0                    # not ours to close
    c.sendall(b"still usable")
    assert d.recv(100) == b"still usable"
    for s in (b, c, d):
        s.close()


def test_stdlib_socket_and_raw_fd():
    a, b = socket.socketpair()
    ba = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    fd = os.dup(b.fileno())
    b.close()
    bb = SocketBufferevent(fd, BEV_OPT_CLOSE_ON_FREE)
    assert bb.getfd() == fd
    g = gevent.spawn(ba.sendall, b"x" * 100_000)
    assert bb.readexactly(100_000) == b"x" * 100_000
    g.get(timeout=10)
    ba.free()
    assert bb.recv(1) == b""
    bb.free()
    with pytest.raises(OSError):
        os.fstat(fd)                          # closed by CLOSE_ON_FREE


def test_setfd_getfd():
    bev = SocketBufferevent()
    assert bev.getfd() == -1
    a, b = gevent.socket.socketpair()
    bev.setfd(a)
    assert bev.getfd() == a.fileno()
    b.sendall(b"via setfd")
    assert bev.recv(100) == b"via setfd"
    bev.setfd(-1)
    assert bev.getfd() == -1
    bev.free()
    a.close()
    b.close()


def test_callback_exception_becomes_error_event_and_hub_survives(sockpair, caplog):
    a, b = sockpair()
    events = []
    ev = gevent.event.Event()

    def bad_readcb(bev, arg):
        raise ZeroDivisionError("user bug")

    def eventcb(bev, what, arg):
        events.append(int(what))
        ev.set()

    b.setcb(bad_readcb, None, eventcb)
    b.enable(EV_READ)
    ticks = []
    heart = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(5)])
    with caplog.at_level(logging.ERROR, logger="gbufferevent"):
        a.write(b"boom")
        assert ev.wait(5)
    assert events == [BEV_EVENT_ERROR | BEV_EVENT_READING]
    assert isinstance(b.last_error, CallbackError)
    assert "ZeroDivisionError" in caplog.text
    heart.join(5)
    assert len(ticks) == 5


def test_flood_does_not_starve_heartbeat(sockpair):
    """A peer flooding one connection (driven by callbacks, all in the hub)
    must leave a 10 ms heartbeat greenlet its rhythm: largest gap < 100 ms."""
    a, b = sockpair()
    gaps = []
    enough = gevent.event.Event()
    got = [0]
    chunk = os.urandom(1 << 20)

    def heartbeat():
        loop = gevent.get_hub().loop
        last = loop.now()
        for _ in range(50):
            gevent.sleep(0.01)
            loop.update_now()
            now = loop.now()
            gaps.append(now - last)
            last = now
        enough.set()

    def readcb(bev, arg):
        got[0] += len(bev.read())

    def writecb(bev, arg):
        if not enough.is_set():
            bev.write(chunk)

    b.setcb(readcb, None, None)
    b.enable(EV_READ)
    a.setcb(None, writecb, None)
    a.write(chunk)
    h = gevent.spawn(heartbeat)
    assert enough.wait(30)
    h.join(5)
    assert got[0] > 50 * len(chunk) // 10     # the flood really ran meanwhile
    assert max(gaps) < 0.1


def test_max_single_read_caps_each_step(sockpair):
    a, b = sockpair()
    b.set_max_single_read(1000)
    steps = []
    done = gevent.event.Event()

    def readcb(bev, arg):
        steps.append(len(bev.input))
        bev.read()
        if sum(steps) >= 200_000:
            done.set()

    b.setcb(readcb, None, None)
    b.enable(EV_READ)
    a.write(os.urandom(200_000))
    assert done.wait(10)
    assert max(steps) <= 1000 and len(steps) >= 200


class _SendSpy:
    def __init__(self, raw):
        self.raw = raw
        self.sizes = []

    def send(self, data):
        n = self.raw.send(data)
        self.sizes.append(len(data))
        return n

    def __getattr__(self, name):
        return getattr(self.raw, name)


def test_max_single_write_caps_each_step(sockpair):
    a, b = sockpair()
    a.set_max_single_write(1000)
    spy = a._raw = _SendSpy(a._raw)
    a.write(os.urandom(50_000))
    assert b.readexactly(50_000)
    assert spy.sizes and max(spy.sizes) <= 1000


def test_max_single_setters_validate():
    from gbufferevent import Bufferevent
    bev = Bufferevent()
    assert bev.get_max_single_read() == 16384 == bev.get_max_single_write()
    assert bev.set_max_single_read(100) == 0 and bev.get_max_single_read() == 100
    assert bev.set_max_single_write(7) == 0 and bev.get_max_single_write() == 7
    assert bev.get_max_to_read() == 100 and bev.get_max_to_write() == 7
    bev.set_max_single_read(0)
    bev.set_max_single_write(2**63)
    assert bev.get_max_single_read() == 16384 == bev.get_max_single_write()
    with pytest.raises(ValueError):
        bev.set_max_single_read(-1)
    with pytest.raises(TypeError):
        bev.set_max_single_write(1.5)
    with pytest.raises(TypeError):
        bev.set_max_single_write("10")


def test_bad_input_clear_errors_and_still_usable(sockpair):
    a, b = sockpair()
    with pytest.raises(TypeError, match="str"):
        a.write("text")
    with pytest.raises(ValueError):
        a.setwatermark(EV_READ, -1, 10)
    with pytest.raises(ValueError):
        a.enable(0x80)
    with pytest.raises(ValueError):
        a.getwatermark(EV_READ | EV_WRITE)
    with pytest.raises(TypeError):
        a.setcb(42, None, None)
    with pytest.raises(ValueError):
        a.flush(EV_WRITE, 7)
    with pytest.raises(ValueError):
        a.set_timeouts(-1, None)
    with pytest.raises(ValueError):
        SocketBufferevent(None, options=0x100)
    with pytest.raises(TypeError):
        SocketBufferevent("not a socket")
    assert a.getwatermark(EV_READ) == (0, 0)
    a.sendall(b"still fine")
    assert b.readexactly(10) == b"still fine"


def test_blocking_api_family(sockpair):
    a, b = sockpair()
    a.sendall(b"line one\nline two\r\nrest|tail-and-more")
    assert b.readline() == b"line one\n"
    assert b.readuntil(b"\r\n") == b"line two\r\n"
    assert b.readuntil(b"|") == b"rest|"
    buf = bytearray(4)
    assert b.recv_into(buf) == 4 and buf == b"tail"
    assert b.readexactly(4) == b"-and"
    a.shutdown(socket.SHUT_WR)
    with pytest.raises(IncompleteReadError) as ei:
        b.readexactly(100)
    assert ei.value.partial == b"-more"
    assert b.recv(10) == b""
    assert b.readline() == b""


def test_makefile_and_context_manager(sockpair):
    a, b = sockpair()
    with a:
        wf = a.makefile("wb")
        wf.write(b"hello\nworld\n")
        wf.flush()
    rf = b.makefile("r")
    assert rf.readline() == "hello\n"
    assert rf.read() == "world\n"                 # then EOF after a's close
    assert a.closed


def test_settimeout_raises_timeouterror(sockpair):
    a, b = sockpair()
    b.settimeout(0.1)
    assert b.gettimeout() == 0.1
    with pytest.raises(TimeoutError):
        b.recv(10)
    a.sendall(b"late")
    assert b.recv(10) == b"late"


def test_shutdown_wr_keeps_reading(sockpair):
    a, b = sockpair()
    a.sendall(b"request")
    a.shutdown(socket.SHUT_WR)
    assert b.readexactly(7) == b"request"
    assert b.recv(10) == b""                   # FIN seen
    b.sendall(b"reply after half-close")
    assert a.readexactly(22) == b"reply after half-close"
    with pytest.raises(BrokenPipeError):
        a.sendall(b"more")


def test_close_delivers_pending_output(sockpair):
    a, b = sockpair()
    payload = os.urandom(4 << 20)
    a.write(payload)                            # queued, not yet written
    a.close()                                   # returns at once
    got = []
    while True:
        d = b.recv(1 << 16)
        if not d:
            break
        got.append(d)
    assert b"".join(got) == payload


def test_peer_reset_mid_stream(sockpair):
    srv = listener()
    client = create_connection(srv.getsockname(), timeout=5)
    conn, _ = srv.accept()
    conn.sendall(b"partial")
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()                                # RST
    assert client.recv(100) == b"partial"
    with pytest.raises(ConnectionResetError):
        client.recv(100)
    client.free()
    srv.close()


def test_blocked_greenlet_woken_by_free_and_close(sockpair):
    a, b = sockpair()
    g = gevent.spawn(b.recv, 10)
    gevent.sleep(0)
    b.free()
    g.join(5)
    assert isinstance(g.exception, BuffereventClosedError)
    assert g.exception.errno == errno.EBADF
    c, d = sockpair()
    g = gevent.spawn(d.readexactly, 10)
    gevent.sleep(0)
    d.close()
    g.join(5)
    assert isinstance(g.exception, BuffereventClosedError)


def test_sendall_applies_backpressure(sockpair):
    a, b = sockpair()
    from gbufferevent import DEFAULT_SEND_BUFFER
    payload = os.urandom(32 << 20)
    g = gevent.spawn(a.sendall, payload)
    gevent.sleep(0.2)                           # let the sender fill what it can
    assert not g.ready()
    assert len(a.output) <= DEFAULT_SEND_BUFFER
    got = b.readexactly(len(payload))
    g.join(10)
    assert g.successful() and got == payload


def test_blocking_call_from_callback_raises(sockpair):
    a, b = sockpair()
    errors = []
    ev = gevent.event.Event()

    def readcb(bev, arg):
        try:
            bev.recv(10)
            bev.readexactly(100)
        except RuntimeError as exc:
            errors.append(exc)
        ev.set()

    b.setcb(readcb, None, None)
    b.enable(EV_READ)
    a.write(b"x")
    assert ev.wait(5)
    assert errors and "hub" in str(errors[0])


def test_works_under_monkey_patch_all(tmp_path):
    import subprocess
    import sys
    script = tmp_path / "mp.py"
    script.write_text(
        "from gevent import monkey; monkey.patch_all()\n"
        "import socket, gevent\n"
        "from gbufferevent import SocketBufferevent, BEV_OPT_CLOSE_ON_FREE\n"
        "a, b = socket.socketpair()\n"
        "ba = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)\n"
        "bb = SocketBufferevent(b, BEV_OPT_CLOSE_ON_FREE)\n"
        "g = gevent.spawn(ba.sendall, b'z' * 1000000)\n"
        "assert bb.readexactly(1000000) == b'z' * 1000000\n"
        "g.get(timeout=10)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_threadsafe_option_hands_calls_to_the_hub():
    import threading
    from gbufferevent import BEV_OPT_THREADSAFE, pair_new
    a, b = pair_new(BEV_OPT_THREADSAFE)
    c, d = pair_new()
    errors = []
    done = gevent.get_hub().loop.async_()
    finished = gevent.event.Event()
    done.start(finished.set)

    from gbufferevent import Buffer
    kept = Buffer()
    kept.add(b"stays here")

    def other_thread():
        a.write(b"from another thread")      # handed over to a's hub
        try:
            c.write(b"not allowed")
        except RuntimeError as exc:
            errors.append(exc)
        try:
            c.write_buffer(kept)
        except RuntimeError as exc:
            errors.append(exc)
        done.send()

    t = threading.Thread(target=other_thread)
    t.start()
    assert finished.wait(10)
    t.join(10)
    assert b.readexactly(19) == b"from another thread"
    assert [str(e).split(":")[0] for e in errors] == [
        "write() called from another thread", "write_buffer() called from another thread"]
    assert len(c.output) == 0 and kept.pullup() == b"stays here"
    done.close()
