"""Per-user limits on sending messages: moving windows, in process or shared through Redis.

The rule, the same in both stores. A rate such as "30/minute;500/hour" is a set of windows. A
window of N messages per T seconds keeps the times of the last N messages it accepted, newest
first; it has room when it holds fewer than N, or when the oldest of them is T seconds old or
more. A message is accepted when every window has room, and then counted in every window;
otherwise it is refused and counted in none (a refused message uses no room). Checking and
counting is one atomic step per message: in process it runs without awaiting anything, in
Redis it is one Lua script. A refusal carries when the windows that are full will all have
room again (Retry-After).

With Redis unreachable, messages are limited in this process's memory instead (each replica
then allows the full rate on its own), and Redis is not contacted again until a probe finds
it answering: a background PING, started by the first message at least `redis_retry_seconds`
after the failure or after the last probe.
"""

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import coredis
from limits import RateLimitItem, parse_many

from app.kit import metrics
from app.kit.errors import RateLimited

logger = logging.getLogger(__name__)

_NAMESPACE = "chat-messages"
# The key prefix of `limits`' own Redis storage, which this replaced: the same keys, holding
# lists of the same shape (newest time first, trimmed to the limit), so `redis-cli` shows what
# the limiter counts, and replicas of the previous version share the counts during a rolling
# deploy.
_REDIS_KEY_PREFIX = "LIMITS:"
# Redis answers the script in well under a millisecond; a store that has not answered in a
# second is treated as down, rather than holding the message for the OS's connect timeout.
_REDIS_TIMEOUT_SECONDS = 1.0
# How often the in-process store forgets the keys whose messages have all left their windows.
_SWEEP_SECONDS = 60.0

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Window:
    """One window of one key: at most `limit` messages in any `seconds`."""

    key: str
    limit: int
    seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    """When a message was judged and, if it was refused, when the windows that are full will
    all have room."""

    at: float
    refused_until: float | None


class MemoryWindows:
    """The rule in this process's memory."""

    def __init__(self) -> None:
        self._times: dict[str, deque[float]] = {}
        self._expires_at: dict[str, float] = {}
        self._sweep_at = 0.0

    def acquire(self, windows: Sequence[Window], now: float) -> Decision:
        """Count a message at `now` in every window, or in none.

        Nothing here awaits, so on the event loop no other message can be counted between the
        check and the count."""
        self._sweep(now)
        resets: list[float] = []
        for window in windows:
            times = self._times.get(window.key)
            oldest = times[window.limit - 1] if times and len(times) == window.limit else None
            if oldest is not None and oldest > now - window.seconds:
                resets.append(oldest + window.seconds)
        if resets:
            return Decision(now, max(resets))
        for window in windows:
            times = self._times.get(window.key)
            if times is None:
                times = self._times[window.key] = deque(maxlen=window.limit)
            times.appendleft(now)
            # As Redis's EXPIRE: once its newest message leaves the window, the key is empty.
            self._expires_at[window.key] = now + window.seconds
        return Decision(now, None)

    def _sweep(self, now: float) -> None:
        if now < self._sweep_at:
            return
        self._sweep_at = now + _SWEEP_SECONDS
        for key in [key for key, expires_at in self._expires_at.items() if expires_at < now]:
            del self._times[key], self._expires_at[key]


# The same rule as MemoryWindows.acquire, line by line. `limits` (5.8) has an atomic
# check-and-count for one window only (its acquire_moving_window.lua, which this extends to
# several); counting window by window cannot undo a count when a later window refuses, and
# checking first then counting lets concurrent messages all pass the check. One script is one
# round trip, and Redis runs it alone: atomic across processes.
# The time is Redis's own unless given (tests): one clock for every replica, so that the times
# in a list are in the order they were counted even when replicas' clocks differ, and a
# message judged late is not stamped with the time it arrived at its process.
# KEYS: one list per window. ARGV: the time or "", then each window's limit and seconds.
# Returns the time used, then the time each full window will have room (none: counted).
_ACQUIRE_SCRIPT = """
local now = tonumber(ARGV[1])
if not now then
    local time = redis.call('TIME')
    now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local stamp = string.format('%.17g', now)
local resets = {stamp}
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local seconds = tonumber(ARGV[2 * i + 1])
    local oldest = redis.call('LINDEX', key, limit - 1)
    if oldest and tonumber(oldest) > now - seconds then
        resets[#resets + 1] = string.format('%.17g', tonumber(oldest) + seconds)
    end
end
if #resets > 1 then
    return resets
end
for i, key in ipairs(KEYS) do
    redis.call('LPUSH', key, stamp)
    redis.call('LTRIM', key, 0, tonumber(ARGV[2 * i]) - 1)
    redis.call('EXPIRE', key, ARGV[2 * i + 1])
end
return resets
"""


