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


def test_titles_are_written_by_default_only_with_a_model_provider() -> None:
    assert Settings(_env_file=None, assistant_provider="openai").titles_enabled
    assert not Settings(_env_file=None, assistant_provider="knowledge_base").titles_enabled
    assert not Settings(_env_file=None, assistant_provider="echo").titles_enabled
    assert not Settings(
        _env_file=None, assistant_provider="openai", title_generation=False
    ).titles_enabled


def test_title_generation_with_an_offline_assistant_is_refused() -> None:
    """Asked for explicitly with no model to ask: a clear error, not titles silently missing."""
    for provider in ("knowledge_base", "echo"):
        with pytest.raises(ValidationError, match="TITLE_GENERATION=true needs"):
            Settings(_env_file=None, assistant_provider=provider, title_generation=True)


def test_the_title_model_is_the_chat_model_unless_named() -> None:
    settings = Settings(_env_file=None, openai_model="gpt-4o", title_model="  ")
    assert settings.title_model_name == "gpt-4o"
    assert Settings(_env_file=None, title_model="small-1").title_model_name == "small-1"
