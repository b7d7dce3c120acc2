"""The model call that writes a title, and the cleaning of its answer into one.

The answer of a model is not a title yet: models add labels ("Title: ..."), quotes of their
language, markdown and emoji, or a second line of explanation, whatever the prompt says.
`clean_title` keeps what a title is made of, cut as the seed's title is (`make_title`).
"""

import asyncio
import json
import logging
from pathlib import Path

import openai
import regex

from app.assistants.openai_compatible import openai_client, timed_out
from app.config import Settings
from app.kit.errors import TitleTimedOut, TitleUnavailable
from app.kit.text import make_title, shorten

logger = logging.getLogger(__name__)

# What the model is shown of each message of the first exchange: enough to tell what a
# conversation is about, and a bounded cost for a pasted document.
EXCERPT_MAX_CHARS = 2_000
# A few words, and room for a model that thinks aloud before them; the cut is make_title's.
TITLE_MAX_TOKENS = 60

# Quotes of any script, straight, curly, angle and corner.
_QUOTES = (
    "\"'`\u201c\u201d\u201e\u201f\u2018\u2019\u201a\u201b\u00ab\u00bb\u2039\u203a"
    "\u300c\u300d\u300e\u300f\uff02\uff07"
)
# "Title:" and its translations, with optional markdown around the word.
_LABEL = regex.compile(
    r"^[*_#\s]*(?:title|titel|titre|t[íi]tulo|titolo|tytu[łl]|заголовок|название|标题|標題|題名|"
    r"タイトル|제목|عنوان|כותרת|शीर्षक|ba\u015fl\u0131k|tiêu đề|judul)"
    # A colon (or its full-width form), a hyphen, an en or em dash.
    r"[*_\s]*[:\uff1a\-\u2013\u2014][*_\s]*",
    regex.IGNORECASE,
)
_HEADING = regex.compile(r"^\s*#{1,6}\s*")
_LIST_MARKER = regex.compile(r"^\s*(?:[-*+•‣◦]|\d{1,2}[.)])\s+")
# Emphasis and code marks; an underscore only at a word's edge, so snake_case survives.
_MARKDOWN = regex.compile(r"\*+|`+|(?<![\p{L}\p{N}])_+|_+(?![\p{L}\p{N}])|~~")
# Emoji and pictographs with what joins or modifies them: ZWJ, variation selectors, skin
# tones, keycaps, flags' regional indicators and tag characters.
_PICTOGRAPHS = regex.compile(
    r"[\p{Extended_Pictographic}\p{Emoji_Modifier}\p{Regional_Indicator}"
    r"\u200d\ufe0e\ufe0f\u20e3\U000e0020-\U000e007f]+"
)
_WHITESPACE_RUN = regex.compile(r"\s+")
_QUOTED = regex.compile(rf"^[{_QUOTES}\s]+|[{_QUOTES}\s]+$")
# One final full stop (not an ellipsis): a title is not a sentence.
_FINAL_STOP = regex.compile(r"(?<![.。])[.。]$")


def clean_title(answer: str) -> str | None:
    """The title in a model's answer, cut as titles are cut (`make_title`); None when nothing
    usable is left (an empty answer, only quotes, emoji or markdown)."""
    line = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    line = _from_json(line)
    previous = None
    # Labels, quotes and markdown nest in any order ("**Title:** «Voyage»"): peel until stable.
    while line != previous:
        previous = line
        line = _LABEL.sub("", line)
        line = _HEADING.sub("", line)
        line = _LIST_MARKER.sub("", line)
        line = _MARKDOWN.sub("", line)
        line = _PICTOGRAPHS.sub("", line)
        line = _WHITESPACE_RUN.sub(" ", line).strip()
        line = _QUOTED.sub("", line)
        line = _FINAL_STOP.sub("", line).strip()
    if not shorten(line, None):
        return None
    return make_title(line)


def _from_json(line: str) -> str:
    """The `title` of an answer given as JSON (`{"title": "..."}`), as some prompts ask for."""
    if not line.startswith("{"):
        return line
    try:
        value = json.loads(line)
    except ValueError:
        return line
    title = value.get("title") if isinstance(value, dict) else None
    return title if isinstance(title, str) else line


def _excerpt(text: str) -> str:
    text = text.strip()
    return text if len(text) <= EXCERPT_MAX_CHARS else text[:EXCERPT_MAX_CHARS] + "..."


class TitleWriter:
    """Asks the title model for a session's title, from its first exchange."""

    def __init__(
        self, client: openai.AsyncOpenAI, *, model: str, prompt: str, timeout_seconds: float
    ) -> None:
        self._client = client
        self.model = model
        self._prompt = prompt
        self._timeout_seconds = timeout_seconds

    async def aclose(self) -> None:
        """Close the client's connections (aiohttp warns of a session left open)."""
        await self._client.close()

    @classmethod
    def from_settings(cls, settings: Settings) -> "TitleWriter | None":
        """The writer the settings configure; None when no model writes titles. Reads the
        prompt file: a missing one stops the start-up with its path."""
        if not settings.titles_enabled:
            return None
        prompt = Path(settings.title_prompt_path).read_text(encoding="utf-8").strip()
        if not prompt:
            raise ValueError(f"TITLE_PROMPT_FILE {settings.title_prompt_path} is empty")
        return cls(
            openai_client(settings, timeout_seconds=settings.title_timeout_seconds),
            model=settings.title_model_name,
            prompt=prompt,
            timeout_seconds=settings.title_timeout_seconds,
        )

    async def write(self, question: str, reply: str | None = None) -> str:
        """A title for the conversation that starts with `question` (and `reply`, when there
        is one). TitleTimedOut after TITLE_TIMEOUT_SECONDS; TitleUnavailable when the model
        fails or answers nothing usable."""
        conversation = f"User: {_excerpt(question)}"
        if reply and reply.strip():
            conversation += f"\n\nAssistant: {_excerpt(reply)}"
        try:
            async with asyncio.timeout(self._timeout_seconds):
                completion = await self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": self._prompt},
                        {"role": "user", "content": conversation},
                    ],
                    stream=False,
                    max_tokens=TITLE_MAX_TOKENS,
                )
        except TimeoutError as exc:
            logger.warning("the title model did not answer in time: %r", exc)
            raise TitleTimedOut() from exc
        except openai.APIError as exc:
            if timed_out(exc):
                logger.warning("the title model did not answer in time: %r", exc)
                raise TitleTimedOut() from exc
            logger.warning("the title model failed: %r", exc)
            raise TitleUnavailable() from exc
        answer = completion.choices[0].message.content if completion.choices else None
        title = clean_title(answer or "")
        if title is None:
            logger.info("the title model's answer holds no title: %r", (answer or "")[:200])
            raise TitleUnavailable()
        return title
