"""The bus between processes (app/replies/bus.py) on a real PostgreSQL and a real Redis:
messages arrive in order, across two buses, and a dropped connection comes back."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from app.replies.bus import Bus, Message, PostgresBus, RedisBus
from tests.conftest import DatabaseFactory, make_settings
from tests.redis_helpers import redis_answers, redis_url


@pytest.fixture(params=["postgres", "redis"])
async def buses(
    request: pytest.FixtureRequest, database_factory: DatabaseFactory
) -> AsyncIterator[tuple[Bus, Bus]]:
    """Two buses, as two processes have."""
    if request.param == "redis":
        if not await redis_answers():
            pytest.skip("Redis is not reachable at 127.0.0.1:6379")
        first: Bus = RedisBus(redis_url(14))
        second: Bus = RedisBus(redis_url(14))
    else:
        url = make_settings(await database_factory.create("postgresql")).database_url
        first, second = PostgresBus(url), PostgresBus(url)
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


class Inbox:
    def __init__(self) -> None:
        self.messages: asyncio.Queue[Message] = asyncio.Queue()

    def __call__(self, message: Message) -> None:
        self.messages.put_nowait(message)

    async def next(self) -> Message:
        async with asyncio.timeout(10):
            return await self.messages.get()


async def connected(bus: Bus, channel: str) -> None:
    """Until a message of `bus` to itself on `channel` comes back: it is listening, and
    publishing."""
    inbox = Inbox()
    await bus.listen(channel, inbox)
    try:
        while True:
            bus.publish(channel, {"op": "ping"})
            try:
                async with asyncio.timeout(0.2):
                    await inbox.messages.get()
                return
            except TimeoutError:
                continue  # not connected yet: what was published was dropped
    finally:
        await bus.unlisten(channel, inbox)


async def test_messages_arrive_in_order_from_another_bus(buses: tuple[Bus, Bus]) -> None:
    sender, receiver = buses
    inbox = Inbox()
    await connected(sender, "chat_test_ping_a")
    await connected(receiver, "chat_test_ping_b")
    await receiver.listen("chat_test_order", inbox)

    for n in range(500):
        sender.publish("chat_test_order", {"op": "delta", "end": n, "text": "é" * (n % 7)})

    received = [await inbox.next() for _ in range(500)]
    assert [m["end"] for m in received] == list(range(500))
    assert received[6]["text"] == "é" * 6


async def test_a_dropped_connection_comes_back_and_says_so(buses: tuple[Bus, Bus]) -> None:
    bus, _ = buses
    if not isinstance(bus, PostgresBus):
        pytest.skip("the connection is dropped with pg_terminate_backend")
    inbox = Inbox()
    await connected(bus, "chat_test_ping")
    await bus.listen("chat_test_back", inbox)
    assert bus._conn is not None
    pid = bus._conn.get_server_pid()

    admin = await asyncpg.connect(**bus._connect_args)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()

    assert await inbox.next() == {"op": "reconnected"}
    bus.publish("chat_test_back", {"op": "after"})
    assert await inbox.next() == {"op": "after"}
