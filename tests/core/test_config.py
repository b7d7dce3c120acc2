"""Settings that only make sense together are refused together."""

import pytest
from pydantic import ValidationError

from app.config import Settings


def test_a_stale_bound_within_two_heartbeats_is_refused() -> None:
    """A process that reports on time must never look dead to the others."""
    with pytest.raises(ValidationError, match="PROCESS_STALE_SECONDS"):
        Settings(_env_file=None, process_heartbeat_seconds=5, process_stale_seconds=10)
    settings = Settings(_env_file=None, process_heartbeat_seconds=5, process_stale_seconds=11)
    assert settings.process_stale_seconds == 11
