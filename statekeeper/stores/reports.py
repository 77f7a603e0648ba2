"""Reports: named, parameterised, expensive computations served through the cache.

The registry is generic: a :class:`Report` names its parameters, the computation, and the
tags whose invalidation makes its cached value obsolete (``workflow:{name}``,
``conversation:{user}``). Other patterns register theirs with :func:`reports.register`.

The workflow report is computed from the full history of every item of one workflow, per
partition (:class:`WorkflowShare`, on the worker owning the partition) and merged
(:func:`merge_workflow_report`). Time in state is exact: each share sends every duration
sample up to ``MAX_SAMPLES`` per state; beyond that a share sends a uniform random sample
with a weight, and the report says ``exact: false``. Percentiles are nearest-rank.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from statekeeper.exceptions import StatekeeperError

MAX_SAMPLES = 50_000  # duration samples per state and share before sampling starts
MIN_WINDOW_S = 1.0
ENTERING = frozenset({"workflow.start", "workflow.transition"})


class ReportError(StatekeeperError):
    """A report request that cannot be answered; ``status`` is the HTTP status to use."""

    status = 400
    code = "bad_request"


class UnknownSubject(ReportError):
    """The report's subject (e.g. the workflow) does not exist for this tenant."""

    status = 404
    code = "not_found"


class ReportContext(Protocol):
    """What a computation may use: the tenant, and queries over every partition."""

    tenant: str

    async def gather(self, query: str, params: Mapping[str, str]) -> list[Any]:
        """Run a ``@local_query`` on every partition's owner; one answer per owner."""
        ...


Compute = Callable[[ReportContext, Mapping[str, str]], Awaitable[Any]]


@dataclass(frozen=True)
class Param:
    """One query parameter of a report."""

    name: str
    description: str
    required: bool = True
    pattern: str = r".{1,256}"

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "required": self.required}


@dataclass(frozen=True)
class Report:
    """A cacheable computation: parameters, the function, and the tags it depends on."""

    name: str
    description: str
    params: tuple[Param, ...]
    compute: Compute
    tags: Callable[[Mapping[str, str]], list[str]]
    ttl_s: float | None = None  # None: STATEKEEPER_CACHE_TTL_S

    def parse(self, query: Mapping[str, str]) -> dict[str, str]:
        """The declared parameters from a query string; others are ignored."""
        params: dict[str, str] = {}
        for param in self.params:
            value = query.get(param.name)
            if value is None:
                if param.required:
                    raise ReportError(f"parameter {param.name!r} is required")
                continue
            if not re.fullmatch(param.pattern, value):
                raise ReportError(f"parameter {param.name!r} is not valid")
            params[param.name] = value
        return params

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "params": [p.public() for p in self.params],
        }


@dataclass
class ReportRegistry:
    """Reports by name."""

    reports: dict[str, Report] = field(default_factory=dict)

    def register(self, report: Report) -> Report:
        if not re.fullmatch(r"[a-z0-9_.-]{1,64}", report.name):
            raise ValueError(f"report name {report.name!r} must match [a-z0-9_.-]{{1,64}}")
        self.reports[report.name] = report
        return report

    def get(self, name: str) -> Report | None:
        return self.reports.get(name)

    def all(self) -> list[Report]:
        return [self.reports[name] for name in sorted(self.reports)]


reports = ReportRegistry()


# --- the workflow report -------------------------------------------------------------------


