"""Per-input bounds of every fuzz target: time and memory, checked on each generated input and
each corpus file.

Memory is measured with tracemalloc, traced only while one input is handled (tracing the
example generation too would triple the tier's run time): the peak of the Python allocations
made meanwhile.
Inputs are at most a few KiB generated, 200 KB from the corpus; MAX_PEAK_BYTES is far above an
honest parse of either and far below what an allocation driven by a length field in the input
(a msgpack array header claiming 2**32 items, a JSON number of a million digits) would take.
"""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

BOUND_S: Final = 1.0
MAX_PEAK_BYTES: Final = 8 * 1024 * 1024


@contextmanager
def bounded(what: object = "") -> Iterator[None]:
    """Run the block as the handling of one input: fail if it takes over BOUND_S or allocates
    over MAX_PEAK_BYTES at its peak (exceptions from the block pass through unchanged)."""
    nested = tracemalloc.is_tracing()
    if not nested:
        tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        if not nested:
            tracemalloc.stop()
        label = repr(what)[:80]
        assert elapsed < BOUND_S, f"{label}: {elapsed:.3f}s over the {BOUND_S}s bound"
        assert peak - before < MAX_PEAK_BYTES, (
            f"{label}: {peak - before} bytes at peak, over the {MAX_PEAK_BYTES}-byte bound"
        )
