"""Misuse and misbehaving peers: each case must end in a clear error or a
clean outcome, never a hang, a leak or lost data."""
import errno
import math
import os

import gevent
import gevent.event
import gevent.socket
import pytest

from gbufferevent import (
    BEV_OPT_CLOSE_ON_FREE, EV_READ, SocketBufferevent, pair_new,
)
from gbufferevent.server import BuffereventServer

from conftest import loopback_pair


def watch_free(bev):
    """An Event set when *bev* is freed."""
    ev = gevent.event.Event()
    orig = bev._be_free

    def be_free():
        orig()
        ev.set()
    bev._be_free = be_free
    return ev


def accepted_pair():
    return loopback_pair()


def test_close_with_undeliverable_output_frees_on_peer_reset():
    client, server_side = accepted_pair()
    bev = SocketBufferevent(server_side, BEV_OPT_CLOSE_ON_FREE)
    freed = watch_free(bev)
    bev.write(b"x" * 10_000_000)
    bev.close()
    client.close()                      # the peer goes away without reading
    assert freed.wait(10)
    assert server_side.fileno() == -1


def test_close_gives_up_after_write_timeout():
    client, server_side = accepted_pair()
    bev = SocketBufferevent(server_side, BEV_OPT_CLOSE_ON_FREE)
    bev.set_timeouts(None, 0.2)
    freed = watch_free(bev)
    bev.write(b"x" * 10_000_000)        # the peer never reads
    bev.close()
    assert freed.wait(10)
    assert server_side.fileno() == -1
    client.close()


def test_pair_close_both_sides_with_pending_data():
    a, b = pair_new()
    a.write(b"x")
    b.write(b"y")
    a.close()
    b.close()
    assert a._freed and b._freed


def test_pair_close_after_partner_freed():
    a, b = pair_new()
    b.free()
    a.write(b"lost")
    a.close()
    assert a._freed


@pytest.mark.parametrize("value", [math.nan, math.inf, -1])
def test_non_finite_or_negative_timeouts_rejected(value):
    a, b = gevent.socket.socketpair()
    bev = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    with pytest.raises(ValueError):
        bev.settimeout(value)
    with pytest.raises(ValueError):
        bev.set_timeouts(value, None)
    bev.free()
    b.close()


def test_zero_timeout_is_non_blocking():
    a, b = gevent.socket.socketpair()
    bev = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    bev.settimeout(0)
    with pytest.raises(BlockingIOError):
        bev.recv(10)
    b.sendall(b"now")
    bev.settimeout(5)
    assert bev.recv(10) == b"now"        # still usable afterwards
    bev.free()
    b.close()


def test_blocking_echo_flood_keeps_heartbeat():
    """recv/sendall that never wait (fast paths) still yield to the hub."""
    def echo(bev, address):
        try:
            while True:
                d = bev.recv(65536)
                if not d:
                    break
                bev.sendall(d)
        except OSError:
            pass

    server = BuffereventServer(("127.0.0.1", 0), echo)
    server.start()
    stop = gevent.event.Event()
    gaps = []

    def flood():
        s = gevent.socket.create_connection(server.address)
        chunk = b"f" * 65536

        def sink():
            while s.recv(1 << 20):
                pass
        g = gevent.spawn(sink)
        while not stop.is_set():
            s.sendall(chunk)
        s.close()
        g.kill()

    def heartbeat():
        loop = gevent.get_hub().loop
        last = loop.now()
        for _ in range(60):
            gevent.sleep(0.01)
            loop.update_now()
            gaps.append(loop.now() - last)
            last = loop.now()
        stop.set()

    f = gevent.spawn(flood)
    h = gevent.spawn(heartbeat)
    h.join(30)
    f.join(10)
    server.stop()
    assert len(gaps) == 60
    assert max(gaps) < 0.1


def test_recv_into_checks_buffer_before_reading():
    a, b = gevent.socket.socketpair()
    bev = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    b.sendall(b"hello")
    with pytest.raises(TypeError):
        bev.recv_into(b"12345")          # read-only
    with pytest.raises(ValueError):
        bev.recv_into(bytearray(2), 5)
    assert bev.recv_into(bytearray(0)) == 0
    assert bev.recv(0) == b""
    assert bev.recv(100) == b"hello"     # nothing was lost
    bev.free()
    b.close()


