"""Retention policies: how long finished things are kept, per tenant and kind.

One setting, ``STATEKEEPER_RETENTION``, configures every pattern that forgets old data
(finished workflow items, closed sessions, conversation messages, cache entries, the
receipts of ended resources). Each pattern asks one question::

    from statekeeper.stores.retention import policy_for

    policy = policy_for(tenant, "conversation")   # -> Retention
    if policy.max_age_ms is not None: ...          # forget what is older than this
    if policy.max_items is not None: ...           # keep at most this many per owner
    if policy.max_bytes is not None: ...           # keep at most this many bytes per owner

That is the whole API: :func:`policy_for` and the three fields of :class:`Retention`
(each ``None`` meaning "no limit of that sort"). Kinds in use: ``workflow`` (completed and
cancelled items with their history, counted from when they finished), ``session`` (closed
sessions), ``conversation`` (messages, per user), ``cache`` (cached results) and
``resource`` (how long an ended resource's event ids are remembered, so a redelivered
``resource.register`` cannot bring it back).

The setting is either JSON or a compact list; both map ``tenant/kind`` patterns, where
either side may be ``*``, to a policy::

    STATEKEEPER_RETENTION='*/workflow=30d, acme/workflow=7d, */conversation=90d;items=2000'
    STATEKEEPER_RETENTION='{"*/conversation": {"max_age": "90d", "max_bytes": "5MB"},
                            "acme/cache": "1h", "globex/*": "forever"}'

A policy is a duration (``500ms``, ``45s``, ``15m``, ``12h``, ``30d``; a bare number is
seconds) optionally followed by ``;items=N`` and ``;bytes=SIZE`` (``512``, ``64KB``,
``5MB``, ``1GB``), or ``forever``. The most specific pattern wins as a whole:
``tenant/kind``, then ``tenant/*``, then ``*/kind``, then ``*/*``, then the built-in
default of the kind (:data:`DEFAULTS`); a kind with no default is kept forever.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from statekeeper.exceptions import ConfigError

_DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How much of one tenant's data of one kind is kept; ``None`` means no limit."""

    max_age_s: float | None = None
    max_items: int | None = None
    max_bytes: int | None = None

    @property
    def max_age_ms(self) -> int | None:
        """``max_age_s`` in milliseconds, the unit of every deadline."""
        return None if self.max_age_s is None else int(self.max_age_s * 1000)

    @property
    def keeps_forever(self) -> bool:
        return self.max_age_s is None and self.max_items is None and self.max_bytes is None


FOREVER = Retention()

DEFAULTS: Mapping[str, Retention] = {
    "workflow": Retention(max_age_s=30 * _DAY_S),
    "session": Retention(max_age_s=7 * _DAY_S),
    "conversation": Retention(max_age_s=90 * _DAY_S),
    "cache": Retention(max_age_s=_DAY_S),
    "resource": Retention(max_age_s=_DAY_S),
}
"""Built-in policies, used where no configured pattern matches."""

_NAME_RE = re.compile(r"^(\*|[a-z0-9][a-z0-9_-]{0,63})$")
_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$")
_SIZE_RE = re.compile(r"^(\d+)(b|kb|mb|gb)?$")
_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY_S, None: 1.0}
_UNITS_B = {"b": 1, "kb": 2**10, "mb": 2**20, "gb": 2**30, None: 1}


@dataclass(frozen=True, slots=True)
class RetentionPolicies:
    """A parsed ``STATEKEEPER_RETENTION``: ``(tenant, kind)`` patterns to policies."""

    rules: Mapping[tuple[str, str], Retention]
    answers: dict[tuple[str, str], Retention] = field(
        default_factory=dict, compare=False, repr=False
    )
    """Policies found so far (asked for every workflow event: a lookup, not four)."""

    def policy_for(self, tenant: str, kind: str) -> Retention:
        """The policy of ``tenant``'s data of ``kind`` (most specific pattern wins)."""
        found = self.answers.get((tenant, kind))
        if found is None:
            found = self._find(tenant, kind)
            if len(self.answers) < 10_000:
                self.answers[(tenant, kind)] = found
        return found

    def _find(self, tenant: str, kind: str) -> Retention:
        for pattern in ((tenant, kind), (tenant, "*"), ("*", kind), ("*", "*")):
            if pattern in self.rules:
                return self.rules[pattern]
        return DEFAULTS.get(kind, FOREVER)


