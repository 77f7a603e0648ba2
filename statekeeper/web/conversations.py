"""HTTP views of conversation memory (contract section 3, ``/v1/conversations/{user}/...``).

Each query is about one user, whose memory lives in one partition: it is answered by the
worker owning that partition (forwarded there once if it arrives elsewhere).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.web import Request, Response, View

from statekeeper.agents.conversation import cache_tag
from statekeeper.agents.pipeline import murmur2_partition
from statekeeper.app import app
from statekeeper.stores.cache import cache
from statekeeper.stores.context import (
    BudgetSplit,
    ContextPlan,
    plan_context,
    render_context,
)
from statekeeper.stores.conversation import Message, UserRecord
from statekeeper.stores.conversation_memory import (
    conversation_users,
    newest_first,
    read_message,
    read_user,
    search_indexes,
    summarizer,
    token_counter,
    turns_through,
)
from statekeeper.web.api import ApiError, api_view, forward_to_owner, tenant_of

MAX_PAGE, MAX_RESULTS, MAX_BUDGET = 500, 100, 10_000_000
RELEVANT_CANDIDATES = 50


async def _owned_user(
    view: View, request: Request, user: str
) -> tuple[Response | None, int, bytes, UserRecord | None, str]:
    """(forwarded answer, partition, record key, user record, tenant) for ``user``."""
    tenant = tenant_of(request)
    rk = f"{tenant}/{user}".encode()
    forwarded = await forward_to_owner(view, request, conversation_users, rk)
    partition = murmur2_partition(rk, app.settings.partitions)
    record = read_user(partition, rk) if forwarded is None else None
    if forwarded is None and record is None:
        raise ApiError(404, "not_found", f"no conversation memory for user {user!r}")
    return forwarded, partition, rk, record, tenant


@app.page("/v1/conversations/{user}/messages")
@api_view
async def get_messages(view: View, request: Request, user: str) -> Response:
    """A conversation's messages (or all the user's), a page at a time, newest last."""
    forwarded, partition, rk, record, _ = await _owned_user(view, request, user)
    if forwarded is not None:
        return forwarded
    assert record is not None
    conversation = _conversation(request, record, required=False)
    limit = _int_param(request, "limit", 1, MAX_PAGE, 50)
    before = request.query.get("before")
    before_seq = _int_param(request, "before", 0, 2**63 - 1, 0) if before else None
    found: list[Message] = []
    for message in newest_first(partition, rk, conversation, before_seq):
        found.append(message)
        if len(found) > limit:
            break
    page = list(reversed(found[:limit]))
    more = len(found) > limit
    return view.json(
        {
            "user": user,
            "conversation": conversation,
            "messages": [m.public() for m in page],
            "next_before": page[0].seq if more else None,
        }
    )


@app.page("/v1/conversations/{user}/search")
@api_view
async def search(view: View, request: Request, user: str) -> Response:
    """Ranked (BM25) matches across all the user's conversations, best first."""
    forwarded, partition, rk, record, _ = await _owned_user(view, request, user)
    if forwarded is not None:
        return forwarded
    assert record is not None
    query = request.query.get("q", "").strip()
    if not query:
        raise ApiError(400, "bad_request", "q (the search text) is required")
    limit = _int_param(request, "limit", 1, MAX_RESULTS, 10)
    index = search_indexes.get(partition, rk, record)
    results = []
    for seq, score in index.search(query, limit=limit):
        message = read_message(partition, rk, seq)
        if message is not None:
            results.append({**message.public(), "score": round(score, 4)})
    return view.json({"user": user, "q": query, "results": results})


