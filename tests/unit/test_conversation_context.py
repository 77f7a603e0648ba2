"""Conversation memory, pure parts: the budget is never exceeded; search ranks sensibly."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from statekeeper.stores.context import BudgetSplit, fit_text, plan_context, render_context
from statekeeper.stores.conversation import Message, UserRecord
from statekeeper.stores.search import SearchIndex, terms
from statekeeper.stores.summary import extract
from statekeeper.stores.tokens import RegexTokenCounter

COUNTER = RegexTokenCounter()
WORDS = [
    "invoice",
    "payment",
    "refund",
    "shipping",
    "delay",
    "Berlin",
    "order",
    "parcel",
    "tracking",
    "weather",
]
_seq = itertools.count()


def message(content: str, conversation: str = "a", tokens: int | None = None) -> Message:
    return Message(
        seq=next(_seq),
        conversation=conversation,
        role="user",
        content=content,
        tokens=COUNTER.count(content) if tokens is None else tokens,
        ts=1_700_000_000_000,
        event_id=f"e{next(_seq)}",
    )


def assemble(
    budget: int, history: list[Message], query: str, split: BudgetSplit
) -> dict[str, object]:
    """The whole pipeline the context endpoint runs, minus the tables and the cache."""
    index = SearchIndex()
    for m in history:
        index.add(m.seq, m.content)
    by_seq = {m.seq: m for m in history}
    ranked = [(by_seq[seq], score) for seq, score in index.search(query, limit=50)]
    plan = plan_context(budget, reversed(history), ranked, split)
    summary = ""
    if plan.boundary is not None:
        older = [m for m in history if m.seq <= plan.boundary.seq]
        summary = extract(older, plan.summary_allowance, COUNTER)
    return render_context(plan, summary, {"messages": 0}, COUNTER, split)


sentences = st.lists(st.sampled_from(WORDS), min_size=0, max_size=40).map(
    lambda ws: ". ".join(" ".join(ws[i : i + 6]) for i in range(0, len(ws), 6))
)
histories = st.lists(
    st.tuples(sentences, st.one_of(st.none(), st.integers(0, 5000)), st.sampled_from("abc")),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    budget=st.integers(1, 100_000),
    raw=histories,
    query=sentences,
    overhead=st.integers(0, 12),
    shares=st.tuples(st.floats(0, 0.5), st.floats(0, 0.5)),
)
def test_context_never_exceeds_the_budget(
    budget: int,
    raw: list[tuple[str, int | None, str]],
    query: str,
    overhead: int,
    shares: tuple[float, float],
) -> None:
    history = [message(text, conv, tokens) for text, tokens, conv in raw]
    split = BudgetSplit(relevant_share=shares[0], summary_share=shares[1], overhead=overhead)

    context = assemble(budget, history, query, split)

    parts = context["parts"]
    assert isinstance(parts, dict)
    recomputed = sum(m["tokens"] + overhead for m in context["recent"])  # type: ignore[attr-defined]
    recomputed += sum(m["tokens"] + overhead for m in context["relevant"])  # type: ignore[attr-defined]
    if context["summary"] is not None:
        text = context["summary"]["text"]  # type: ignore[index]
        recomputed += COUNTER.count(text) + overhead
    assert recomputed == context["used_tokens"] <= budget
    assert parts["recent_tokens"] + parts["relevant_tokens"] + parts["summary_tokens"] == recomputed


def test_recent_turns_are_the_newest_contiguous_ones_oldest_first() -> None:
    history = [message(f"turn number {i}", tokens=10) for i in range(10)]
    split = BudgetSplit(relevant_share=0, summary_share=0, overhead=0)

    plan = plan_context(35, reversed(history), [], split)

    assert [m.content for m in plan.recent] == ["turn number 7", "turn number 8", "turn number 9"]
    assert plan.boundary is not None and plan.boundary.content == "turn number 6"


def test_relevant_turns_skip_recent_ones_and_the_summary_covers_the_older_turns() -> None:
    old = message("the parcel to Berlin is delayed by the weather", conversation="monday")
    filler = [message(f"small talk {i}", conversation="tuesday") for i in range(20)]
    latest = message("any news on my parcel?", conversation="tuesday")
    history = [old, *filler, latest]

    context = assemble(200, history, "parcel", BudgetSplit())

    relevant = [m["content"] for m in context["relevant"]]  # type: ignore[attr-defined]
    recent = [m["content"] for m in context["recent"]]  # type: ignore[attr-defined]
    assert old.content in relevant
    assert latest.content in recent and latest.content not in relevant
    assert context["used_tokens"] <= 200  # type: ignore[operator]


def test_fit_text_cuts_to_the_allowance() -> None:
    text = "\n".join(f"user: line {i} about invoices and refunds" for i in range(50))
    for allowance in (0, 1, 3, 17, 100, 10_000):
        assert COUNTER.count(fit_text(text, allowance, COUNTER)) <= allowance
    assert fit_text(text, 10_000, COUNTER) == text


def test_extractive_summary_prefers_the_recurring_topic_and_fits() -> None:
    turns = [
        message("The refund for order 42 is pending."),
        message("I like the weather today."),
        message("Please speed up the refund of order 42."),
        message("Is the refund for order 42 approved yet?"),
    ]
    summary = extract(turns, 20, COUNTER)
    assert COUNTER.count(summary) <= 20
    assert "refund" in summary and "weather" not in summary


def test_bm25_ranks_rare_terms_and_term_frequency_higher() -> None:
    index = SearchIndex()
    docs = {
        1: "the invoice was paid",
        2: "invoice invoice invoice overdue",
        3: "shipping to Berlin",
        4: "the weather in Berlin",
        5: "an invoice for shipping",
    }
    for doc, text in docs.items():
        index.add(doc, text)

    ranked = [doc for doc, _ in index.search("invoice", limit=10)]
    assert ranked[0] == 2  # highest term frequency
    assert set(ranked) == {1, 2, 5}  # only documents with the term
    both = index.search("shipping Berlin", limit=10)
    assert both[0][0] == 3  # the one document with both terms
    assert index.search("nothing matches", limit=10) == []


def test_bm25_prefers_the_rarer_of_two_terms() -> None:
    index = SearchIndex()
    for doc in range(10):
        index.add(doc, "common words here")
    index.add(10, "common rare")
    index.add(11, "common common")
    assert index.search("common rare", limit=1)[0][0] == 10


def test_search_terms_fold_case_plurals_and_stop_words() -> None:
    assert terms("The Invoices of the Companies") == ["invoice", "company"]


def test_token_counter_is_a_plausible_heuristic() -> None:
    assert COUNTER.count("") == 0
    assert COUNTER.count("Hello, world!") == 4
    assert COUNTER.count("internationalization") == 4
    assert COUNTER.count("12345") == 2
    assert COUNTER.count("東京都") == 3


def test_user_record_round_trips_and_counts() -> None:
    record = UserRecord(created_seq=7)
    first, second = message("one two", "a"), message("three", "b")
    record.add(first)
    record.add(second)
    record.remove(first)
    again = UserRecord.from_bytes(record.to_bytes())
    assert again == record
    assert (again.messages, again.tokens, list(again.conversations)) == (1, 1, ["b"])
