"""Counting tokens without a model, and loading pluggable classes named in settings.

The default counter is a heuristic in the spirit of BPE tokenizers such as tiktoken's
cl100k: a run of letters is one token per started six characters (common words are one
token, long words several), digits count in groups of up to three, every punctuation or
symbol character is a token, and CJK characters count one each. It needs no download and
is deterministic; it is an estimate, not any model's exact count. A deployment that needs
its model's exact numbers sends ``tokens`` with each message, or names another class in
``STATEKEEPER_CONVERSATION_TOKEN_COUNTER``.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Protocol, runtime_checkable

from statekeeper.exceptions import ConfigError

_PIECES = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]|_")
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]")
LETTERS_PER_TOKEN = 6


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the tokens of a text; must be deterministic (budgets are checked with it)."""

    def count(self, text: str) -> int:
        """Tokens in ``text`` (0 for the empty text)."""
        ...


class RegexTokenCounter:
    """The default: a regex heuristic close to BPE counts on prose (see module docstring)."""

    def count(self, text: str) -> int:
        """Tokens in ``text``."""
        total = 0
        for piece in _PIECES.findall(text):
            if piece[0].isalpha():
                wide = len(_WIDE.findall(piece))
                narrow = len(piece) - wide
                total += wide + (-(-narrow // LETTERS_PER_TOKEN) if narrow else 0)
            else:
                total += 1
        return total


def load_class(path: str, setting: str) -> Any:
    """An instance of the class named ``module:Class`` (or ``module.Class``), no arguments.

    Raises :class:`ConfigError` naming ``setting`` when it cannot be imported.
    """
    module_name, sep, class_name = path.partition(":")
    if not sep:
        module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        return cls()
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{setting}={path!r} cannot be loaded: {exc}") from None
