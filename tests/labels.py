"""Text for the label tests (titles, previews, snippets), shared by the unit and API tests:
characters that show, characters that do not, and a Hypothesis strategy that mixes them."""

from hypothesis import strategies as st

BIDI_CONTROLS = [
    *map(chr, range(0x202A, 0x202F)),  # LRE, RLE, PDF, LRO, RLO
    *map(chr, range(0x2066, 0x206A)),  # LRI, RLI, FSI, PDI
    "\u200e",  # LRM
    "\u200f",  # RLM
    "\u061c",  # ALM
]
# Each draws nothing; a label of only these (and whitespace) has nothing to show.
INVISIBLE = [
    *BIDI_CONTROLS,
    "\u200b",  # zero-width space
    "\u200c",  # zero-width non-joiner
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\ufeff",  # byte order mark
    "\u00ad",  # soft hyphen
    "\ufe0f",  # variation selector 16
    "\U000e0100",  # variation selector 17
    "\u0301",  # combining acute accent, on nothing
    "\u20dd",  # combining enclosing circle, on nothing
    "\u3164",  # Hangul filler
    "\u2800",  # Braille pattern blank
    "\U000e0067",  # tag g
    "\x07",  # a control character
]

# A skin tone extends the emoji before it, and shows on its own.
VISIBLE = ["a", "Z", "7", "!", "\u00e9", "\u05e9", "\u0639", "\u4e2d", "\U0001f469", "\U0001f3fd"]
# Whitespace, and what can extend a cluster without showing alone: marks, a joiner, a selector.
EXTENDING = [" ", "\n", "\u00a0", "\u0301", "\u0364", "\u094d", "\u200d", "\ufe0f"]
# Any mix of the above, and a letter under a pile of marks followed by more text.
label_texts = st.text(
    alphabet=st.sampled_from([*VISIBLE, *EXTENDING, *INVISIBLE]), max_size=300
) | st.builds(
    lambda base, marks, rest: base + "\u0301" * marks + rest,
    st.sampled_from(VISIBLE),
    st.integers(0, 200),
    st.text(alphabet=st.sampled_from([*VISIBLE, *INVISIBLE]), max_size=60),
)


def has_visible(text: str) -> bool:
    """Whether `text` (made of the characters above) has anything to show."""
    return any(char in VISIBLE for char in text)


def zalgo(marks: int) -> str:
    """One grapheme cluster: a letter and `marks` combining marks."""
    return "Z" + ("\u0301\u0302\u0303\u0304" * marks)[:marks]
