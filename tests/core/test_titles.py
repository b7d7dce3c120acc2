"""Cleaning a model's answer into a title (app/titles/writer.py `clean_title`), and the writer's
configuration and errors: no database."""

import socket
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, Settings
from app.kit.errors import TitleUnavailable
from app.kit.text import TITLE_MAX_CHARS, make_title
from app.titles.writer import TitleWriter, clean_title

# One grapheme cluster of 7 code points: woman ZWJ woman ZWJ girl ZWJ boy.
FAMILY = "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466"


@pytest.mark.parametrize(
    ("answer", "title"),
    [
        # Already a title.
        ("Trip to Paris", "Trip to Paris"),
        # Labels, in several languages, with or without markdown and spaces.
        ("Title: Trip to Paris", "Trip to Paris"),
        ("TITLE - Trip to Paris", "Trip to Paris"),
        ("**Title:** Trip to Paris", "Trip to Paris"),
        ("Titre : Voyage à Paris", "Voyage à Paris"),
        ("Título: Viaje a París", "Viaje a París"),
        ("Заголовок: Погода в Москве", "Погода в Москве"),
        ("标题\uff1a北京旅游攻略", "北京旅游攻略"),  # a full-width colon
        ("タイトル\uff1a東京の天気", "東京の天気"),
        ("제목: 서울 여행 계획", "서울 여행 계획"),
        ("عنوان: الطقس في القاهرة", "الطقس في القاهرة"),
        # Quotes of any script, around the title or around and after a label.
        ('"Trip to Paris"', "Trip to Paris"),
        ("'Trip to Paris'", "Trip to Paris"),
        ("\u201cTrip to Paris\u201d", "Trip to Paris"),
        ("\u2018Trip to Paris\u2019", "Trip to Paris"),
        ("«\u00a0Voyage à Paris\u00a0»", "Voyage à Paris"),
        ("„Reise nach Berlin“", "Reise nach Berlin"),
        ("「東京の天気」", "東京の天気"),
        ("『ラーメンの作り方』", "ラーメンの作り方"),
        ('Title: "Trip to Paris"', "Trip to Paris"),
        ("**«Voyage à Paris»**", "Voyage à Paris"),
        # Quotes inside the title stay.
        ("The “best” pizza in Naples", "The “best” pizza in Naples"),
        ("Students' rights", "Students' rights"),
        # Markdown: headings, emphasis, code, list markers.
        ("# Budget review Q3", "Budget review Q3"),
        ("### **Budget** review", "Budget review"),
        ("*Budget review*", "Budget review"),
        ("_Budget review_", "Budget review"),
        ("`pandas` groupby tips", "pandas groupby tips"),
        ("- Budget review", "Budget review"),
        ("1. Budget review", "Budget review"),
        ("~~Old~~ New plan", "Old New plan"),
        # ...but not an underscore inside a word.
        ("Python snake_case names", "Python snake_case names"),
        # Emoji and pictographs, with their joiners, modifiers and flags.
        ("🚀 Launch plan 🎉", "Launch plan"),
        (f"Family trip {FAMILY}", "Family trip"),
        ("👍🏽 Feedback round", "Feedback round"),
        ("Trip to 🇫🇷 France", "Trip to France"),
        ("Weather ☀️ forecast", "Weather forecast"),
        # Only the first non-empty line; whitespace collapsed; a final full stop dropped.
        ("\n\n  Trip to Paris  \nThis title reflects the question.", "Trip to Paris"),
        ("Trip\tto   Paris", "Trip to Paris"),
        ("Trip to Paris.", "Trip to Paris"),
        ("北京旅游攻略。", "北京旅游攻略"),
        ("Wait...", "Wait..."),
        # An answer in JSON, as some prompts ask for.
        ('{"title": "Trip to Paris"}', "Trip to Paris"),
        ("{not json", "{not json"),
        # Other scripts pass through.
        ("Погода в Москве", "Погода в Москве"),
        ("मौसम का हाल", "मौसम का हाल"),
        ("שאלה על פייתון", "שאלה על פייתון"),
        ("Ελληνική κουζίνα", "Ελληνική κουζίνα"),
    ],
)
def test_a_models_answer_becomes_a_title(answer: str, title: str) -> None:
    assert clean_title(answer) == title


def test_a_long_answer_is_cut_as_titles_are_cut() -> None:
    long = "A very long title that goes on and on about " + "many things " * 10
    assert clean_title(long) == make_title(long)
    assert len(clean_title(long) or "") == TITLE_MAX_CHARS
    # Grapheme-safe: a family emoji at the cut is dropped whole (and emoji are dropped anyway).
    assert clean_title("x" * 45 + "\u0301" * 2 + " tail " * 5) == make_title(
        "x" * 45 + "\u0301" * 2 + " tail " * 5
    )
    cjk = "東京" * 40
    assert clean_title(cjk) == make_title(cjk)


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "\n\n\n",
        '""',
        "«»",
        "「」",
        "```",
        "**",
        "# ",
        "Title:",
        "**Title:**",
        "🎉🎉🎉",
        FAMILY,
        '"🎉"',
        "\u200b\u200b",
        "\u202e",
    ],
)
def test_an_answer_without_a_title_is_unusable(answer: str) -> None:
    assert clean_title(answer) is None


def test_the_writer_follows_the_settings(tmp_path: Path) -> None:
    assert TitleWriter.from_settings(Settings(_env_file=None)) is None
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Name this chat.\n", encoding="utf-8")
    writer = TitleWriter.from_settings(
        Settings(
            _env_file=None,
            assistant_provider="openai",
            openai_base_url="http://127.0.0.1:9/v1",
            openai_model="big-1",
            title_prompt_file=str(prompt),
        )
    )
    assert writer is not None
    assert writer.model == "big-1"
    assert writer._prompt == "Name this chat."


async def test_an_unreachable_title_model_is_unavailable_not_a_timeout(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Name this chat.\n", encoding="utf-8")
    writer = TitleWriter.from_settings(
        Settings(
            _env_file=None,
            assistant_provider="openai",
            openai_base_url=f"http://127.0.0.1:{port}/v1",
            openai_model="big-1",
            title_prompt_file=str(prompt),
        )
    )
    assert writer is not None
    try:
        with pytest.raises(TitleUnavailable):
            await writer.write("Hi")
    finally:
        await writer.aclose()


def test_the_shipped_prompt_is_the_default(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, assistant_provider="openai")
    assert settings.title_prompt_path == PROJECT_ROOT / "app" / "titles" / "prompt.txt"
    assert settings.title_prompt_path.read_text(encoding="utf-8").strip()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        TitleWriter.from_settings(
            Settings(_env_file=None, assistant_provider="openai", title_prompt_file=str(empty))
        )
