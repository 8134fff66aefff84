"""TLS contexts with secure defaults, self-signed certificates, host name checks.

What the library builds itself (the CLI, the examples,
``BuffereventServer(ssl_context=...)`` helpers) uses these:

* :func:`server_context` / :func:`client_context`: ``OpenSSL.SSL.Context``
  objects with TLS 1.2 as the minimum version, TLS compression off, forward
  secret AEAD ciphers for TLS 1.2, and certificate verification on for
  clients unless explicitly turned off;
* :func:`load_or_generate_cert`: a certificate/key pair, generated once with
  ``cryptography`` (self-signed ECDSA P-256) into a cache directory when none
  is given;
* :func:`check_hostname`: RFC 6125 matching of a peer certificate against the
  host name a client asked for (pyOpenSSL has no such call).
"""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import os
import tempfile
from typing import Any, List, Optional, Tuple, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

__all__ = [
    "server_context", "client_context", "load_or_generate_cert",
    "generate_self_signed_cert", "cert_fingerprint", "cache_dir", "check_hostname",
    "TLS12_CIPHERS",
]

#: Cipher list for TLS 1.2 and below (TLS 1.3 suites are OpenSSL's defaults):
#: ECDHE/DHE key exchange with AES-GCM or ChaCha20-Poly1305 only.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"

#: A file system path: ``str``, ``bytes`` or ``os.PathLike``.
StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]

_CERT_NAME = "selfsigned-cert.pem"
_KEY_NAME = "selfsigned-key.pem"


def _path(value: StrPath, argname: str) -> str:
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise TypeError(f"{argname} must be a path, not {type(value).__name__}")
    return os.fsdecode(os.fspath(value))


def _existing(value: StrPath, argname: str) -> str:
    path = _path(value, argname)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, f"{argname} file not found", path)
    return path


def _secure_defaults(ctx: SSL.Context) -> SSL.Context:
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3)
    ctx.set_cipher_list(TLS12_CIPHERS.encode())
    return ctx


def server_context(certfile: StrPath, keyfile: StrPath) -> SSL.Context:
    """A server ``OpenSSL.SSL.Context`` serving *certfile* with *keyfile*.

    TLS 1.2 minimum, no compression, the server's cipher preference, and
    OpenSSL's default of refusing client-initiated renegotiation.

    :param certfile: PEM certificate chain file (leaf first).
    :param keyfile: PEM private key file.
    :raises FileNotFoundError: a file is missing (``filename`` names it).
    :raises ValueError: the files are not a matching PEM certificate and key.
    """
    certfile = _existing(certfile, "certfile")
    keyfile = _existing(keyfile, "keyfile")
    ctx = _secure_defaults(SSL.Context(SSL.TLS_SERVER_METHOD))
    ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
    ctx.set_session_id(b"gbufferevent")
    try:
        ctx.use_certificate_chain_file(certfile)
        ctx.use_privatekey_file(keyfile)
        ctx.check_privatekey()
    except SSL.Error as exc:
        raise ValueError(f"certfile {certfile!r} / keyfile {keyfile!r}: not a matching "
                         f"PEM certificate and key ({exc})") from exc
    return ctx


