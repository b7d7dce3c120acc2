"""Response schemas of imports: an import's progress and outcome."""

import uuid

from pydantic import Field

from app.domain import ExportKind, ImportState
from app.kit.schemas import BaseResponse, UTCTimestamp


class ImportFailure(BaseResponse):
    """A conversation that could not be imported; nothing of it was written."""

    title: str
    reason: str


class ImportStatus(BaseResponse):
    """An import's progress, and at its end its outcome."""

    import_id: uuid.UUID = Field(description="Ask `GET /api/v1/chat/imports/{import_id}`.")
    status: ImportState = Field(
        description="`running`, then `done` (every conversation was tried) or `failed` (the "
        "import stopped: `error` says why; what it had imported stays)."
    )
    format: ExportKind = Field(
        description="What the file was: a ChatGPT export (`chatgpt`), or this service's export "
        "of several sessions (`sessions`) or of one (`session`)."
    )
    total: int | None = Field(
        description="Conversations in the file; null while the file is still being read."
    )
    done: int = Field(description="Conversations tried so far: imported + skipped + failed.")
    imported: int = Field(description="Conversations imported as new sessions.")
    skipped: int = Field(description="Conversations skipped: imported before (same source id).")
    failed: list[ImportFailure] = Field(
        description="The conversations that could not be imported (the first 1,000), each "
        "with its title and why."
    )
    error: str | None = Field(description="Why the import stopped (status `failed`).")
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
