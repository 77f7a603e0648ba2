"""PNG plots of the benchmark results (``bench/results/*.json`` -> ``docs/bench-*.png``).

Run with the bench virtualenv (matplotlib is a bench-only dependency):
``.venv-bench/bin/python bench/plot.py``; ``make bench`` does it after the runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def throughput(result: dict[str, Any]) -> Path:
    """Events/s through the same backlog: raw aiokafka loop, Quix Streams, statekeeper."""
    bars = [("raw aiokafka loop", result["raw_aiokafka"]["events_per_s"])]
    if result.get("quix_streams"):
        bars.append(("Quix Streams (peer)", result["quix_streams"]["events_per_s"]))
    bars.append(("statekeeper", result["statekeeper"]["events_per_s"]))
    fig, ax = plt.subplots(figsize=(7, 3))
    names, values = zip(*bars, strict=True)
    ax.barh(names, values, color=["#8a94a6", "#d08a2a", "#3b6fd8"][: len(bars)])
    ax.set_xscale("log")
    ax.set_xlabel("workflow events per second (log scale), one process, same broker")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:,}", va="center")
    ax.set_title(f"Throughput through a {result['statekeeper']['events']:,}-event backlog")
    return _save(fig, "bench-throughput.png")


def latency(result: dict[str, Any]) -> Path:
    """Produce-to-status percentiles at each offered load."""
    fig, ax = plt.subplots(figsize=(7, 3))
    for n, load in enumerate(result["under_load"]):
        color = f"C{n}"
        lines = [("statekeeper", load["latency_ms"], "-")]
        if load.get("raw_aiokafka"):  # the same load through the raw loop, same run
            lines.append(("raw aiokafka loop", load["raw_aiokafka"]["latency_ms"], "--"))
        for name, points, style in lines:
            keys = [k for k in ("p50", "p90", "p99", "max") if k in points]
            label = f"{load['offered_per_s']}/s, {name}"
            ax.plot(keys, [points[k] for k in keys], style, color=color, marker="o", label=label)
    ax.set_yscale("log")
    ax.set_ylabel("ms (log scale)")
    ax.set_title("Produce-to-status latency at fixed offered loads (open loop)")
    ax.legend(title="offered", fontsize="small")
    return _save(fig, "bench-latency.png")


def _save(fig: Any, name: str) -> Path:
    DOCS.mkdir(exist_ok=True)
    path = DOCS / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    workflow = _load("workflow")
    if workflow is None:
        print("bench/plot.py: no bench/results/workflow.json; run make bench first")
        return
    for made in (throughput(workflow), latency(workflow)):
        print(f"bench/plot.py: wrote {made.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
