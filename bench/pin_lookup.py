"""What a pinned session costs on the request path: a dict hit, measured beside the etcd round
trip it replaces.

In one process and one run: ``Pinning.resolve`` (the sidecar's request-path call: pin-table
lookup, release lookup, metric) for sessions already pinned among PINS pins, for brand-new
sessions (hash, record, queue), and for requests without a session; then ``EtcdStore.get`` of
a pin key against a real single-node etcd on loopback, which is what a design that read pins
from etcd per request would pay at the very least. ``python -m bench.pin_lookup`` replaces its
section of bench/RESULTS.md.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Final

import uvloop
from prometheus_client import CollectorRegistry

from bench.sections import markers, replace_section
from bench.stats import median, percentile
from holdfast.devtools.etcd_local import EtcdNode
from holdfast.keyspace import Keyspace, Pin, Release, Route
from holdfast.store import KeyValue
from holdfast.store.etcd import EtcdStore
from sidecar.config import ConfigState
from sidecar.pin_metrics import PinMetrics
from sidecar.pinning import Pinning
from sidecar.pins import PinTable

AGENT: Final = "bench"
KS: Final = Keyspace("bench")
PINS: Final = 100_000
CALLS: Final = 200_000
BATCH: Final = 1_000
ETCD_GETS: Final = 3_000
START, END = markers("pin-lookup")


def config() -> ConfigState:
    state = ConfigState(KS, AGENT)
    kvs: dict[str, KeyValue] = {}
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://127.0.0.1:1")
        kvs[KS.release(AGENT, name)] = KeyValue(KS.release(AGENT, name), release.encode(), 1, 1, 1)
    route = Route(agent=AGENT, stable="r1", canary="r2", canary_percent=10.0)
    kvs[KS.route(AGENT)] = KeyValue(KS.route(AGENT), route.encode(), 2, 2, 1)
    state.apply_reset(10, kvs, "etcd")
    return state


def pin_kv(i: int) -> KeyValue:
    now = time.time()
    pin = Pin(agent=AGENT, session=f"s{i}", release="r1", pinned_at=now, revision=3, touched_at=now)
    key = KS.pin(AGENT, pin.session)
    return KeyValue(key, pin.encode(), 100 + i, 100 + i, 1)


def per_call_ns(resolve: Callable[[str | None], object], sessions: list[str | None]) -> list[float]:
    """Nanoseconds per call, one sample per batch of BATCH calls."""
    samples = []
    for start in range(0, len(sessions), BATCH):
        chunk = sessions[start : start + BATCH]
        t0 = time.perf_counter_ns()
        for session in chunk:
            resolve(session)
        samples.append((time.perf_counter_ns() - t0) / len(chunk))
    return samples


def in_process() -> dict[str, list[float]]:
    state = config()
    table = PinTable(KS, AGENT)
    table.apply_reset({kv.key: kv for kv in (pin_kv(i) for i in range(PINS))})
    pinning = Pinning(AGENT, table, PinMetrics(CollectorRegistry(), AGENT), ttl=86400)
    snapshot = state.current

    def resolve(session: str | None) -> object:
        return pinning.resolve(snapshot, AGENT, session)

    rng = random.Random(7)
    pinned: list[str | None] = [f"s{rng.randrange(PINS)}" for _ in range(CALLS)]
    fresh: list[str | None] = [f"new-{i}" for i in range(CALLS // 4)]
    none: list[str | None] = [None] * CALLS
    return {
        "pinned session (dict hit)": per_call_ns(resolve, pinned),
        "new session (hash + local pin + queue)": per_call_ns(resolve, fresh),
        "no session (stable)": per_call_ns(resolve, none),
    }


async def etcd_round_trips() -> list[float]:
    with EtcdNode("bench-pins") as node:
        store = EtcdStore([node.client_url])
        await store.connect()
        try:
            keys = []
            for i in range(200):
                kv = pin_kv(i)
                await store.put(kv.key, kv.value)
                keys.append(kv.key)
            samples = []
            for i in range(ETCD_GETS):
                t0 = time.perf_counter_ns()
                await store.get(keys[i % len(keys)])
                samples.append(float(time.perf_counter_ns() - t0))
            return samples
        finally:
            await store.close()


def render(local: dict[str, list[float]], etcd: list[float]) -> str:
    hit = median(local["pinned session (dict hit)"])
    extra = hit - median(local["no session (stable)"])
    rows = [
        f"| `Pinning.resolve`: {name} | {median(v) / 1000:.2f} | {percentile(v, 99) / 1000:.2f} "
        f"| {median(etcd) / median(v):,.0f}x |"
        for name, v in local.items()
    ]
    rows.append(
        f"| `EtcdStore.get` of one pin key (loopback etcd) | {median(etcd) / 1000:.1f} | "
        f"{percentile(etcd, 99) / 1000:.1f} | 1x |"
    )
    return "\n".join(
        [
            START,
            "## Pin lookup on the request path",
            "",
            f"`python -m bench.pin_lookup`, {time.strftime('%Y-%m-%d %H:%M UTC')}: one process, "
            f"one run. {PINS:,} pins in the table; {CALLS:,} resolves of random pinned sessions "
            f"(p50/p99 over batches of {BATCH:,}); {ETCD_GETS:,} sequential gets from a real "
            "single-node etcd on loopback. Times in µs per call; the last column is how many "
            "lookups fit in one etcd round trip.",
            "",
            "| path | p50 µs | p99 µs | etcd get ÷ this |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Resolving a pinned request takes {hit / 1000:.2f} µs, {extra / 1000:.2f} µs more "
            "than a request without a session, and never awaits: the pin writer alone talks to "
            "etcd, off the request path.",
            END,
        ]
    )


def main() -> int:
    local = in_process()
    etcd = uvloop.run(etcd_round_trips())
    section = render(local, etcd)
    print(section)
    replace_section("pin-lookup", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
