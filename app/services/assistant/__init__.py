"""Assistants: who writes the replies. `build_assistant` picks one from the settings."""

import asyncio
from pathlib import Path

from app.core.config import Settings
from app.services.assistant.base import (
    Assistant,
    AssistantError,
    Reply,
    ReplyEnd,
    ReplyEvent,
    Source,
    TextDelta,
    Turn,
    Usage,
)

__all__ = [
    "Assistant",
    "AssistantError",
    "Reply",
    "ReplyEnd",
    "ReplyEvent",
    "Source",
    "TextDelta",
    "Turn",
    "Usage",
    "build_assistant",
]


async def build_assistant(settings: Settings) -> Assistant:
    """The configured provider. Loading the knowledge base and a tokenizer touches the disk
    (and maybe the network), so it runs in a thread."""
    from app.services.assistant.echo import EchoAssistant
    from app.services.assistant.knowledge_base import KnowledgeBaseAssistant
    from app.services.assistant.openai_compatible import OpenAICompatibleAssistant
    from app.services.assistant.tokens import counter_for_model
    from app.services.knowledge import KnowledgeBase

    delay = settings.assistant_stream_delay_ms / 1000
    if settings.assistant_provider == "echo":
        return EchoAssistant(chunk_delay_seconds=delay)
    knowledge_dir = Path(settings.knowledge_base_dir)
    if settings.assistant_provider == "knowledge_base":
        knowledge = await asyncio.to_thread(KnowledgeBase.from_directory, knowledge_dir)
        return KnowledgeBaseAssistant(
            knowledge, top_k=settings.knowledge_base_top_k, chunk_delay_seconds=delay
        )
    counter = await asyncio.to_thread(counter_for_model, settings.openai_model)
    rag_knowledge = (
        await asyncio.to_thread(KnowledgeBase.from_directory, knowledge_dir)
        if settings.assistant_rag
        else None
    )
    return OpenAICompatibleAssistant(settings, counter=counter, knowledge=rag_knowledge)
