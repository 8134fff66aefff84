"""The public API is typed: mypy passes on the package, the ``py.typed``
marker ships, and the hints catch what they should in user code."""
import os
import pathlib
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_mypy(args, cache_dir):
    """``python -m mypy`` from the project root (so mypy.ini applies)."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini"),
         "--cache-dir", str(cache_dir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)))


def test_mypy_passes_on_the_package(tmp_path):
    out = run_mypy(["gbufferevent"], tmp_path / "cache")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout


def test_py_typed_marker_ships(tmp_path):
    assert (ROOT / "gbufferevent" / "py.typed").is_file()
    out = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "lib")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "lib" / "gbufferevent" / "py.typed").is_file()
    assert (tmp_path / "lib" / "gbufferevent" / "filters" / "zlib.py").is_file()


GOOD = '''
from typing import Any, Optional, Tuple
from gbufferevent import (
    BEV_NEED_MORE, BEV_OK, EV_READ, Buffer, Bufferevent, FilterBufferevent,
    FlushMode, PairBufferevent, RateLimitGroup, TokenBucketConfig, pair_new,
)
from gbufferevent.filters import zlib_compress_filter


def upper(src: Buffer, dst: Buffer, limit: int, mode: FlushMode, ctx: Any) -> int:
    data = src.remove()
    if not data:
        return BEV_NEED_MORE
    dst.add(data.upper())
    return BEV_OK


class Rot13:
    def process(self, data: bytes, mode: int) -> bytes:
        return data


def readcb(bev: Bufferevent, arg: Any) -> None:
    chunk: bytes = bev.read(100)


def eventcb(bev: Bufferevent, what: int, arg: Any) -> None:
    pass


pair: Tuple[PairBufferevent, PairBufferevent] = pair_new()
a, b = pair
partner: Optional[PairBufferevent] = a.get_partner()
f = FilterBufferevent(a, upper, zlib_compress_filter(level=9), 0, None, ctx=object())
g = FilterBufferevent(f, Rot13(), None)
g.setcb(readcb, None, eventcb, cbarg="x")
g.enable(EV_READ)
low, high = g.getwatermark(EV_READ)
n: int = g.write(bytearray(b"abc")) + g.write(memoryview(b"def"))
g.set_rate_limit(TokenBucketConfig(100, 200, 100, 200, tick_len=0.5))
RateLimitGroup(TokenBucketConfig(1, 1, 1, 1)).add(b)
line: bytes = g.readline()
'''

BAD = '''
from gbufferevent import Bufferevent, FilterBufferevent, pair_new

a, b = pair_new()
a.write("text")                                   # str is not bytes-like
a.setcb(lambda bev: None, None, None)             # readcb takes (bev, cbarg)
FilterBufferevent(a, lambda src, dst: 0, None)    # not a filter function
t: str = a.recv(10)                               # recv returns bytes
a.set_max_single_read("16k")                      # sizes are ints
'''


def test_hints_accept_good_user_code_and_catch_mistakes(tmp_path):
    good = tmp_path / "good_user.py"
    good.write_text(textwrap.dedent(GOOD))
    bad = tmp_path / "bad_user.py"
    bad.write_text(textwrap.dedent(BAD))
    out = run_mypy([str(good), str(bad)], tmp_path / "cache")
    lines = [ln for ln in out.stdout.splitlines() if ": error:" in ln]
    assert not [ln for ln in lines if "good_user.py" in ln], out.stdout
    flagged = {int(ln.split(":")[1]) for ln in lines if "bad_user.py" in ln}
    assert flagged == {5, 6, 7, 8, 9}, out.stdout
