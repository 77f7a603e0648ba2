"""Process-local counters, exposed in Prometheus text format on ``/metrics``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Metrics:
    """Counters of what this worker did since it started."""

    applied: Counter[str] = field(default_factory=Counter)  # by event type
    deadlettered: Counter[str] = field(default_factory=Counter)  # by reason
    duplicates: Counter[str] = field(default_factory=Counter)  # by event type
    rerouted: int = 0
    replayed: int = 0  # records seen again after a crash, their change written again

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
        ]
        return "\n".join(lines) + "\n"


metrics = Metrics()
