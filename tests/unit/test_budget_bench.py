"""bench.budgets still runs: its in-process admission measure on every configuration, and its
report from a fleet result (the fleet scenario itself needs real processes: the lead runs it)."""

from __future__ import annotations

import pytest

from bench.budget_admission import WINDOWS, admission_cost
from bench.budgets import END, START, main, render


def test_admission_cost_runs_on_every_configuration() -> None:
    costs = {kind: admission_cost(kind, rounds=2, per_round=20) for kind in WINDOWS}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in costs.values())
    fleet = {
        "spent": 5900,
        "charged_prompt": 3000,
        "charged_completion": 2900,
        "produced_prompt": 1400,
        "produced_completion": 2901,
        "r1": (2000, 2000),
        "r2": (900, 901),
        "resets": 14,
        "counts": {"done": 40, "cut": 12, "reset": 14, "refused": 134},
        "elapsed": 3.2,
    }
    section = render(costs, fleet)
    assert section.startswith(START) and section.endswith(END)
    assert "| overspend: provider-side spend - limit | -1699 |" in section
    assert "14 resets) | 1 |" in section


def test_help_describes_the_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])  # runs nothing
    assert info.value.code == 0 and "Token budgets" in capsys.readouterr().out


def test_burst_report_puts_both_modes_side_by_side() -> None:
    from bench.budget_burst import END as BURST_END
    from bench.budget_burst import START as BURST_START
    from bench.budget_burst import Outcome
    from bench.budget_burst import render as burst_render

    outcomes = [
        Outcome("queueing", 20, 60, 420, 399, 399, 19, 41, 0, 6.1, 7.0, 3.2, 4.21),
        Outcome("immediate", 20, 60, 420, 42, 42, 2, 0, 58, 0.2, 0.5),
    ]
    section = burst_render(outcomes)
    assert section.startswith(BURST_START) and section.endswith(BURST_END)
    assert "| 60 | queueing | 95.0% | 19 | 41 + 0 | 3.20 / 4.21 | 6.10 | -21 |" in section
    assert "| 60 | immediate | 10.0% | 2 | 0 + 58 | 0.00 / 0.00 | 0.20 | -378 |" in section
