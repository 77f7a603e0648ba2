"""Workflow definitions: validation, and the registry every worker keeps in memory."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from statekeeper.topics.rejections import Reason, Rejected

logger = logging.getLogger(__name__)

MAX_STATES = 256


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """A validated workflow: its states, start, ends, allowed moves and SLAs."""

    tenant: str
    name: str
    states: tuple[str, ...]
    initial: str
    terminal: frozenset[str]
    transitions: frozenset[tuple[str, str]]
    sla_seconds: dict[str, int] = field(default_factory=dict)

    def allows(self, source: str, target: str) -> bool:
        return (source, target) in self.transitions

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "workflow": self.name,
            "states": list(self.states),
            "initial": self.initial,
            "terminal": sorted(self.terminal),
            "transitions": sorted([a, b] for a, b in self.transitions),
            "sla_seconds": dict(self.sla_seconds),
        }


def parse_definition(tenant: str, name: str, data: dict[str, Any]) -> WorkflowDefinition:
    """Validate ``workflow.define`` data; raise :class:`Rejected` (``invalid_data``)."""
    states = data.get("states")
    if not isinstance(states, list) or not states or not all(_is_name(s) for s in states):
        raise _invalid("'states' must be a non-empty list of non-empty strings")
    if len(states) > MAX_STATES or len(set(states)) != len(states):
        raise _invalid(f"'states' must be unique and at most {MAX_STATES}")
    known = set(states)
    initial = data.get("initial")
    if not isinstance(initial, str) or initial not in known:
        raise _invalid("'initial' must be one of 'states'")
    terminal = data.get("terminal", [])
    if not isinstance(terminal, list) or not set(terminal) <= known:
        raise _invalid("'terminal' must be a list of states")
    return WorkflowDefinition(
        tenant=tenant,
        name=name,
        states=tuple(states),
        initial=initial,
        terminal=frozenset(terminal),
        transitions=_parse_transitions(data.get("transitions"), known),
        sla_seconds=_parse_slas(data.get("sla_seconds", {}), known),
    )


def _parse_transitions(raw: Any, known: set[str]) -> frozenset[tuple[str, str]]:
    if not isinstance(raw, list):
        raise _invalid("'transitions' must be a list of [from, to] pairs")
    pairs = set()
    for pair in raw:
        if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= known):
            raise _invalid(f"transition {pair!r} is not a [from, to] pair of known states")
        pairs.add((pair[0], pair[1]))
    return frozenset(pairs)


def _parse_slas(raw: Any, known: set[str]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise _invalid("'sla_seconds' must be a map of state to seconds")
    for state, seconds in raw.items():
        if state not in known or not isinstance(seconds, int) or isinstance(seconds, bool):
            raise _invalid(f"sla for {state!r} must name a state and be an integer")
        if seconds <= 0:
            raise _invalid(f"sla for {state!r} must be positive")
    return dict(raw)


def _is_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 128


def _invalid(detail: str) -> Rejected:
    return Rejected(Reason.INVALID_DATA, detail)


SourcePosition = tuple[int, int]
"""(partition, offset) of the ``workflow.define`` record a definition came from."""


class DefinitionRegistry:
    """In-memory map of valid definitions, ``(tenant, workflow) -> definition``.

    Every worker holds all of them, so a lookup never leaves the process. A definition
    replaces the held one only if it comes from a later source record, so reading the
    same definition twice (source and accepted topics) never goes back in time.
    """

    def __init__(self) -> None:
        self._definitions: dict[tuple[str, str], tuple[WorkflowDefinition, SourcePosition]] = {}
        self.caught_up = asyncio.Event()

    @property
    def held(self) -> dict[tuple[str, str], tuple[WorkflowDefinition, SourcePosition]]:
        """The registry's own map, live: (tenant, name) -> (definition, where it came from).
        Read it, never change it (the compiled workflow core reads it for every event)."""
        return self._definitions

    def get(self, tenant: str, name: str) -> WorkflowDefinition | None:
        held = self._definitions.get((tenant, name))
        return held[0] if held else None

    def put(self, definition: WorkflowDefinition, source: SourcePosition) -> bool:
        """Hold ``definition`` unless a later one is held already; True when it changed."""
        key = (definition.tenant, definition.name)
        held = self._definitions.get(key)
        if held is not None and held[1] >= source:
            return False
        self._definitions[key] = (definition, source)
        return True

    def for_tenant(self, tenant: str) -> list[WorkflowDefinition]:
        return [d for (t, _), (d, _) in sorted(self._definitions.items()) if t == tenant]

    def __len__(self) -> int:
        return len(self._definitions)
