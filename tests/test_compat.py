"""gbufferevent.compat: libevent's C names over the classes."""
import socket

import gevent
import gevent.event
import gevent.socket
import pytest

from gbufferevent import compat as C

SEED_FUNCTIONS = """
bufferevent_pair_new bufferevent_pair_get_partner bufferevent_filter_new
bufferevent_set_max_single_read bufferevent_set_max_single_write
bufferevent_get_max_single_read bufferevent_get_max_single_write
ev_token_bucket_cfg_new ev_token_bucket_cfg_free bufferevent_set_rate_limit
bufferevent_rate_limit_group_new bufferevent_rate_limit_group_set_cfg
bufferevent_rate_limit_group_free bufferevent_add_to_rate_limit_group
bufferevent_remove_from_rate_limit_group bufferevent_get_read_limit
bufferevent_get_write_limit bufferevent_rate_limit_group_get_read_limit
bufferevent_rate_limit_group_get_write_limit bufferevent_get_max_to_read
bufferevent_get_max_to_write bufferevent_rate_limit_group_get_totals
bufferevent_rate_limit_group_reset_totals bufferevent_decrement_read_limit
bufferevent_decrement_write_limit bufferevent_rate_limit_group_decrement_read
bufferevent_rate_limit_group_decrement_write bufferevent_rate_limit_group_set_min_share
bufferevent_openssl_filter_new bufferevent_openssl_socket_new
bufferevent_openssl_get_ssl bufferevent_get_openssl_error bufferevent_ssl_renegotiate
bufferevent_openssl_get_allow_dirty_shutdown bufferevent_openssl_set_allow_dirty_shutdown
event_base_new event_base_loop evconnlistener_new_bind evconnlistener_get_base
evconnlistener_free bufferevent_setcb bufferevent_enable bufferevent_disable
bufferevent_get_input bufferevent_get_output bufferevent_write bufferevent_write_buffer
bufferevent_read bufferevent_free bufferevent_flush bufferevent_setfd bufferevent_getfd
bufferevent_setwatermark evbuffer_get_length evbuffer_pullup evbuffer_drain evbuffer_remove
""".split()

SEED_CONSTANTS = {
    "BEV_OPT_CLOSE_ON_FREE": 1, "BEV_OPT_THREADSAFE": 2, "BEV_OPT_DEFER_CALLBACKS": 4,
    "BEV_OPT_UNLOCK_CALLBACKS": 8, "BEV_OK": 0, "BEV_NEED_MORE": 1, "BEV_ERROR": 2,
    "BEV_NORMAL": 0, "BEV_FLUSH": 1, "BEV_FINISHED": 2,
    "BEV_EVENT_READING": 0x01, "BEV_EVENT_WRITING": 0x02, "BEV_EVENT_EOF": 0x10,
    "BEV_EVENT_ERROR": 0x20, "BEV_EVENT_TIMEOUT": 0x40, "BEV_EVENT_CONNECTED": 0x80,
    "EV_READ": 0x02, "EV_WRITE": 0x04, "BUFFEREVENT_SSL_OPEN": 0,
    "BUFFEREVENT_SSL_CONNECTING": 1, "BUFFEREVENT_SSL_ACCEPTING": 2,
    "LEV_OPT_CLOSE_ON_FREE": 2, "LEV_OPT_REUSEABLE": 8,
    "EV_SSIZE_MAX": 2**63 - 1, "EV_RATE_LIMIT_MAX": 2**63 - 1,
}


@pytest.mark.parametrize("name", SEED_FUNCTIONS)
def test_every_seed_function_exists(name):
    assert callable(getattr(C, name)), name
    assert name in C.__all__


@pytest.mark.parametrize("name,value", sorted(SEED_CONSTANTS.items()))
def test_every_seed_constant_has_libevents_value(name, value):
    assert getattr(C, name) == value