def parse_retention(spec: str) -> RetentionPolicies:
    """Parse the setting (JSON object or compact list); raise :class:`ConfigError`."""
    spec = spec.strip()
    if not spec:
        return RetentionPolicies({})
    if spec.startswith("{"):
        try:
            raw: Any = json.loads(spec)
        except ValueError as exc:
            raise ConfigError(f"STATEKEEPER_RETENTION is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError("STATEKEEPER_RETENTION JSON must be an object")
        entries = list(raw.items())
    else:
        entries = [_split_entry(part) for part in spec.split(",") if part.strip()]
    return RetentionPolicies({_pattern(name): _policy(name, value) for name, value in entries})


def _split_entry(part: str) -> tuple[str, str]:
    name, sep, value = part.partition("=")
    if not sep:
        raise ConfigError(f"STATEKEEPER_RETENTION entry {part.strip()!r} is not tenant/kind=policy")
    return name.strip(), value.strip()


def _pattern(name: str) -> tuple[str, str]:
    tenant, sep, kind = name.partition("/")
    if not sep or not _NAME_RE.match(tenant) or not _NAME_RE.match(kind):
        raise ConfigError(f"STATEKEEPER_RETENTION: {name!r} is not tenant/kind (either may be *)")
    return tenant, kind


def _policy(name: str, value: Any) -> Retention:
    if isinstance(value, dict):
        unknown = set(value) - {"max_age", "max_items", "max_bytes"}
        if unknown:
            raise ConfigError(f"STATEKEEPER_RETENTION {name}: unknown fields {sorted(unknown)}")
        return Retention(
            max_age_s=_duration(name, value.get("max_age")),
            max_items=_count(name, value.get("max_items")),
            max_bytes=_size(name, value.get("max_bytes")),
        )
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"STATEKEEPER_RETENTION {name}: a policy is a string or an object")
    head, *options = str(value).split(";")
    fields: dict[str, str] = {}
    for option in options:
        key, sep, amount = option.partition("=")
        if key.strip() not in ("items", "bytes") or not sep:
            raise ConfigError(f"STATEKEEPER_RETENTION {name}: unknown option {option!r}")
        fields[key.strip()] = amount.strip()
    return Retention(
        max_age_s=_duration(name, head),
        max_items=_count(name, fields.get("items")),
        max_bytes=_size(name, fields.get("bytes")),
    )


def _duration(name: str, value: Any) -> float | None:
    if value is None or str(value).strip().lower() in ("", "forever", "none"):
        return None
    match = _DURATION_RE.match(str(value).strip().lower())
    if match is None:
        raise ConfigError(f"STATEKEEPER_RETENTION {name}: {value!r} is not a duration (e.g. 30d)")
    return float(match.group(1)) * _UNITS_S[match.group(2)]


def _count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not str(value).isdigit() or int(value) < 1:
        raise ConfigError(f"STATEKEEPER_RETENTION {name}: items must be a positive integer")
    return int(value)


def _size(name: str, value: Any) -> int | None:
    if value is None:
        return None
    match = _SIZE_RE.match(str(value).strip().lower())
    if match is None or int(match.group(1)) < 1:
        raise ConfigError(f"STATEKEEPER_RETENTION {name}: {value!r} is not a size (e.g. 5MB)")
    return int(match.group(1)) * _UNITS_B[match.group(2)]


@functools.cache
def configured() -> RetentionPolicies:
    """The policies of this process, from ``STATEKEEPER_RETENTION`` (read once)."""
    from statekeeper.settings import get_settings  # settings validates with this module

    return parse_retention(get_settings().retention)


def policy_for(tenant: str, kind: str) -> Retention:
    """The configured policy of ``tenant``'s data of ``kind`` (see the module docstring)."""
    return configured().policy_for(tenant, kind)
