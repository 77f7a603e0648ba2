"""Process-local counters, exposed in Prometheus text format on ``/metrics``."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass
class CacheMetrics:
    """The Redis cache (``stores/cache.py``): outcomes by computation name, latency sums."""

    hits: Counter[str] = field(default_factory=Counter)
    misses: Counter[str] = field(default_factory=Counter)
    stale: Counter[str] = field(default_factory=Counter)  # stale values served
    bypasses: Counter[str] = field(default_factory=Counter)  # answered without Redis
    computations: Counter[str] = field(default_factory=Counter)
    compute_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    latency_count: Counter[str] = field(default_factory=Counter)  # by status
    redis_errors: int = 0
    invalidations: int = 0  # tags invalidated (after debouncing)
    invalidations_scheduled: int = 0  # debounced invalidations not yet sent
    available: bool = True  # False while the circuit breaker is open

    def render_lines(self) -> list[str]:
        lines: list[str] = []
        counters: tuple[tuple[str, Mapping[str, float], str], ...] = (
            ("hits", self.hits, "Cached values served fresh."),
            ("misses", self.misses, "Requests that waited for a computation."),
            ("stale", self.stale, "Stale values served while one refresh ran."),
            ("bypasses", self.bypasses, "Requests computed directly: Redis unavailable."),
            ("computations", self.computations, "Computations run by this process."),
            ("compute_seconds", self.compute_seconds, "Time spent computing."),
        )
        for name, counter, help_text in counters:
            metric = f"statekeeper_cache_{name}_total"
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            lines += [f'{metric}{{name="{n}"}} {v:g}' for n, v in sorted(counter.items())]
        metric = "statekeeper_cache_latency_seconds"
        lines += [f"# HELP {metric} get_or_compute latency by outcome.", f"# TYPE {metric} summary"]
        for status in sorted(self.latency_count):
            lines.append(f'{metric}_sum{{status="{status}"}} {self.latency_seconds[status]:g}')
            lines.append(f'{metric}_count{{status="{status}"}} {self.latency_count[status]}')
        lines += [
            "# TYPE statekeeper_cache_redis_errors_total counter",
            f"statekeeper_cache_redis_errors_total {self.redis_errors}",
            "# TYPE statekeeper_cache_invalidations_total counter",
            f"statekeeper_cache_invalidations_total {self.invalidations}",
            "# TYPE statekeeper_cache_invalidations_scheduled gauge",
            f"statekeeper_cache_invalidations_scheduled {self.invalidations_scheduled}",
            "# HELP statekeeper_cache_available 0 while Redis is bypassed (circuit open).",
            "# TYPE statekeeper_cache_available gauge",
            f"statekeeper_cache_available {1 if self.available else 0}",
        ]
        return lines


@dataclass
class Metrics:
    """Counters of what this worker did since it started."""

    applied: Counter[str] = field(default_factory=Counter)  # by event type
    deadlettered: Counter[str] = field(default_factory=Counter)  # by reason
    duplicates: Counter[str] = field(default_factory=Counter)  # by event type
    rerouted: int = 0
    replayed: int = 0  # records seen again after a crash, their change written again
    native: int = 0  # workflow events applied by the compiled core (agents/workflow.py)
    cache: CacheMetrics = field(default_factory=CacheMetrics)
    sessions_started: int = 0
    sessions_closed: Counter[str] = field(default_factory=Counter)  # by reason
    resources_registered: int = 0
    resources_ended: Counter[str] = field(default_factory=Counter)  # ttl, idle, released
    purged: Counter[str] = field(default_factory=Counter)  # by kind (workflow, ...)

    def render(self) -> str:
        lines = [
            "# HELP statekeeper_events_applied_total Input events applied, by type.",
            "# TYPE statekeeper_events_applied_total counter",
        ]
        lines += [
            f'statekeeper_events_applied_total{{type="{t}"}} {n}'
            for t, n in sorted(self.applied.items())
        ]
        lines += [
            "# HELP statekeeper_events_deadlettered_total Inputs sent to the dead-letter topic.",
            "# TYPE statekeeper_events_deadlettered_total counter",
        ]
        lines += [
            f'statekeeper_events_deadlettered_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.deadlettered.items())
        ]
        lines += [
            "# HELP statekeeper_events_duplicate_total Redelivered events ignored, by type.",
            "# TYPE statekeeper_events_duplicate_total counter",
        ]
        lines += [
            f'statekeeper_events_duplicate_total{{type="{t}"}} {n}'
            for t, n in sorted(self.duplicates.items())
        ]
        lines += [
            "# HELP statekeeper_events_rerouted_total Events re-sent under their envelope key.",
            "# TYPE statekeeper_events_rerouted_total counter",
            f"statekeeper_events_rerouted_total {self.rerouted}",
            "# HELP statekeeper_events_replayed_total Records re-processed after a crash.",
            "# TYPE statekeeper_events_replayed_total counter",
            f"statekeeper_events_replayed_total {self.replayed}",
            "# HELP statekeeper_workflow_native_total Workflow events applied by the compiled "
            "core (the others by the Python path).",
            "# TYPE statekeeper_workflow_native_total counter",
            f"statekeeper_workflow_native_total {self.native}",
        ]
        lines += self.cache.render_lines()
        lines += [
            "# HELP statekeeper_sessions_started_total Sessions started.",
            "# TYPE statekeeper_sessions_started_total counter",
            f"statekeeper_sessions_started_total {self.sessions_started}",
            "# HELP statekeeper_sessions_closed_total Sessions closed, by reason.",
            "# TYPE statekeeper_sessions_closed_total counter",
        ]
        lines += [
            f'statekeeper_sessions_closed_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.sessions_closed.items())
        ]
        lines += [
            "# HELP statekeeper_resources_registered_total Resources registered.",
            "# TYPE statekeeper_resources_registered_total counter",
            f"statekeeper_resources_registered_total {self.resources_registered}",
            "# HELP statekeeper_resources_ended_total Resources ended, by reason (ttl, idle, "
            "released).",
            "# TYPE statekeeper_resources_ended_total counter",
        ]
        lines += [
            f'statekeeper_resources_ended_total{{reason="{r}"}} {n}'
            for r, n in sorted(self.resources_ended.items())
        ]
        lines += [
            "# HELP statekeeper_purged_total Entities purged by retention policies, by kind.",
            "# TYPE statekeeper_purged_total counter",
        ]
        lines += [
            f'statekeeper_purged_total{{kind="{k}"}} {n}' for k, n in sorted(self.purged.items())
        ]
        return "\n".join(lines) + "\n"


metrics = Metrics()
