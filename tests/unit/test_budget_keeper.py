"""The sidecar's spend reports, without etcd: which scopes a sidecar takes part in, and the
final reports of a graceful shutdown (every unused slice handed back)."""

from __future__ import annotations

from holdfast.keyspace import Keyspace
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.quota import Quotas
from holdfast.store import KeyValue
from holdfast.store.memory import MemoryStore
from sidecar.budgets.keeper import BudgetKeeper
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.queue import AdmissionQueue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState

KS = Keyspace("dev")
NOW = 1_000_000.0
BUDGETS = (
    Budget(scope="agent:support", tokens=1000, window="day"),
    Budget(scope="agent:billing", tokens=1000, window="day"),
    Budget(scope="global", tokens=5000, window="1h"),
    Budget(scope="tenant:acme", tokens=700, window="day"),
    Budget(scope="session:s1", tokens=100, window="day"),
    Budget(scope="session:s2", tokens=100, window="day"),
)


def keeper() -> tuple[BudgetKeeper, Ledger]:
    config = ConfigState(KS, "support", kinds=CONFIG_KINDS)
    kvs = {KS.budget(b.scope): b.encode() for b in BUDGETS}
    config.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in kvs.items()}, "etcd")
    ledger = Ledger(agent="support")
    store = MemoryStore()
    store.unavailable = True  # nothing here does I/O; a call would fail
    k = BudgetKeeper(
        store,
        KS,
        ledger,
        config,
        sidecar_id="sc-1",
        interval=0.5,
        idle_after=30.0,
        clock=lambda: NOW,
    )
    return k, ledger


def test_a_sidecar_reports_its_own_agent_tenants_global_and_sessions_it_served() -> None:
    k, ledger = keeper()
    scopes = sorted(r.scope for r in k.reports())
    # not agent:billing (another agent's sidecars hold its slices), no idle session budgets
    assert scopes == ["agent:support", "global", "tenant:acme"]
    [meter] = ledger.applicable(["session:s1"], NOW)
    reservation, _ = ledger.admit([meter], 30, NOW)
    assert reservation is not None
    Ledger.settle(reservation, 20, estimated=False)
    reports = {r.scope: r for r in k.reports()}
    assert sorted(reports) == ["agent:support", "global", "session:s1", "tenant:acme"]
    assert reports["session:s1"].used == 20


def test_close_hands_every_unused_slice_back_in_final_reports() -> None:
    k, ledger = keeper()
    k.reports()  # follows the configured budgets
    span = ledger.meters["agent:support"].tally.span.id
    hour = ledger.meters["global"].tally.span.id
    k.quotas = {
        "agent:support": Quotas(
            scope="agent:support", window=span, limit=1000, grants={k.holder: 400}
        ),
        "global": Quotas(scope="global", window=hour, limit=5000, grants={k.holder: 900}),
    }
    k.reports()  # the slices arrive
    meters = ledger.applicable(["agent:support", "global"], NOW)
    reservation, _ = ledger.admit(meters, 150, NOW)
    assert reservation is not None
    Ledger.settle(reservation, 120, estimated=False)
    finals = {r.scope: r for r in k.final_reports()}
    assert sorted(finals) == ["agent:support", "global"]  # never held tenant:acme: nothing
    support = finals["agent:support"]
    assert support.final and support.holder == k.holder and support.window == span
    assert (support.used, support.returned) == (120, 280)  # all it did not use
    assert finals["global"].returned == 780 and finals["global"].window == hour
    for m in meters:
        assert m.allowance == m.used == 120  # nothing more is admitted
    assert ledger.admit(meters, 1, NOW)[0] is None


class _Waiting(AdmissionQueue):
    """A queue that says requests wait (meter id -> count, tokens, need at the head)."""

    def __init__(self, ledger: Ledger, demand: dict[str, tuple[int, int, int]]) -> None:
        super().__init__(ledger, max_waiting=10, max_bytes=1000)
        self.wanted = demand

    def demand(self) -> dict[str, tuple[int, int, int]]:
        return self.wanted


def test_slices_follow_demand_idle_and_unusable_headroom_is_given_back() -> None:
    k, ledger = keeper()
    clock = [NOW]
    k.clock = lambda: clock[0]
    k.reports()
    span = ledger.meters["agent:support"].tally.span.id
    meter = ledger.meters["agent:support"]

    def quotas(demand: dict[str, int]) -> None:
        grants = {k.holder: 400, "other.1": 300}
        k.quotas = {
            "agent:support": Quotas(
                scope="agent:support", window=span, limit=1000, grants=grants, demand=demand
            )
        }

    quotas({})
    reports = {r.scope: r for r in k.reports()}
    assert meter.allowance == 400 and reports["agent:support"].queued == 0
    quotas({"other.1": 230})  # another sidecar's requests wait
    k.reports()
    assert meter.allowance == 400  # not idle for two report intervals yet: its burst may come
    clock[0] += 2 * k.interval
    k.reports()
    assert meter.allowance == 0 and meter.returned == 400  # idle: all of it goes back
    # a sidecar whose own requests wait reports them; one whose slice could never serve the
    # request at its head gives its headroom back -- unless it is alone
    k2, ledger2 = keeper()
    k2.reports()
    m2 = ledger2.meters["agent:support"]
    k2.queue = _Waiting(ledger2, {"agent:support": (3, 350, 117)})
    k2.quotas = {
        "agent:support": Quotas(
            scope="agent:support", window=span, limit=1000, grants={k2.holder: 100}
        )
    }
    reports = {r.scope: r for r in k2.reports()}
    support = reports["agent:support"]
    assert (support.waiting, support.queued, support.want) == (3, 350, 117)
    assert m2.allowance == 100  # alone: giving back would only bring it back
    k2.quotas["agent:support"] = Quotas(
        scope="agent:support", window=span, limit=1000, grants={k2.holder: 100, "b.1": 900}
    )
    k2.reports()
    assert m2.allowance == 0 and m2.returned == 100
