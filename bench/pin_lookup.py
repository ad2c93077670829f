"""What pinning costs on the request path: a dict hit for a pinned session, beside the etcd
round trip it replaces, and the one etcd exchange of a session's first turn on a sidecar.

In one process and one run: ``Pinning.lookup`` (the sidecar's request-path call: pin-table
lookup, release lookup, metric; no await) for sessions already pinned among PINS pins and for
requests without a session, and ``Pinning.resolve`` for brand-new sessions decided locally (hash,
record, queue: what a first turn does when etcd does not answer within --pin-create-timeout).
Then, against a real single-node etcd on loopback: ``EtcdStore.get`` of a pin key (what a design
that read pins from etcd per request would pay at the very least), ``Pinning.first_turn`` of new
sessions (one create-if-absent transaction under the pin writer's lease), and of sessions that
another sidecar pinned first (the create loses, the stored pin is read and adopted).
``python -m bench.pin_lookup`` replaces its section of bench/RESULTS.md; ``--quick`` runs a few
iterations of each and only prints (a smoke run).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import uvloop
from prometheus_client import CollectorRegistry

from bench.sections import markers, replace_section
from bench.stats import median, percentile
from holdfast.keyspace import Keyspace, Pin, Release, Route
from holdfast.logs import configure
from holdfast.store import KeyValue
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode
from sidecar.config.state import ConfigSnapshot, ConfigState
from sidecar.pins.claim import PinClaims
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter
from sidecar.settings.model import DEFAULT_PIN_CREATE_TIMEOUT

AGENT: Final = "bench"
KS: Final = Keyspace("bench")
START, END = markers("pin-lookup")
HIT: Final = "pinned session (dict hit)"
LOCAL: Final = "new session decided locally (hash + local pin + queue)"
NONE: Final = "no session (stable)"
FIRST: Final = "`Pinning.first_turn`: new session, pin created in etcd"
ADOPTED: Final = "`Pinning.first_turn`: session another sidecar pinned (create loses, read)"
GET: Final = "`EtcdStore.get` of one pin key (loopback etcd)"


@dataclass(frozen=True, slots=True)
class Sizes:
    pins: int = 100_000
    calls: int = 200_000
    batch: int = 1_000
    etcd_gets: int = 3_000
    first_turns: int = 2_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(pins=1_000, calls=4_000, batch=100, etcd_gets=100, first_turns=100)


def config() -> ConfigSnapshot:
    state = ConfigState(KS, AGENT)
    kvs: dict[str, KeyValue] = {}
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://127.0.0.1:1")
        kvs[KS.release(AGENT, name)] = KeyValue(KS.release(AGENT, name), release.encode(), 1, 1, 1)
    route = Route(agent=AGENT, stable="r1", canary="r2", canary_percent=10.0)
    kvs[KS.route(AGENT)] = KeyValue(KS.route(AGENT), route.encode(), 2, 2, 1)
    state.apply_reset(10, kvs, "etcd")
    assert state.current is not None
    return state.current


def pin_kv(i: int, prefix: str = "s") -> KeyValue:
    now = time.time()
    session = f"{prefix}{i}"
    pin = Pin(agent=AGENT, session=session, release="r1", pinned_at=now, revision=3, touched_at=now)
    key = KS.pin(AGENT, session)
    return KeyValue(key, pin.encode(), 100 + i, 100 + i, 1)


def per_call_ns(
    resolve: Callable[[str | None], object], sessions: list[str | None], batch: int
) -> list[float]:
    """Nanoseconds per call, one sample per batch of ``batch`` calls."""
    samples = []
    for start in range(0, len(sessions), batch):
        chunk = sessions[start : start + batch]
        t0 = time.perf_counter_ns()
        for session in chunk:
            resolve(session)
        samples.append((time.perf_counter_ns() - t0) / len(chunk))
    return samples


def in_process(sizes: Sizes) -> dict[str, list[float]]:
    snapshot = config()
    table = PinTable(KS, AGENT)
    table.apply_reset({kv.key: kv for kv in (pin_kv(i) for i in range(sizes.pins))})
    pinning = Pinning(AGENT, table, PinMetrics(CollectorRegistry(), AGENT), ttl=86400)

    def lookup(session: str | None) -> object:
        return pinning.lookup(snapshot, AGENT, session)

    def local(session: str | None) -> object:
        return pinning.resolve(snapshot, AGENT, session)

    rng = random.Random(7)
    pinned: list[str | None] = [f"s{rng.randrange(sizes.pins)}" for _ in range(sizes.calls)]
    fresh: list[str | None] = [f"new-{i}" for i in range(sizes.calls // 4)]
    none: list[str | None] = [None] * sizes.calls
    return {
        HIT: per_call_ns(lookup, pinned, sizes.batch),
        LOCAL: per_call_ns(local, fresh, sizes.batch),
        NONE: per_call_ns(lookup, none, sizes.batch),
    }


async def against_etcd(sizes: Sizes) -> dict[str, list[float]]:
    with EtcdNode("bench-pins") as node:
        store = EtcdStore([node.client_url])
        await store.connect()
        metrics = PinMetrics(CollectorRegistry(), AGENT)
        table = PinTable(KS, AGENT)
        writer = PinWriter(store, table, KS, metrics, ttl=86400, max_pending=10_000)
        claims = PinClaims(store, KS, writer, metrics, timeout=DEFAULT_PIN_CREATE_TIMEOUT * 20)
        pinning = Pinning(AGENT, table, metrics, ttl=86400, claims=claims)
        try:
            keys = []
            for i in range(200):
                kv = pin_kv(i)
                await store.put(kv.key, kv.value)
                keys.append(kv.key)
            gets = []
            for i in range(sizes.etcd_gets):
                t0 = time.perf_counter_ns()
                await store.get(keys[i % len(keys)])
                gets.append(float(time.perf_counter_ns() - t0))
            snapshot = config()
            await writer.current_lease()  # granted once, as a running sidecar has it
            first = []
            for i in range(sizes.first_turns):
                t0 = time.perf_counter_ns()
                await pinning.first_turn(snapshot, AGENT, f"first-{i}")
                first.append(float(time.perf_counter_ns() - t0))
            for i in range(sizes.first_turns):  # pinned by "another sidecar"
                kv = pin_kv(i, "other-")
                await store.put(kv.key, kv.value)
            adopted = []
            for i in range(sizes.first_turns):
                t0 = time.perf_counter_ns()
                await pinning.first_turn(snapshot, AGENT, f"other-{i}")
                adopted.append(float(time.perf_counter_ns() - t0))
            if claims.fallbacks or claims.adopted != sizes.first_turns:
                raise RuntimeError(f"unexpected claim outcomes: {claims.status()}")
            return {FIRST: first, ADOPTED: adopted, GET: gets}
        finally:
            await writer.close(flush_timeout=0)
            await store.close()


def _ratio(etcd: float, this: float) -> str:
    ratio = etcd / this
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2f}x"


def render(local: dict[str, list[float]], etcd: dict[str, list[float]], sizes: Sizes) -> str:
    get = median(etcd[GET])
    hit = median(local[HIT])
    extra = hit - median(local[NONE])
    rows = [
        f"| `Pinning.lookup`: {name} | {median(v) / 1000:.2f} | {percentile(v, 99) / 1000:.2f} "
        f"| {_ratio(get, median(v))} |"
        for name, v in local.items()
        if name != LOCAL
    ]
    v = local[LOCAL]
    rows.append(
        f"| `Pinning.resolve`: {LOCAL} | {median(v) / 1000:.2f} | {percentile(v, 99) / 1000:.2f} "
        f"| {_ratio(get, median(v))} |"
    )
    rows += [
        f"| {name} | {median(etcd[name]) / 1000:.1f} | {percentile(etcd[name], 99) / 1000:.1f} "
        f"| {_ratio(get, median(etcd[name]))} |"
        for name in (FIRST, ADOPTED, GET)
    ]
    first = median(etcd[FIRST])
    return "\n".join(
        [
            START,
            "## Pin lookup on the request path",
            "",
            f"`python -m bench.pin_lookup`, {time.strftime('%Y-%m-%d %H:%M UTC')}: one process, "
            f"one run. {sizes.pins:,} pins in the table; {sizes.calls:,} lookups of random "
            f"pinned sessions (p50/p99 over batches of {sizes.batch:,}); against a real "
            f"single-node etcd on loopback, {sizes.etcd_gets:,} sequential gets and "
            f"{sizes.first_turns:,} sequential first turns of each kind. Times in µs per call; "
            "the last column is how many of them fit in one etcd get.",
            "",
            "| path | p50 µs | p99 µs | etcd get ÷ this |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Resolving a pinned request takes {hit / 1000:.2f} µs, {extra / 1000:.2f} µs more "
            "than a request without a session, and never awaits. Only a session's first turn on "
            f"a sidecar talks to etcd: one create-if-absent transaction, {first / 1000:.0f} µs at "
            "p50 here, bounded by `--pin-create-timeout` (default "
            f"{DEFAULT_PIN_CREATE_TIMEOUT * 1000:.0f} ms) after which it is decided locally.",
            END,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pin_lookup", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a few iterations; print, leave RESULTS.md alone"
    )
    args = parser.parse_args(argv)
    configure(level="warning", fmt="console", service="bench")  # one adoption log per call
    sizes = Sizes.quick() if args.quick else Sizes()
    local = in_process(sizes)
    etcd = uvloop.run(against_etcd(sizes))
    section = render(local, etcd, sizes)
    print(section)
    if not args.quick:
        replace_section("pin-lookup", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
