"""The rate limit shared through Redis holds across processes: two real services
(`python -m app`) on one database and one Redis, sent bursts of messages at once, accept
exactly the allowed number between them."""

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from tests.api.helpers import CHAT
from tests.conftest import DatabaseFactory
from tests.redis_helpers import empty_redis_database, stored_lists
from tests.service_process import run_service
from tests.tokens import ISSUER, JWT_SECRET, hs256_token

PER_MINUTE = 10
RATES = f"{PER_MINUTE}/minute;100/hour"
BURST = 40  # messages sent to each process at once


async def burst(client: httpx.AsyncClient, token: str, size: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {token}"}
    return await asyncio.gather(
        *(client.post(CHAT, json={"message": f"m{i}"}, headers=headers) for i in range(size))
    )


async def test_two_processes_sharing_redis_accept_exactly_the_limit_from_a_burst(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    database_url = await database_factory.create_migrated("postgresql")
    redis_url = await empty_redis_database(15)
    env = {
        "AUTH_JWT_SECRET": JWT_SECRET,
        "AUTH_ISSUER": ISSUER,
        "RATE_LIMIT_MESSAGES": RATES,
        "REDIS_URL": redis_url,
        "ASSISTANT_PROVIDER": "echo",
        "ASSISTANT_STREAM_DELAY_MS": "0",
    }
    limits = httpx.Limits(max_connections=BURST)
    async with (
        run_service(tmp_path, database_url, env) as service_a,
        run_service(tmp_path, database_url, env) as service_b,
        httpx.AsyncClient(base_url=service_a.base_url, timeout=30, limits=limits) as client_a,
        httpx.AsyncClient(base_url=service_b.base_url, timeout=30, limits=limits) as client_b,
    ):
        # One user per round, so that each round starts from an empty allowance.
        for user in ("alice", "bob", "carol"):
            token = hs256_token(user)
            at_a, at_b = await asyncio.gather(
                burst(client_a, token, BURST), burst(client_b, token, BURST)
            )
            statuses = Counter(response.status_code for response in [*at_a, *at_b])
            assert statuses == {200: PER_MINUTE, 429: 2 * BURST - PER_MINUTE}, (
                user,
                statuses,
                service_a.output(),
                service_b.output(),
            )
            for response in [*at_a, *at_b]:
                if response.status_code == 429:
                    assert 1 <= int(response.headers["Retry-After"]) <= 60

    # Each window counted exactly the accepted messages.
    stored = await stored_lists(redis_url)
    assert sorted(len(entries) for entries in stored.values()) == [PER_MINUTE] * 6, stored
