"""The default assistant, tried as a new user would: the served app answers from the sample
knowledge base (knowledge/), cites its sources, streams, and stores what it cited."""

from pathlib import Path
from typing import Any

import pytest

from app.config import PROJECT_ROOT, Settings
from app.kit.db.engine import Database
from app.main import create_app
from tests.api.helpers import (
    assert_stream_succeeded,
    get_session,
    reply_summary,
    send,
    send_stream,
    stored_messages,
)
from tests.conftest import LiveServer, make_settings, serve

SAMPLE_DIR = PROJECT_ROOT / "knowledge"
QUESTION = "What payment processors do you support?"
PROCESSORS_PATH = "payments.md#supported-payment-processors"
KNOWLEDGE_METADATA = {
    "provider": "knowledge_base",
    "model": "bm25-extractive",
    "status": "complete",
    "finish_reason": "stop",
}
_ENV = ("ASSISTANT_PROVIDER", "KNOWLEDGE_BASE_DIR", "KNOWLEDGE_BASE_TOP_K", "ASSISTANT_RAG")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def knowledge_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "assistant_provider": "knowledge_base",
        "assistant_stream_delay_ms": 0,
        "knowledge_base_dir": str(SAMPLE_DIR),
    }
    values.update(overrides)
    return make_settings(settings.database_url, **values)


async def the_reply(live: LiveServer, database: Database, session_id: str) -> dict[str, Any]:
    """The session's stored assistant message, once its reply is complete."""
    await live.app.state.reply_tasks.wait_idle()
    rows = await stored_messages(database, session_id)
    assert [row["role"] for row in rows] == ["user", "assistant"]
    return rows[1]


def test_knowledge_base_is_the_default_provider(clean_env: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)

    assert defaults.assistant_provider == "knowledge_base"
    assert defaults.knowledge_base_dir == "knowledge"
    assert defaults.knowledge_base_top_k == 3
    assert defaults.assistant_rag is False


