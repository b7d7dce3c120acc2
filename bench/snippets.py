"""What a search result's snippet costs (`make_snippet`), in-process, on long messages.

For 200 KB messages of ASCII words, accented words (Latin, Greek), Chinese with punctuation,
one run of Chinese without any, and Thai, each with its query's match near the start, at the
end, or nowhere: the best of `--runs` calls in ms, and whether the snippet shows the match as
written. Then 100 snippets of a 400-character message, as a page of results makes them. Run
it on two checkouts for a before and after: `cd <checkout> && python -m bench.snippets`.
"""

import argparse
import functools
import time
from collections.abc import Callable

from app.search.fulltext import query_words
from app.search.snippets import make_snippet

ASCII_TEXT = "Deploy the cluster, then the Kubernetes service with a node.\n"
ACCENTED_TEXT = "Un café à Zürich; die Straße ist lang, η σοφία und naïve résumé. "


def repeated(text: str, size: int) -> str:
    return (text * (size // len(text) + 1))[:size]


def page_of_snippets(text: str, words: list[str]) -> list[str]:
    """A page of 100 results' snippets."""
    return [make_snippet(text, words) for _ in range(100)]


def best_ms(call: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=200_000, help="message size in characters")
    parser.add_argument("--runs", type=int, default=7, help="calls per figure (the best)")
    args = parser.parse_args()
    size = args.size
    # (message without the match, the match as written, the query); Chinese and Thai glued
    # to the text before them, so that the match is inside a run.
    texts = {
        "ascii": (repeated(ASCII_TEXT, size), " Ocelot", "ocelot"),
        "accented": (repeated(ACCENTED_TEXT, size), " Océlot", "ocelot"),
        "cjk-punct": (repeated("我住在北京\uff0c今天天气很好\u3002", size), "東京都", "東京"),
        "cjk-run": (repeated("我住在北京今天天气很好", size), "東京都", "東京"),
        "thai": (repeated("สวัสดีครับ ภาษาไทยเป็นภาษาที่สวยงาม ", size), "ช้างเผือก", "ช้างเผือก"),
    }
    print(f"{'message':10} {'match':6} {'ms':>8}  shows the match")
    for name, (body, written, query) in texts.items():
        words = query_words(query)
        cases = {
            "start": f"{body[:300]}{written} {body}",
            "end": f"{body}{written} tail",
            "none": body,
        }
        for where, text in cases.items():
            elapsed = best_ms(functools.partial(make_snippet, text, words), args.runs)
            shown = written.strip() in make_snippet(text, words)
            print(f"{name:10} {where:6} {elapsed:8.2f}  {shown}")
    for name, sentence in [("ascii", ASCII_TEXT), ("accented", ACCENTED_TEXT)]:
        short = f"{repeated(sentence, 200)} Ocelot {repeated(sentence, 200)}"
        page = best_ms(functools.partial(page_of_snippets, short, ["ocelot"]), args.runs)
        print(f"100 snippets of 400 characters ({name}), the match in the middle: {page:.2f} ms")


if __name__ == "__main__":
    main()
