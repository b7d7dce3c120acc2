"""The benchmark's message texts, and the searches run on them.

Words follow Zipf's law, as in real text: a few words are in most messages, most words in
very few. A message is drawn word by word from a vocabulary ranked by frequency (weight
1 / (rank + 2.7) ** 1.2, Zipf-Mandelbrot): everyday words ("the", "my", "how") and the
domain's ("payment", "refund", "webhook"), about two thirds of all words, then a long tail of
made-up names (products, merchants, places), many of which occur in a single text of the
pool. So a search can be for a word in half of a user's sessions, or in one or two of them.

The searches are picked from the drawn texts: a common word, a rare one (in exactly one text of
the pool, and a prefix of no other word), two words that must meet in one message, and the first
two letters of a word typed into the search box. For each, the users who have matches among
their listed sessions are found from the plan itself (not from the database), so that the
benchmark can check what the API answers.
"""

import bisect
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from app.search import fulltext

# Everyday words, most frequent first.
_EVERYDAY_TEXT = """
the to i a my is it and of for how you can in this do on with what not why be that we your
are was please have from when me it's our at an get there thanks does about they which still
after would could should all any again some same new other first last next only every each
more most less many much were their these by before never always also
"""
_EVERYDAY = _EVERYDAY_TEXT.split()
# The domain's words, most frequent first.
_DOMAIN_TEXT = """
payment account card refund invoice order customer charge payout transfer subscription error
webhook balance fee transaction api key dashboard checkout currency dispute bank plan price
product receipt report request response settings status support tax team test token update
upload user verification wallet email event export field file fraud help id import
integration limit link log merchant method mobile money notification page password profile
role sandbox secret session setup signup code connect data date default delete deposit
document monthly weekly daily annual failed pending complete declined approved expired open
closed live stripe adyen paypal euro dollar pound yen café résumé naïve über façade 👍
quickly slowly correctly twice once already yet soon today yesterday tomorrow morning
evening night time zone region country language french german spanish japanese
"""
_DOMAIN = _DOMAIN_TEXT.split()
TAIL_WORDS = 30_000  # made-up names, least frequent
ZIPF_EXPONENT = 1.2
# Their syllables: onset and vowel, one to three times, and a coda (or none).
_ONSETS_TEXT = "b c d f g h j k l m n p r s t v w z br dr gr kr pl st tr sh ch"
_ONSETS = _ONSETS_TEXT.split()
_NUCLEI_TEXT = "a e i o u a e i o ai ea io ou"
_NUCLEI = _NUCLEI_TEXT.split()
_CODAS = ["", "", "", "n", "r", "s", "l", "x", "th", "m"]

# The searches' words (the rare one is found in the drawn texts): see bench.data.make_searches.
COMMON_WORD = "payment"
TWO_WORDS = "refund card"
PREFIX = "re"


def vocabulary(rng: random.Random) -> list[str]:
    """Every word, most frequent first."""
    # The commonest topics as frequent as everyday words: "payment" is in about one message in
    # ten, and in more than half of the sessions.
    head = list(dict.fromkeys(_EVERYDAY[:25] + _DOMAIN[:12] + _EVERYDAY[25:] + _DOMAIN[12:]))
    taken = set(head)
    tail: list[str] = []
    while len(tail) < TAIL_WORDS:
        syllables = rng.choice((1, 2, 2, 3))
        word = "".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) for _ in range(syllables))
        word += rng.choice(_CODAS)
        if word not in taken:
            taken.add(word)
            tail.append(word)
    return head + tail


class Writer:
    """Draws sentences from the vocabulary, Zipf-distributed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.words = vocabulary(rng)
        total = 0.0
        self.cumulative: list[float] = []
        for rank in range(1, len(self.words) + 1):
            total += 1 / (rank + 2.7) ** ZIPF_EXPONENT
            self.cumulative.append(total)

    def sentence(self, low: int, high: int, end: str) -> str:
        count = self.rng.randint(low, high)
        words = self.rng.choices(self.words, cum_weights=self.cumulative, k=count)
        return " ".join(words).capitalize() + end


def make_texts(rng: random.Random, pool: int) -> list[str]:
    """`pool` user messages (3 to 24 words, a question), then `pool` assistant replies (1 to 5
    sentences of 6 to 16 words)."""
    writer = Writer(rng)
    users = [writer.sentence(3, 24, "?") for _ in range(pool)]
    replies = [
        " ".join(writer.sentence(6, 16, ".") for _ in range(rng.randint(1, 5))) for _ in range(pool)
    ]
    return users + replies


# --- Searches --------------------------------------------------------------------------------


def rare_word(documents: Sequence[str], skip: int = 0) -> str:
    """A made-up word in exactly one document, and the start of no other word of any document:
    the most frequent such word of the vocabulary's tail (rank order is draw order), after
    `skip` others."""
    frequency: Counter[str] = Counter()
    for document in documents:
        frequency.update(set(document.split()))
    ordered = sorted(frequency)
    head = set(_EVERYDAY) | set(_DOMAIN)
    found = 0
    for document in documents:  # in pool order: deterministic for a seed
        for word in document.split():
            if frequency[word] != 1 or word in head or not word.isascii():
                continue
            start = bisect.bisect_left(ordered, word)
            extended = start + 1 < len(ordered) and ordered[start + 1].startswith(word)
            if not extended:
                if found == skip:
                    return word
                found += 1
    raise ValueError("no word occurs in exactly one text")


@dataclass(frozen=True)
class Search:
    """One kind of search: its text, and users with matches, each with their listed (active)
    sessions that match."""

    key: str
    label: str
    query: str
    users: list[str]
    expected: dict[str, set[str]]  # user: session ids

    @property
    def query_words(self) -> list[str]:
        return fulltext.query_words(self.query)


class Documents:
    """Search documents, to tell which match a query as the service does: every query word is
    the start of a word of the document (`app.search.fulltext`)."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.words = [set(document.split()) for document in documents]
        self.ordered = sorted(set().union(*self.words))

    def matching(self, query: str) -> list[bool]:
        starting: list[set[str]] = []  # for each query word, the words it is the start of
        for word in fulltext.query_words(query):
            start = end = bisect.bisect_left(self.ordered, word)
            while end < len(self.ordered) and self.ordered[end].startswith(word):
                end += 1
            starting.append(set(self.ordered[start:end]))
        return [
            bool(words) and all(not words.isdisjoint(found) for found in starting)
            for words in self.words
        ]
