"""MessageRateLimiter: moving windows per key, in process or shared through Redis."""

import asyncio
import logging
import uuid

import limits.aio.storage.memory
import pytest

import app.services.rate_limit
from app.core.config import Settings
from app.core.errors import RateLimited
from app.services.rate_limit import MessageRateLimiter
from tests.conftest import IN_CI

REDIS_URL = "redis://127.0.0.1:6379/0"
UNREACHABLE_REDIS_URL = "redis://127.0.0.1:1/0"


def new_key() -> str:
    """A key no other test (or earlier run against the same Redis) has used."""
    return f"test:{uuid.uuid4().hex}"


async def refused(limiter: MessageRateLimiter, key: str) -> int:
    """Hit `key`, asserting the hit is refused; the Retry-After seconds."""
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(key)
    error = caught.value
    assert error.status_code == 429
    assert error.headers is not None
    return int(error.headers["Retry-After"])


class FakeClock:
    """Wall-clock time for the limiter and its in-memory storage, advanced by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # Both modules call `time.time()` through their module-level `time` import.
    monkeypatch.setattr(limits.aio.storage.memory, "time", fake)
    monkeypatch.setattr(app.services.rate_limit, "time", fake)
    return fake


# --- In process ---------------------------------------------------------------------------


async def test_fourth_hit_in_a_minute_is_refused_with_retry_after() -> None:
    limiter = MessageRateLimiter("3/minute", None)
    key = new_key()

    for _ in range(3):
        await limiter.hit(key)

    retry_after = await refused(limiter, key)
    assert 1 <= retry_after <= 60
    # Still refused: refusals do not open the window.
    assert 1 <= await refused(limiter, key) <= 60


async def test_keys_are_counted_separately() -> None:
    limiter = MessageRateLimiter("3/minute", None)
    alice, bob = new_key(), new_key()

    for _ in range(3):
        await limiter.hit(alice)
    await refused(limiter, alice)

    for _ in range(3):
        await limiter.hit(bob)
    await refused(limiter, bob)


async def test_two_in_process_limiters_do_not_share_counts() -> None:
    first = MessageRateLimiter("1/minute", None)
    second = MessageRateLimiter("1/minute", None)
    key = new_key()

    await first.hit(key)
    await second.hit(key)
    await refused(first, key)


async def test_retry_after_is_when_the_oldest_hit_leaves_the_window(clock: FakeClock) -> None:
    limiter = MessageRateLimiter("3/minute", None)
    key = new_key()

    for _ in range(3):
        await limiter.hit(key)
        clock.advance(10)

    # Hits at 0, 10 and 20 s; at 30 s the first one leaves the window 30 s later.
    assert await refused(limiter, key) == 30
    clock.advance(29)
    assert await refused(limiter, key) == 1
    clock.advance(1.5)
    await limiter.hit(key)
    # At 60.5 s the window holds the hits at 10, 20 and 60.5 s: room again at 70 s.
    assert await refused(limiter, key) == 10


async def test_several_windows_the_tighter_one_applies_first(clock: FakeClock) -> None:
    limiter = MessageRateLimiter("2/second;3/minute", None)
    key = new_key()

    await limiter.hit(key)
    await limiter.hit(key)
    # The per-second window is full (the minute window is not).
    assert await refused(limiter, key) == 1

    clock.advance(1.5)
    await limiter.hit(key)
    # Now the minute window is full: three messages since t=0; the first two leave at t=60.
    assert await refused(limiter, key) == 59
    clock.advance(10)
    assert await refused(limiter, key) == 49

    clock.advance(49)
    await limiter.hit(key)


async def test_a_refused_message_uses_no_room_in_the_other_windows(clock: FakeClock) -> None:
    limiter = MessageRateLimiter("1/second;2/minute", None)
    key = new_key()
    await limiter.hit(key)
    clock.advance(1.5)
    await limiter.hit(key)  # the minute window is now full

    clock.advance(1.5)
    assert await refused(limiter, key) == 57  # by the minute window (t=0 leaves at t=60)
    clock.advance(0.5)
    # Had the refused message been counted in the per-second window, that would refuse now.
    assert await refused(limiter, key) == 57


async def test_the_default_rate_is_generous() -> None:
    """The default limit is on in authenticated mode: a busy human must not hit it."""
    defaults = Settings(_env_file=None)
    limiter = MessageRateLimiter(defaults.rate_limit_messages, None)
    key = new_key()

    for _ in range(20):
        await limiter.hit(key)


# --- Shared through Redis -----------------------------------------------------------------


async def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> bool:
    """Whether a Redis server answers PING there."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 2)).startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        await writer.wait_closed()


async def require_redis() -> str:
    """The test Redis URL; skips the test if Redis is down, or fails it when CI=true."""
    if not await redis_answers():
        message = f"Redis at {REDIS_URL} is unreachable"
        if IN_CI:
            pytest.fail(message + " (CI=true: Redis tests must run)")
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
async def redis_url() -> str:
    return await require_redis()


async def test_two_replicas_share_the_count_through_redis(redis_url: str) -> None:
    replica_a = MessageRateLimiter("3/minute", redis_url)
    replica_b = MessageRateLimiter("3/minute", redis_url)
    key = new_key()

    await replica_a.hit(key)
    await replica_a.hit(key)
    await replica_b.hit(key)

    assert 1 <= await refused(replica_a, key) <= 60
    assert 1 <= await refused(replica_b, key) <= 60
    # Another key is unaffected, on either replica.
    other = new_key()
    await replica_b.hit(other)
    await replica_a.hit(other)


async def test_several_windows_through_redis(redis_url: str) -> None:
    limiter = MessageRateLimiter("2/second;3/minute", redis_url)
    key = new_key()

    await limiter.hit(key)
    await limiter.hit(key)
    assert await refused(limiter, key) == 1


async def test_unreachable_redis_lets_messages_through_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = MessageRateLimiter("1/minute", UNREACHABLE_REDIS_URL)
    key = new_key()

    with caplog.at_level(logging.WARNING, logger="app.services.rate_limit"):
        # Over the limit, yet nothing is refused: the store cannot count.
        for _ in range(3):
            await limiter.hit(key)

    warnings = [
        record
        for record in caplog.records
        if record.name == "app.services.rate_limit" and record.levelno == logging.WARNING
    ]
    assert len(warnings) == 3, caplog.text
    assert "letting the message through" in warnings[0].getMessage()
