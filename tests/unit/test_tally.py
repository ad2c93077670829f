"""holdfast.tally exposes what prometheus_client's own Counter and Histogram would, sample for
sample, while costing a dict update on the request path."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from holdfast.tally import CounterFamily, HistogramFamily, Tally

BOUNDS = (0.005, 0.01, 0.1, 1.0, 10.0, 1e6)
VALUES = (0.0, 0.005, 0.0051, 0.1, 3.0, 10.0, 1e6, 2e6, 7.5)


def exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return sorted(line for line in lines if "_created" not in line)


def test_same_exposition_as_prometheus_client() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("holdfast_x", "Things.", ["agent", "kind"], registry=theirs)
    histogram = Histogram("holdfast_y_seconds", "Times.", ["agent"], buckets=BOUNDS,
                          registry=theirs)  # fmt: skip
    c = CounterFamily("holdfast_x", "Things.", ["agent", "kind"])
    h = HistogramFamily("holdfast_y_seconds", "Times.", ["agent"], BOUNDS)
    Tally(ours, c, h)
    for i, value in enumerate(VALUES):
        kind = "a" if i % 3 else "b"
        counter.labels("s", kind).inc(value)
        c.inc(("s", kind), value)
        histogram.labels("s" if i % 2 else "t").observe(value)
        h.observe(("s" if i % 2 else "t",), value)
    assert exposition(ours) == exposition(theirs)
    assert c.value(("s", "b")) == sum(VALUES[0::3])
    assert h.count(("s",)) + h.count(("t",)) == len(VALUES) and h.count(("u",)) == 0


def test_an_empty_family_exposes_no_sample() -> None:
    registry = CollectorRegistry()
    Tally(registry, CounterFamily("holdfast_z", "None yet.", ["agent"]))
    assert "holdfast_z_total{" not in generate_latest(registry).decode()
