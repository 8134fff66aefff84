"""Pure rate-limit logic: configs, bucket arithmetic, group shares, fair picking.

No hub, no I/O: these run on plain numbers.
"""
import random

import pytest

from gbufferevent import EV_RATE_LIMIT_MAX, TokenBucketConfig
from gbufferevent.ratelimit import (
    DEFAULT_MIN_SHARE, ShuffledRounds, TokenBucket, effective_min_share, member_share,
    TICK_SLACK, next_tick_delay, random_rotation, tick_of, wake_count,
)


# -- TokenBucketConfig ---------------------------------------------------------

def test_config_fields_and_units():
    cfg = TokenBucketConfig(100, 400, 50, 200, 0.1)
    assert (cfg.read_rate, cfg.read_burst, cfg.write_rate, cfg.write_burst) == (100, 400, 50, 200)
    assert cfg.tick_ms == 100 and cfg.tick_len == 0.1
    assert cfg.rate(True) == 100 and cfg.rate(False) == 50
    assert cfg.burst(True) == 400 and cfg.burst(False) == 200
    assert "read_rate=100" in repr(cfg)


def test_config_tick_default_and_none_is_one_second():
    assert TokenBucketConfig(1, 1, 1, 1).tick_ms == 1000
    assert TokenBucketConfig(1, 1, 1, 1, None).tick_ms == 1000


def test_config_drops_fractions_of_a_millisecond():
    assert TokenBucketConfig(1, 1, 1, 1, 0.0015).tick_ms == 1       # 1.5 ms acts as 1 ms
    assert TokenBucketConfig(1, 1, 1, 1, 0.0029).tick_ms == 2
    assert TokenBucketConfig(1, 1, 1, 1, 0.001).tick_ms == 1
    assert TokenBucketConfig(1, 1, 1, 1, 1.1).tick_ms == 1100       # no float drift
    assert TokenBucketConfig(1, 1, 1, 1, 2147483).tick_ms == 2147483000


@pytest.mark.parametrize("tick", [0, 0.0, 0.000999, -0.1, -1, 2147484, float("nan"),
                                  float("inf")])
def test_config_rejects_bad_ticks(tick):
    with pytest.raises(ValueError, match="tick_len"):
        TokenBucketConfig(1, 1, 1, 1, tick)


@pytest.mark.parametrize("tick", ["0.1", True, [1]])
def test_config_tick_type_errors(tick):
    with pytest.raises(TypeError, match="tick_len"):
        TokenBucketConfig(1, 1, 1, 1, tick)


@pytest.mark.parametrize("args,name", [
    ((0, 1, 1, 1), "read_rate"),             # rate < 1
    ((1, 1, 0, 1), "write_rate"),
    ((-5, 1, 1, 1), "read_rate"),
    ((2, 1, 1, 1), "read_rate"),             # rate > burst
    ((1, 1, 3, 2), "write_rate"),
    ((1, EV_RATE_LIMIT_MAX + 1, 1, 1), "read_burst"),   # above EV_RATE_LIMIT_MAX
    ((1, 1, EV_RATE_LIMIT_MAX + 1, EV_RATE_LIMIT_MAX + 1), "write_rate"),
])
def test_config_rejects_bad_rates(args, name):
    with pytest.raises(ValueError, match=name):
        TokenBucketConfig(*args)


def test_config_accepts_the_maximum():
    cfg = TokenBucketConfig(EV_RATE_LIMIT_MAX, EV_RATE_LIMIT_MAX, 1, EV_RATE_LIMIT_MAX)
    assert cfg.read_burst == EV_RATE_LIMIT_MAX


@pytest.mark.parametrize("bad", [1.5, "10", None, True])
def test_config_rate_type_errors(bad):
    with pytest.raises(TypeError, match="read_rate"):
        TokenBucketConfig(bad, 10, 1, 1)


def test_config_is_immutable_so_it_can_be_shared():
    cfg = TokenBucketConfig(1, 2, 3, 4)
    with pytest.raises(AttributeError):
        cfg.read_rate = 7
    with pytest.raises(AttributeError):
        cfg._read_rate = 7
    assert cfg.read_rate == 1


# -- ticks and buckets -----------------------------------------------------------

def test_ticks_are_epoch_aligned():
    assert tick_of(0.0, 100) == 0
    assert tick_of(0.0999, 100) == 0
    assert tick_of(0.1, 100) == 1
    assert tick_of(1_700_000_000.25, 100) == 17_000_000_002
    # the first refill may come sooner than a full tick after the start
    assert tick_of(12.399, 100) + 1 == tick_of(12.401, 100)


def test_bucket_starts_with_one_tick_not_the_burst():
    b = TokenBucket(TokenBucketConfig(100, 400, 50, 200, 0.1), tick=7)
    assert (b.read, b.write, b.last_tick) == (100, 50, 7)


def test_bucket_refills_by_rate_per_tick_capped_at_burst():
    cfg = TokenBucketConfig(100, 400, 50, 200, 0.1)
    b = TokenBucket(cfg, 0)
    assert b.refill(cfg, 0) is False and b.read == 100       # same tick: nothing
    assert b.refill(cfg, 1) is True and (b.read, b.write) == (200, 100)
    b.refill(cfg, 2)
    assert (b.read, b.write) == (300, 150)
    b.refill(cfg, 10)
    assert (b.read, b.write) == (400, 200)                   # never above burst
    b.refill(cfg, 1000)
    assert (b.read, b.write) == (400, 200)


