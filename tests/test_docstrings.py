"""Public docstrings name the libevent function a call corresponds to, give
units, and say what is raised; nothing public is left undocumented."""
import importlib
import inspect

import pytest

import gbufferevent as g
from gbufferevent import filters, ratelimit, ssl
from gbufferevent.server import BuffereventServer
from gbufferevent.ssl import _TLSCore

B = g.Bufferevent
P = g.PairBufferevent
G = g.RateLimitGroup

# (callable, libevent name its docstring must quote, unit it must mention or None)
TABLE = [
    (g.pair_new, "bufferevent_pair_new", None),
    (P.get_partner, "bufferevent_pair_get_partner", None),
    (g.FilterBufferevent, "bufferevent_filter_new", "bytes"),
    (g.filter_new, "bufferevent_filter_new", None),
    (B.set_max_single_read, "bufferevent_set_max_single_read", "bytes"),
    (B.set_max_single_write, "bufferevent_set_max_single_write", "bytes"),
    (B.get_max_single_read, "bufferevent_get_max_single_read", "Bytes"),
    (B.get_max_single_write, "bufferevent_get_max_single_write", "Bytes"),
    (g.TokenBucketConfig, "ev_token_bucket_cfg_new", "bytes"),
    (B.set_rate_limit, "bufferevent_set_rate_limit", "bytes per"),
    (B.get_token_bucket_cfg, "bufferevent_get_token_bucket_cfg", None),
    (G, "bufferevent_rate_limit_group_new", "bytes per"),
    (G.set_cfg, "bufferevent_rate_limit_group_set_cfg", None),
    (G.set_min_share, "bufferevent_rate_limit_group_set_min_share", "bytes"),
    (G.free, "bufferevent_rate_limit_group_free", None),
    (G.get_read_limit, "bufferevent_rate_limit_group_get_read_limit", "bytes"),
    (G.get_write_limit, "bufferevent_rate_limit_group_get_write_limit", "bytes"),
    (G.decrement_read, "bufferevent_rate_limit_group_decrement_read", "bytes"),
    (G.decrement_write, "bufferevent_rate_limit_group_decrement_write", "bytes"),
    (G.get_totals, "bufferevent_rate_limit_group_get_totals", None),
    (G.reset_totals, "bufferevent_rate_limit_group_reset_totals", None),
    (G.add, "bufferevent_add_to_rate_limit_group", None),
    (G.remove, "bufferevent_remove_from_rate_limit_group", None),
    (B.add_to_rate_limit_group, "bufferevent_add_to_rate_limit_group", None),
    (B.remove_from_rate_limit_group, "bufferevent_remove_from_rate_limit_group", None),
    (B.get_read_limit, "bufferevent_get_read_limit", "bytes"),
    (B.get_write_limit, "bufferevent_get_write_limit", "bytes"),
    (B.get_max_to_read, "bufferevent_get_max_to_read", "Bytes"),
    (B.get_max_to_write, "bufferevent_get_max_to_write", "Bytes"),
    (B.decrement_read_limit, "bufferevent_decrement_read_limit", "bytes"),
    (B.decrement_write_limit, "bufferevent_decrement_write_limit", "bytes"),
    (g.openssl_filter_new, "bufferevent_openssl_filter_new", None),
    (g.openssl_socket_new, "bufferevent_openssl_socket_new", None),
    (_TLSCore.get_ssl, "bufferevent_openssl_get_ssl", None),
    (_TLSCore.get_openssl_error, "bufferevent_get_openssl_error", None),
    (_TLSCore.renegotiate, "bufferevent_ssl_renegotiate", None),
    (_TLSCore.get_allow_dirty_shutdown, "bufferevent_openssl_get_allow_dirty_shutdown", None),
    (_TLSCore.set_allow_dirty_shutdown, "bufferevent_openssl_set_allow_dirty_shutdown", None),
    (B.setcb, "bufferevent_setcb", None),
    (B.getcb, "bufferevent_getcb", None),
    (B.enable, "bufferevent_enable", None),
    (B.disable, "bufferevent_disable", None),
    (B.get_enabled, "bufferevent_get_enabled", None),
    (B.setwatermark, "bufferevent_setwatermark", "bytes"),
    (B.getwatermark, "bufferevent_getwatermark", "bytes"),
    (B.write, "bufferevent_write", None),
    (B.write_buffer, "bufferevent_write_buffer", None),
    (B.read, "bufferevent_read", "bytes"),
    (B.read_buffer, "bufferevent_read_buffer", None),
    (B.flush, "bufferevent_flush", None),
    (B.free, "bufferevent_free", None),
    (B.set_timeouts, "bufferevent_set_timeouts", "seconds"),
    (B.getfd, "bufferevent_getfd", None),
    (B.setfd, "bufferevent_setfd", None),
    (B.get_underlying, "bufferevent_get_underlying", None),
    (g.SocketBufferevent, "bufferevent_socket_new", None),
    (g.SocketBufferevent.connect, "bufferevent_socket_connect", None),
    (g.SocketBufferevent.connect_hostname, "bufferevent_socket_connect_hostname", None),
    (g.SocketBufferevent.get_dns_error, "bufferevent_socket_get_dns_error", None),
    (g.Buffer, "evbuffer_new", None),
    (g.Buffer.add, "evbuffer_add", None),
    (g.Buffer.add_buffer, "evbuffer_add_buffer", None),
    (g.Buffer.remove, "evbuffer_remove", "bytes"),
    (g.Buffer.remove_buffer, "evbuffer_remove_buffer", "bytes"),
    (g.Buffer.drain, "evbuffer_drain", "bytes"),
    (g.Buffer.pullup, "evbuffer_pullup", "bytes"),
    (g.Buffer.search, "evbuffer_search", None),
    (g.Buffer.readln, "evbuffer_readln", None),
    (BuffereventServer, "evconnlistener_new_bind", None),
]