def client_context(cafile: Optional[StrPath] = None, verify: bool = True) -> SSL.Context:
    """A client ``OpenSSL.SSL.Context``.

    :param cafile: PEM file of trusted certificates (e.g. a self-signed
        server certificate); None uses the system's default trust store.
    :param verify: verify the server's certificate (``VERIFY_PEER``); turning
        it off accepts any server and should only be done for testing.
    :raises FileNotFoundError: *cafile* is missing.
    :raises TypeError: *cafile* is not a path.
    """
    ctx = _secure_defaults(SSL.Context(SSL.TLS_CLIENT_METHOD))
    if verify:
        ctx.set_verify(SSL.VERIFY_PEER)
        if cafile is not None:
            ctx.load_verify_locations(_existing(cafile, "cafile"))
        else:
            ctx.set_default_verify_paths()
    else:
        ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def cache_dir() -> str:
    """Where generated certificates are kept: ``$GBUFFEREVENT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/gbufferevent``, else ``~/.cache/gbufferevent`` (made 0700).

    :raises OSError: the directory cannot be made.
    """
    d = os.environ.get("GBUFFEREVENT_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "gbufferevent")
    os.makedirs(d, mode=0o700, exist_ok=True)
    return d


def cert_fingerprint(certfile: StrPath) -> str:
    """SHA-256 fingerprint of the first certificate in a PEM file, as
    ``"AB:CD:..."`` (``openssl x509 -fingerprint -sha256``).

    :raises FileNotFoundError: no such file.  :raises ValueError: not PEM.
    """
    with open(_existing(certfile, "certfile"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2)).upper()


def _atomic_write(path: str, data: bytes, mode: int) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def generate_self_signed_cert(certfile: StrPath, keyfile: StrPath, hostname: str = "localhost",
                              days: int = 365) -> Tuple[str, str]:
    """Write a new self-signed ECDSA P-256 certificate and its key.

    The certificate names *hostname*, ``localhost``, ``127.0.0.1`` and
    ``::1``, is valid for *days* days, and can serve as its own trust anchor
    (``client_context(cafile=certfile)``).  The key file is made 0600.

    :returns: ``(certfile, keyfile)`` as str.
    :raises TypeError: a path that is not a path.  :raises ValueError: empty
        *hostname*, *days* < 1.  :raises OSError: the files cannot be written.
    """
    certfile, keyfile = _path(certfile, "certfile"), _path(keyfile, "keyfile")
    if not isinstance(hostname, str) or not hostname:
        raise ValueError("hostname must be a non-empty str")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError("days must be an int >= 1")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gbufferevent")])
    alt: List[x509.GeneralName] = [x509.DNSName(hostname)]
    if hostname != "localhost":
        alt.append(x509.DNSName("localhost"))
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    _atomic_write(keyfile, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    _atomic_write(certfile, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return certfile, keyfile


def _usable(certfile: str, keyfile: str) -> bool:
    """True if both files load, match, and stay valid for at least a day."""
    try:
        with open(certfile, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(keyfile, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    except (OSError, ValueError, TypeError):
        return False
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        return False
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    return cert.not_valid_after_utc > soon


def load_or_generate_cert(cert: Optional[StrPath] = None, key: Optional[StrPath] = None
                          ) -> Tuple[str, str, str]:
    """Return a certificate and key to serve TLS with.

    With neither argument, a self-signed ECDSA P-256 certificate for
    ``localhost`` is generated into :func:`cache_dir` the first time (and
    again when it is about to expire) and reused afterwards.

    :param cert: PEM certificate file, or None.
    :param key: PEM private key file, or None (give both or neither).
    :returns: ``(certpath, keypath, sha256_fingerprint)``; the fingerprint as
        ``"AB:CD:..."`` so clients can pin it.
    :raises ValueError: only one of *cert* and *key* given.
    :raises FileNotFoundError: a given file is missing.
    """
    if cert is None and key is None:
        d = cache_dir()
        cert, key = os.path.join(d, _CERT_NAME), os.path.join(d, _KEY_NAME)
        # Processes starting together must agree on one certificate: the
        # check and the generation happen under an exclusive lock.
        with open(os.path.join(d, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not _usable(cert, key):
                    generate_self_signed_cert(cert, key)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    elif cert is None or key is None:
        raise ValueError("give both cert and key, or neither (to use a generated "
                         "self-signed certificate)")
    else:
        cert, key = _existing(cert, "cert"), _existing(key, "key")
    return cert, key, cert_fingerprint(cert)


def _dns_match(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    # RFC 6125 6.4.3: one "*" as the whole left-most label, not for IDNA A-labels.
    if not pattern.startswith("*.") or host.startswith("xn--"):
        return False
    head, _, rest = host.partition(".")
    return bool(head) and rest == pattern[2:] and "." in rest


def _handshake_host_check(conn: SSL.Connection, host: Optional[str]) -> bool:
    """Have OpenSSL check the peer certificate of *conn* against *host*
    during the handshake (``SSL_set1_host``; ``X509_VERIFY_PARAM_set1_ip``
    for an IP literal), so a mismatch fails the handshake like any other
    verification failure: the checking side sends an alert and the peer's
    handshake fails too.  Only enforced with ``VERIFY_PEER``, as OpenSSL
    does.  Wildcards only as the whole left-most label (RFC 6125), like
    :func:`check_hostname`.  None clears the name.

    pyOpenSSL has no call for it; this reaches the ``SSL`` pointer through
    the OpenSSL bindings pyOpenSSL itself uses.  Returns False where they do
    not offer it (callers then check with :func:`check_hostname` after the
    handshake), True once set.
    """
    try:
        from OpenSSL._util import ffi, lib
        param = lib.SSL_get0_param(conn._ssl)
        set_host, set_ip = lib.X509_VERIFY_PARAM_set1_host, lib.X509_VERIFY_PARAM_set1_ip
        set_flags = lib.X509_VERIFY_PARAM_set_hostflags
        no_partial = lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
    except (ImportError, AttributeError):
        return False
    ip = None
    if host is not None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            pass
    name = ffi.NULL if ip is not None or host is None else host.rstrip(".").encode("idna")
    ok = set_host(param, name, 0) == 1
    if ip is not None:
        ok = ok and set_ip(param, ip.packed, len(ip.packed)) == 1
    else:
        ok = ok and set_ip(param, ffi.NULL, 0) == 1
    set_flags(param, no_partial)
    return ok


def check_hostname(cert: Any, host: str) -> bool:
    """True if certificate *cert* is valid for *host* (RFC 6125).

    :param cert: an ``OpenSSL.crypto.X509`` or ``cryptography`` certificate.
    :param host: a DNS name or an IP address literal.
    DNS names match the subjectAltName DNS entries (wildcard only as the whole
    left-most label); IP literals match the IP entries.  The common name is
    used only when the certificate has no subjectAltName at all.
    """
    if hasattr(cert, "to_cryptography"):
        cert = cert.to_cryptography()
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        if ip is not None:
            return False
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return any(_dns_match(str(a.value), host) for a in cns)
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    return any(_dns_match(n, host) for n in san.get_values_for_type(x509.DNSName))
