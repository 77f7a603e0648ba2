"""Full-text search over one user's messages: terms and a BM25 inverted index (pure).

Terms are lower-cased runs of letters and digits, English stop words removed, with a light
plural fold (``invoices`` -> ``invoice``), so "invoice" finds "Invoices". Ranking is Okapi
BM25 (k1 = 1.2, b = 0.75) with the non-negative idf ``ln(1 + (N - df + 0.5) / (df + 0.5))``.
"""

from __future__ import annotations

import functools
import heapq
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

K1 = 1.2
B = 0.75
_WORDS = re.compile(r"\w+")
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself
    yourselves""".split()  # noqa: SIM905 (a word list reads better as text)
)


def terms(text: str) -> list[str]:
    """The searchable terms of ``text``, in order (repeats kept: they are term frequency)."""
    found = []
    for word in _WORDS.findall(text.lower()):
        term = _term(word)
        if term:
            found.append(term)
    return found


@functools.lru_cache(maxsize=65_536)
def _term(word: str) -> str:
    """The term a lower-cased word indexes as; empty for stop words (cached: words repeat)."""
    if word in STOP_WORDS or word == "_" * len(word):
        return ""
    return _fold(word)


def _fold(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


@dataclass
class SearchIndex:
    """An inverted index of documents (message sequence numbers) and their terms."""

    postings: dict[str, dict[int, int]] = field(default_factory=dict)  # term -> {doc: tf}
    lengths: dict[int, int] = field(default_factory=dict)  # doc -> number of terms
    total_length: int = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, doc: int, text: str) -> None:
        """Index ``text`` under ``doc`` (replacing what ``doc`` had)."""
        if doc in self.lengths:
            self.remove(doc)
        counts: dict[str, int] = {}
        for term in terms(text):
            counts[term] = counts.get(term, 0) + 1
        for term, tf in counts.items():
            self.postings.setdefault(term, {})[doc] = tf
        length = sum(counts.values())
        self.lengths[doc] = length
        self.total_length += length

    def remove(self, doc: int) -> None:
        """Forget ``doc`` (a no-op for an unknown one)."""
        length = self.lengths.pop(doc, None)
        if length is None:
            return
        self.total_length -= length
        for term in [t for t, docs in self.postings.items() if doc in docs]:
            del self.postings[term][doc]
            if not self.postings[term]:
                del self.postings[term]

    def search(
        self, query: str, *, limit: int, exclude: Iterable[int] = ()
    ) -> list[tuple[int, float]]:
        """Up to ``limit`` (doc, score) pairs with a positive score, best first.

        Ties go to the newer document (the higher sequence number).
        """
        query_terms = set(terms(query))
        if not query_terms or not self.lengths:
            return []
        skip = set(exclude)
        n = len(self.lengths)
        average = self.total_length / n or 1.0
        scores: dict[int, float] = {}
        for term in query_terms:
            docs = self.postings.get(term)
            if not docs:
                continue
            idf = math.log(1 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
            for doc, tf in docs.items():
                if doc in skip:
                    continue
                norm = tf + K1 * (1 - B + B * self.lengths[doc] / average)
                scores[doc] = scores.get(doc, 0.0) + idf * tf * (K1 + 1) / norm
        return heapq.nsmallest(limit, scores.items(), key=lambda pair: (-pair[1], -pair[0]))
