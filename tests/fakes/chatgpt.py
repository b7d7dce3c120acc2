"""ChatGPT-shaped exports for the import tests: conversations as the data export writes them
(a `mapping` of nodes with `parent` and `children`, `current_node`), built node by node."""

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
T0 = 1_765_000_000.0  # 2025-12-06 05:46:40 UTC


@dataclass
class ChatGPTConversation:
    """One conversation; `add` appends a node under a parent and returns its id."""

    conversation_id: str
    title: str | None
    create_time: float = T0
    mapping: dict[str, Json] = field(default_factory=dict)
    current_node: str | None = None

    def root(self, node_id: str = "root") -> str:
        """The empty root the export starts every conversation with (message null)."""
        self.mapping[node_id] = {"id": node_id, "message": None, "parent": None, "children": []}
        return node_id

    def add(
        self,
        node_id: str,
        parent: str | None,
        role: str,
        content: Json | str,
        *,
        at: float | None,
        model: str | None = None,
        hidden: bool = False,
        author_name: str | None = None,
        attachments: list[Json] | None = None,
    ) -> str:
        if isinstance(content, str):
            content = {"content_type": "text", "parts": [content]}
        metadata: Json = {}
        if model is not None:
            metadata["model_slug"] = model
        if hidden:
            metadata["is_visually_hidden_from_conversation"] = True
        if attachments is not None:
            metadata["attachments"] = attachments
        self.mapping[node_id] = {
            "id": node_id,
            "message": {
                "id": node_id,
                "author": {"role": role, "name": author_name, "metadata": {}},
                "create_time": at,
                "update_time": None,
                "content": content,
                "status": "finished_successfully",
                "end_turn": True,
                "weight": 1.0,
                "metadata": metadata,
                "recipient": "all",
            },
            "parent": parent,
            "children": [],
        }
        if parent is not None:
            self.mapping[parent]["children"].append(node_id)
        self.current_node = node_id
        return node_id

    def as_json(self) -> Json:
        times = [
            n["message"]["create_time"]
            for n in self.mapping.values()
            if n["message"] and n["message"]["create_time"]
        ]
        return {
            "title": self.title,
            "create_time": self.create_time,
            "update_time": max(times, default=self.create_time) + 5,
            "mapping": self.mapping,
            "moderation_results": [],
            "current_node": self.current_node,
            "plugin_ids": None,
            "conversation_id": self.conversation_id,
            "conversation_template_id": None,
            "gizmo_id": None,
            "is_archived": False,
            "safe_urls": [],
            "default_model_slug": "gpt-4o",
            "id": self.conversation_id,
        }


def export_bytes(conversations: list[Json]) -> bytes:
    return json.dumps(conversations).encode()


def export_zip(conversations: list[Json], *, name: str = "conversations.json") -> bytes:
    """The data export as downloaded: conversations.json beside other files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("user.json", json.dumps({"id": "user-1", "email": "a@example.com"}))
        archive.writestr(name, export_bytes(conversations))
        archive.writestr("chat.html", "<html></html>")
    return buffer.getvalue()
