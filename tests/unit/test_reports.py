"""The workflow report computed from history records: time in state, throughput, failures."""

from __future__ import annotations

from typing import Any

import pytest

from statekeeper.stores.reports import (
    Param,
    Report,
    ReportError,
    ReportRegistry,
    WorkflowShare,
    merge_workflow_report,
    nearest_rank,
)

STATES = ["draft", "sent", "paid", "void"]
S = 1000  # ms


def record(item: str, kind: str, to: str, ts: int, workflow: str = "invoice") -> dict[str, Any]:
    return {"key": item, "workflow": workflow, "type": kind, "to": to, "ts": ts}


def history(item: str, *steps: tuple[str, str, int]) -> list[dict[str, Any]]:
    return [record(item, kind, to, ts) for kind, to, ts in steps]


def share_of(*records: list[dict[str, Any]], max_samples: int = 50_000) -> dict[str, Any]:
    share = WorkflowShare("invoice")
    for item_records in records:
        for r in item_records:
            share.add(r)
    return share.to_json(max_samples)


def test_time_in_state_comes_from_consecutive_entries_of_each_item() -> None:
    a = history(
        "a",
        ("workflow.start", "draft", 0),
        ("workflow.transition", "sent", 10 * S),
        ("workflow.transition", "paid", 40 * S),
    )
    b = history("b", ("workflow.start", "draft", 5 * S), ("workflow.transition", "sent", 25 * S))

    report = merge_workflow_report("invoice", STATES, [share_of(a, b)])

    draft, sent = report["states"]["draft"], report["states"]["sent"]
    assert draft["time_in_state_samples"] == 2  # 10 s and 20 s
    assert (draft["median_s"], draft["p95_s"]) == (10.0, 20.0)
    assert sent["time_in_state_samples"] == 1  # b is still in sent: no sample yet
    assert sent["median_s"] == 30.0
    assert (report["states"]["paid"]["items"], sent["items"], draft["items"]) == (1, 1, 0)
    assert report["states"]["void"]["median_s"] is None  # listed from the definition
    assert report["items"] == 2


def test_fail_and_resume_do_not_end_the_time_in_state_and_count_as_failures() -> None:
    a = history(
        "a",
        ("workflow.start", "draft", 0),
        ("workflow.fail", "draft", 3 * S),
        ("workflow.resume", "draft", 4 * S),
        ("workflow.fail", "draft", 5 * S),
        ("workflow.resume", "draft", 6 * S),
        ("workflow.transition", "sent", 9 * S),
    )
    b = history("b", ("workflow.start", "draft", 0), ("workflow.transition", "void", 1 * S))

    report = merge_workflow_report("invoice", STATES, [share_of(a, b)])

    draft = report["states"]["draft"]
    assert (draft["entries"], draft["fails"], draft["failure_rate"]) == (2, 2, 1.0)
    assert (draft["median_s"], draft["p95_s"]) == (1.0, 9.0)
    assert report["states"]["sent"]["failure_rate"] == 0.0
    assert report["states"]["paid"]["failure_rate"] is None  # never entered


def test_throughput_is_entries_per_hour_over_the_observed_window() -> None:
    items = [
        history(f"i{n}", ("workflow.start", "draft", n * 60 * S)) for n in range(31)
    ]  # 31 starts over 30 minutes

    report = merge_workflow_report("invoice", STATES, [share_of(*items)])

    assert report["window"]["seconds"] == 1800
    assert report["states"]["draft"]["throughput_per_hour"] == pytest.approx(62.0)
    assert report["states"]["sent"]["throughput_per_hour"] == 0.0


def test_shares_of_several_partitions_merge_to_the_single_share_answer() -> None:
    items = [
        history(
            f"i{n}",
            ("workflow.start", "draft", n * S),
            ("workflow.transition", "sent", n * S + (n * 37 % 101) * S),
            ("workflow.fail", "sent", n * S + 200 * S),
        )
        for n in range(60)
    ]

    whole = merge_workflow_report("invoice", STATES, [share_of(*items)])
    parts = merge_workflow_report(
        "invoice", STATES, [share_of(*items[:7]), share_of(*items[7:30]), share_of(*items[30:])]
    )

    assert parts == whole
    assert whole["exact"] is True


def test_other_workflows_records_are_ignored() -> None:
    share = WorkflowShare("invoice")
    share.add(record("x", "workflow.start", "draft", 0, workflow="order"))

    report = merge_workflow_report("invoice", STATES, [share.to_json()])

    assert report["items"] == 0
    assert report["window"]["first_ts"] is None


def test_nearest_rank_percentiles() -> None:
    values = [(v, 1.0) for v in range(1, 101)]
    assert nearest_rank(values, 0.5) == 50
    assert nearest_rank(values, 0.95) == 95
    assert nearest_rank([(7, 1.0)], 0.95) == 7
    assert nearest_rank([], 0.5) is None
    assert nearest_rank([(1, 1.0), (10, 3.0)], 0.5) == 10  # weights count


def test_beyond_the_sample_cap_a_weighted_sample_stays_close_and_says_so() -> None:
    items = [
        history(f"i{n}", ("workflow.start", "draft", 0), ("workflow.transition", "sent", n))
        for n in range(1, 2001)
    ]

    report = merge_workflow_report("invoice", STATES, [share_of(*items, max_samples=500)])

    draft = report["states"]["draft"]
    assert report["exact"] is False
    assert draft["time_in_state_samples"] == 2000
    assert draft["median_s"] == pytest.approx(1.0, rel=0.1)  # exact: 1000 ms
    assert draft["p95_s"] == pytest.approx(1.9, rel=0.05)


def test_report_parameters_are_checked() -> None:
    async def compute(ctx: Any, params: Any) -> Any:
        return params

    report = Report(
        "demo", "d", (Param("workflow", "w"), Param("state", "s", required=False)), compute,
        tags=lambda p: [],
    )  # fmt: skip
    registry = ReportRegistry()
    registry.register(report)

    assert report.parse({"workflow": "w1", "other": "x"}) == {"workflow": "w1"}
    with pytest.raises(ReportError):
        report.parse({})
    with pytest.raises(ReportError):
        report.parse({"workflow": ""})
    assert [r.name for r in registry.all()] == ["demo"]
    with pytest.raises(ValueError):
        registry.register(Report("Bad Name", "d", (), compute, tags=lambda p: []))
