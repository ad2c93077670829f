"""Token budgets on the request path: what admission costs, in process, no network.

The budget filter's whole part in one non-streamed request -- the check before it opens (does
this sidecar hold a slice of each fleet scope? it does, so nothing waits), ``open``,
``on_body`` and ``close`` -- with a
session budget and a fleet-wide agent budget (slice held), next to the same request with no
budget configured (the filter's early return), and with both budgets limiting tokens *and* cost
(a second meter per scope in micro-dollars, the release priced from the fleet's price table).
Part of ``python -m bench.budgets``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Coroutine
from typing import Any, Final

from prometheus_client import CollectorRegistry

from bench.fleet import AGENT
from holdfast.dialects import openai_chat
from holdfast.keyspace import Keyspace, Release, Route
from holdfast.keyspace.budget import Budget, meter_id
from holdfast.keyspace.price import Price, PriceTable
from holdfast.store import KeyValue
from sidecar.budgets.filter import BudgetFilter, BudgetOptions
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.pipeline.exchange import Chain, Exchange, Outcome
from sidecar.routing.resolve import Resolved

KS: Final = Keyspace("dev")
ROUNDS: Final = 30
PER_ROUND: Final = 2000
CHAT: Final = openai_chat.DIALECT
ANSWER: Final = json.dumps(
    {
        "choices": [{"message": {"role": "assistant", "content": "fine weather"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()


WINDOWS: Final = {
    "none": ("", ""),
    "calendar": ("day", "month"),
    "rolling": ("1h", "1d"),
    "cost": ("day", "month"),
}


def _config(kind: str) -> tuple[ConfigState, Release]:
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    release = Release(agent=AGENT, name="r1", model="m1", base_url="http://127.0.0.1:1/v1")
    records = {
        KS.release(AGENT, "r1"): release.encode(),
        KS.route(AGENT): Route(agent=AGENT, stable="r1").encode(),
    }
    session_window, agent_window = WINDOWS[kind]
    cost = 10**14 if kind == "cost" else 0
    if session_window:
        for b in (
            Budget(scope="session:s1", tokens=10**12, window=session_window, cost=cost),
            Budget(scope=f"agent:{AGENT}", tokens=10**12, window=agent_window, cost=cost),
        ):
            records[KS.budget(b.scope)] = b.encode()
    if cost:
        table = PriceTable(prices={"m1": Price(2_500_000, 10_000_000)})
        records[KS.prices()] = table.encode()
    kvs = {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}
    config.apply_reset(1, kvs, "etcd")
    return config, release


async def _slices_arrived(seconds: float) -> bool:
    return True  # never awaited here: the bench holds its slice


def _run_ready(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that finishes without suspending, as the request path's awaits of a
    check that does not wait do, without an event loop's scheduling in the figure."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the first-slice check waited: the bench should hold its slice")


def admission_cost(kind: str, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> list[float]:
    """Microseconds per request (first-slice check + open + body + close), one per round."""
    config, release = _config(kind)
    with_budgets = kind != "none"
    ledger = Ledger(agent=AGENT)
    options = BudgetOptions(agent=AGENT, default_cap=256, estimator="bytes", first_slice_wait=2.0)
    metrics = BudgetMetrics(CollectorRegistry(), AGENT, ledger)
    flt = BudgetFilter(ledger, config, options, metrics, first_slice=_slices_arrived)
    resolved = Resolved(release=release, revision=1, session="s1", kind="pinned")
    body = {"model": "m1", "messages": [{"role": "user", "content": "how is the weather " * 8}]}
    done = Outcome("ok", 200, 0.01, True)
    length = {"Content-Length": str(len(json.dumps(body)))}
    if with_budgets:  # hold a slice of the fleet scope, as the controller would hand out
        assert config.current is not None
        ledger.sync(config.current.of_kind("budgets"), time.time())
        span = ledger.meters[f"agent:{AGENT}"].tally.span.id
        for unit in ("tokens", "usd"):
            ledger.set_grant(meter_id(f"agent:{AGENT}", unit), span, 10**12, 0)
    figures = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            exchange = Exchange(
                dialect=CHAT,
                request=CHAT.parse(dict(body)),
                resolved=resolved,
                request_id="r",
                headers=length,  # as every HTTP/1.1 client sends it
            )
            _run_ready(flt.await_admission(exchange))
            chain = Chain.open([flt], exchange)
            chain.answer(200, CHAT.decode_body(ANSWER))
            chain.close(done)
        figures.append((time.perf_counter() - started) / per_round * 1e6)
    return figures
