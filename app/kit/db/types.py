"""Column types that behave the same on PostgreSQL and SQLite."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Text
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL returns aware values from TIMESTAMPTZ; SQLite stores text and returns naive
    values. Normalising both ways keeps ordering and serialisation identical on both.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares the stored text, so every value must share one format: naive UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def empty_json() -> dict[str, Any]:
    return {}


# A search document (app/search/fulltext.py): a tsvector with a GIN index on PostgreSQL; on SQLite
# the words as text, indexed by an FTS5 table over the column.
SearchDocument = Text().with_variant(TSVECTOR(), "postgresql")
