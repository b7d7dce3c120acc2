"""A session as a file: JSON (every message of every branch, each with its `parent_id`, and
`current_message_id`, the current branch's last message) or Markdown (the current branch, to
read)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from app.auth.access import Caller
from app.kit.db.engine import Database
from app.messages.schemas import ChatMessage
from app.sessions import service
from app.sessions.schemas import SessionDetail

ExportFormat = Literal["json", "markdown"]

_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


@dataclass(frozen=True, slots=True)
class ExportedSession:
    content: str
    media_type: str
    filename: str


async def export_session(
    db: Database, caller: Caller, session_id: str, *, export_format: ExportFormat
) -> ExportedSession:
    if export_format == "json":
        detail = await service.get_session_tree(db, caller, session_id)
        return ExportedSession(
            content=detail.model_dump_json(indent=2),
            media_type="application/json",
            filename=f"chat-{session_id}.json",
        )
    detail = await service.get_session(db, caller, session_id)
    return ExportedSession(
        content=as_markdown(detail),
        media_type="text/markdown; charset=utf-8",
        filename=f"chat-{session_id}.md",
    )


def as_markdown(detail: SessionDetail) -> str:
    lines = [
        f"# {detail.title}",
        "",
        f"- Session: `{detail.session_id}`",
        f"- Started: {_time(detail.created_at)}",
        f"- Last activity: {_time(detail.updated_at)}",
        f"- Messages: {detail.message_count}",
    ]
    for message in detail.messages:
        lines += ["", "---", "", f"### {_heading(message)}", "", message.content or "*(no reply)*"]
    return "\n".join(lines) + "\n"


def _heading(message: ChatMessage) -> str:
    heading = f"{_ROLE_NAMES[message.role]} · {_time(message.created_at)}"
    status = message.metadata.get("status")
    if status in ("failed", "incomplete"):
        heading += f" ({status})"
    return heading


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
