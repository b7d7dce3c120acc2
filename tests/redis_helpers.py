"""The test Redis: reachable or not, and one logical database per test file, emptied per test.

Only databases 13 to 15 are used (and flushed), so that tests never touch data of anything else
running on the same Redis: 13 the limiter's own tests, 14 the HTTP tests, 15 the tests that run
the service as a subprocess.
"""

import asyncio

import coredis
import pytest

from tests.conftest import IN_CI

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
TEST_DATABASES = (13, 14, 15)


def redis_url(database: int) -> str:
    assert database in TEST_DATABASES, f"tests use Redis databases {TEST_DATABASES} only"
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{database}"


async def redis_answers(host: str = REDIS_HOST, port: int = REDIS_PORT) -> bool:
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


async def empty_redis_database(database: int) -> str:
    """The URL of test database `database`, emptied; skips the test if Redis is down, or fails
    it when CI=true."""
    url = redis_url(database)
    if not await redis_answers():
        message = f"Redis at {REDIS_HOST}:{REDIS_PORT} is unreachable"
        if IN_CI:
            pytest.fail(message + " (CI=true: Redis tests must run)")
        pytest.skip(message)
    client = coredis.Redis.from_url(url, decode_responses=True)
    try:
        await client.flushdb()
    finally:
        client.connection_pool.disconnect()
    return url


async def stored_lists(url: str) -> dict[str, list[str]]:
    """Every list in the database at `url`, by key: what the limiter stored."""
    client = coredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = [key async for key in client.scan_iter()]
        return {key: list(await client.lrange(key, 0, -1)) for key in keys}
    finally:
        client.connection_pool.disconnect()
