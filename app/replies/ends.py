"""A reply's end as it is written, and the ends this process could not write yet.

A reply's end is one transaction (`reply_queries.finish_reply`). When the database is
unavailable at that moment, the end is kept here and written again by this process's
heartbeat (app/replies/liveness.py) every round until it is saved, and once more at shutdown:
otherwise the reply would stay "generating" for as long as this process lives, since its
heartbeat keeps the sweeps of other processes away from it. Each retry is the same transaction
with the same process check, so a reply that someone else finished meanwhile is not written
twice.
"""

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.kit import metrics
from app.kit.db.engine import Database
from app.kit.text import make_preview
from app.replies import queries as reply_queries

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplyFinish:
    """What finishing a reply writes: its text and metadata, by the process generating it."""

    message_id: uuid.UUID
    process_id: uuid.UUID
    content: str
    metadata: dict[str, Any]

    async def write(self, db: Database) -> bool:
        """Write it in one transaction; False if the reply was no longer this process's
        (finished by another process, or deleted)."""
        async with db.write() as conn:
            finished = await reply_queries.finish_reply(
                conn,
                message_id=self.message_id,
                process_id=self.process_id,
                content=self.content,
                metadata=self.metadata,
                # A reply without text (failed) leaves the session's preview as it was.
                preview=make_preview(self.content) if self.content.strip() else None,
            )
        return finished is not None


@dataclass(slots=True)
class _Unsaved:
    finish: ReplyFinish
    since: float = field(default_factory=time.monotonic)
    attempts: int = 1


class UnsavedEnds:
    """The ends of this process's replies that could not be written, by reply id, oldest
    first."""

    def __init__(self) -> None:
        self._ends: dict[uuid.UUID, _Unsaved] = {}

    def __contains__(self, message_id: uuid.UUID) -> bool:
        return message_id in self._ends

    def __len__(self) -> int:
        return len(self._ends)

    def keep(self, finish: ReplyFinish, error: BaseException) -> None:
        """Keep an end whose write failed with `error`, to write it again."""
        if finish.message_id not in self._ends:
            metrics.REPLY_ENDS_UNSAVED.inc()
        self._ends[finish.message_id] = _Unsaved(finish)
        logger.warning(
            "the end of reply %s could not be saved (%r): it stays generating until the "
            "next heartbeat writes it again",
            finish.message_id,
            error,
        )

    def abandon(self) -> int:
        """Forget the ends kept (this process is going); how many there were."""
        count = len(self._ends)
        self._ends.clear()
        metrics.REPLY_ENDS_UNSAVED.dec(count)
        return count

    async def save(self, db: Database) -> list[uuid.UUID]:
        """Write the kept ends again, oldest first; the ids of the replies saved now.

        An end found finished by someone else is dropped. The first end that fails again
        stops the round (the database is still away: each would wait for it in turn) and
        goes last, so that one end that always fails does not hold up the others.
        """
        saved: list[uuid.UUID] = []
        for message_id, unsaved in list(self._ends.items()):
            try:
                written = await unsaved.finish.write(db)
            except Exception as exc:
                unsaved.attempts += 1
                del self._ends[message_id]
                self._ends[message_id] = unsaved
                logger.warning(
                    "%d reply ends are still unsaved (the oldest for %.0fs): %r",
                    len(self._ends),
                    time.monotonic() - unsaved.since,
                    exc,
                )
                break
            del self._ends[message_id]
            metrics.REPLY_ENDS_UNSAVED.dec()
            if written:
                saved.append(message_id)
                logger.info(
                    "saved the end of reply %s at attempt %d, %.1fs after it came",
                    message_id,
                    unsaved.attempts + 1,
                    time.monotonic() - unsaved.since,
                )
            else:
                logger.info(
                    "reply %s was finished elsewhere before its end could be saved here",
                    message_id,
                )
        return saved
