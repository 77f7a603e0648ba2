"""Gauges and histograms read at scrape time: consumer lag, table sizes, HTTP latency.

Counters of what happened live in :mod:`statekeeper.metrics`; this module adds what is
measured when ``/metrics`` is read (lag per input partition, keys per table from RocksDB's
own estimate) and the latency histogram of every API route.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from faust.types import TP

from statekeeper.agents.batched import batched_inputs
from statekeeper.agents.pipeline import processed_offsets
from statekeeper.app import app
from statekeeper.web.freshness import highwater, lag

BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)


@dataclass
class Histogram:
    """Cumulative-bucket histogram in Prometheus' shape, in milliseconds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    total_ms: float = 0.0

    def observe(self, value_ms: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS_MS, value_ms)] += 1
        self.total_ms += value_ms

    def render(self, name: str, labels: str) -> list[str]:
        lines, running = [], 0
        for bound, count in zip((*BUCKETS_MS, "+Inf"), self.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{{labels},le="{bound}"}} {running}')
        lines.append(f"{name}_sum{{{labels}}} {self.total_ms:.3f}")
        lines.append(f"{name}_count{{{labels}}} {running}")
        return lines


http_latency: defaultdict[tuple[str, str, int], Histogram] = defaultdict(Histogram)
"""(route, method, status) -> latency histogram."""


def observe_request(route: str, method: str, status: int, elapsed_ms: float) -> None:
    http_latency[(route, method, status)].observe(elapsed_ms)


def render() -> str:
    """The scrape-time part of ``/metrics``."""
    lines = [
        "# HELP statekeeper_http_request_duration_ms API request latency.",
        "# TYPE statekeeper_http_request_duration_ms histogram",
    ]
    for (route, method, status), histogram in sorted(http_latency.items()):
        labels = f'route="{route}",method="{method}",status="{status}"'
        lines += histogram.render("statekeeper_http_request_duration_ms", labels)
    lines += [
        "# HELP statekeeper_consumer_lag Records in an owned input partition not yet handled.",
        "# TYPE statekeeper_consumer_lag gauge",
    ]
    lines += [
        f'statekeeper_consumer_lag{{topic="{tp.topic}",partition="{tp.partition}"}} {lag}'
        for tp, lag in sorted(_lags().items())
    ]
    lines += [
        "# HELP statekeeper_table_keys Keys in this worker's partitions of a table "
        "(RocksDB estimate, standbys included).",
        "# TYPE statekeeper_table_keys gauge",
    ]
    lines += [f'statekeeper_table_keys{{table="{n}"}} {k}' for n, k in sorted(_table_keys())]
    return "\n".join(lines) + "\n"


def _lags() -> dict[TP, int]:
    inputs = set(app.topic_names.inputs())
    lags: dict[TP, int] = {}
    batched = [TP(tp.topic, tp.partition) for b in batched_inputs.values() for tp in b.owned()]
    for tp in [*app.assignor.assigned_actives(), *batched]:
        if tp.topic not in inputs:
            continue
        high = highwater(tp)
        done = processed_offsets.get((tp.topic, tp.partition))
        if high is not None and done is not None:
            lags[tp] = lag(high, done)
    return lags


def _table_keys() -> list[tuple[str, int]]:
    sizes = []
    for table in app.tables.values():
        dbs = getattr(table.data, "_dbs", None)
        if dbs is None:
            continue
        total = sum(db.property_int_value("rocksdb.estimate-num-keys") or 0 for db in dbs.values())
        sizes.append((table.name, total))
    return sizes
