"""How message text becomes the sidebar's one-line labels: titles and last-message previews
(and, with these rules, search snippets: app/search/snippets.py).

A label is made of the text's grapheme clusters, with four rules on top of the length cut:
- whitespace runs (newlines too) become one space, and the ends are trimmed;
- bidirectional controls (U+202A to U+202E, U+2066 to U+2069, U+200E, U+200F, U+061C) are
  dropped, rather than closed at the cut. A label is shown next to other text (a list, a
  window title, a notification), where an override or embedding left open reorders what
  follows it, and a cut can leave one open; closed, they would still let a label disguise its
  own text (U+202E shows `gnp.exe` as `exe.png`). An isolate around right-to-left words does
  carry meaning in running text, but a one-line label is best shown isolated whole (`<bdi>` or
  `dir="auto"`), which orders it by its first letter. Messages keep every control;
- what draws nothing (zero-width spaces, lone combining marks or variation selectors, format
  and control characters, fillers) is dropped;
- a cluster keeps at most its first LABEL_MAX_CLUSTER_CHARS code points, without an ellipsis:
  `Z` with 160 combining marks is one cluster, which would otherwise fill a title's whole
  budget and leave `...`.
A label with nothing left is empty, and a title then reads UNTITLED, as a session without
user messages does.
"""

import regex

# What a session without a title (no user message yet) is called.
UNTITLED = "New chat"

TITLE_MAX_CHARS = 50
PREVIEW_MAX_CHARS = 100
ELLIPSIS = "..."
# The longest emoji sequences are 10 code points (a kiss with two skin tones); a letter of a
# real script with its marks, an Indic conjunct included, is almost always shorter.
LABEL_MAX_CLUSTER_CHARS = 12

# Label rules shared with search snippets (app/search/snippets.py).
WHITESPACE_RUN = regex.compile(r"\s+")
GRAPHEME_CLUSTER = regex.compile(r"\X")
_SPACE = regex.compile(r"\s")
_BIDI_CONTROL = regex.compile(r"\p{Bidi_Control}+")
# What draws nothing: controls, format characters (zero-width ones included), separators,
# combining marks, default-ignorable code points (variation selectors, Hangul fillers, tags)
# and the blank Braille pattern.
_INVISIBLE = r"\p{Cc}\p{Cf}\p{Z}\p{M}\p{Default_Ignorable_Code_Point}\s\u2800"
_VISIBLE = regex.compile(rf"[^{_INVISIBLE}]")
# A run of invisible characters, or else the grapheme cluster starting here. Runs are skipped
# in one match, so text padded with 30,000 zero-width spaces costs a few matches, not 30,000
# turns of the loop. Prepended marks (Arabic number signs) are format characters that
# belong to the cluster they start, so a run stops at them.
_RUN_OR_CLUSTER = regex.compile(
    rf"(?V1)(?P<invisible>[[{_INVISIBLE}]--\p{{Grapheme_Cluster_Break=Prepend}}]+)|\X"
)


# A character that is not its own grapheme cluster, or draws nothing although it is one. Text
# without any (most text in Latin, Cyrillic, Greek, Arabic, Hebrew or CJK script, once its
# whitespace is collapsed) is cut by code points: the cluster walk below costs about 7x as
# much (a 400-character message's snippet: 285 µs against 42 µs), and a search page makes 20.
# At 1M sessions the walk alone took a common word's search from 6.4 to 12.3 ms p50.
_NOT_PLAIN = regex.compile(
    r"[^\p{Grapheme_Cluster_Break=Other}]|[\p{Default_Ignorable_Code_Point}\u2800]"
)


def shorten(text: str, max_chars: int | None) -> str:
    """`text` as a one-line label (the rules above) of at most `max_chars` code points, ending
    in "..." when cut; "" when nothing in it is visible. `max_chars` None: never cut.

    The cut falls between grapheme clusters, never inside one, so an emoji ZWJ sequence or a
    letter with combining marks is kept whole or dropped whole.
    """
    plain = _shorten_plain(text, max_chars)
    return plain if plain is not None else _shorten_clusters(text, max_chars)


def _shorten_plain(text: str, max_chars: int | None) -> str | None:
    """`shorten` of text whose head is plain (each character a cluster that shows); None when
    the cluster walk is needed. Only the head that can reach the label is looked at."""
    head = text if max_chars is None else text[: 2 * max_chars + 16]
    collapsed: str = WHITESPACE_RUN.sub(" ", head).strip()
    if _NOT_PLAIN.search(collapsed) is not None:
        return None
    if max_chars is not None and len(collapsed) > max_chars:
        return collapsed[: max_chars - len(ELLIPSIS)].rstrip() + ELLIPSIS
    # The head fits: the label is the whole text's only when the head was all of it.
    return collapsed if len(head) == len(text) else None


def _shorten_clusters(text: str, max_chars: int | None) -> str:
    """`shorten`, grapheme cluster by cluster: the reference for any text."""
    limit = len(text) if max_chars is None else max_chars
    budget = limit - len(ELLIPSIS)
    pieces: list[str] = []
    length = 0
    fitting = 0  # how many pieces end within `budget`, where a cut keeps them
    space = False
    # Ends at the first cluster past the limit: a long message costs what a short one does.
    for match in _RUN_OR_CLUSTER.finditer(text):
        if match.group("invisible") is not None:
            space = space or (bool(pieces) and _SPACE.search(match.group()) is not None)
            continue
        piece = _BIDI_CONTROL.sub("", match.group()[:LABEL_MAX_CLUSTER_CHARS])
        if _VISIBLE.search(piece) is None:
            continue
        if space:
            pieces.append(" ")
            length += 1
            space = False
        pieces.append(piece)
        length += len(piece)
        if length <= budget:
            fitting = len(pieces)
        if length > limit:
            return "".join(pieces[:fitting]).rstrip() + ELLIPSIS
    return "".join(pieces)


def make_title(first_user_message: str) -> str:
    return shorten(first_user_message, TITLE_MAX_CHARS) or UNTITLED


def make_chosen_title(title: str) -> str:
    """A title the user set: the same rules, never cut (its length is validated)."""
    return shorten(title, None) or UNTITLED


def make_preview(message: str) -> str:
    """The sidebar's `last_message`: "" when nothing in it is visible, as for a session
    without messages."""
    return shorten(message, PREVIEW_MAX_CHARS)
