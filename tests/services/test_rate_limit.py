"""MessageRateLimiter: moving windows per key, in process or shared through Redis.

Every test of the rule runs on both stores, with the same clock set by hand: they must behave
the same. Redis is the real one (database 13), reached directly or through a `RedisDoor` that
the test opens and closes.
"""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from app.config import Settings
from app.kit.errors import RateLimited
from app.ratelimit.limiter import MessageRateLimiter
from tests.redis_helpers import REDIS_HOST, REDIS_PORT, empty_redis_database, stored_lists
from tests.service_process import free_port

LOGGER = "app.ratelimit.limiter"
RETRY_SECONDS = 10.0


def new_key() -> str:
    return f"test:{uuid.uuid4().hex}"


async def refused(limiter: MessageRateLimiter, key: str) -> int:
    """Hit `key`, asserting the hit is refused; the Retry-After seconds."""
    with pytest.raises(RateLimited) as caught:
        await limiter.hit(key)
    error = caught.value
    assert error.status_code == 429
    assert error.headers is not None
    return int(error.headers["Retry-After"])


async def accepted_of(limiter: MessageRateLimiter, key: str, burst: int) -> int:
    """Send `burst` hits for `key` at once; how many were accepted."""

    async def one() -> bool:
        try:
            await limiter.hit(key)
        except RateLimited:
            return False
        return True

    return sum(await asyncio.gather(*(one() for _ in range(burst))))


class FakeClock:
    """The limiter's time, advanced by hand."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


MakeLimiter = Callable[[str], MessageRateLimiter]


@pytest.fixture(params=["memory", "redis"])
async def make_limiter(
    request: pytest.FixtureRequest, clock: FakeClock
) -> AsyncIterator[MakeLimiter]:
    """Limiters on the store of the test's parameter, all on `clock`; closed at the end."""
    redis_url = await empty_redis_database(13) if request.param == "redis" else None
    made: list[MessageRateLimiter] = []

    def make(rates: str) -> MessageRateLimiter:
        made.append(MessageRateLimiter(rates, redis_url, clock=clock))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.aclose()


# --- The rule, on both stores -------------------------------------------------------------


