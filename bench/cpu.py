"""CPU accounting around a measured round: our processes by role, everything else on the machine
(other people's test runs share it), and each core's busy and stolen time."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

RELAY, LOADGEN, UPSTREAM, FOREIGN = "relay", "load generator", "fake upstream", "other processes"


def process_cpu(pid: int | None, *, tree: bool = False) -> float:
    """User + system CPU seconds of ``pid`` (all its threads); 0 for no process.

    ``tree``: of its whole process tree (a Node server, a Python server with worker
    processes): every live descendant, and the children each one has already reaped."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if tree else [root]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue  # exited meanwhile: its parent's children_* times count it once reaped
        total += t.user + t.system + (t.children_user + t.children_system if tree else 0.0)
    return total


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (pages they share are counted in each)."""
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def our_pids() -> set[int]:
    """This process and everything it started (etcd, configsvc, the servers under test)."""
    me = psutil.Process()
    return {me.pid, *(child.pid for child in me.children(recursive=True))}


def foreign_cpu(ours: set[int]) -> dict[int, float]:
    """CPU seconds so far of every process that is not ours, by pid."""
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["cpu_times"]):
        times = proc.info.get("cpu_times")
        if proc.pid not in ours and times is not None:
            out[proc.pid] = times.user + times.system
    return out


@dataclass(frozen=True, slots=True)
class CoreTimes:
    """Seconds one core spent working, stolen by the hypervisor, and in all."""

    busy: float
    steal: float
    total: float

    @classmethod
    def read(cls) -> list[CoreTimes]:
        out = []
        for t in psutil.cpu_times(percpu=True):
            steal = getattr(t, "steal", 0.0)
            idle = t.idle + getattr(t, "iowait", 0.0)
            total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
            out.append(cls(total - idle - steal, steal, total))
        return out

    def __sub__(self, other: CoreTimes) -> CoreTimes:
        return CoreTimes(self.busy - other.busy, self.steal - other.steal, self.total - other.total)

    def __add__(self, other: CoreTimes) -> CoreTimes:
        return CoreTimes(self.busy + other.busy, self.steal + other.steal, self.total + other.total)


@dataclass(frozen=True, slots=True)
class Usage:
    """What one window cost: CPU seconds by role (FOREIGN included) and per-core times."""

    cpu: dict[str, float]
    cores: list[CoreTimes]


class Probe:
    """``start()`` then ``stop()`` around a window; roles map to pids (None: not running).

    The relay's CPU is its whole process tree's; the other roles' is their own process's (the
    load generator is the harness, whose tree holds every process under test)."""

    def __init__(self, roles: Mapping[str, int | None]) -> None:
        self._roles = dict(roles)
        self._ours: set[int] = set()
        self._cpu: dict[str, float] = {}
        self._foreign: dict[int, float] = {}
        self._cores: list[CoreTimes] = []

    def _role_cpu(self, role: str, pid: int | None) -> float:
        return process_cpu(pid, tree=role == RELAY)

    def start(self) -> None:
        self._ours = our_pids()  # again each window: a server under test may have forked
        self._cpu = {role: self._role_cpu(role, pid) for role, pid in self._roles.items()}
        self._foreign = foreign_cpu(self._ours)
        self._cores = CoreTimes.read()

    def stop(self) -> Usage:
        cores = CoreTimes.read()
        cpu = {
            role: self._role_cpu(role, pid) - self._cpu[role] for role, pid in self._roles.items()
        }
        foreign = foreign_cpu(self._ours)
        cpu[FOREIGN] = sum(max(0.0, t - self._foreign.get(pid, 0.0)) for pid, t in foreign.items())
        return Usage(cpu, [b - a for a, b in zip(self._cores, cores, strict=True)])


@dataclass
class Gate:
    """Re-runs a rotation of rounds that other processes disturbed, within a time budget.

    ``threshold`` is the share of a core that other processes (or steal) may take in a round;
    ``budget`` is the seconds the whole run may spend on discarded rotations and waiting."""

    threshold: float
    budget: float
    discarded: dict[str, int] = field(default_factory=dict)

    async def redo(self, phase: str, disturbed: float, rotation_seconds: float) -> bool:
        """True when the rotation must be discarded and run again (after a quiet wait)."""
        if disturbed < self.threshold or self.budget < 2 * rotation_seconds:
            return False
        self.discarded[phase] = self.discarded.get(phase, 0) + 1
        started = time.monotonic()
        max_wait = min(10.0, self.budget - 2 * rotation_seconds)
        await asyncio.to_thread(wait_quiet, self.threshold, max_wait, 0.5)
        self.budget -= rotation_seconds + (time.monotonic() - started)
        return True


def wait_quiet(threshold: float, max_wait: float, window: float = 1.0) -> tuple[float, float]:
    """Wait until other processes use under ``threshold`` of a core, and the hypervisor steals
    under ``threshold`` of any core, over two windows in a row, or ``max_wait`` seconds passed;
    returns (seconds waited, the last window's disturbance as a share of a core)."""
    ours = our_pids()
    started = time.monotonic()
    calm = 0
    share = 0.0
    while True:
        before, cores0 = foreign_cpu(ours), CoreTimes.read()
        time.sleep(window)
        after, cores1 = foreign_cpu(ours), CoreTimes.read()
        used = sum(max(0.0, t - before.get(pid, 0.0)) for pid, t in after.items())
        share = max(
            used / window, worst_steal([b - a for a, b in zip(cores0, cores1, strict=True)])
        )
        calm = calm + 1 if share < threshold else 0
        waited = time.monotonic() - started
        if calm >= 2 or waited >= max_wait:
            return waited, share


def worst_steal(cores: list[CoreTimes]) -> float:
    """The largest share of its time that any core lost to the hypervisor."""
    return max((c.steal / c.total for c in cores if c.total > 0), default=0.0)


def disturbance(usage: Usage, seconds: float) -> float:
    """How disturbed a window was, as a share of a core: other processes' CPU or the worst
    core's stolen time, whichever is larger."""
    foreign = usage.cpu.get(FOREIGN, 0.0) / seconds if seconds > 0 else 0.0
    return max(foreign, worst_steal(usage.cores))


def speed_reference(seconds: float = 0.5) -> float:
    """Microseconds per unit of a fixed pure-Python workload on the current core: the VM's own
    speed drifts with the host's load (invisible as steal), so figures of two runs compare
    only alongside this."""
    payload = {"model": "bench", "messages": [{"role": "user", "content": "x" * 64}], "n": 1}
    units = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            json.loads(json.dumps(payload))
            sum(range(64))
        units += 100
    return (time.perf_counter() - started) / units * 1e6
