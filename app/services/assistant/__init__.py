"""Assistants: who writes the replies. `build_assistant` picks one from the settings."""

from app.core.config import Settings
from app.services.assistant.base import Assistant, AssistantError, Reply, Turn
from app.services.assistant.echo import EchoAssistant

__all__ = ["Assistant", "AssistantError", "Reply", "Turn", "build_assistant"]


def build_assistant(settings: Settings) -> Assistant:
    if settings.assistant_provider == "echo":
        return EchoAssistant(chunk_delay_seconds=settings.echo_stream_delay_ms / 1000)
    raise ValueError(f"unknown ASSISTANT_PROVIDER {settings.assistant_provider!r}")