@app.page("/v1/conversations/{user}/context")
@api_view
async def get_context(view: View, request: Request, user: str) -> Response:
    """What fits ``budget_tokens``: recent turns, relevant older turns, a summary of the rest."""
    forwarded, partition, rk, record, tenant = await _owned_user(view, request, user)
    if forwarded is not None:
        return forwarded
    assert record is not None
    budget = _int_param(request, "budget_tokens", 1, MAX_BUDGET, None)
    conversation = _conversation(request, record, required=False) or _latest_conversation(
        partition, rk
    )
    latest = next(newest_first(partition, rk, conversation), None)
    query = request.query.get("query", "").strip() or (latest.content if latest else "")
    split = _split()
    exclude = [latest.seq] if latest is not None and not request.query.get("query") else []
    index = search_indexes.get(partition, rk, record)
    hits = index.search(query, limit=RELEVANT_CANDIDATES, exclude=exclude)
    plan = plan_context(
        budget, newest_first(partition, rk, conversation), _messages(partition, rk, hits), split
    )
    left_out = _left_out(record, conversation, plan)
    summary = await _summary(tenant, user, partition, rk, record, conversation, plan)
    body = render_context(plan, summary.get("text", ""), left_out, token_counter(), split)
    if body["summary"] is not None:
        body["summary"].update(
            {k: v for k, v in summary.items() if k in ("summarized_messages", "cache")}
        )
    body.update({"user": user, "conversation": conversation, "query": query})
    return view.json(body)


def _messages(partition: int, rk: bytes, hits: list[tuple[int, float]]) -> Iterator[Any]:
    for seq, score in hits:
        message = read_message(partition, rk, seq)
        if message is not None:
            yield message, score


def _left_out(record: UserRecord, conversation: str, plan: ContextPlan) -> dict[str, Any]:
    """What of the conversation is older than the recent window (what the summary covers)."""
    if plan.boundary is None:
        return {"messages": 0, "tokens": 0}
    count, tokens, _ = record.conversations.get(conversation, [0, 0, -1])
    return {
        "messages": count - len(plan.recent),
        "tokens": tokens - sum(m.tokens for m in plan.recent),
        "to_seq": plan.boundary.seq,
    }


async def _summary(
    tenant: str,
    user: str,
    partition: int,
    rk: bytes,
    record: UserRecord,
    conversation: str,
    plan: ContextPlan,
) -> dict[str, Any]:
    """The cached summary of the turns older than the recent window (refreshed as it grows)."""
    if plan.boundary is None or plan.summary_allowance <= 0:
        return {}
    boundary = plan.boundary.seq
    chosen = summarizer()
    stats = record.conversations.get(conversation, [0, 0, -1])
    params = {
        "user": user,
        "conversation": conversation,
        "through": boundary,
        "messages": stats[0],
        "last_seq": stats[2],
        "version": list(record.version),
        "allowance": plan.summary_allowance,
        "summarizer": chosen.name,
    }
    limit = app.settings.conversation_summary_max_turns

    async def compute() -> dict[str, Any]:
        turns = turns_through(partition, rk, conversation, boundary, limit)
        text = await chosen.summarize(turns, plan.summary_allowance, token_counter())
        return {"text": text, "summarized_messages": len(turns)}

    result = await cache.get_or_compute(
        "conversation-summary",
        tenant,
        params,
        compute,
        ttl_s=app.settings.conversation_summary_ttl_s,
        tags=[cache_tag(user)],
    )
    return {**result.value, "cache": result.status}


def _latest_conversation(partition: int, rk: bytes) -> str:
    latest = next(newest_first(partition, rk, None), None)
    if latest is None:
        raise ApiError(404, "not_found", "no conversation memory for this user")
    return latest.conversation


def _conversation(request: Request, record: UserRecord, *, required: bool) -> str | None:
    conversation = request.query.get("conversation") or None
    if conversation is None:
        if required:
            raise ApiError(400, "bad_request", "conversation is required")
        return None
    if conversation not in record.conversations:
        raise ApiError(404, "not_found", f"no conversation {conversation!r} for this user")
    return conversation


def _split() -> BudgetSplit:
    s = app.settings
    return BudgetSplit(
        relevant_share=s.conversation_relevant_share,
        summary_share=s.conversation_summary_share,
        overhead=s.conversation_turn_overhead_tokens,
    )


def _int_param(request: Request, name: str, low: int, high: int, default: int | None) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, "bad_request", f"{name} is required")
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer from {low} to {high}")
    return int(raw)