def test_the_default_folder_is_the_shipped_sample_from_the_repo_root(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.chdir(PROJECT_ROOT)

    folder = Path(Settings(_env_file=None).knowledge_base_dir).resolve()

    assert folder == SAMPLE_DIR.resolve()
    assert (folder / "payments.md").is_file()


async def test_chat_answers_from_the_sample_and_cites_it(
    settings: Settings, database: Database
) -> None:
    async with serve(create_app(knowledge_settings(settings))) as live:
        data = await send(live.client, QUESTION)
        stored = await the_reply(live, database, data["session_id"])
        session = await get_session(live.client, data["session_id"])

    answer = data["response"]
    assert "Stripe" in answer
    assert "\nSources:\n" in answer
    assert f"[1] Payments > Supported payment processors ({PROCESSORS_PATH})" in answer
    assert "couldn't find" not in answer

    assert stored["content"] == answer
    metadata = stored["metadata"]
    assert reply_summary(metadata) == KNOWLEDGE_METADATA
    assert metadata["usage"] is None
    sources = metadata["sources"]
    assert sources[0]["path"] == PROCESSORS_PATH
    assert sources[0]["title"] == "Payments > Supported payment processors"
    assert all(isinstance(s["score"], float) and s["score"] > 0 for s in sources)
    # Every stored source is cited in the answer, in order.
    for number, source in enumerate(sources, start=1):
        assert f"[{number}] {source['title']} ({source['path']})" in answer
    assert f"[{len(sources) + 1}]" not in answer

    assistant_message = session["messages"][1]
    assert assistant_message["content"] == answer
    assert assistant_message["metadata"]["sources"] == sources


async def test_streaming_gives_the_same_answer_as_deltas(
    settings: Settings, database: Database
) -> None:
    async with serve(create_app(knowledge_settings(settings))) as live:
        plain = await send(live.client, QUESTION)
        result = await send_stream(live.client, {"message": QUESTION})
        started, done = assert_stream_succeeded(result)
        stored = await the_reply(live, database, started.data["session_id"])
        plain_stored = await the_reply(live, database, plain["session_id"])

    assert result.names.count("delta") > 10
    assert result.text == plain["response"]
    assert "Stripe" in result.text
    assert str(stored["id"]) == done.data["message_id"]
    assert stored["content"] == result.text
    assert reply_summary(stored["metadata"]) == KNOWLEDGE_METADATA
    assert stored["metadata"]["sources"] == plain_stored["metadata"]["sources"]
    assert stored["metadata"]["sources"][0]["path"] == PROCESSORS_PATH


async def test_unrelated_questions_get_a_plain_no_answer(
    settings: Settings, database: Database
) -> None:
    async with serve(create_app(knowledge_settings(settings))) as live:
        data = await send(live.client, "what is the meaning of life")
        stored = await the_reply(live, database, data["session_id"])

    assert data["response"].startswith("I couldn't find anything about that in the knowledge base.")
    assert "Payments" in data["response"]
    assert "Sources:" not in data["response"]
    assert reply_summary(stored["metadata"]) == KNOWLEDGE_METADATA
    assert stored["metadata"]["sources"] == []


async def test_a_follow_up_in_the_session_answers_the_new_question(
    settings: Settings, database: Database
) -> None:
    async with serve(create_app(knowledge_settings(settings))) as live:
        first = await send(live.client, QUESTION)
        second = await send(live.client, "And refunds?", session_id=first["session_id"])
        await live.app.state.reply_tasks.wait_idle()
        rows = await stored_messages(database, first["session_id"])

    refunds = "[1] Refunds and disputes > Issuing a refund (refunds.md#issuing-a-refund)"
    assert refunds in second["response"]
    assert "Stripe" not in second["response"]
    assert [r["role"] for r in rows] == ["user", "assistant", "user", "assistant"]
    assert rows[3]["metadata"]["sources"][0]["path"] == "refunds.md#issuing-a-refund"


async def test_knowledge_base_dir_from_the_environment(
    settings: Settings, database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "widgets.md").write_text(
        "# Widgets\n\n## Widget colours\n\nOur widgets come in teal, magenta and ochre.\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("KNOWLEDGE_BASE_DIR", str(tmp_path))
    app_settings = make_settings(
        settings.database_url, assistant_provider="knowledge_base", assistant_stream_delay_ms=0
    )
    assert app_settings.knowledge_base_dir == str(tmp_path)

    async with serve(create_app(app_settings)) as live:
        widgets = await send(live.client, "Which colours do widgets come in?")
        stored = await the_reply(live, database, widgets["session_id"])
        processors = await send(live.client, QUESTION)

    assert "Our widgets come in teal, magenta and ochre." in widgets["response"]
    assert "[1] Widgets > Widget colours (widgets.md#widget-colours)" in widgets["response"]
    assert [s["path"] for s in stored["metadata"]["sources"]] == ["widgets.md#widget-colours"]
    # The sample is not searched any more.
    assert "Stripe" not in processors["response"]
    assert processors["response"] == (
        "I couldn't find anything about that in the knowledge base. It covers: Widgets."
    )


async def test_out_of_the_box_from_the_repo_root(
    settings: Settings, database: Database, clean_env: pytest.MonkeyPatch
) -> None:
    """No assistant settings at all, started from the project folder like `make run`."""
    clean_env.chdir(PROJECT_ROOT)
    app_settings = Settings(
        _env_file=None,
        database_url=settings.database_url,
        migrate_on_startup=False,
        assistant_stream_delay_ms=0,
    )

    async with serve(create_app(app_settings)) as live:
        data = await send(live.client, QUESTION)
        stored = await the_reply(live, database, data["session_id"])

    assert "Stripe" in data["response"]
    assert f"({PROCESSORS_PATH})" in data["response"]
    assert reply_summary(stored["metadata"]) == KNOWLEDGE_METADATA