# Blocking (socket-like) calls have no libevent function: they say whose
# call they mirror, their units and their errors instead.
BLOCKING = [
    (B.recv, "socket.recv", "bytes"), (B.recv_into, "socket.recv_into", "bytes"),
    (B.send, "socket.send", "bytes"), (B.sendall, "socket.sendall", "seconds"),
    (B.settimeout, "socket.settimeout", "seconds"),
    (B.gettimeout, "socket.gettimeout", "seconds"),
    (B.shutdown, "socket.shutdown", None), (B.makefile, "socket.makefile", "bytes"),
    (B.readexactly, "readexactly", "bytes"), (B.readuntil, "readuntil", None),
    (B.drain, "drain", "seconds"),
]

# Calls that validate arguments must say what they raise.
RAISING = [
    B, B.enable, B.disable, B.setwatermark, B.getwatermark, B.write, B.write_buffer,
    B.read, B.flush, B.set_timeouts, B.set_max_single_read, B.set_max_single_write,
    B.set_rate_limit, B.decrement_read_limit, B.add_to_rate_limit_group, B.settimeout,
    B.recv, B.recv_into, B.readexactly, B.readuntil, B.sendall, B.shutdown, B.makefile,
    g.Buffer.add, g.Buffer.add_buffer, g.Buffer.remove, g.Buffer.remove_buffer,
    g.Buffer.drain, g.Buffer.pullup, g.Buffer.search, g.Buffer.readln,
    g.FilterBufferevent, g.filter_new, g.ProcessFilter, g.pair_new, g.SocketBufferevent,
    g.SocketBufferevent.connect, g.SocketBufferevent.connect_hostname,
    g.SocketBufferevent.setfd, g.create_connection, g.TokenBucketConfig, G, G.add,
    G.remove, G.set_cfg, G.set_min_share, G.decrement_read, G.decrement_write,
    g.openssl_socket_new, g.openssl_filter_new, ssl.set_verify_name,
    ssl.server_bufferevent, _TLSCore.renegotiate, _TLSCore.set_shutdown_timeout,
    _TLSCore.wait_handshake, filters.zlib_compress_filter, filters.zlib_decompress_filter,
    ratelimit.decrement_limit,
]


def _name(obj):
    return getattr(obj, "__qualname__", repr(obj))


@pytest.mark.parametrize("obj,le_name,unit", TABLE, ids=lambda x: x if isinstance(x, str)
                         else _name(x))
def test_docstring_quotes_the_libevent_function(obj, le_name, unit):
    doc = inspect.getdoc(obj) or ""
    assert f"``{le_name}``" in doc, f"{_name(obj)}: no ``{le_name}`` in {doc!r}"
    if unit is not None:
        assert unit in doc, f"{_name(obj)}: no unit {unit!r} in {doc!r}"


@pytest.mark.parametrize("obj,mirror,unit", BLOCKING, ids=lambda x: x if isinstance(x, str)
                         else _name(x))
def test_blocking_calls_say_what_they_mirror(obj, mirror, unit):
    doc = inspect.getdoc(obj) or ""
    assert mirror in doc, f"{_name(obj)}: {mirror!r} not in {doc!r}"
    if unit is not None:
        assert unit in doc, f"{_name(obj)}: no unit {unit!r} in {doc!r}"


@pytest.mark.parametrize("obj", RAISING, ids=_name)
def test_docstring_says_what_is_raised(obj):
    doc = inspect.getdoc(obj) or ""
    assert "raise" in doc.lower(), f"{_name(obj)} does not say what it raises: {doc!r}"


MODULES = [
    "gbufferevent.buffer", "gbufferevent.bufferevent", "gbufferevent.socket",
    "gbufferevent.pair", "gbufferevent.filter", "gbufferevent.filters.zlib",
    "gbufferevent.ratelimit", "gbufferevent.ssl", "gbufferevent.ssl_context",
    "gbufferevent.ssl_errors", "gbufferevent.server", "gbufferevent.errors",
    "gbufferevent.constants",
]


def test_every_public_name_is_documented():
    missing = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if getattr(obj, "__module__", modname) != modname:
                continue            # re-exported from elsewhere
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
                missing.append(f"{modname}.{name}")
            if not inspect.isclass(obj):
                continue
            for key, value in vars(obj).items():
                if key.startswith("_"):
                    continue
                fn = value.fget if isinstance(value, property) else \
                    getattr(value, "__func__", value)
                if callable(fn) and not (fn.__doc__ or "").strip():
                    missing.append(f"{modname}.{name}.{key}")
    assert not missing, missing
