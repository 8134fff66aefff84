"""Relay throughput: the gbufferevent tunnel vs socat and stunnel, on loopback.

    python benchmarks/bench_tunnel.py [--quick] [--mib 64] [--runs 3]

Needs socat and stunnel for the peers (Debian: ``apt-get install socat
stunnel4``); a missing peer is skipped.  In one run, side by side:

* plain relay: ``python -m gbufferevent tunnel`` vs
  ``socat TCP-LISTEN,fork,reuseaddr TCP:...`` (default 8 KiB buffer) and
  ``socat -b 65536``;
* TLS relay (a client end and a server end, TLS 1.3 between them):
  two gbufferevent tunnels (``--tls-out`` / ``--tls-in``) vs two stunnels;

each with 1 and 50 concurrent streams moving N MiB in total.  A sink process
counts the bytes and answers one byte when it has them all, so no relay's
EOF handling (socat's 0.5 s close timeout) is in the figures.  Prints MB/s
medians and ratios.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import gevent
import gevent.socket

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table, size_args  # noqa: E402

SINK = r'''
import sys, gevent, gevent.server
def handle(sock, addr):
    head = b""
    while len(head) < 32:                          # header: byte count, 32 bytes
        d = sock.recv(32 - len(head))
        if not d:
            return                                 # a readiness probe
        head += d
    want = int(head.split(b"\n")[0])
    got = 0
    while got < want:
        d = sock.recv(1 << 20)
        if not d:
            return
        got += len(d)
    sock.sendall(b"k")
srv = gevent.server.StreamServer(("127.0.0.1", 0), handle)
srv.start()
print(srv.address[1], flush=True)
gevent.wait()
'''


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)          # a process starting up; bounded by deadline
    raise RuntimeError(f"nothing listens on {port}")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, wait_port=None, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        if wait_port:
            wait_listening(wait_port)
        return p

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def stream(port, nbytes):
    s = gevent.socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    header = b"%d\n" % nbytes
    s.sendall(header.ljust(32))
    chunk = b"\xa5" * 65536
    left = nbytes
    while left > 0:
        s.sendall(chunk if left >= len(chunk) else chunk[:left])
        left -= len(chunk)
    assert s.recv(1) == b"k"
    s.close()


def measure(port, total, streams, runs):
    per = total // streams
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jobs = [gevent.spawn(stream, port, per) for _ in range(streams)]
        gevent.joinall(jobs, raise_error=True)
        rates.append(per * streams / (time.perf_counter() - t0) / 1e6)
    return statistics.median(rates)


def gb(*args):
    return [sys.executable, "-m", "gbufferevent", "tunnel", *args]


def main():
    args, total = size_args(__doc__, runs=3, quick=(16, 1))
    procs = Procs()
    sink = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE, text=True)
    target = int(sink.stdout.readline())
    tmp = tempfile.mkdtemp(prefix="bench-tunnel-")
    from gbufferevent.ssl_context import generate_self_signed_cert
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    generate_self_signed_cert(cert, key)

    socat = shutil.which("socat")
    stunnel = shutil.which("stunnel4") or shutil.which("stunnel")
    setups = {}

    def plain_gb():
        p = free_port()
        procs.start(gb("--listen", f"127.0.0.1:{p}", "--connect", f"127.0.0.1:{target}"), p)
        return p

    def socat_relay(*extra):
        def setup():
            p = free_port()
            procs.start([socat, *extra, f"TCP-LISTEN:{p},fork,reuseaddr,bind=127.0.0.1,backlog=128",
                         f"TCP:127.0.0.1:{target}"], p)
            return p
        return setup

    def tls_gb():
        srv, cli = free_port(), free_port()
        procs.start(gb("--listen", f"127.0.0.1:{srv}", "--connect", f"127.0.0.1:{target}",
                       "--tls-in", f"{cert},{key}"), srv)
        procs.start(gb("--listen", f"127.0.0.1:{cli}", "--connect", f"127.0.0.1:{srv}",
                       "--tls-out", "--insecure"), cli)
        return cli

    def tls_stunnel():
        srv, cli = free_port(), free_port()
        sconf, cconf = os.path.join(tmp, "s.conf"), os.path.join(tmp, "c.conf")
        with open(sconf, "w") as f:
            f.write(f"foreground = yes\npid =\n[srv]\naccept = 127.0.0.1:{srv}\n"
                    f"connect = 127.0.0.1:{target}\ncert = {cert}\nkey = {key}\n")
        with open(cconf, "w") as f:
            f.write(f"foreground = yes\npid =\n[cli]\nclient = yes\n"
                    f"accept = 127.0.0.1:{cli}\nconnect = 127.0.0.1:{srv}\n")
        procs.start([stunnel, sconf], srv)
        procs.start([stunnel, cconf], cli)
        return cli

    setups["gbufferevent tunnel (plain)"] = plain_gb
    if socat:
        setups["socat (default -b 8192)"] = socat_relay()
        setups["socat -b 65536"] = socat_relay("-b", "65536")
    else:
        print("(socat not found: apt-get install socat)")
    setups["gbufferevent tunnel (TLS)"] = tls_gb
    if stunnel:
        setups["stunnel (TLS)"] = tls_stunnel
    else:
        print("(stunnel not found: apt-get install stunnel4)")

    results = {}
    try:
        for name, setup in setups.items():
            port = setup()
            for streams in (1, 50):
                try:
                    results[name, streams] = measure(port, total, streams, args.runs)
                except Exception as exc:  # noqa: BLE001 - report, go on
                    print(f"{name}, {streams} streams: failed: {exc!r}", flush=True)
                    results[name, streams] = float("nan")
            procs.stop()
    finally:
        procs.stop()
        sink.terminate()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for streams in (1, 50):
        plain = results["gbufferevent tunnel (plain)", streams]
        tls = results["gbufferevent tunnel (TLS)", streams]
        for name in setups:
            r = results[name, streams]
            peer = plain if "TLS" not in name else tls
            rows.append([streams, name, f"{r:.0f}",
                         f"{peer / r:.2f}x" if name.startswith(("socat", "stunnel")) else "-"])
    print_table(f"Relay throughput, {args.mib} MiB per measurement, median of {args.runs} "
                f"(last column: gbufferevent / peer)",
                ["streams", "relay", "MB/s", "gbufferevent vs it"], rows)


if __name__ == "__main__":
    main()
