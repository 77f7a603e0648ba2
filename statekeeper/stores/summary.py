"""Summaries of older turns: the pluggable interface and the extractive default.

A :class:`Summarizer` gets the turns to summarize (oldest first) and a token allowance and
returns text. The default, :class:`ExtractiveSummarizer`, runs here with no model: it splits
the turns into sentences, scores each by how central its terms are to the whole span
(the mean frequency of its terms across all the turns, so sentences about what the
conversation keeps returning to win), and keeps the best sentences, in their original order,
prefixed by who said them, while they fit. A deployment names another class (an LLM call,
say) in ``STATEKEEPER_CONVERSATION_SUMMARIZER``. Whatever a summarizer returns, the context
assembly cuts it to the allowance with the configured token counter, so the budget holds.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from statekeeper.stores.conversation import Message
from statekeeper.stores.search import terms
from statekeeper.stores.tokens import TokenCounter

_SENTENCES = re.compile(r"[^.!?\n]+[.!?]*")
MAX_SENTENCE_CHARS = 400


@runtime_checkable
class Summarizer(Protocol):
    """Turns older turns into a short text of at most ``max_tokens`` tokens."""

    name: str
    """Part of the cache key: change it when the output for the same input changes."""

    async def summarize(
        self, turns: Sequence[Message], max_tokens: int, counter: TokenCounter
    ) -> str:
        """A summary of ``turns`` (oldest first) that should fit ``max_tokens``."""
        ...


class ExtractiveSummarizer:
    """The default summarizer: the most central sentences, in order (no model needed)."""

    name = "extractive-v1"

    async def summarize(
        self, turns: Sequence[Message], max_tokens: int, counter: TokenCounter
    ) -> str:
        """See :func:`extract`."""
        return extract(turns, max_tokens, counter)


def extract(turns: Sequence[Message], max_tokens: int, counter: TokenCounter) -> str:
    """The best-scoring sentences of ``turns`` that fit ``max_tokens``, in original order."""
    sentences = [
        (position, turn.role, text)
        for position, (turn, text) in enumerate(_sentences(turns))
        if terms(text)
    ]
    if max_tokens <= 0 or not sentences:
        return ""
    frequency = Counter(t for _, _, text in sentences for t in terms(text))
    scored = sorted(
        sentences,
        key=lambda s: (-_centrality(s[2], frequency), -s[0]),
    )
    chosen: list[tuple[int, str]] = []
    used = 0
    for position, role, text in scored:
        line = f"{role}: {text}"
        cost = counter.count(line) + (1 if chosen else 0)  # the newline joining lines
        if used + cost <= max_tokens:
            chosen.append((position, line))
            used += cost
    return "\n".join(line for _, line in sorted(chosen))


def _sentences(turns: Sequence[Message]) -> list[tuple[Message, str]]:
    found = []
    for turn in turns:
        for match in _SENTENCES.finditer(turn.content):
            text = match.group().strip()[:MAX_SENTENCE_CHARS]
            if text:
                found.append((turn, text))
    return found


def _centrality(text: str, frequency: Counter[str]) -> float:
    words = terms(text)
    return sum(frequency[w] for w in set(words)) / (len(words) + 2)