def test_bucket_goes_negative_and_climbs_back():
    cfg = TokenBucketConfig(100, 400, 100, 400)
    b = TokenBucket(cfg, 0)
    assert b.take(True, 500) == -400                         # deficit spending
    for tick, expect in ((1, -300), (2, -200), (3, -100), (4, 0), (5, 100)):
        b.refill(cfg, tick)
        assert b.level(True) == expect


def test_negative_take_is_not_clamped_until_the_next_refill():
    cfg = TokenBucketConfig(100, 400, 100, 400)
    b = TokenBucket(cfg, 0)
    b.take(True, 500)
    assert b.take(True, -1000) == 600                        # above the burst for now
    b.refill(cfg, 1)
    assert b.read == 400


def test_clock_going_back_resyncs_without_adding():
    cfg = TokenBucketConfig(100, 400, 100, 400)
    b = TokenBucket(cfg, 50)
    b.take(True, 100)
    assert b.refill(cfg, 40) is False and b.read == 0 and b.last_tick == 40
    b.refill(cfg, 41)
    assert b.read == 100


def test_clip_keeps_levels_under_new_bursts():
    b = TokenBucket(TokenBucketConfig(300, 300, 300, 300), 0)
    b.clip(TokenBucketConfig(10, 200, 10, 500))
    assert (b.read, b.write) == (200, 300)


# -- group arithmetic ------------------------------------------------------------

def test_effective_min_share_is_never_above_the_rates():
    assert effective_min_share(DEFAULT_MIN_SHARE, TokenBucketConfig(1000, 1000, 1000, 1000)) == 64
    assert effective_min_share(64, TokenBucketConfig(10, 10, 1000, 1000)) == 10
    assert effective_min_share(64, TokenBucketConfig(1000, 1000, 20, 20)) == 20
    assert effective_min_share(0, TokenBucketConfig(10, 10, 10, 10)) == 0


def test_member_share():
    assert member_share(3000, 30, 64) == 100                 # bucket / members
    assert member_share(1000, 30, 64) == 64                  # 33 raised to the min share
    assert member_share(1000, 30, 0) == 33                   # min share disabled
    assert member_share(50, 1, 64) == 64
    assert member_share(0, 30, 64) == 0
    assert member_share(-10, 30, 64) == 0
    assert member_share(5, 10, 0) == 1                       # min share 0: still 1 byte
    assert member_share(0, 10, 0) == 0


def test_wake_count():
    assert wake_count(3000, 30, 64) is None                  # everyone gets >= min share
    assert wake_count(1000, 30, 64) == 15                    # 15 steps of 64 this tick
    assert wake_count(10, 30, 64) == 1
    assert wake_count(0, 30, 64) == 0
    assert wake_count(1000, 30, 0) is None
    assert wake_count(5, 10, 0) == 5                         # five 1-byte steps this tick
    assert wake_count(10, 10, 0) is None


def test_random_rotation_keeps_order_and_varies_start():
    rng = random.Random(1)
    starts = set()
    for _ in range(50):
        r = random_rotation(list(range(10)), rng)
        i = r.index(0)
        assert r[i:] + r[:i] == list(range(10))
        starts.add(r[0])
    assert len(starts) > 5


def test_shuffled_rounds_serve_everyone_and_vary_the_subset():
    rng = random.Random(7)
    rounds = ShuffledRounds(rng)
    waiting = dict.fromkeys(range(100))
    served = []
    for _ in range(10):                                      # 10 ticks x 10 = one round
        picked = rounds.pick(waiting, 10)
        assert len(picked) == len(set(picked)) == 10
        assert all(m in waiting for m in picked)
        served.append(frozenset(picked))
    assert frozenset().union(*served) == frozenset(range(100))
    # the next round is a different random order
    nxt = [frozenset(rounds.pick(waiting, 10)) for _ in range(10)]
    assert nxt != served


def test_shuffled_rounds_skip_members_that_stopped_waiting():
    rounds = ShuffledRounds(random.Random(3))
    waiting = dict.fromkeys("abcdef")
    first = rounds.pick(waiting, 2)
    for m in "abcdef":
        if m not in first:
            del waiting[m]
            break
    picked = rounds.pick(waiting, 10)
    assert set(picked) <= set(waiting) and len(picked) == len(set(picked))
    assert rounds.pick({}, 3) == []


def test_no_member_starves_under_min_share():
    """2,000 members, the bucket serves 100 per tick: everyone within 2 rounds."""
    rounds = ShuffledRounds(random.Random(11))
    waiting = dict.fromkeys(range(2000))
    last_served = {m: 0 for m in waiting}
    worst = 0
    for tick in range(1, 101):
        for m in rounds.pick(waiting, 100):
            worst = max(worst, tick - last_served[m])
            last_served[m] = tick
    assert worst <= 40                                       # 2 rounds of 20 ticks
    assert min(last_served.values()) > 60


def test_next_tick_delay_lands_just_past_the_boundary_never_a_ms_late():
    """libev's epoll backend rounds waits up to whole milliseconds: a timer
    armed on a boundary must not ask for more than one tick + a few us, or
    it sleeps two ticks (a 0.2 ms margin made 1 B/ms run 29% slow)."""
    assert TICK_SLACK <= 10e-6
    rng = random.Random(5)
    for tick_ms in (1, 7, 100, 1000):
        for now in [1_700_000_000.0, 1_700_000_000.001, 1_800_000_000.123456, 12.5] + \
                [1_700_000_000 + rng.random() * 1e6 for _ in range(2000)]:
            d = next_tick_delay(now, tick_ms)
            assert 0 < d <= tick_ms / 1000 + 10e-6, (now, tick_ms, d)
            assert tick_of(now + d, tick_ms) == tick_of(now, tick_ms) + 1, (now, tick_ms)
