"""Messages between the processes of the service, for replies that one process generates and
another is asked about (app/replies/relay.py): PostgreSQL's LISTEN/NOTIFY, or Redis pub/sub
where REDIS_URL is set. No new service: deployments have one or the other already.

Delivery is at most once and in order from one process: a message sent while the connection
is down is dropped, and listeners get `{"op": "reconnected"}` once it is back (the relay's
protocol recovers from losses, by offsets, by asking again and by reading the stored reply).
Each process holds one connection of its own for it, reconnected after a pause (0.5 s,
doubled up to 30 s) when it fails.
"""

import asyncio
import inspect
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import asyncpg
import coredis
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

Message = dict[str, Any]
# Delivered on every channel listened to once the connection is back.
RECONNECTED = '{"op":"reconnected"}'
Handler = Callable[[Message], None]

# PostgreSQL refuses a NOTIFY payload of 8000 bytes or more.
MAX_PAYLOAD_BYTES = 7900
# Pauses between attempts to reconnect: doubled from the first to the last.
_RECONNECT_SECONDS = (0.5, 30.0)
# Messages sent in one round trip (one transaction of NOTIFYs, delivered in order).
_BATCH = 200


class Bus(ABC):
    """Named channels between processes: `publish` queues a message (never waits), handlers
    registered with `listen` get the messages of a channel."""

    def __init__(self) -> None:
        self._handlers: dict[str, set[Handler]] = {}
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._connected = False
        self._subscribed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def publish(self, channel: str, message: Message) -> None:
        if self._connected:
            self._outbox.put_nowait((channel, json.dumps(message, separators=(",", ":"))))

    async def listen(self, channel: str, handler: Handler) -> None:
        """Call `handler` for each message of `channel` from now (once this returns)."""
        self._handlers.setdefault(channel, set()).add(handler)
        if self._connected and channel not in self._subscribed:
            with suppress(Exception):  # reconnecting: it listens again then
                await self._subscribe(channel)
                self._subscribed.add(channel)

    async def unlisten(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if handlers is None:
            return
        handlers.discard(handler)
        if not handlers:
            del self._handlers[channel]
            if self._connected and channel in self._subscribed:
                self._subscribed.discard(channel)
                with suppress(Exception):
                    await self._unsubscribe(channel)

    def _deliver(self, channel: str, payload: str | bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            logger.warning("unreadable message on channel %s", channel)
            return
        for handler in list(self._handlers.get(channel, ())):
            handler(message)

    async def _run(self) -> None:
        pause = _RECONNECT_SECONDS[0]
        reconnecting = False
        while True:
            try:
                await self._connect()
                # Until every channel asked for meanwhile is listened to.
                while missing := set(self._handlers) - self._subscribed:
                    for channel in missing:
                        await self._subscribe(channel)
                        self._subscribed.add(channel)
                self._connected = True
                pause = _RECONNECT_SECONDS[0]
                if reconnecting:
                    # Messages may have been lost meanwhile: every listener may ask again.
                    for channel in list(self._handlers):
                        self._deliver(channel, RECONNECTED)
                reconnecting = True
                await self._send_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("messages between processes are interrupted: %r", exc)
            finally:
                self._connected = False
                self._subscribed.clear()
                with suppress(Exception):
                    await self._disconnect()
            # What was queued meanwhile is dropped: the relay's protocol recovers.
            while not self._outbox.empty():
                self._outbox.get_nowait()
            await asyncio.sleep(pause)
            pause = min(pause * 2, _RECONNECT_SECONDS[1])

    async def _send_forever(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < _BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            await self._send(batch)

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    @abstractmethod
    async def _subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def _unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def _send(self, batch: list[tuple[str, str]]) -> None: ...


class PostgresBus(Bus):
    """LISTEN/NOTIFY on a connection of its own (not the pool's: it stays LISTENing). Behind a
    pooler it needs session mode (Supabase's session pooler, port 5432), as LISTEN does."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        url = make_url(database_url)
        accepted = inspect.signature(asyncpg.connect).parameters
        self._connect_args: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "database": url.database,
            # What asyncpg takes of the URL's parameters (`ssl`, say).
            **{
                key: value
                for key, value in url.query.items()
                if isinstance(value, str) and key in accepted
            },
        }
        self._conn: asyncpg.Connection | None = None
        # One operation at a time on the connection: NOTIFYs, LISTENs and UNLISTENs.
        self._lock = asyncio.Lock()
        self._lost = asyncio.Event()

    async def _connect(self) -> None:
        self._lost.clear()
        self._conn = await asyncpg.connect(**self._connect_args, timeout=10)
        self._conn.add_termination_listener(lambda _conn: self._lost.set())

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(timeout=2)

    def _on_notify(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        self._deliver(channel, payload)

    async def _subscribe(self, channel: str) -> None:
        assert self._conn is not None
        async with self._lock:
            await self._conn.add_listener(channel, self._on_notify)

    async def _unsubscribe(self, channel: str) -> None:
        assert self._conn is not None
        async with self._lock:
            await self._conn.remove_listener(channel, self._on_notify)

    async def _send_forever(self) -> None:
        sending = asyncio.create_task(super()._send_forever())
        lost = asyncio.create_task(self._lost.wait())
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
            if sending.done():
                sending.result()
            raise ConnectionError("the connection for LISTEN/NOTIFY was closed")
        finally:
            sending.cancel()
            lost.cancel()

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        assert self._conn is not None
        channels, payloads = zip(*batch, strict=True)
        async with self._lock:
            # One round trip, one transaction: delivered in this order.
            await self._conn.execute(
                "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)",
                list(channels),
                list(payloads),
            )


class RedisBus(Bus):
    """Redis pub/sub: a subscriber connection read by a task, and a client that publishes."""

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        self._url = redis_url
        self._client: coredis.Redis[str] | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def _connect(self) -> None:
        self._client = coredis.Redis.from_url(self._url, decode_responses=True)
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        # A channel nobody uses, so that the subscriber connection opens now.
        await self._pubsub.subscribe("chat:bus")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            message = await self._pubsub.get_message(timeout=1)
            if message is not None and message.get("type") == "message":
                self._deliver(str(message["channel"]), message["data"])

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with suppress(Exception):
                self._pubsub.close()
        self._pubsub = self._client = self._reader = None

    async def _subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)

    async def _unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def _send_forever(self) -> None:
        sending = asyncio.create_task(super()._send_forever())
        assert self._reader is not None
        try:
            await asyncio.wait({sending, self._reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in (sending, self._reader):
                if task.done():
                    task.result()
            raise ConnectionError("the Redis subscriber stopped")
        finally:
            sending.cancel()

    async def _send(self, batch: list[tuple[str, str]]) -> None:
        assert self._client is not None
        for channel, payload in batch:
            await self._client.publish(channel, payload)
