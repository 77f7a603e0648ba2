"""The summaries bench/workflow.py writes into its results (and the README quotes)."""

from __future__ import annotations

from bench.workflow import _median_ratio, worst_seconds


def test_ratios_are_the_median_of_the_rounds_that_had_the_other_side() -> None:
    turns = [
        {"ratio_to_peer": 0.64, "ratio_to_raw": 0.18},
        {"ratio_to_peer": 0.85, "ratio_to_raw": None},
        {"ratio_to_peer": 0.82, "ratio_to_raw": 0.22},
    ]
    assert _median_ratio(turns, "ratio_to_peer") == 0.82
    assert _median_ratio(turns, "ratio_to_raw") == 0.2
    assert _median_ratio([{"ratio_to_peer": None}], "ratio_to_peer") is None


def test_a_stall_shows_as_the_worst_second() -> None:
    begin = 1_000.0
    by_second = {1_000 + s: [10.0, 12.0, 11.0] for s in range(10)}
    by_second[1_004] = [10.0, 850.0, 12.0]
    by_second[1_007] = [10.0, 60.0]
    worst = worst_seconds(by_second, begin, count=2)
    assert [(w["second"], w["max"], w["events"]) for w in worst] == [
        (4.0, 850.0, 3),
        (7.0, 60.0, 2),
    ]