def test_pair_in_c_style():
    base = C.event_base_new()
    pair = C.bufferevent_pair_new(base, C.BEV_OPT_CLOSE_ON_FREE)
    assert C.bufferevent_pair_get_partner(pair[0]) is pair[1]
    got = []

    def readcb(bev, arg):
        inbuf = C.bufferevent_get_input(bev)
        got.append(C.evbuffer_pullup(inbuf, -1))
        C.evbuffer_drain(inbuf, C.evbuffer_get_length(inbuf))
        arg.append("called")

    calls = []
    C.bufferevent_setcb(pair[1], readcb, None, None, calls)
    C.bufferevent_enable(pair[1], C.EV_READ)
    C.bufferevent_write(pair[0], b"hello world", 5)
    C.event_base_loop(base, C.EVLOOP_NONBLOCK)
    assert got == [b"hello"] and calls == ["called"]
    assert C.bufferevent_getfd(pair[0]) == -1
    C.bufferevent_free(pair[1])
    assert C.bufferevent_pair_get_partner(pair[0]) is None
    assert C.bufferevent_flush(pair[0], C.EV_WRITE, C.BEV_FLUSH) == -1
    C.bufferevent_free(pair[0])


def test_non_tls_answers_like_libevent():
    a, b = C.bufferevent_pair_new(None, 0)
    assert C.bufferevent_openssl_get_ssl(a) is None
    assert C.bufferevent_get_openssl_error(a) == 0
    assert C.bufferevent_ssl_renegotiate(a) == -1
    assert C.bufferevent_openssl_get_allow_dirty_shutdown(a) == -1
    assert C.bufferevent_getwatermark(a, C.EV_READ | C.EV_WRITE) == -1
    s = C.bufferevent_socket_new(None, -1, 0)
    assert C.bufferevent_pair_get_partner(s) is None
    assert C.bufferevent_filter_new(None, None, None, 0, None, None) is None


def test_evbuffer_functions():
    buf = C.evbuffer_new()
    C.evbuffer_add(buf, b"line1\r\nline2\nrest")
    assert C.evbuffer_readln(buf, C.EVBUFFER_EOL_CRLF) == b"line1"
    assert C.evbuffer_readln(buf, C.EVBUFFER_EOL_LF) == b"line2"
    assert C.evbuffer_readln(buf, C.EVBUFFER_EOL_LF) is None
    assert C.evbuffer_pullup(buf, 10) is None
    assert C.evbuffer_remove(buf, 2) == b"re"
    other = C.evbuffer_new()
    assert C.evbuffer_remove_buffer(buf, other, 10) == 2
    assert C.evbuffer_get_length(other) == 2 and C.evbuffer_get_length(buf) == 0


def test_listener_and_socket_bufferevent_echo():
    base = C.event_base_new()
    served = []

    def readcb(bev, arg):
        C.bufferevent_write_buffer(bev, C.bufferevent_get_input(bev))

    def eventcb(bev, events, arg):
        if events & (C.BEV_EVENT_EOF | C.BEV_EVENT_ERROR):
            C.bufferevent_free(bev)

    def acceptcb(listener, fd, address, socklen, arg):
        assert C.evconnlistener_get_base(listener) is base
        bev = C.bufferevent_socket_new(C.evconnlistener_get_base(listener), fd,
                                       C.BEV_OPT_CLOSE_ON_FREE)
        C.bufferevent_setcb(bev, readcb, None, eventcb, None)
        C.bufferevent_enable(bev, C.EV_READ | C.EV_WRITE)
        served.append(address)

    listener = C.evconnlistener_new_bind(base, acceptcb, None,
                                         C.LEV_OPT_CLOSE_ON_FREE | C.LEV_OPT_REUSEABLE,
                                         -1, ("127.0.0.1", 0))
    port = listener.sock.getsockname()[1]
    s = gevent.socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"echo me")
    assert s.recv(100) == b"echo me"
    s.close()
    C.evconnlistener_free(listener)
    assert len(served) == 1

