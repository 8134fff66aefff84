import os

import pytest

from gbufferevent import Buffer


def test_add_remove_roundtrip_across_chunks():
    b = Buffer()
    for piece in (b"abc", b"", b"defgh", bytearray(b"ij"), memoryview(b"klm")):
        b.add(piece)
    assert len(b) == 13
    assert b.remove(2) == b"ab"
    assert b.remove(5) == b"cdefg"
    assert b.pullup(3) == b"hij"
    assert len(b) == 6
    assert b.remove(-1) == b"hijklm"
    assert b.remove(5) == b"" and not b


def test_add_rejects_str_and_non_buffers():
    b = Buffer()
    with pytest.raises(TypeError, match="str"):
        b.add("text")
    with pytest.raises(TypeError):
        b.add(12)
    b.add(b"ok")
    assert b.remove() == b"ok"


def test_bytearray_is_copied_at_add():
    src = bytearray(b"hello")
    b = Buffer()
    b.add(src)
    src[:] = b"XXXXX"
    assert b.remove() == b"hello"


def test_drain_and_pullup_none_when_short():
    b = Buffer(b"0123456789")
    b.drain(3)
    assert b.pullup(4) == b"3456"
    assert b.pullup(100) is None
    assert b.pullup() == b"3456789"
    b.drain(100)
    assert len(b) == 0
    with pytest.raises(ValueError):
        b.drain(-1)


def test_pullup_linearises():
    b = Buffer()
    for i in range(10):
        b.add(bytes([65 + i]) * 3)
    assert b.pullup(10) == b"AAABBBCCCD"
    assert len(b._chunks) == 7          # the first 4 chunks became one
    assert b.remove() == b"".join(bytes([65 + i]) * 3 for i in range(10))


def test_remove_buffer_moves_chunk_references():
    chunk = os.urandom(1000)
    src, dst = Buffer(), Buffer()
    src.add(chunk)
    src.add(b"tail")
    assert src.remove_buffer(dst, 1000) == 1000
    assert dst._chunks[0] is chunk       # moved, not copied
    assert src.remove() == b"tail"
    assert dst.remove_buffer(src, 10) == 10 and len(dst) == 990
    dst2 = Buffer()
    dst2.add_buffer(dst)
    assert len(dst) == 0 and len(dst2) == 990
    with pytest.raises(TypeError):
        dst2.remove_buffer(b"nope")
    with pytest.raises(ValueError):
        dst2.add_buffer(dst2)


def test_search_spanning_chunks():
    b = Buffer()
    for part in (b"ab", b"c\r", b"\nxy", b"z", b"\r\n"):
        b.add(part)
    assert b.search(b"\r\n") == 3
    assert b.search(b"\r\n", 4) == 8
    assert b.search(b"cxyz") == -1
    assert b.search(b"xyz") == 5
    assert b.search(b"q") == -1
    assert b.search(b"") == 0


def test_readln_modes():
    b = Buffer(b"one\r\ntwo\nthree\r\n\npartial")
    assert b.readln() == b"one"
    assert b.readln() == b"two"
    assert b.readln(b"\r\n") == b"three"
    assert b.readln(b"\n") == b""
    assert b.readln() is None
    assert b.remove() == b"partial"


def test_search_random_against_bytes_find():
    import random
    rnd = random.Random(7)
    for _ in range(200):
        data = bytes(rnd.choice(b"ab\n") for _ in range(rnd.randrange(0, 60)))
        b = Buffer()
        i = 0
        while i < len(data):
            n = rnd.randrange(1, 6)
            b.add(data[i:i + n])
            i += n
        if data and rnd.random() < 0.5:
            k = rnd.randrange(len(data))
            b.drain(k)
            data = data[k:]
        pat = bytes(rnd.choice(b"ab\n") for _ in range(rnd.randrange(1, 4)))
        start = rnd.randrange(0, len(data) + 1)
        assert b.search(pat, start) == data.find(pat, start)


def test_million_small_appends_drained_unevenly_is_linear():
    # Quadratic copying would take minutes here; the FIFO of chunk references
    # takes well under a few seconds.  The deadline only guards against that.
    import time
    b = Buffer()
    piece = b"1234567"
    t0 = time.monotonic()
    for _ in range(1_000_000):
        b.add(piece)
    got = 0
    while b:
        got += len(b.remove(13))
    assert got == 7_000_000
    assert time.monotonic() - t0 < 30
