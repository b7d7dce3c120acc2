"""A searchable knowledge base built from a folder of Markdown documents.

Documents are split into passages at their headings and indexed with SQLite's FTS5 (BM25
ranking, Porter stemming) in an in-memory database: no network, no model weights, and the
same behaviour whichever database the service itself uses.
"""

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import regex

logger = logging.getLogger(__name__)

# ATX heading; a closing run of #s counts only after a space ("# Learn C#" keeps its #).
_HEADING = regex.compile(r"^(#{1,6})\s+(.+?)(?:\s+#+)?\s*$")
_FENCE = regex.compile(r"^\s*(```|~~~)")
_WORD = regex.compile(r"\w+")
_MAX_PASSAGE_CHARS = 1_500
# Words that frame a question ("how long does it take", "do you support", "can I get")
# rather than say what it is about.
_STOPWORDS = frozenset(
    (  # noqa: SIM905 - a list literal of 90 one-word strings would hide what it is
        "a an and are as at be been by can could did do does for from get gets got had has have "
        "how i if in into is it its me much many my no not of on or our so some than that the "
        "their then there this to us was we what when where which who why will with would you "
        "your yours about any please tell know need want take takes make long way also just "
        "support supports supported offer offers provide provides available possible there's "
        "i'm it's"
    ).split()
)


@dataclass(frozen=True, slots=True)
class Passage:
    title: str  # "Document > Section", for people
    path: str  # "file.md#section-anchor"
    text: str
    score: float = 0.0
    heading: str = ""  # the section's own heading, weighed most in search
    document: str = ""  # the document's title, weighed like the body


def query_terms(text: str) -> list[str]:
    """The words of `text` worth searching for, lower-cased, in order, without repeats."""
    terms = [word.lower() for word in _WORD.findall(text)]
    kept = [t for t in terms if len(t) > 1 and t not in _STOPWORDS]
    return list(dict.fromkeys(kept))


def split_markdown(markdown: str, path: str) -> list[Passage]:
    """Passages of a document: one per section, long sections cut at paragraph breaks."""
    document_title = ""
    sections: list[tuple[str, str, list[str]]] = [("", "", [])]  # (heading, anchor, lines)
    anchors_seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        heading = None if in_code else _HEADING.match(line)
        if heading is None:
            sections[-1][2].append(line)
            continue
        text = heading.group(2).strip()
        if len(heading.group(1)) == 1 and not document_title:
            document_title = text
        anchor = "-".join(_WORD.findall(text.lower()))
        repeats = anchors_seen.get(anchor, 0)
        anchors_seen[anchor] = repeats + 1
        sections.append((text, f"{anchor}-{repeats}" if repeats else anchor, []))
    document_title = document_title or path
    passages = []
    for heading, anchor, lines in sections:
        location = f"{path}#{anchor}" if anchor else path
        for chunk in _paragraph_chunks("\n".join(lines).strip()):
            passages.append(
                Passage(
                    title=_join_titles(document_title, heading),
                    path=location,
                    text=chunk,
                    heading="" if heading == document_title else heading,
                    document=document_title,
                )
            )
    return passages


def _join_titles(document_title: str, heading: str) -> str:
    return document_title if heading in ("", document_title) else f"{document_title} > {heading}"


def _paragraph_chunks(text: str) -> list[str]:
    chunks: list[str] = []
    for paragraph in regex.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if chunks and len(chunks[-1]) + len(paragraph) + 2 <= _MAX_PASSAGE_CHARS:
            chunks[-1] += "\n\n" + paragraph
        else:
            chunks.append(paragraph)
    return chunks


class KnowledgeBase:
    """Full-text search over passages. Queries take well under a millisecond for a few
    thousand passages, so they run inline rather than in a thread."""

    def __init__(self, passages: list[Passage]) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(
            "CREATE VIRTUAL TABLE passages USING fts5(heading, body, document, "
            "title UNINDEXED, path UNINDEXED, tokenize='porter unicode61 remove_diacritics 2')"
        )
        self._db.executemany(
            "INSERT INTO passages (heading, body, document, title, path) VALUES (?, ?, ?, ?, ?)",
            [(p.heading, p.text, p.document, p.title, p.path) for p in passages],
        )
        self.size = len(passages)
        self.titles = sorted({p.title.split(" > ")[0] for p in passages})

    @classmethod
    def from_directory(cls, folder: Path) -> "KnowledgeBase":
        passages: list[Passage] = []
        if folder.is_dir():
            for file in sorted(folder.rglob("*.md")):
                if file.name.lower() == "readme.md":  # describes the folder, not the product
                    continue
                relative = file.relative_to(folder).as_posix()
                passages.extend(split_markdown(file.read_text(encoding="utf-8"), relative))
        else:
            logger.warning("knowledge base folder %s does not exist; it is empty", folder)
        logger.info("knowledge base: %d passages from %s", len(passages), folder)
        return cls(passages)

    def search(self, query: str, limit: int) -> list[Passage]:
        """The passages that best match `query`, best first (BM25; a section's own heading
        weighs three times its body; the document's title, shared by all its sections, once)."""
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        match = " OR ".join(f'"{term}"' for term in terms)
        rows = self._db.execute(
            "SELECT title, path, body, bm25(passages, 3.0, 1.0, 1.0) AS rank FROM passages "
            "WHERE passages MATCH ? ORDER BY rank LIMIT ?",
            (match, limit),
        ).fetchall()
        return [Passage(title=t, path=p, text=b, score=-rank) for t, p, b, rank in rows]