async def test_fourth_hit_in_a_minute_is_refused_with_retry_after(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("3/minute")
    key = new_key()

    for _ in range(3):
        await limiter.hit(key)

    assert await refused(limiter, key) == 60
    clock.advance(0.5)
    # Still refused: refusals do not open the window.
    assert await refused(limiter, key) == 60


async def test_keys_are_counted_separately(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter("3/minute")
    alice, bob = new_key(), new_key()

    for _ in range(3):
        await limiter.hit(alice)
    await refused(limiter, alice)

    for _ in range(3):
        await limiter.hit(bob)
    await refused(limiter, bob)


async def test_retry_after_is_when_the_oldest_hit_leaves_the_window(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("3/minute")
    key = new_key()

    for _ in range(3):
        await limiter.hit(key)
        clock.advance(10)

    # Hits at 0, 10 and 20 s; at 30 s the first one leaves the window 30 s later.
    assert await refused(limiter, key) == 30
    clock.advance(29)
    assert await refused(limiter, key) == 1
    clock.advance(0.5)
    assert await refused(limiter, key) == 1
    clock.advance(0.5)
    # At 60 s, a minute after it, the first hit no longer counts: Retry-After was exact.
    await limiter.hit(key)
    # The window holds the hits at 10, 20 and 60 s: room again at 70 s.
    assert await refused(limiter, key) == 10


async def test_several_windows_all_must_have_room(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("2/second;3/minute")
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


async def test_retry_after_waits_for_every_full_window(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("1/second;2/minute")
    key = new_key()
    await limiter.hit(key)
    clock.advance(59.5)
    await limiter.hit(key)

    # Both windows are full: the second's in 1 s, the minute's in 0.5 s. Room in both: 1 s.
    assert await refused(limiter, key) == 1
    clock.advance(1)
    await limiter.hit(key)


async def test_a_burst_gets_exactly_the_limit_through(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("10/minute;100/hour")
    key = new_key()

    assert await accepted_of(limiter, key, 40) == 10
    clock.advance(30)
    assert await accepted_of(limiter, key, 40) == 0
    clock.advance(31)
    assert await accepted_of(limiter, key, 40) == 10


async def test_refused_messages_use_no_room_in_any_window(
    make_limiter: MakeLimiter, clock: FakeClock
) -> None:
    limiter = make_limiter("2/10second;3/minute")
    key = new_key()

    assert await accepted_of(limiter, key, 5) == 2  # at 0 s: the 10-second window is full
    clock.advance(11)
    assert await accepted_of(limiter, key, 5) == 1  # at 11 s: the minute is full
    clock.advance(48.5)
    assert await accepted_of(limiter, key, 5) == 0  # at 59.5 s: still full, 1 s to go
    assert await refused(limiter, key) == 1

    clock.advance(1)
    # At 60.5 s the minute holds the message at 11 s alone, and the 10-second window is
    # empty: room for two. Had the refusals at 59.5 s been counted in the 10-second window,
    # it would be full now.
    assert await accepted_of(limiter, key, 5) == 2


async def test_the_default_rate_is_generous(make_limiter: MakeLimiter) -> None:
    """The default limit is on in authenticated mode: a busy human must not hit it."""
    limiter = make_limiter(Settings(_env_file=None).rate_limit_messages)
    key = new_key()

    for _ in range(20):
        await limiter.hit(key)


# --- In process, or shared ----------------------------------------------------------------


async def test_two_in_process_limiters_do_not_share_counts() -> None:
    first = MessageRateLimiter("1/minute", None)
    second = MessageRateLimiter("1/minute", None)
    key = new_key()

    await first.hit(key)
    await second.hit(key)
    await refused(first, key)


async def test_in_process_keys_are_forgotten_once_their_messages_left_the_windows(
    clock: FakeClock,
) -> None:
    limiter = MessageRateLimiter("1/second;2/minute", None, clock=clock)
    for _ in range(100):
        await limiter.hit(new_key())
    assert len(limiter._memory._times) == 200

    clock.advance(61)
    key = new_key()
    await limiter.hit(key)
    assert len(limiter._memory._times) == 2


@pytest.fixture
async def redis_url() -> str:
    return await empty_redis_database(13)


async def test_bursts_at_two_replicas_at_once_get_exactly_the_limit_through(
    redis_url: str,
) -> None:
    """Each replica with its own connections, at Redis's own time."""
    replicas = [MessageRateLimiter("10/minute;100/hour", redis_url) for _ in range(2)]
    key = new_key()
    try:
        accepted = await asyncio.gather(*(accepted_of(r, key, 40) for r in replicas))
        assert sum(accepted) == 10, accepted
        assert 1 <= await refused(replicas[0], key) <= 60
    finally:
        for replica in replicas:
            await replica.aclose()

    lists = await stored_lists(redis_url)
    assert sorted(lists) == [
        f"LIMITS:LIMITER/chat-messages/{key}/10/1/minute",
        f"LIMITS:LIMITER/chat-messages/{key}/100/1/hour",
    ]
    assert [len(times) for times in lists.values()] == [10, 10]


# --- Redis unreachable --------------------------------------------------------------------


class RedisDoor:
    """A loopback port in front of the test Redis: closed, nothing listens on it (an
    unreachable Redis); open, it forwards to Redis and counts the connections it accepts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/13"

    async def open(self) -> None:
        self._server = await asyncio.start_server(
            self._forward, "127.0.0.1", self.port, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _forward(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        redis_r, redis_w = await asyncio.open_connection(REDIS_HOST, REDIS_PORT)
        self._writers |= {client_w, redis_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_r, redis_w), pipe(redis_r, client_w))
        self._writers -= {client_w, redis_w}


@pytest.fixture
async def door(redis_url: str) -> AsyncIterator[RedisDoor]:
    door = RedisDoor()
    yield door
    await door.close()


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and "limiting in this process's memory" in record.getMessage()
    ]


async def finished_probe(limiter: MessageRateLimiter) -> None:
    probe = limiter.probe
    assert probe is not None, "no probe of Redis was started"
    await probe
    assert limiter.probe is None


async def test_with_redis_unreachable_messages_are_limited_in_memory_and_redis_is_left_alone(
    door: RedisDoor, redis_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = MessageRateLimiter(
        "2/minute", door.url, redis_retry_seconds=RETRY_SECONDS, clock=clock
    )
    key = new_key()
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            # The first message finds Redis closed, and is counted in memory.
            await limiter.hit(key)
            assert len(outage_warnings(caplog)) == 1, caplog.text
            await limiter.hit(key)
            assert await refused(limiter, key) == 60

            # Redis answers again, but until the retry time it is not contacted: messages
            # do not wait for it, and are still counted in memory.
            await door.open()
            clock.advance(RETRY_SECONDS - 0.5)
            assert await refused(limiter, key) == 51
            assert await accepted_of(limiter, new_key(), 5) == 2
            assert door.connections == 0
            assert limiter.probe is None

            # At the retry time a message starts a probe in the background, and is itself
            # still judged in memory.
            clock.advance(0.5)
            assert await refused(limiter, key) == 50
            await finished_probe(limiter)
            assert door.connections >= 1

            # Back on Redis: counts start there afresh, and are shared again.
            await limiter.hit(key)
            other_replica = MessageRateLimiter("2/minute", redis_url, clock=clock)
            try:
                await other_replica.hit(key)
                assert await refused(limiter, key) == 60
            finally:
                await other_replica.aclose()
        assert len(outage_warnings(caplog)) == 1, caplog.text
        assert "answers again" in caplog.records[-1].getMessage()
    finally:
        await limiter.aclose()
    assert [len(times) for times in (await stored_lists(redis_url)).values()] == [2]


async def test_a_failed_probe_leaves_redis_alone_until_the_next_retry_time(
    door: RedisDoor, clock: FakeClock
) -> None:
    limiter = MessageRateLimiter(
        "5/minute", door.url, redis_retry_seconds=RETRY_SECONDS, clock=clock
    )
    key = new_key()
    try:
        await limiter.hit(key)
        clock.advance(RETRY_SECONDS)
        await limiter.hit(key)
        await finished_probe(limiter)  # Redis is still closed: the probe fails

        await door.open()
        clock.advance(RETRY_SECONDS - 0.5)
        await limiter.hit(key)
        assert limiter.probe is None
        assert door.connections == 0

        clock.advance(0.5)
        await limiter.hit(key)
        await finished_probe(limiter)
        assert door.connections >= 1
    finally:
        await limiter.aclose()


async def test_an_outage_is_logged_once_however_many_messages_meet_it(
    door: RedisDoor, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = MessageRateLimiter("10/minute", door.url, clock=clock)
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            # Messages in flight together all meet the closed port; the limit still holds.
            assert await accepted_of(limiter, new_key(), 20) == 10
            assert await accepted_of(limiter, new_key(), 20) == 10
    finally:
        await limiter.aclose()
    assert len(outage_warnings(caplog)) == 1, caplog.text
