"""How the cache lays out Redis: key names, the stored entry, and the two Lua scripts.

Keys (``ns`` is ``sk:{app id}``, so deployments sharing a Redis never meet; tenants match
``[a-z0-9][a-z0-9_-]*`` and cannot contain ``:``, so one tenant's keys never parse as
another's):

| key | holds |
|---|---|
| ``{ns}:c:{tenant}:{name}:{digest}`` | msgpack ``[1, created_ms, fresh_until_ms, [tag tokens], value]`` |
| ``{ns}:l:{tenant}:{name}:{digest}`` | single-flight lock (``SET NX PX``, a random token) |
| ``{ns}:t:{tenant}:{tag}`` | the tag's current token; invalidating a tag replaces it |
| ``{ns}:s:{tenant}:{tag}`` | entry keys written under the tag (for ``delete_tagged``) |

``digest`` is SHA-256 of the msgpack of the sorted parameters.
"""  # noqa: E501

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from statekeeper import codec

ENTRY_VERSION = 1
TAG_MEMORY_MS = 24 * 3600 * 1000  # a token that ages out only costs one recomputation

# Store an entry only if no tag moved since its tokens were read.
# KEYS: entry, tag tokens (n), tag sets (n). ARGV: payload, px, n, expected tokens (n).
WRITE_SCRIPT = """
local n = tonumber(ARGV[3])
for i = 1, n do
  if (redis.call('GET', KEYS[1 + i]) or '') ~= ARGV[3 + i] then return 0 end
end
local px = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
for i = 1, n do
  local set = KEYS[1 + n + i]
  redis.call('SADD', set, KEYS[1])
  if redis.call('PTTL', set) < px then redis.call('PEXPIRE', set, px) end
end
return 1
"""

# Release a lock only if it is still ours.
RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Entry:
    """A stored value with when it was computed, until when it is fresh, and its tag tokens."""

    created_ms: int
    fresh_until_ms: int
    tokens: list[str]
    value: Any

    def encode(self) -> bytes:
        return codec.pack(
            [ENTRY_VERSION, self.created_ms, self.fresh_until_ms, self.tokens, self.value]
        )

    @classmethod
    def decode(cls, raw: Any) -> Entry | None:
        """The entry, or None for bytes of another schema version or not ours."""
        try:
            version, created, fresh_until, tokens, value = codec.unpack(raw)
        except (codec.DecodeError, ValueError, TypeError):
            return None
        return cls(created, fresh_until, tokens, value) if version == ENTRY_VERSION else None

    def age_s(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.created_ms) / 1000)


@dataclass(frozen=True)
class EntryKeys:
    """The Redis keys of one (tenant, name, params) and of its tags."""

    entry: str
    lock: str
    tag_tokens: list[str]
    tag_sets: list[str]


@dataclass(frozen=True)
class KeySpace:
    """Key names under one namespace."""

    namespace: str

    def for_entry(
        self, tenant: str, name: str, params: Mapping[str, Any], tags: Iterable[str]
    ) -> EntryKeys:
        """Keys of one computation; the tenant is part of every one of them."""
        if not tenant or ":" in tenant or not name or ":" in name:
            raise ValueError("tenant and computation name must be non-empty, without ':'")
        digest = hashlib.sha256(codec.pack(sorted(params.items()))).hexdigest()[:32]
        base = f"{tenant}:{name}:{digest}"
        unique = sorted(set(tags))
        return EntryKeys(
            entry=f"{self.namespace}:c:{base}",
            lock=f"{self.namespace}:l:{base}",
            tag_tokens=[self.tag_token(tenant, tag) for tag in unique],
            tag_sets=[self.tag_set(tenant, tag) for tag in unique],
        )

    def tag_token(self, tenant: str, tag: str) -> str:
        return f"{self.namespace}:t:{tenant}:{tag}"

    def tag_set(self, tenant: str, tag: str) -> str:
        return f"{self.namespace}:s:{tenant}:{tag}"