def test_connect_argument_and_state_errors():
    bev = SocketBufferevent(None, BEV_OPT_CLOSE_ON_FREE)
    for bad in (("127.0.0.1", 99999), ("127.0.0.1", -1)):
        with pytest.raises(ValueError):
            bev.connect(bad)
    with pytest.raises(TypeError):
        bev.connect((None, 80))
    with pytest.raises(TypeError):
        bev.connect_hostname("localhost", 1, "x")
    assert bev.getfd() == -1             # nothing half-made was left behind
    bev.free()
    a, b = gevent.socket.socketpair()
    connected = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    with pytest.raises(RuntimeError):
        connected.connect(("127.0.0.1", 9))
    connected.sendall(b"still fine")
    assert b.recv(100) == b"still fine"
    connected.free()
    b.close()


def test_makefile_refuses_reads_after_timeout_instead_of_losing_data():
    a, b = gevent.socket.socketpair()
    bev = SocketBufferevent(a, BEV_OPT_CLOSE_ON_FREE)
    bev.settimeout(0.2)
    f = bev.makefile("rb")
    b.sendall(b"par")
    with pytest.raises(TimeoutError):
        f.readline()
    b.sendall(b"tial\n")
    with pytest.raises(OSError):
        f.readline()
    bev.free()
    b.close()


def test_blocking_calls_without_transport_fail_fast():
    bev = SocketBufferevent()
    with pytest.raises(OSError) as ei:
        bev.recv(10)
    assert ei.value.errno == errno.ENOTCONN
    with pytest.raises(OSError):
        bev.sendall(b"x")
    bev.free()


def test_unlinked_pair_member_gets_no_timeout_events():
    a, b = pair_new()
    events = []
    a.setcb(None, None, lambda bev, what, arg: events.append(what))
    a.set_timeouts(0.05, None)
    a.enable(EV_READ)
    b.free()
    done = gevent.event.Event()
    gevent.get_hub().loop.timer(0.2).start(done.set)
    done.wait(5)
    assert events == []


def test_server_rejects_bad_options_at_construction():
    with pytest.raises(ValueError):
        BuffereventServer(("127.0.0.1", 0), lambda bev, addr: None, options=0x100)


def test_after_free_setters_raise_but_clearing_callbacks_is_fine():
    a, b = pair_new()
    a.free()
    a.setcb(None, None, None)
    with pytest.raises(RuntimeError):
        a.setcb(lambda *x: None, None, None)
    with pytest.raises(RuntimeError):
        a.setwatermark(EV_READ, 0, 10)
    with pytest.raises(ValueError):
        b.setwatermark(0, 0, 10)
    assert a.flush() == -1


def _flood_lines(addr, blocks, stop):
    s = gevent.socket.create_connection(addr)
    blk = (b"x" * 1023 + b"\n") * 1024          # 1 MiB of lines
    try:
        for _ in range(blocks):
            if stop.is_set():
                break
            s.sendall(blk)
    except OSError:
        pass
    return s


@pytest.mark.parametrize("with_readcb", [False, True])
def test_blocking_reads_do_not_buffer_without_bound(with_readcb):
    """A handler reading line by line whose peer floods and never reads the
    replies: the read-ahead stays bounded (DEFAULT_RECV_BUFFER)."""
    from gbufferevent.bufferevent import DEFAULT_RECV_BUFFER
    bevs = []
    got_first = gevent.event.Event()
    stop = gevent.event.Event()

    def handle(bev, address):
        if with_readcb:
            bev.setcb(lambda b, a: None, None, None)
        bevs.append(bev)
        bev.readline()
        got_first.set()
        stop.wait(10)                            # busy elsewhere, not reading

    server = BuffereventServer(("127.0.0.1", 0), handle)
    server.start()
    flooder = gevent.spawn(_flood_lines, server.address, 64, stop)
    try:
        assert got_first.wait(10)
        done = gevent.event.Event()
        gevent.get_hub().loop.timer(1.0).start(done.set)
        done.wait(5)                             # the flood goes on meanwhile
        assert len(bevs[0].input) <= DEFAULT_RECV_BUFFER + 65536
        assert bevs[0].getwatermark(EV_READ) == (0, 0)
    finally:
        stop.set()
        flooder.join(10)
        server.stop()


def test_readexactly_and_long_lines_beyond_the_read_ahead():
    a, b = pair_new()
    big = os.urandom(3 << 20)
    line = b"y" * (1 << 20) + b"\n"
    g = gevent.spawn(lambda: (a.sendall(big), a.sendall(line), a.sendall(b"rec|")))
    assert b.readexactly(len(big)) == big
    assert b.readline() == line
    assert b.readuntil(b"|") == b"rec|"
    g.get(timeout=10)
