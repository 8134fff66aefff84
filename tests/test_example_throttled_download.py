"""examples/throttled_download.py: smoke mode, and the app under a real gunicorn."""
import hashlib
import os
import sys

import gevent
import gevent.socket
import gevent.subprocess
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "throttled_download.py")
sys.path.insert(0, ROOT)
from examples.throttled_download import fetch  # noqa: E402


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("GBUFFEREVENT_SMOKE", None)
    env.update(extra)
    return env


@pytest.mark.parametrize("how", ["flag", "env"])
def test_smoke_mode(how):
    args = [sys.executable, EXAMPLE] + (["--smoke"] if how == "flag" else [])
    env = _env(**({"GBUFFEREVENT_SMOKE": "1"} if how == "env" else {}))
    proc = gevent.subprocess.run(args, env=env, stdout=gevent.subprocess.PIPE,
                                 stderr=gevent.subprocess.PIPE, timeout=60)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "smoke: 2 x 100000 bytes" in out and out.rstrip().endswith("OK")


def test_two_downloads_share_the_cap_under_gunicorn(tmp_path):
    import gunicorn.config
    size, rate = 200_000, 200_000
    path = tmp_path / "blob.bin"
    blob = os.urandom(size)
    path.write_bytes(blob)
    # gunicorn takes the already-listening socket: connections wait in its
    # backlog until the worker is up, no readiness polling needed.
    ls = gevent.socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    cmd = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1",
           "-b", f"fd://{ls.fileno()}", "--chdir", ROOT, "--log-level", "warning"]
    if any("--no-control-socket" in s.cli for s in gunicorn.config.KNOWN_SETTINGS if s.cli):
        cmd.append("--no-control-socket")
    cmd.append("examples.throttled_download:app")
    proc = gevent.subprocess.Popen(
        cmd, pass_fds=[ls.fileno()], stderr=gevent.subprocess.PIPE,
        env=_env(THROTTLE_FILE=str(path), THROTTLE_RATE=str(rate), THROTTLE_TICK="0.05"))
    try:
        jobs = [gevent.spawn(fetch, ls.getsockname(), "/", 30) for _ in range(2)]
        gevent.joinall(jobs, timeout=60)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        ls.close()
    for job in jobs:
        assert job.successful(), (job.exception, err.decode()[-2000:])
        status, body, seconds = job.value
        assert status.endswith(b"200 OK")
        assert hashlib.sha256(body).digest() == hashlib.sha256(blob).digest()
        # alone, a download would take size / rate = 1 s; sharing, about 2 s
        assert 1.5 <= seconds <= 1.15 * 2 * size / rate + 0.2
