"""The sidecar's outcome book: one value per (experiment, session, metric), bounded memory."""

from __future__ import annotations

import statistics

import pytest

from holdfast.experiments.series import combine, subtract
from holdfast.experiments.stats import Counts
from sidecar.experiments.feedback import ExperimentBook


def _only(book: ExperimentBook, metric: str = "score") -> dict[str, Counts]:
    return {v: c for (v, m), c in book.series("e1").items() if m == metric}


def test_a_repeat_replaces_the_sessions_value() -> None:
    book = ExperimentBook()
    assert book.record("e1", "a", "s1", "score", 4.0) == "recorded"
    assert book.record("e1", "a", "s2", "score", 10.0) == "recorded"
    assert book.record("e1", "a", "s1", "score", 4.0) == "replaced"  # a retried POST
    assert book.record("e1", "a", "s1", "score", 6.0) == "replaced"  # a corrected value
    a = _only(book)["a"]
    assert (a.n, a.total) == (2, 16.0)
    assert a.variance == pytest.approx(statistics.variance([6.0, 10.0]))
    # another metric or experiment of the same session is another outcome
    assert book.record("e1", "a", "s1", "csat", 1.0) == "recorded"
    assert book.record("e2", "b", "s1", "score", 1.0) == "recorded"
    assert _only(book)["a"].n == 2 and book.replaced == 2
    outcomes = {(o.experiment, o.metric): o.n for o in book.outcomes()}
    assert outcomes == {("e1", "score"): 2, ("e1", "csat"): 1, ("e2", "score"): 1}


def test_rate_replacement_moves_a_success() -> None:
    book = ExperimentBook()
    for i in range(10):
        book.record("e1", "b", f"s{i}", "resolved", 0.0)
    book.record("e1", "b", "s3", "resolved", 1.0)
    b = _only(book, "resolved")["b"]
    assert (b.n, b.total) == (10, 1.0) and b.variance == pytest.approx(0.1)


def test_lru_bound_forgets_the_oldest_session() -> None:
    book = ExperimentBook(remember=3)
    for i in range(4):
        book.record("e1", "a", f"s{i}", "m", 1.0)
    assert book.forgotten == 1
    # s0 was evicted: its repeat is a new observation (documented); s3 still replaces
    assert book.record("e1", "a", "s0", "m", 1.0) == "recorded"
    assert book.record("e1", "a", "s3", "m", 0.0) == "replaced"
    assert _only(book, "m")["a"].n == 5


def test_base_plus_local_minus_own_part_round_trips() -> None:
    key = ("a", "m")
    base = {key: Counts().add(1.0).add(2.0)}
    mine = {key: Counts().add(5.0), ("b", "m"): Counts().add(3.0)}
    stored = combine(base, mine)
    assert stored[key].n == 3 and stored[("b", "m")].n == 1
    back = subtract(stored, mine)
    assert set(back) == {key} and back[key].n == 2
    assert back[key].mean == pytest.approx(1.5) and back[key].variance == pytest.approx(0.5)
