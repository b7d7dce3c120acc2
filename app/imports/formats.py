"""What an export file holds, read as a stream: which kind of export it is, how many
conversations it has, and each conversation as the service's terms (`Conversation`).

Two kinds: a ChatGPT data export's `conversations.json` (an array of conversations, each a
tree: `mapping` of nodes with `parent` and `children`, and `current_node`), and this service's
own JSON export (`GET /sessions/{id}/export`: one session, or an array of them). ijson reads
one conversation at a time, so memory holds one conversation, never the file.
"""

import heapq
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Annotated, Any

import ijson  # type: ignore[import-untyped]
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from app.domain import ExportKind, Rating, Role, TitleSource, unstorable_reason
from app.feedback.schemas import FeedbackComment

# The parts of a ChatGPT message that are never shown in its conversation.
_HIDDEN_CONTENT = {"user_editable_context", "thoughts", "reasoning_recap", "model_editable_context"}


class NotAnExport(ValueError):
    """The file is not JSON, or not an export this service reads: why, for the user."""


class BrokenConversation(ValueError):
    """One conversation cannot be imported: why, for the user (it fails alone)."""


@dataclass(frozen=True, slots=True)
class Feedback:
    rating: Rating
    comment: str | None
    updated_at: datetime


@dataclass(slots=True)
class Node:
    """One message to write, under `parent` (a key of another node; None: a first message)."""

    key: str
    parent: str | None
    role: Role
    content: str
    metadata: dict[str, Any]
    created_at: datetime
    feedback: Feedback | None = None


@dataclass(slots=True)
class Conversation:
    """A conversation in the service's terms; `nodes` parents first, in the order to write."""

    source_id: str
    title: str | None
    title_source: TitleSource
    created_at: datetime
    updated_at: datetime
    nodes: list[Node]
    # The node whose branch is current (None: the last written).
    current: str | None
    pinned: bool = False
    archived: bool = False
    # What the session's metadata records of its origin.
    origin: dict[str, Any] = field(default_factory=dict)


# --- Which export, and how many conversations ------------------------------------------------


# JSON nested deeper than this is refused (NotAnExport). ijson's `parse` builds the path of
# every event it reads, so N levels cost N² memory: 10,000 levels (a 20 KB file) took 270 MB,
# 100,000 (200 KB) got the process killed. The file is first read with `basic_parse`, which
# builds no paths, and the depth checked. A ChatGPT conversations.json is about 8 levels deep.
MAX_DEPTH = 64
_TOO_DEEP = f"This JSON is not an export: it is nested more than {MAX_DEPTH} levels deep"
# ijson's C parser turns a low surrogate escaped on its own (`\\udc00`) into bytes that are not
# UTF-8, and raises UnicodeDecodeError for them: not the JSONError of other bad JSON.
_UNPAIRED = (
    "The file is not valid JSON: a string holds an unpaired surrogate (an escape from \\udc00 "
    "to \\udfff on its own)"
)


