"""Conversation memory: stored messages, the per-user record and the table keys (pure).

A user's memory spans all their conversations and lives in the partition of
``{tenant}/{user}``. A message's sequence number is the Kafka offset of the event that
appended it: unique and increasing within the partition, so ordering by it is arrival
order, and a replayed record (same id, same offset) rewrites exactly the same rows.

Keys in the ``conversation-messages`` table (``rk`` is ``{tenant}/{user}``; user and
conversation ids cannot hold control characters, so NUL separates safely)::

    rk NUL "M" seq(8 bytes)                    -> the message
    rk NUL "C" conversation NUL seq(8 bytes)   -> b"" (the conversation's turns, in order)
    rk NUL "I" event id                        -> seq (redelivered ids have no effect)
    rk NUL "F" event id                        -> the forget receipt (kept: no user data)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from statekeeper import codec

STORE_VERSION = 1
ROLES = frozenset({"user", "assistant", "system", "tool"})
_SEQ = 8


def user_prefix(rk: bytes) -> bytes:
    """Prefix of every row of one user."""
    return rk + b"\x00"


def message_key(rk: bytes, seq: int) -> bytes:
    return rk + b"\x00M" + seq.to_bytes(_SEQ, "big")


def messages_prefix(rk: bytes) -> bytes:
    return rk + b"\x00M"


def turn_key(rk: bytes, conversation: str, seq: int) -> bytes:
    return turns_prefix(rk, conversation) + seq.to_bytes(_SEQ, "big")


def turns_prefix(rk: bytes, conversation: str) -> bytes:
    return rk + b"\x00C" + conversation.encode() + b"\x00"


def id_key(rk: bytes, event_id: str) -> bytes:
    return rk + b"\x00I" + event_id.encode()


def receipt_key(rk: bytes, event_id: str) -> bytes:
    return rk + b"\x00F" + event_id.encode()


def seq_of(key: bytes) -> int:
    """The sequence number a message or turn key ends with."""
    return int.from_bytes(key[-_SEQ:], "big")


@dataclass(frozen=True, slots=True)
class Message:
    """One stored turn of a conversation."""

    seq: int
    conversation: str
    role: str
    content: str
    tokens: int
    ts: int
    event_id: str
    meta: dict[str, Any] | None = None

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, f) for f in _MESSAGE_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> Message:
        stored = codec.unpack(raw)
        if stored[0] != STORE_VERSION:
            raise ValueError(f"stored message has schema version {stored[0]}")
        return cls(**dict(zip(_MESSAGE_FIELDS, stored[1:], strict=True)))

    @property
    def size(self) -> int:
        """Bytes of content, what retention by bytes counts."""
        return len(self.content.encode())

    def public(self) -> dict[str, Any]:
        """The message as the HTTP API shows it."""
        shown: dict[str, Any] = {
            "seq": self.seq,
            "conversation": self.conversation,
            "role": self.role,
            "content": self.content,
            "tokens": self.tokens,
            "ts": self.ts,
            "id": self.event_id,
        }
        if self.meta:
            shown["meta"] = self.meta
        return shown


_MESSAGE_FIELDS = tuple(f.name for f in fields(Message))


@dataclass(slots=True)
class UserRecord:
    """What the worker keeps per user beside the messages: totals and the retention clock.

    ``created_seq`` (the offset that created the record) and ``removals`` (bumped on every
    forget or purge) identify a version of the user's memory, so in-process search indexes
    can tell they are out of date without being told.
    """

    created_seq: int
    last_seq: int = -1
    messages: int = 0
    tokens: int = 0
    content_bytes: int = 0
    oldest_ts: int | None = None
    removals: int = 0
    deadline: int | None = None  # retention deadline entry, when one is scheduled
    conversations: dict[str, list[int]] = field(default_factory=dict)  # [messages, tokens, last]

    def to_bytes(self) -> bytes:
        return codec.pack([STORE_VERSION, *(getattr(self, f) for f in _USER_FIELDS)])

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserRecord:
        stored = codec.unpack(raw)
        if stored[0] != STORE_VERSION:
            raise ValueError(f"stored user record has schema version {stored[0]}")
        return cls(**dict(zip(_USER_FIELDS, stored[1:], strict=True)))

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever messages are removed (see class docstring)."""
        return (self.created_seq, self.removals)

    def add(self, message: Message) -> None:
        """Count an appended message."""
        self.last_seq = max(self.last_seq, message.seq)
        self.messages += 1
        self.tokens += message.tokens
        self.content_bytes += message.size
        self.oldest_ts = message.ts if self.oldest_ts is None else min(self.oldest_ts, message.ts)
        stats = self.conversations.setdefault(message.conversation, [0, 0, -1])
        self.conversations[message.conversation] = [
            stats[0] + 1,
            stats[1] + message.tokens,
            max(stats[2], message.seq),
        ]

    def remove(self, message: Message) -> None:
        """Count a removed message (``oldest_ts`` is recomputed by the caller's scan)."""
        self.messages -= 1
        self.tokens -= message.tokens
        self.content_bytes -= message.size
        stats = self.conversations.get(message.conversation)
        if stats is not None:
            if stats[0] <= 1:
                del self.conversations[message.conversation]
            else:
                self.conversations[message.conversation] = [
                    stats[0] - 1,
                    stats[1] - message.tokens,
                    stats[2],
                ]


_USER_FIELDS = tuple(f.name for f in fields(UserRecord))
