"""Settings that only make sense together are refused together."""

import pytest
from pydantic import ValidationError

from app.config import PROJECT_ROOT, Settings


def test_a_stale_bound_within_two_heartbeats_is_refused() -> None:
    """A process that reports on time must never look dead to the others."""
    with pytest.raises(ValidationError, match="PROCESS_STALE_SECONDS"):
        Settings(_env_file=None, process_heartbeat_seconds=5, process_stale_seconds=10)
    settings = Settings(_env_file=None, process_heartbeat_seconds=5, process_stale_seconds=11)
    assert settings.process_stale_seconds == 11


def test_every_setting_is_in_env_example_and_the_readme() -> None:
    env_example = (PROJECT_ROOT / ".env.example").read_text()
    readme = (PROJECT_ROOT / "README.md").read_text()

    for name in (field.upper() for field in Settings.model_fields):
        assert f"{name}=" in env_example, name
        assert f"| `{name}` |" in readme, name


def test_public_base_url_is_an_http_url_without_a_trailing_slash() -> None:
    settings = Settings(_env_file=None, public_base_url=" https://chat.example.com/app/ ")
    assert settings.public_base_url == "https://chat.example.com/app"
    assert Settings(_env_file=None, public_base_url="").public_base_url is None
    for wrong in ("chat.example.com", "ftp://chat.example.com", "https://x.com/?a=b"):
        with pytest.raises(ValidationError):
            Settings(_env_file=None, public_base_url=wrong)
