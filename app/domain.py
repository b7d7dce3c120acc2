"""Rules of the chat domain that several layers enforce, each defined here once: the roles a
message can have, the ratings of a reply, who wrote a title, and what text a user id and a
stored field may hold."""

from typing import Final, Literal, get_args

Role = Literal["user", "assistant", "system"]
MESSAGE_ROLES: Final[tuple[Role, ...]] = get_args(Role)

# Feedback on a reply (thumbs up or down), and how long its optional comment may be.
Rating = Literal["up", "down"]
RATINGS: Final[tuple[Rating, ...]] = get_args(Rating)
FEEDBACK_COMMENT_MAX_CHARS: Final = 2_000
# Who wrote a session's title: the seed (its first user message, cut), the model, the user.
TitleSource = Literal["message", "model", "user"]
TITLE_SOURCES: Final[tuple[TitleSource, ...]] = get_args(TitleSource)

# An import's state (app/imports): running, then done or failed; and what the file was (a
# ChatGPT export, or this service's export of several sessions or of one).
ImportState = Literal["running", "done", "failed"]
IMPORT_STATES: Final[tuple[ImportState, ...]] = get_args(ImportState)
ExportKind = Literal["chatgpt", "sessions", "session"]

# A user id comes from a request body, a query or a token's `sub`: the same limit for all.
USER_ID_MAX_CHARS: Final = 255


def unstorable_reason(text: str) -> str | None:
    """Why one of the databases cannot store `text` (None: both can), so both behave the same.

    PostgreSQL refuses NUL in text; lone surrogates (legal in JSON escapes) are not UTF-8.
    """
    if "\x00" in text:
        return "must not contain NUL (\\u0000) characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (no unpaired surrogates)"
    return None


def user_id_problem(user_id: str) -> str | None:
    """Why `user_id` cannot be a user id (None: it can): 1 to USER_ID_MAX_CHARS storable
    characters."""
    if not user_id:
        return "must not be empty"
    if len(user_id) > USER_ID_MAX_CHARS:
        return f"must be at most {USER_ID_MAX_CHARS} characters (got {len(user_id)})"
    return unstorable_reason(user_id)
