"""Assistants: who writes the replies. `build_assistant` picks one from the settings."""

import asyncio
from pathlib import Path

from app.assistants.base import (
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
from app.config import Settings

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
    from app.assistants.echo import EchoAssistant
    from app.assistants.knowledge import KnowledgeBase
    from app.assistants.knowledge_base import KnowledgeBaseAssistant
    from app.assistants.openai_compatible import OpenAICompatibleAssistant
    from app.assistants.tokens import counter_for_model

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