class RedisWindows:
    """The rule in Redis, shared by every process that uses the same database."""

    def __init__(self, url: str) -> None:
        self._client = coredis.Redis.from_url(
            url,
            decode_responses=True,
            connect_timeout=_REDIS_TIMEOUT_SECONDS,
            stream_timeout=_REDIS_TIMEOUT_SECONDS,
        )
        self._acquire = self._client.register_script(_ACQUIRE_SCRIPT)

    async def acquire(self, windows: Sequence[Window], now: float | None) -> Decision:
        """As MemoryWindows.acquire, at `now` or else at Redis's time."""
        keys = tuple(_REDIS_KEY_PREFIX + window.key for window in windows)
        limits = itertools.chain.from_iterable((w.limit, w.seconds) for w in windows)
        answer = await self._acquire(keys, ("" if now is None else repr(now), *limits))
        assert isinstance(answer, list)
        at, *resets = (float(value) for value in answer)
        return Decision(at, max(resets) if resets else None)

    async def ping(self) -> None:
        await self._client.ping()

    def close(self) -> None:
        self._client.connection_pool.disconnect()


class MessageRateLimiter:
    """Counts messages per key (a user id, or a client address in open mode) over the moving
    windows of `rates`, e.g. "30/minute;500/hour", in process or in Redis at `redis_url`.

    Other requests are counted the same way under a `namespace` of their own (reads of shared
    links: app/shares), refused with their own `refusal` error."""

    def __init__(
        self,
        rates: str,
        redis_url: str | None,
        *,
        redis_retry_seconds: float = 10.0,
        clock: Clock | None = None,
        namespace: str = _NAMESPACE,
        refusal: type[RateLimited] = RateLimited,
    ) -> None:
        """`clock`: the time for tests; by default this process's, and Redis's own for the
        windows in Redis."""
        self.limits: list[RateLimitItem] = parse_many(rates)
        self._namespace = namespace
        # The metrics' name of this limit: "messages", or the namespace of another.
        self._limit_name = "messages" if namespace == _NAMESPACE else namespace
        self._refusal = refusal
        self._fixed_clock = clock
        self._clock = clock or time.time
        # The store in process mode; the fallback while Redis is unreachable in shared mode.
        self._memory = MemoryWindows()
        self._redis = RedisWindows(redis_url) if redis_url else None
        self._redis_retry_seconds = redis_retry_seconds
        # While Redis is considered down: when to probe it next.
        self._redis_retry_at: float | None = None
        self._probe: asyncio.Task[None] | None = None

    async def hit(self, key: str) -> None:
        """Count one message for `key`, or raise `RateLimited` if a window is full."""
        windows = [
            Window(limit.key_for(self._namespace, key), limit.amount, limit.get_expiry())
            for limit in self.limits
        ]
        decision = await self._acquire(windows)
        if decision.refused_until is not None:
            metrics.RATE_LIMITED.labels(self._limit_name).inc()
            raise self._refusal(math.ceil(decision.refused_until - decision.at))

    @property
    def probe(self) -> asyncio.Task[None] | None:
        """The background check of whether Redis answers again, while one runs."""
        return self._probe

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        if self._redis is not None:
            self._redis.close()

    async def _acquire(self, windows: Sequence[Window]) -> Decision:
        if self._redis is None:
            return self._memory.acquire(windows, self._clock())
        if self._redis_retry_at is not None:
            now = self._clock()
            if now >= self._redis_retry_at and self._probe is None:
                # The message does not wait for it: it is judged in memory meanwhile.
                self._probe = asyncio.create_task(self._probe_redis(self._redis))
            return self._memory.acquire(windows, now)
        try:
            at = None if self._fixed_clock is None else self._fixed_clock()
            return await self._redis.acquire(windows, at)
        except Exception as exc:
            # Whatever Redis's failure, an outage of the limiter must not become an outage of
            # the chat, nor lift the limit.
            self._redis_down(exc)
            return self._memory.acquire(windows, self._clock())

    def _redis_down(self, exc: Exception) -> None:
        if self._redis_retry_at is not None:
            return  # concurrent messages failing with it: the outage is logged already
        self._redis_retry_at = self._clock() + self._redis_retry_seconds
        logger.warning(
            "rate limiter: Redis failed (%r); limiting in this process's memory until it "
            "answers again (checked every %g s)",
            exc,
            self._redis_retry_seconds,
        )

    async def _probe_redis(self, redis: RedisWindows) -> None:
        try:
            await redis.ping()
        except Exception:
            self._redis_retry_at = self._clock() + self._redis_retry_seconds
        else:
            self._redis_retry_at = None
            logger.warning("rate limiter: Redis answers again; the limit is shared again")
        finally:
            self._probe = None