@dataclass
class WorkflowShare:
    """One partition's (or several partitions') contribution to a workflow report.

    Feed it every history record of the tenant, each item's records oldest first
    (records of other workflows are skipped). An entry into a state is a start or a
    transition (a transition to the same state counts too); the time from one entry to
    the item's next entry is one sample of time in the first state. Fail, resume,
    cancel and annotate do not move the item, so they do not end its time in state. A
    state the item is still in gives no sample: its duration is not known yet.
    """

    workflow: str
    entries: Counter[str] = field(default_factory=Counter)
    fails: Counter[str] = field(default_factory=Counter)
    durations: dict[str, list[int]] = field(default_factory=dict)
    first_ts: int | None = None
    last_ts: int | None = None
    _entered: dict[str, tuple[str, int]] = field(default_factory=dict)
    _current: dict[str, str] = field(default_factory=dict)

    def add(self, record: Mapping[str, Any]) -> None:
        if record.get("workflow") != self.workflow:
            return
        item, state, ts = str(record["key"]), str(record["to"]), int(record["ts"])
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        kind = record.get("type") or _infer_type(record)
        if kind in ENTERING:
            previous = self._entered.get(item)
            if previous is not None:
                self.durations.setdefault(previous[0], []).append(max(0, ts - previous[1]))
            self.entries[state] += 1
            self._entered[item] = (state, ts)
        elif kind == "workflow.fail":
            self.fails[state] += 1
        self._current[item] = state

    def to_json(self, max_samples: int = MAX_SAMPLES) -> dict[str, Any]:
        """A JSON-able summary that :func:`merge_workflow_report` can merge exactly."""
        items = Counter(self._current.values())
        states: dict[str, Any] = {}
        for state in set(self.entries) | set(self.fails) | set(items) | set(self.durations):
            samples = self.durations.get(state, [])
            weight = 1.0
            if len(samples) > max_samples:
                weight = len(samples) / max_samples
                samples = random.Random(len(samples)).sample(samples, max_samples)
            states[state] = {
                "items": items[state],
                "entries": self.entries[state],
                "fails": self.fails[state],
                "durations_ms": samples,
                "weight": weight,
            }
        return {"states": states, "first_ts": self.first_ts, "last_ts": self.last_ts}


def _infer_type(record: Mapping[str, Any]) -> str:
    """For status records written before ``type`` was added."""
    if record.get("from") is None:
        return "workflow.start"
    if record.get("from") != record.get("to"):
        return "workflow.transition"
    return "workflow.fail" if record.get("condition") == "failed" else "other"


def nearest_rank(samples: list[tuple[int, float]], q: float) -> int | None:
    """The smallest value with at least ``q`` of the total weight at or below it."""
    if not samples:
        return None
    ordered = sorted(samples)
    target = q * sum(weight for _, weight in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= target - 1e-9:
            return value
    return ordered[-1][0]


def merge_workflow_report(
    workflow: str, states: Iterable[str], shares: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Per state: items there now, median and p95 time in state, throughput, failure rate.

    ``states`` (the definition's) are always listed; states found only in the history
    (from an older definition) are listed too. Throughput is entries per hour over the
    observed window, from the first to the last history record of the workflow.
    """
    totals: dict[str, dict[str, Any]] = {s: _empty_state() for s in states}
    first: int | None = None
    last: int | None = None
    exact = True
    for share in shares:
        first = _min(first, share.get("first_ts"))
        last = _max(last, share.get("last_ts"))
        for state, part in share["states"].items():
            total = totals.setdefault(state, _empty_state())
            for name in ("items", "entries", "fails"):
                total[name] += part[name]
            total["samples"] += [(d, part["weight"]) for d in part["durations_ms"]]
            exact = exact and part["weight"] == 1.0
    window_s = max(((last or 0) - (first or 0)) / 1000, MIN_WINDOW_S)
    body = {state: _state_report(total, window_s) for state, total in totals.items()}
    return {
        "workflow": workflow,
        "items": sum(t["items"] for t in totals.values()),
        "states": body,
        "window": {"first_ts": first, "last_ts": last, "seconds": window_s},
        "exact": exact,
    }


def _state_report(total: dict[str, Any], window_s: float) -> dict[str, Any]:
    samples = total["samples"]
    median, p95 = nearest_rank(samples, 0.5), nearest_rank(samples, 0.95)
    entries = total["entries"]
    return {
        "items": total["items"],
        "entries": entries,
        "fails": total["fails"],
        "failure_rate": total["fails"] / entries if entries else None,
        "throughput_per_hour": entries * 3600 / window_s,
        "time_in_state_samples": round(sum(w for _, w in samples)),
        "median_s": median / 1000 if median is not None else None,
        "p95_s": p95 / 1000 if p95 is not None else None,
    }


def _empty_state() -> dict[str, Any]:
    return {"items": 0, "entries": 0, "fails": 0, "samples": []}


def _min(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)
