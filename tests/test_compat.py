"""gbufferevent.compat: libevent's C names over the classes."""

import gevent
import gevent.event
import gevent.socket
import gevent.ssl
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



# -- the seed's "simple SSL echo server", ported line by line to compat -------

def _seed_ssl_echo_server(cert, pkey, port_box, ready, stop):
    from OpenSSL import SSL

    def ssl_readcb(bev, arg):
        in_ = C.bufferevent_get_input(bev)
        print("Received %d bytes" % C.evbuffer_get_length(in_))
        print("----- data ----")
        print("%s" % C.evbuffer_pullup(in_, -1))
        C.bufferevent_write_buffer(bev, in_)

    def ssl_acceptcb(serv, sock, sa, sa_len, arg):
        server_ctx = arg
        client_ctx = SSL.Connection(server_ctx, None)                  # SSL_new
        evbase = C.evconnlistener_get_base(serv)
        bev = C.bufferevent_openssl_socket_new(evbase, sock, client_ctx,
                                               C.BUFFEREVENT_SSL_ACCEPTING,
                                               C.BEV_OPT_CLOSE_ON_FREE)
        C.bufferevent_enable(bev, C.EV_READ)
        C.bufferevent_setcb(bev, ssl_readcb, None, None, None)

    def evssl_init():
        server_ctx = SSL.Context(SSL.TLS_SERVER_METHOD)              # SSL_CTX_new
        try:
            server_ctx.use_certificate_chain_file(cert)
            server_ctx.use_privatekey_file(pkey, SSL.FILETYPE_PEM)
        except SSL.Error:
            print("Couldn't read 'pkey' or 'cert' file.")
            return None
        server_ctx.set_options(SSL.OP_NO_SSLv2)
        return server_ctx

    ctx = evssl_init()
    if ctx is None:
        return 1
    evbase = C.event_base_new()
    listener = C.evconnlistener_new_bind(
        evbase, ssl_acceptcb, ctx,
        C.LEV_OPT_CLOSE_ON_FREE | C.LEV_OPT_REUSEABLE, 1024, ("127.0.0.1", 0))
    port_box.append(listener.sock.getsockname()[1])
    ready.set()
    stop.wait()                       # event_base_loop(evbase, 0) until the test ends
    C.evconnlistener_free(listener)
    return 0


def test_seed_ssl_echo_server_ported_to_compat_serves_a_real_tls_client(tmp_path):
    import ssl as stdssl
    from gbufferevent.ssl_context import generate_self_signed_cert
    cert, pkey = str(tmp_path / "cert"), str(tmp_path / "pkey")
    generate_self_signed_cert(cert, pkey)
    port_box, ready, stop = [], gevent.event.Event(), gevent.event.Event()
    server = gevent.spawn(_seed_ssl_echo_server, cert, pkey, port_box, ready, stop)
    assert ready.wait(10)
    raw = gevent.socket.create_connection(("127.0.0.1", port_box[0]), timeout=10)
    tls = gevent.ssl.SSLContext(stdssl.PROTOCOL_TLS_CLIENT)
    tls.load_verify_locations(cert)
    conn = tls.wrap_socket(raw, server_hostname="localhost")
    conn.sendall(b"hello over TLS\n")
    got = b""
    while len(got) < 15:
        got += conn.recv(100)
    assert got == b"hello over TLS\n"
    conn.close()
    stop.set()
    assert server.get(timeout=10) == 0


def test_filter_in_c_style_end_to_end():
    """An uppercase output filter and a C-style free_context, over a pair."""
    freed = []

    def upper_filter(src, dst, dst_limit, mode, ctx):
        n = C.evbuffer_get_length(src)
        if dst_limit >= 0:
            n = min(n, dst_limit)
        if not n:
            return C.BEV_NEED_MORE
        C.evbuffer_add(dst, C.evbuffer_remove(src, n).upper())
        ctx["calls"] += 1
        return C.BEV_OK

    ctx = {"calls": 0}
    pair = C.bufferevent_pair_new(None, 0)
    filt = C.bufferevent_filter_new(pair[0], None, upper_filter, C.BEV_OPT_CLOSE_ON_FREE,
                                    freed.append, ctx)
    assert C.bufferevent_get_underlying(filt) is pair[0]
    got = []
    C.bufferevent_setcb(pair[1], lambda bev, arg: got.append(C.bufferevent_read(bev, 100)),
                        None, None, None)
    C.bufferevent_enable(pair[1], C.EV_READ)
    C.bufferevent_write(filt, b"shout this")
    C.bufferevent_flush(filt, C.EV_WRITE, C.BEV_FINISHED)
    C.event_base_loop(None, C.EVLOOP_NONBLOCK)
    assert b"".join(got) == b"SHOUT THIS" and ctx["calls"] >= 1
    C.bufferevent_free(filt)
    assert freed == [ctx]
    assert C.bufferevent_pair_get_partner(pair[1]) is None


def test_rate_limit_functions_in_c_style():
    cfg = C.ev_token_bucket_cfg_new(100, 400, 50, 200, (0, 100000))
    assert C.ev_token_bucket_cfg_new(0, 1, 1, 1, None) is None          # rate < 1
    assert C.ev_token_bucket_cfg_new(10, 5, 1, 1, None) is None         # rate > burst
    a, b = C.bufferevent_pair_new(None, 0)
    assert C.bufferevent_set_rate_limit(a, cfg) == 0
    assert C.bufferevent_get_read_limit(a) == 100
    assert C.bufferevent_get_write_limit(a) == 50
    assert C.bufferevent_get_max_to_write(a) == 50
    assert C.bufferevent_decrement_read_limit(a, 500) == 0
    assert C.bufferevent_get_read_limit(a) == -400 and C.bufferevent_get_max_to_read(a) == 0
    g = C.bufferevent_rate_limit_group_new(None, cfg)
    assert C.bufferevent_add_to_rate_limit_group(b, g) == 0
    assert C.bufferevent_rate_limit_group_get_totals(g) == (0, 0)
    C.bufferevent_rate_limit_group_set_min_share(g, 10)
    C.bufferevent_rate_limit_group_decrement_write(g, 20)
    assert C.bufferevent_rate_limit_group_get_write_limit(g) <= 30
    C.bufferevent_rate_limit_group_reset_totals(g)
    assert C.bufferevent_remove_from_rate_limit_group(b) == 0
    C.bufferevent_rate_limit_group_free(g)
    C.ev_token_bucket_cfg_free(cfg)


def test_event_base_loop_once_waits_for_an_event():
    base = C.event_base_new()
    a, b = C.bufferevent_pair_new(base, 0)
    got = []
    C.bufferevent_setcb(b, lambda bev, arg: got.append(C.bufferevent_read(bev, 100)),
                        None, None, None)
    C.bufferevent_enable(b, C.EV_READ)
    timer = base.loop.timer(0.2)
    timer.start(lambda: C.bufferevent_write(a, b"late"))
    passes = 0
    with gevent.Timeout(5):
        while not got:
            C.event_base_loop(base, C.EVLOOP_ONCE)
            passes += 1
    assert got == [b"late"]
    assert passes < 50                 # each pass blocked for events: no spinning
    timer.close()
