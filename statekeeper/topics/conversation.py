"""Conversation events (contract section 2) and the notices conversation memory emits.

On ``statekeeper.conversation.events``, key ``{tenant}/{user}``:

- ``conversation.message {conversation, role, content, tokens?, meta?}``
- ``conversation.forget {conversation?}`` (absent: everything the user has)

Notices on ``statekeeper.lifecycle.notices``, key ``{tenant}/{user}``:
``conversation.forgotten`` (the receipt of a forget) and ``conversation.purged`` (retention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from statekeeper.stores.conversation import ROLES, Message
from statekeeper.stores.tokens import TokenCounter
from statekeeper.topics.envelope import Envelope
from statekeeper.topics.rejections import Reason, Rejected

MESSAGE, FORGET = "conversation.message", "conversation.forget"
CONVERSATION_TYPES = frozenset({MESSAGE, FORGET})
MAX_CONVERSATION_BYTES = 256
MAX_TOKENS = 10_000_000


def parse_message(envelope: Envelope, seq: int, counter: TokenCounter) -> Message:
    """The message a ``conversation.message`` event appends; :class:`Rejected` if invalid.

    ``tokens`` is the event's own count when given, else ``counter``'s.
    """
    data = envelope.data
    conversation = conversation_id(data.get("conversation"), required=True)
    assert conversation is not None
    role = data.get("role")
    if role not in ROLES:
        raise Rejected(Reason.INVALID_DATA, f"'role' must be one of {sorted(ROLES)}")
    content = data.get("content")
    if not isinstance(content, str):
        raise Rejected(Reason.INVALID_DATA, "'content' must be a string")
    tokens = data.get("tokens")
    if tokens is None:
        tokens = counter.count(content)
    elif not isinstance(tokens, int) or isinstance(tokens, bool) or not 0 <= tokens <= MAX_TOKENS:
        raise Rejected(Reason.INVALID_DATA, f"'tokens' must be an integer from 0 to {MAX_TOKENS}")
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise Rejected(Reason.INVALID_DATA, "'meta' must be a map")
    return Message(
        seq=seq,
        conversation=conversation,
        role=role,
        content=content,
        tokens=tokens,
        ts=envelope.ts,
        event_id=envelope.id,
        meta=meta or None,
    )


def conversation_id(value: Any, *, required: bool) -> str | None:
    """A valid conversation id, or None when absent and not required."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise Rejected(Reason.INVALID_DATA, "'conversation' must be a non-empty string")
    if len(value.encode()) > MAX_CONVERSATION_BYTES or any(ord(c) < 32 for c in value):
        raise Rejected(
            Reason.INVALID_DATA,
            f"'conversation' must be at most {MAX_CONVERSATION_BYTES} bytes, "
            "without control characters",
        )
    return value


@dataclass(frozen=True, slots=True)
class Removed:
    """What one forget or purge removed."""

    messages: int = 0
    tokens: int = 0
    conversations: int = 0
    cached: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "tokens": self.tokens,
            "conversations": self.conversations,
            "cached_results": self.cached,
        }


def forgotten_notice(
    envelope: Envelope, conversation: str | None, removed: Removed, now: int
) -> dict[str, Any]:
    """The receipt of a ``conversation.forget``."""
    return {
        "v": 1,
        "type": "conversation.forgotten",
        "tenant": envelope.tenant,
        "key": envelope.key,
        "conversation": conversation,
        "removed": removed.as_dict(),
        "event_id": envelope.id,
        "event_ts": envelope.ts,
        "ts": now,
    }


def purged_notice(
    tenant: str, user: str, reasons: list[str], removed: Removed, now: int
) -> dict[str, Any]:
    """The notice of a retention purge."""
    return {
        "v": 1,
        "type": "conversation.purged",
        "tenant": tenant,
        "key": user,
        "reasons": reasons,
        "removed": removed.as_dict(),
        "ts": now,
    }