def sniff(stream: IO[bytes]) -> ExportKind:
    """The kind of export, from its start (the first conversation at most); NotAnExport if it
    is not one. Rewinds the stream."""
    stream.seek(0)
    try:
        kind = _sniff_events(_events(stream))
    except ijson.JSONError as exc:
        raise NotAnExport(f"The file is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise NotAnExport(_UNPAIRED) from None
    finally:
        stream.seek(0)
    return kind


def _events(stream: IO[bytes]) -> Iterator[tuple[int, str, Any]]:
    """The file's JSON events, each with its depth (0: the top value; its keys and items: 1);
    NotAnExport past MAX_DEPTH."""
    depth = 0
    for event, value in ijson.basic_parse(stream, use_float=True):
        if event in ("end_map", "end_array"):
            depth -= 1
        yield depth, event, value
        if event in ("start_map", "start_array"):
            depth += 1
            if depth > MAX_DEPTH:
                raise NotAnExport(_TOO_DEEP)


def _sniff_events(events: Iterator[tuple[int, str, Any]]) -> ExportKind:
    _, event, _ = next(events, (0, "", None))
    if event == "start_map":
        keys = _keys_of(events, 1)
        if {"session_id", "messages"} <= keys:
            return "session"
        raise NotAnExport(
            "This JSON is not an export: expected a ChatGPT conversations.json (an array of "
            "conversations) or a session exported by this service"
        )
    if event != "start_array":
        raise NotAnExport(
            "This JSON is not an export: expected an array of conversations or a session"
        )
    _, event, _ = next(events, (0, "", None))
    if event == "end_array":
        return "chatgpt"  # an empty export: nothing to import either way
    if event != "start_map":
        raise NotAnExport("This JSON is not an export: the array does not hold conversations")
    keys = _keys_of(events, 2)
    if "mapping" in keys:
        return "chatgpt"
    if {"session_id", "messages"} <= keys:
        return "sessions"
    raise NotAnExport(
        "This JSON is not an export: its first conversation has neither `mapping` (ChatGPT) "
        "nor `session_id` and `messages` (this service)"
    )


def _keys_of(events: Iterator[tuple[int, str, Any]], depth: int) -> set[str]:
    """The keys of the object whose start was just read (its keys at `depth`), up to its end."""
    keys: set[str] = set()
    for at, event, value in events:
        if at == depth and event == "map_key":
            keys.add(value)
        elif at == depth - 1 and event == "end_map":
            break
    return keys


_STARTS = frozenset({"start_map", "start_array"})
_ENDS = frozenset({"end_map", "end_array"})


def count(stream: IO[bytes], kind: ExportKind) -> int:
    """How many conversations the file holds, read through once without building them: so
    a file whose JSON breaks off late, or nests too deep, is refused before anything is
    written. NotAnExport if it is not valid JSON."""
    if kind == "session":
        return 1  # sniff read the whole object
    stream.seek(0)
    total = 0
    # `_events`, inlined: its generator cost a third more CPU on this pass.
    depth = 0
    try:
        for event, _ in ijson.basic_parse(stream, use_float=True):
            if event in _ENDS:
                depth -= 1
                continue
            # Each item starts a value at depth 1: what is not an object is tried, and fails.
            if depth == 1:
                total += 1
            if event in _STARTS:
                depth += 1
                if depth > MAX_DEPTH:
                    raise NotAnExport(_TOO_DEEP)
    except ijson.JSONError as exc:
        raise NotAnExport(f"The file is not valid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise NotAnExport(_UNPAIRED) from None
    finally:
        stream.seek(0)
    return total


def items(stream: IO[bytes], kind: ExportKind) -> Iterator[Any]:
    """The file's conversations as parsed JSON, one at a time."""
    stream.seek(0)
    yield from ijson.items(stream, "" if kind == "session" else "item", use_float=True)


def read(item: Any, kind: ExportKind) -> Conversation:
    """One conversation of the file in the service's terms; BrokenConversation if it cannot
    be imported."""
    if not isinstance(item, dict):
        raise BrokenConversation("not a conversation (a JSON object was expected)")
    if kind == "chatgpt":
        return from_chatgpt(item)
    return from_session_export(item)


def title_of(item: Any) -> str:
    """A conversation's title for the list of failures, whatever shape it has."""
    title = item.get("title") if isinstance(item, dict) else None
    return title if isinstance(title, str) and title.strip() else "(untitled)"


# --- ChatGPT -----------------------------------------------------------------------------------


def from_chatgpt(conversation: dict[str, Any]) -> Conversation:
    mapping = conversation.get("mapping")
    if not isinstance(mapping, dict):
        raise BrokenConversation("no `mapping` of messages")
    source = conversation.get("conversation_id") or conversation.get("id")
    started = _epoch(conversation.get("create_time"))
    if started is None:
        raise BrokenConversation("no `create_time`")
    updated = _epoch(conversation.get("update_time")) or started
    default_model = conversation.get("default_model_slug")
    kept: dict[str, Node] = {}
    # Walk down from the roots, parents first, so that a skipped message's children attach
    # to its nearest kept ancestor (`kept_above`), and so a child's time is never before its
    # parent's (a message without a time takes its parent's).
    roots = [key for key, node in mapping.items() if _parent_key(node, mapping) is None]
    stack: list[tuple[str, str | None, datetime]] = [(key, None, started) for key in roots]
    seen: set[str] = set()
    order: list[str] = []
    while stack:
        key, kept_above, parent_time = stack.pop()
        if key in seen:
            raise BrokenConversation("the messages' `parent` and `children` form a cycle")
        seen.add(key)
        node = mapping.get(key)
        if not isinstance(node, dict):
            raise BrokenConversation(f"message {key!r} is missing from `mapping`")
        made = _chatgpt_node(key, node, kept_above, parent_time, default_model)
        below, time = kept_above, parent_time
        if made is not None:
            kept[key] = made
            order.append(key)
            below, time = key, made.created_at
        children = node.get("children") or []
        if not isinstance(children, list):
            raise BrokenConversation(f"message {key!r} has no list of `children`")
        stack.extend((str(child), below, time) for child in reversed(children))
    # A node the walk never reached would be left out without a word.
    if unreached := next((key for key in mapping if key not in seen), None):
        raise BrokenConversation(
            f"message {unreached!r} cannot be reached from the conversation's start: the "
            "messages' `parent` and `children` disagree or form a cycle"
        )
    current = conversation.get("current_node")
    return Conversation(
        source_id=f"chatgpt:{source}" if source else f"chatgpt:{started.isoformat()}",
        title=_text_or_none(conversation.get("title")),
        title_source="model",
        created_at=started,
        updated_at=updated,
        nodes=_oldest_first([kept[key] for key in order]),
        current=_nearest_kept(current, mapping, kept) if isinstance(current, str) else None,
        archived=conversation.get("is_archived") is True,
        origin={"source": "chatgpt", "conversation_id": source, "update_time": _iso(updated)},
    )


def _parent_key(node: Any, mapping: dict[str, Any]) -> str | None:
    parent = node.get("parent") if isinstance(node, dict) else None
    return parent if isinstance(parent, str) and parent in mapping else None


def _nearest_kept(key: str | None, mapping: dict[str, Any], kept: dict[str, Node]) -> str | None:
    """`key`, or its nearest ancestor that is imported (a hidden current node)."""
    steps = 0
    while key is not None and key not in kept and steps <= len(mapping):
        key = _parent_key(mapping.get(key), mapping)
        steps += 1
    return key if key in kept else None


def _chatgpt_node(
    key: str,
    node: dict[str, Any],
    parent: str | None,
    parent_time: datetime,
    default_model: Any,
) -> Node | None:
    """The message of a node as the service stores it; None for those never shown: the empty
    root, system messages, hidden ones (custom instructions, memory, reasoning)."""
    message = node.get("message")
    if not isinstance(message, dict):
        return None
    author = message.get("author") or {}
    role = author.get("role") if isinstance(author, dict) else None
    metadata = _dict(message.get("metadata"))
    content = _dict(message.get("content"))
    if (
        role not in ("user", "assistant", "tool")
        or metadata.get("is_visually_hidden_from_conversation")
        or _str(content.get("content_type")) in _HIDDEN_CONTENT
    ):
        return None
    text, attachments = _chatgpt_content(content)
    attachments += _chatgpt_files(metadata.get("attachments"))
    if not text.strip() and not attachments:
        return None  # an empty step between tool calls: nothing to show
    stored: dict[str, Any] = {"imported_from": "chatgpt", "source_message_id": message.get("id")}
    if role == "tool":
        stored["tool"] = author.get("name")
    model = metadata.get("model_slug") or (default_model if role == "assistant" else None)
    if isinstance(model, str) and role != "user":
        stored["model"] = model
    if attachments:
        stored["attachments"] = attachments
    created = _epoch(message.get("create_time"))
    return Node(
        key=key,
        parent=parent,
        # Tool output is the assistant's turn, shown as Markdown (a code block).
        role="user" if role == "user" else "assistant",
        content=text,
        metadata=stored,
        created_at=max(created, parent_time) if created else parent_time,
    )


def _chatgpt_content(content: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The text of a message's content as Markdown, and the images it refers to."""
    kind = content.get("content_type")
    parts = content.get("parts")
    parts = parts if isinstance(parts, list) else []
    attachments: list[dict[str, Any]] = []
    if kind == "code":
        language = content.get("language")
        fence = "" if language in (None, "unknown") else str(language)
        return f"```{fence}\n{_str(content.get('text'))}\n```", attachments
    if kind == "execution_output":
        return f"```\n{_str(content.get('text'))}\n```", attachments
    if kind == "tether_quote":
        quoted = "\n".join(f"> {line}" for line in _str(content.get("text")).splitlines())
        source = content.get("url") or content.get("domain") or ""
        title = content.get("title") or source
        return (f"{quoted}\n\n— [{title}]({source})" if source else quoted), attachments
    if kind == "system_error":
        return f"```\n{_str(content.get('name'))}: {_str(content.get('text'))}\n```", attachments
    texts: list[str] = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if isinstance(part.get("text"), str):  # an audio transcription
                texts.append(part["text"])
            elif "asset_pointer" in part or _str(part.get("content_type")).endswith("_pointer"):
                attachments.append(_asset(part))
    if not parts and isinstance(content.get("text"), str):
        texts.append(content["text"])  # tether_browsing_display and the like
    return "\n".join(t for t in texts if t), attachments


def _asset(part: dict[str, Any]) -> dict[str, Any]:
    kind = str(part.get("content_type", "asset")).removesuffix("_asset_pointer")
    described = {"type": kind, "asset_pointer": part.get("asset_pointer")}
    for name in ("width", "height", "size_bytes"):
        if isinstance(part.get(name), int | float):
            described[name] = part[name]
    return described


def _chatgpt_files(attachments: Any) -> list[dict[str, Any]]:
    if not isinstance(attachments, list):
        return []
    return [
        {"type": "file", **{k: a.get(k) for k in ("id", "name", "mime_type", "size") if k in a}}
        for a in attachments
        if isinstance(a, dict)
    ]


def _oldest_first(nodes: list[Node]) -> list[Node]:
    """Parents first, and otherwise by time (then as listed): the order they were written,
    so ordinals follow time and a fork's newest child is its newest message."""
    children: dict[str | None, list[tuple[datetime, int, Node]]] = {}
    for position, node in enumerate(nodes):
        children.setdefault(node.parent, []).append((node.created_at, position, node))
    ready = list(children.get(None, []))
    heapq.heapify(ready)
    ordered: list[Node] = []
    while ready:
        _, _, node = heapq.heappop(ready)
        ordered.append(node)
        for child in children.get(node.key, []):
            heapq.heappush(ready, child)
    return ordered


def _epoch(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


# --- This service's export ----------------------------------------------------------------------


def _in_utc(moment: datetime) -> datetime:
    """The time in UTC (one without an offset is taken as UTC); a ValueError for one outside
    years 1 to 9999 there (datetime raised OverflowError, which stopped the whole import)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{moment.isoformat()} is out of range in UTC") from None


_UTCTime = Annotated[datetime, AfterValidator(_in_utc)]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _ExportedFeedback(_Lenient):
    rating: Rating
    # As a PUT takes it: at most FEEDBACK_COMMENT_MAX_CHARS, blank as none.
    comment: FeedbackComment | None = None
    updated_at: _UTCTime


class _ExportedMessage(_Lenient):
    id: uuid.UUID
    role: Role
    content: str
    metadata: dict[str, Any] = {}
    created_at: _UTCTime
    parent_id: uuid.UUID | None = None
    feedback: _ExportedFeedback | None = None


class _ExportedSession(_Lenient):
    session_id: str
    title: str | None = None
    title_source: TitleSource = "message"
    created_at: _UTCTime
    updated_at: _UTCTime
    pinned: bool = False
    archived: bool = False
    current_message_id: uuid.UUID | None = None
    messages: list[_ExportedMessage]


def from_session_export(item: dict[str, Any]) -> Conversation:
    try:
        session = _ExportedSession.model_validate(item)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BrokenConversation(f"{where}: {first['msg']}") from None
    ids = {message.id for message in session.messages}
    for message in session.messages:
        if message.parent_id is not None and message.parent_id not in ids:
            raise BrokenConversation(f"message {message.id} follows a message that is not there")
    nodes = [
        Node(
            key=str(message.id),
            parent=None if message.parent_id is None else str(message.parent_id),
            role=message.role,
            content=message.content,
            metadata=message.metadata,
            created_at=message.created_at,
            feedback=None
            if message.feedback is None
            else Feedback(
                message.feedback.rating,
                message.feedback.comment,
                message.feedback.updated_at,
            ),
        )
        for message in session.messages
    ]
    if len(_oldest_first(nodes)) != len(nodes):
        raise BrokenConversation("the messages' `parent_id` form a cycle")
    current = session.current_message_id
    return Conversation(
        source_id=f"export:{session.session_id}",
        title=session.title,
        title_source=session.title_source,
        created_at=session.created_at,
        updated_at=session.updated_at,
        # Written in the order they were exported: the order they were written.
        nodes=_parents_first(nodes),
        current=None if current is None else str(current),
        pinned=session.pinned,
        archived=session.archived,
        origin={"source": "export", "session_id": session.session_id},
    )


def _parents_first(nodes: list[Node]) -> list[Node]:
    """As listed when every parent comes before its children (an export always is);
    otherwise parents first by time."""
    seen: set[str] = set()
    for node in nodes:
        if node.parent is not None and node.parent not in seen:
            return _oldest_first(nodes)
        seen.add(node.key)
    return nodes


# --- What every conversation must satisfy ---------------------------------------------------------


def check_storable(conversation: Conversation) -> None:
    """BrokenConversation if a text or metadata value is one the databases cannot store
    (NUL, unpaired surrogates): such a conversation fails whole rather than changed. Its id
    too (the session's source, and in its metadata), and its feedback comments."""
    for text in (conversation.source_id, *_strings(conversation.origin)):
        if (reason := unstorable_reason(text)) is not None:
            raise BrokenConversation(f"the conversation's id {reason}")
    for node in conversation.nodes:
        for text in (node.content, *_strings(node.metadata)):
            if (reason := unstorable_reason(text)) is not None:
                raise BrokenConversation(f"a {node.role} message {reason}")
        comment = None if node.feedback is None else node.feedback.comment
        if comment is not None and (reason := unstorable_reason(comment)) is not None:
            raise BrokenConversation(f"a feedback comment {reason}")
    if conversation.title is not None and unstorable_reason(conversation.title):
        raise BrokenConversation(f"the title {unstorable_reason(conversation.title)}")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
