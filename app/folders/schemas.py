"""Request and response schemas of folders."""

import uuid
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from app.kit.schemas import BaseResponse, RequestBody, UTCTimestamp
from app.tags.schemas import checked_label, trimmed_pattern

FOLDER_NAME_MAX_CHARS = 100
# How deep folders nest: a top-level folder is at depth 1.
MAX_FOLDER_DEPTH = 10


FolderName = Annotated[
    str,
    checked_label(FOLDER_NAME_MAX_CHARS),
    Field(
        description=(
            f"1 to {FOLDER_NAME_MAX_CHARS} characters once trimmed; stored trimmed, on one "
            "line, in Unicode NFC. Unique among the folder's siblings, ignoring case and "
            "Unicode form (`é` as one character or as `e` and a combining accent)."
        ),
        json_schema_extra={"pattern": trimmed_pattern(FOLDER_NAME_MAX_CHARS)},
        examples=["Projects"],
    ),
]

ParentId = Annotated[
    uuid.UUID | None,
    Field(
        strict=False,
        description="The folder to put it in; null (or left out): at the top.",
    ),
]


def _without_null(schema: dict[str, Any]) -> None:
    """`anyOf: [X, null]` as plain X."""
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    schema.pop("default", None)


class FolderCreate(RequestBody):
    name: FolderName
    parent_id: ParentId = None


class FolderUpdate(RequestBody):
    """Rename or move a folder; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    name: FolderName | None = Field(default=None, json_schema_extra=_without_null)
    parent_id: ParentId = None

    @model_validator(mode="before")
    @classmethod
    def _name_not_null(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" in value and value["name"] is None:
            raise ValueError("name must not be null (leave the field out instead)")
        return value

    @model_validator(mode="after")
    def _changes_something(self) -> "FolderUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of name, parent_id")
        return self


class Folder(BaseResponse):
    """A folder, with its subfolders (`children`, by name)."""

    folder_id: uuid.UUID
    name: str
    parent_id: uuid.UUID | None = Field(description="Null: at the top.")
    created_at: UTCTimestamp
    session_count: int = Field(
        description="How many sessions are in this folder itself (not in its subfolders), "
        "archived ones left out."
    )
    children: list["Folder"]


class FoldersList(BaseResponse):
    """The caller's folders as a tree: the top-level ones, each with its subfolders."""

    folders: list[Folder]
