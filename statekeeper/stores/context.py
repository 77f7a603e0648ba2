"""Context assembly: what of a user's memory fits a token budget (pure).

Every included part costs its tokens plus ``overhead`` (the framing a chat format adds per
message); the summary costs its counted tokens plus the same overhead. The budget ``B`` is
split in priority order:

1. **recent** gets ``B - floor(B * relevant_share) - floor(B * summary_share)``: the
   conversation's turns from the newest back, contiguous, while they fit.
2. **relevant** gets ``floor(B * relevant_share)`` plus whatever recent left unused: turns
   from any of the user's conversations, best BM25 match first, not already in recent,
   each one included if it still fits.
3. **summary** gets whatever is left (at least ``floor(B * summary_share)`` when recent and
   relevant used their shares fully), rounded down to a cache-friendly step, and covers the
   conversation's turns older than the recent window.

The answer is never over the budget: each step only spends what is left, and the summary
is cut with the token counter until it fits (:func:`fit_text`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from statekeeper.stores.conversation import Message
from statekeeper.stores.tokens import TokenCounter


@dataclass(frozen=True, slots=True)
class BudgetSplit:
    """How a budget is divided (see the module docstring)."""

    relevant_share: float = 0.25
    summary_share: float = 0.15
    overhead: int = 4


@dataclass(frozen=True, slots=True)
class ContextPlan:
    """Recent and relevant turns chosen, and what the summary may spend on what."""

    budget: int
    recent: list[Message]  # oldest first
    relevant: list[tuple[Message, float]]  # best first
    boundary: Message | None  # the newest turn older than the recent window, if any
    summary_allowance: int  # tokens the summary text may use (its overhead already taken)
    used: int


def cost(message: Message, split: BudgetSplit) -> int:
    return message.tokens + split.overhead


def plan_context(
    budget: int,
    newest_first: Iterable[Message],
    ranked: Iterable[tuple[Message, float]],
    split: BudgetSplit,
) -> ContextPlan:
    """Choose recent and relevant turns for ``budget`` (see module docstring).

    ``newest_first`` is the conversation's turns from the newest back; ``ranked`` the
    search matches across all conversations, best first.
    """
    relevant_cap = int(budget * split.relevant_share)
    summary_cap = int(budget * split.summary_share)
    recent_cap = budget - relevant_cap - summary_cap
    recent: list[Message] = []
    used = 0
    boundary: Message | None = None
    for turn in newest_first:
        if used + cost(turn, split) > recent_cap:
            boundary = turn  # it and everything older is left to the summary
            break
        recent.append(turn)
        used += cost(turn, split)
    recent.reverse()
    chosen: list[tuple[Message, float]] = []
    in_recent = {m.seq for m in recent}
    relevant_limit = budget - summary_cap
    for message, score in ranked:
        if message.seq in in_recent:
            continue
        if used + cost(message, split) <= relevant_limit:
            chosen.append((message, score))
            used += cost(message, split)
    allowance = 0
    if boundary is not None:
        allowance = max(step_down(budget - used) - split.overhead, 0)
    return ContextPlan(budget, recent, chosen, boundary, allowance, used)


def step_down(tokens: int) -> int:
    """``tokens`` rounded down to a coarse step (within 25%), so summaries cache well."""
    if tokens < 16:
        return max(tokens, 0)
    step = 1 << (tokens.bit_length() - 3)
    return tokens - tokens % step


def fit_text(text: str, max_tokens: int, counter: TokenCounter) -> str:
    """``text`` cut at a line or word boundary until ``counter`` says it fits."""
    if max_tokens <= 0:
        return ""
    if counter.count(text) <= max_tokens:
        return text
    lines = text.split("\n")
    while len(lines) > 1 and counter.count("\n".join(lines)) > max_tokens:
        lines.pop()
    words = "\n".join(lines).split(" ")
    low, high = 0, len(words)  # the longest word prefix that fits
    while low < high:
        middle = (low + high + 1) // 2
        if counter.count(" ".join(words[:middle])) <= max_tokens:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def render_context(
    plan: ContextPlan,
    summary_text: str,
    left_out: dict[str, Any],
    counter: TokenCounter,
    split: BudgetSplit,
) -> dict[str, Any]:
    """The context as the HTTP API answers it, the summary cut to fit.

    ``left_out`` describes the conversation's turns older than the recent window (what the
    summary covers), e.g. from :func:`coverage`.
    """
    summary_text = fit_text(summary_text, plan.summary_allowance, counter)
    summary: dict[str, Any] | None = None
    used = plan.used
    if summary_text:
        summary_tokens = counter.count(summary_text) + split.overhead
        used += summary_tokens
        summary = {
            "text": summary_text,
            "tokens": summary_tokens,
            "covers": left_out,
        }
    recent_tokens = sum(cost(m, split) for m in plan.recent)
    return {
        "budget_tokens": plan.budget,
        "used_tokens": used,
        "recent": [m.public() for m in plan.recent],
        "relevant": [{**m.public(), "score": round(s, 4)} for m, s in plan.relevant],
        "summary": summary,
        "parts": {
            "recent_tokens": recent_tokens,
            "relevant_tokens": plan.used - recent_tokens,
            "summary_tokens": used - plan.used,
            "overhead_per_part": split.overhead,
        },
        "left_out": left_out,
    }


def coverage(turns: Sequence[Message]) -> dict[str, Any]:
    """How many turns and tokens a list holds, and their sequence and time range."""
    if not turns:
        return {"messages": 0, "tokens": 0}
    return {
        "messages": len(turns),
        "tokens": sum(m.tokens for m in turns),
        "from_seq": turns[0].seq,
        "to_seq": turns[-1].seq,
        "from_ts": min(m.ts for m in turns),
        "to_ts": max(m.ts for m in turns),
    }
