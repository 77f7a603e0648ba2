"""Conversation memory's tables and the reads over them (the I/O beside the pure modules).

Three RocksDB tables with changelogs, all keyed by ``{tenant}/{user}`` first, so one
user's memory sits in one partition (the partition of the user's events):

- ``conversation-users``: ``{tenant}/{user}`` -> the user record (totals, retention clock);
- ``conversation-messages``: messages, per-conversation turns, event ids and forget
  receipts (key layout in :mod:`statekeeper.stores.conversation`);
- ``conversation-deadlines``: retention deadline (8 bytes) ``{tenant}/{user}`` -> b"".

**Search index.** The BM25 inverted index is not a table: it is rebuilt deterministically
from the messages table, per user, on the first search after a start, kept in process
(least recently used users first out) and caught up incrementally with the messages
appended since. It is checked against the user record's version on every query, so a
forget or purge (which bumps that version, or deletes the record) is never answered from
an old index, on any worker. Keeping postings in a table instead would cost one changelog
record per distinct term of every message (a 40-word message: ~30 records); the rebuild
costs one ordered scan of the user's messages (``bench/conversation.py`` measures it).
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from statekeeper.app import app
from statekeeper.stores.conversation import (
    Message,
    UserRecord,
    message_key,
    messages_prefix,
    seq_of,
    turn_key,
    turns_prefix,
)
from statekeeper.stores.scan import _db, get_in_partition, scan_prefix
from statekeeper.stores.search import SearchIndex
from statekeeper.stores.summary import Summarizer
from statekeeper.stores.tables import bytes_table
from statekeeper.stores.tokens import TokenCounter, load_class

INDEX_CACHE_USERS = 64

conversation_users = bytes_table("conversation-users", "per-user totals and retention clock")
conversation_messages = bytes_table(
    "conversation-messages", "messages, per-conversation turns, event ids, forget receipts"
)
conversation_deadlines = bytes_table(
    "conversation-deadlines", "retention deadlines of users' conversation memory"
)


@functools.cache
def token_counter() -> TokenCounter:
    """The configured token counter (``STATEKEEPER_CONVERSATION_TOKEN_COUNTER``)."""
    counter: TokenCounter = load_class(
        app.settings.conversation_token_counter, "STATEKEEPER_CONVERSATION_TOKEN_COUNTER"
    )
    return counter


@functools.cache
def summarizer() -> Summarizer:
    """The configured summarizer (``STATEKEEPER_CONVERSATION_SUMMARIZER``)."""
    loaded: Summarizer = load_class(
        app.settings.conversation_summarizer, "STATEKEEPER_CONVERSATION_SUMMARIZER"
    )
    return loaded


def read_user(partition: int, rk: bytes) -> UserRecord | None:
    raw = get_in_partition(conversation_users, partition, rk)
    return UserRecord.from_bytes(raw) if raw is not None else None


def read_message(partition: int, rk: bytes, seq: int) -> Message | None:
    raw = get_in_partition(conversation_messages, partition, message_key(rk, seq))
    return Message.from_bytes(raw) if raw is not None else None


def _backwards(partition: int, prefix: bytes, before: bytes | None) -> Iterator[bytes]:
    """Keys starting with ``prefix``, newest (largest) first, strictly below ``before``."""
    db = _db(conversation_messages, partition)
    if db is None:
        return
    start = before if before is not None else prefix + b"\xff" * 9
    for key in db.keys(backwards=True, from_key=start):
        if not key.startswith(prefix):
            return
        if key != before:
            yield key


def newest_first(
    partition: int, rk: bytes, conversation: str | None, before: int | None = None
) -> Iterator[Message]:
    """A conversation's turns (or all the user's messages) from the newest back."""
    if conversation is None:
        prefix = messages_prefix(rk)
        bound = message_key(rk, before) if before is not None else None
    else:
        prefix = turns_prefix(rk, conversation)
        bound = turn_key(rk, conversation, before) if before is not None else None
    for key in _backwards(partition, prefix, bound):
        message = read_message(partition, rk, seq_of(key))
        if message is not None:
            yield message


def turns_through(
    partition: int, rk: bytes, conversation: str, through: int, limit: int
) -> list[Message]:
    """Up to ``limit`` of the newest turns with seq <= ``through``, oldest first."""
    found = []
    for message in newest_first(partition, rk, conversation, before=through + 1):
        found.append(message)
        if len(found) >= limit:
            break
    found.reverse()
    return found


def all_messages(partition: int, rk: bytes, after: int | None = None) -> Iterator[Message]:
    """The user's messages in order, after seq ``after`` when given."""
    start = message_key(rk, after) if after is not None else None
    for _, raw in scan_prefix(conversation_messages, partition, messages_prefix(rk), after=start):
        yield Message.from_bytes(raw)


@dataclass
class _Indexed:
    version: tuple[int, int]
    last_seq: int
    index: SearchIndex


class SearchIndexes:
    """Per-user BM25 indexes built from the messages table (see module docstring)."""

    def __init__(self, capacity: int = INDEX_CACHE_USERS) -> None:
        self.capacity = capacity
        self._indexes: OrderedDict[bytes, _Indexed] = OrderedDict()

    def get(self, partition: int, rk: bytes, record: UserRecord) -> SearchIndex:
        """The user's index, current with ``record`` (rebuilt or caught up as needed)."""
        cached = self._indexes.pop(rk, None)
        if cached is None or cached.version != record.version:
            cached = _Indexed(record.version, -1, SearchIndex())
            after = None
        else:
            after = cached.last_seq
        if record.last_seq > cached.last_seq:
            for message in all_messages(partition, rk, after):
                cached.index.add(message.seq, message.content)
                cached.last_seq = max(cached.last_seq, message.seq)
        self._indexes[rk] = cached
        while len(self._indexes) > self.capacity:
            self._indexes.popitem(last=False)
        return cached.index

    def drop(self, rk: bytes) -> None:
        """Forget the user's index now (a forget or purge; the version check also catches it)."""
        self._indexes.pop(rk, None)


search_indexes = SearchIndexes()
