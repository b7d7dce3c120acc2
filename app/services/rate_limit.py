"""Per-user limits on sending messages, in process or shared through Redis."""

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from app.core.errors import RateLimited

logger = logging.getLogger(__name__)

_NAMESPACE = "chat-messages"


class MessageRateLimiter:
    """Counts messages per key (a user id, or a client address in open mode) over moving
    windows, e.g. "30/minute;500/hour"; every window must have room for a message."""

    def __init__(self, rates: str, redis_url: str | None) -> None:
        self.limits: list[RateLimitItem] = parse_many(rates)
        storage = storage_from_string(f"async+{redis_url or 'memory://'}")
        assert isinstance(storage, Storage)
        self._strategy = MovingWindowRateLimiter(storage)

    async def hit(self, key: str) -> None:
        """Count one message for `key`, or raise `RateLimited` if a window is full.

        If the shared store is unreachable the message is let through (and logged): an
        outage of the limiter must not become an outage of the chat.
        """
        try:
            # Check every window before counting in any, so that a message refused by one
            # window does not use up room in the others.
            for limit in self.limits:
                if not await self._strategy.test(limit, _NAMESPACE, key):
                    stats = await self._strategy.get_window_stats(limit, _NAMESPACE, key)
                    raise RateLimited(math.ceil(stats.reset_time - time.time()))
            for limit in self.limits:
                await self._strategy.hit(limit, _NAMESPACE, key)
        except RateLimited:
            raise
        except Exception as exc:
            logger.warning("rate limiter storage failed, letting the message through: %r", exc)
