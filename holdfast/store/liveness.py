"""Whether a failed etcd call means etcd is unreachable, or only that this process was late.

A liveness probe (``RangeMirror``'s ``store.revision()`` every 2 s) or any call with a deadline
can fail because the process's own event loop ran it late: a CPU-starved process creates the
call, then runs other callbacks for seconds while the call's deadline passes, or reads the
answer after its timer fired. Restarting every watch then (a create per range, a relist) or
failing over to another endpoint (which moves every watch of the connection) adds load to a
process and an etcd that are already behind: a storm. The decision is pure, here; how late the
loop ran is measured by ``holdfast.store.punctuality``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# A failure is the loop's own fault when the loop ran at least this late during the call, and at
# least this share of the call's time: a real outage with a punctual loop (lateness of a few
# ms) is judged exactly as before.
STARVED_MIN_S: Final = 0.2
STARVED_SHARE: Final = 0.25
# Failed probes excused in a row before one counts whatever the loop: a member that hangs while
# this process is starved is still found, a few probes later (≈ MAX_EXCUSED x (interval +
# call budget)), instead of never.
MAX_EXCUSED: Final = 5


def starved(late: float, elapsed: float) -> bool:
    """True if a call that took ``elapsed`` seconds, during which the event loop ran up to
    ``late`` seconds behind, did not get its fair share of the loop."""
    return late >= max(STARVED_MIN_S, STARVED_SHARE * elapsed)


class Verdict(StrEnum):
    ALIVE = "alive"  # the probe answered
    EXCUSED = "excused"  # it failed, but the loop was starved or the watch stream kept talking
    DEAD = "dead"  # it failed for want of etcd: restart the watch


@dataclass(frozen=True, slots=True)
class ProbeResult:
    failed: bool
    elapsed: float  # from when the probe was due to when its failure (or answer) was handled
    loop_late: float  # the longest the event loop ran late meanwhile
    stream_heard: bool  # the watch stream delivered events or progress meanwhile


def judge_probe(result: ProbeResult, excused_in_a_row: int) -> Verdict:
    """What a probe's result says about the watch; ``excused_in_a_row``: failed probes excused
    since the last one that answered (or counted)."""
    if not result.failed:
        return Verdict.ALIVE
    if excused_in_a_row >= MAX_EXCUSED:
        return Verdict.DEAD
    # etcd delivered on the watch stream while the probe failed: the stream is not hanging.
    if result.stream_heard or starved(result.loop_late, result.elapsed):
        return Verdict.EXCUSED
    return Verdict.DEAD
