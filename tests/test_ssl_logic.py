"""Pure logic of the TLS support: no hub, no sockets.

Closure classification, OpenSSL error codes, host name matching,
certificates and contexts.
"""
import datetime
import errno
import hashlib
import os
import ssl as stdssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

import gbufferevent
from gbufferevent.ssl_context import (
    cert_fingerprint, check_hostname, client_context, generate_self_signed_cert,
    load_or_generate_cert, server_context,
)
from gbufferevent.ssl_errors import (
    Closure, OpenSSLErrorCode, classify, error_codes, pack_error, ssl_exception,
)


# -- closure classification ---------------------------------------------------------

def test_close_notify_is_clean_only_when_received():
    assert classify(SSL.ZeroReturnError(), received_shutdown=True) is Closure.CLEAN
    assert classify(SSL.ZeroReturnError(), received_shutdown=False) is Closure.DIRTY


def test_both_openssl_spellings_of_unexpected_eof_are_dirty():
    old = SSL.SysCallError(-1, "Unexpected EOF")                  # SSL_ERROR_SYSCALL
    new = SSL.Error([("SSL routines", "", "unexpected eof while reading")])  # OpenSSL 3
    assert classify(old) is Closure.DIRTY
    assert classify(new) is Closure.DIRTY
    # both map to the code OpenSSL 3 queues for it
    assert error_codes(old) == error_codes(new) == [0x0A000126]


def test_protocol_errors_and_transport_errors():
    assert classify(SSL.Error([("SSL routines", "", "wrong version number")])) \
        is Closure.ERROR
    assert classify(ConnectionResetError(errno.ECONNRESET, "reset")) is Closure.DIRTY
    assert classify(BrokenPipeError(errno.EPIPE, "pipe")) is Closure.DIRTY
    assert classify(OSError(errno.EHOSTUNREACH, "unreachable")) is Closure.ERROR


def test_error_codes_have_openssl_numbers_and_text():
    exc = SSL.Error([("SSL routines", "", "decryption failed or bad record mac"),
                     ("SSL routines", "", "record layer failure")])
    first, second = error_codes(exc)
    assert isinstance(first, OpenSSLErrorCode) and isinstance(first, int)
    assert first == 0x0A000119 and first.reason == "decryption failed or bad record mac"
    assert str(first) == "error:0A000119:SSL routines::decryption failed or bad record mac"
    assert second.reason == "record layer failure"
    assert pack_error("SSL routines", "http request") == 0x0A00009C
    sys_err = error_codes(ConnectionResetError(errno.ECONNRESET, "x"))[0]
    assert sys_err == 0x80000000 | errno.ECONNRESET and sys_err.lib == "system library"
    assert error_codes(SSL.ZeroReturnError()) == []


def test_ssl_exception_is_an_ssl_module_error():
    err = ssl_exception(SSL.Error([("SSL routines", "", "http request")]))
    assert isinstance(err, gbufferevent.SSLError) and isinstance(err, stdssl.SSLError)
    assert isinstance(err, OSError)
    assert err.reason == "HTTP_REQUEST" and err.openssl_errors == [0x0A00009C]
    eof = ssl_exception(SSL.SysCallError(-1, "Unexpected EOF"))
    assert isinstance(eof, gbufferevent.SSLEOFError) and isinstance(eof, stdssl.SSLEOFError)
    bad = ssl_exception(SSL.Error([("SSL routines", "", "certificate verify failed")]))
    assert isinstance(bad, stdssl.SSLCertVerificationError)


# -- host names -----------------------------------------------------------------------

def _cert_with(tmp_path, names):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "ignored.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(key.public_key()).serial_number(1)
         .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if names is not None:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    from cryptography.hazmat.primitives import hashes
    return b.sign(key, hashes.SHA256())


def test_check_hostname_rules(tmp_path):
    import ipaddress
    cert = _cert_with(tmp_path, [x509.DNSName("*.example.com"), x509.DNSName("a.test"),
                                 x509.IPAddress(ipaddress.ip_address("10.0.0.1"))])
    assert check_hostname(cert, "www.example.com")
    assert check_hostname(cert, "A.TEST")
    assert check_hostname(cert, "10.0.0.1")
    assert not check_hostname(cert, "example.com")           # wildcard needs a label
    assert not check_hostname(cert, "a.b.example.com")       # only one label
    assert not check_hostname(cert, "10.0.0.2")
    assert not check_hostname(cert, "ignored.example")       # CN unused with a SAN
    no_san = _cert_with(tmp_path, None)
    assert check_hostname(no_san, "ignored.example")


# -- certificates and contexts --------------------------------------------------------

def test_generated_certificate_is_ecdsa_p256_self_signed(tmp_path):
    cert, key = generate_self_signed_cert(tmp_path / "c.pem", tmp_path / "k.pem")
    c = x509.load_pem_x509_certificate(open(cert, "rb").read())
    k = serialization.load_pem_private_key(open(key, "rb").read(), None)
    assert isinstance(k, ec.EllipticCurvePrivateKey) and k.curve.name == "secp256r1"
    assert c.issuer == c.subject
    assert check_hostname(c, "localhost") and check_hostname(c, "127.0.0.1")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    der = c.public_bytes(serialization.Encoding.DER)
    assert cert_fingerprint(cert).replace(":", "") == hashlib.sha256(der).hexdigest().upper()


def test_load_or_generate_cert_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("GBUFFEREVENT_CACHE_DIR", str(tmp_path / "cache"))
    cert, key, fp = load_or_generate_cert()
    assert os.path.dirname(cert) == str(tmp_path / "cache")
    assert len(fp) == 95 and fp.count(":") == 31
    again = load_or_generate_cert()
    assert again == (cert, key, fp)                          # reused, not regenerated
    os.unlink(key)                                           # broken cache: regenerate
    third = load_or_generate_cert()
    assert third[2] != fp and os.path.exists(third[1])
    assert load_or_generate_cert(cert, third[1])[2] == third[2]


def test_load_or_generate_cert_bad_input(tmp_path):
    with pytest.raises(ValueError, match="both cert and key"):
        load_or_generate_cert(cert=str(tmp_path / "c.pem"))
    with pytest.raises(FileNotFoundError) as info:
        load_or_generate_cert(str(tmp_path / "nope.pem"), str(tmp_path / "k.pem"))
    assert info.value.filename.endswith("nope.pem")
    with pytest.raises(TypeError, match="cert"):
        load_or_generate_cert(cert=3, key=4)


def test_contexts_secure_defaults_and_bad_files(tmp_path):
    cert, key = generate_self_signed_cert(tmp_path / "c.pem", tmp_path / "k.pem")
    other, okey = generate_self_signed_cert(tmp_path / "o.pem", tmp_path / "ok.pem")
    s = server_context(cert, key)
    assert s.set_options(0) & SSL.OP_NO_COMPRESSION
    c = client_context(cafile=cert)
    assert c.get_verify_mode() & SSL.VERIFY_PEER
    assert client_context().get_verify_mode() & SSL.VERIFY_PEER     # on by default
    assert client_context(verify=False).get_verify_mode() == SSL.VERIFY_NONE
    with pytest.raises(ValueError, match="certfile"):
        server_context(cert, okey)                               # key of another cert
    with pytest.raises(FileNotFoundError):
        server_context(tmp_path / "missing.pem", key)
    with pytest.raises(FileNotFoundError):
        client_context(cafile=tmp_path / "missing.pem")
