"""Cost limits, pure: micro-dollar arithmetic, price records and payloads, cost meters in the
ledger (reserved with the token meters in one step, settled exactly), the one price lookup."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from configsvc.budgets.payloads import SetBudget
from configsvc.budgets.prices import parse_price, price_name
from configsvc.budgets.quota_view import spend_report
from configsvc.errors import InvalidRequest
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.budget import Budget, meter_id, split_meter
from holdfast.keyspace.price import MICROS, Price, PriceTable, decode_prices, usd, usd_micros
from holdfast.keyspace.quota import Quotas, SpendReport
from holdfast.store import KeyValue
from sidecar.budgets.ledger import Ledger
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.prices import PriceError, parse_prices
from sidecar.config.state import ConfigState

NOW = 1_000_000.0
KS = Keyspace("dev")


def test_usd_converts_exactly_and_refuses_what_is_not_money() -> None:
    assert usd_micros("0.15", what="p", maximum=10**12) == 150_000
    assert usd_micros(0.1, what="p", maximum=10**12) == 100_000  # via str: no float noise
    assert usd_micros(2, what="p", maximum=10**12) == 2_000_000
    assert usd(150_000) == "0.15" and usd(2_000_000) == "2" and usd(1) == "0.000001"
    for bad, reason in [
        (-1, "negative"),
        ("abc", "number"),
        (True, "number"),
        (None, "number"),
        (float("nan"), "finite"),
        ("inf", "finite"),
        ("0.0000001", "6 decimals"),
        (10**9, "over"),
    ]:
        with pytest.raises(RecordError, match=reason):
            usd_micros(bad, what="p", maximum=10**12)


def test_reservations_round_up_and_charges_are_exact_integer_arithmetic() -> None:
    price = Price.of_usd({"input_per_1m": "0.15", "output_per_1m": "0.6"}, name="m")
    assert (price.input, price.output) == (150_000, 600_000)
    assert price.micros(1_000_000, 0) == 150_000  # exactly $0.15
    assert price.micros(1, 0) == 1  # 0.15 micro-dollars -> rounded up, never down
    assert price.micros(0, 0) == 0
    rng = random.Random(5)
    for _ in range(2000):
        p = Price(rng.randint(0, 10**10), rng.randint(0, 10**10))
        tin, tout = rng.randint(0, 10**6), rng.randint(0, 10**5)
        exact = Decimal(tin * p.input + tout * p.output) / MICROS
        charged = p.micros(tin, tout)
        assert exact <= charged < exact + 1  # up by less than one micro-dollar
        # a reservation for a worst case covers every charge within it
        assert p.micros(tin + 7, tout + 3) >= charged
    assert price.usd(1_000_000, 1_000_000) == pytest.approx(0.75)


def test_price_table_record_round_trip_and_refusals() -> None:
    table = PriceTable(prices={"gpt-4o": Price(2_500_000, 10_000_000), "org/m:1": Price(1, 2)})
    back = PriceTable.decode(table.encode())
    assert back.prices == table.prices
    assert back.lookup("r9", "gpt-4o") == Price(2_500_000, 10_000_000)
    assert back.lookup("org/m:1", "gpt-4o") == Price(1, 2)  # a release's own entry first
    assert decode_prices(("table",), table.encode()).prices == table.prices
    with pytest.raises(RecordError, match="prices/table"):
        decode_prices(("other",), table.encode())
    with pytest.raises(RecordError, match="invalid model"):
        PriceTable(prices={"bad name!": Price(1, 1)})
    with pytest.raises(RecordError, match="micro-USD"):
        Price(-1, 0)


def test_price_payloads_refuse_with_the_reason() -> None:
    price, reason = parse_price(b'{"input_per_1m": 2.5, "output_per_1m": "10", "reason": "x"}', "m")
    assert (price, reason) == (Price(2_500_000, 10_000_000), "x")
    for raw, words in [
        (b'{"input_per_1m": -1, "output_per_1m": 1}', "negative"),
        (b'{"input_per_1m": "cheap", "output_per_1m": 1}', "number"),
        (b'{"input_per_1m": 1e9, "output_per_1m": 1}', "over 10000"),
        (b'{"input_per_1m": 1, "output_per_1m": 1, "cached": 1}', "cached"),
        (b'{"input_per_1m": 1}', "output_per_1m"),
        (b"[1, 2]", "JSON object"),
        (b"{nope", "not valid JSON"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            parse_price(raw, "m")
    assert price_name("meta/llama-3:8b") == "meta/llama-3:8b"
    with pytest.raises(InvalidRequest):
        price_name("../x y")
    with pytest.raises(PriceError, match="negative"):
        parse_prices({"m": {"input_per_1m": -1}})
    with pytest.raises(PriceError, match="JSON numbers"):
        parse_prices({"m": {"input_per_1m": "1"}})


def test_budget_payload_and_record_with_a_cost_limit() -> None:
    req = SetBudget.parse(b'{"cost": "12.5", "window": "day"}')
    assert (req.tokens, req.cost) == (0, 12_500_000)
    both = SetBudget.parse(b'{"cost": 1, "tokens": 10, "window": "1h"}')
    assert (both.tokens, both.cost) == (10, 1_000_000)
    for raw, words in [
        (b'{"window": "day"}', "'tokens', 'cost' or both"),
        (b'{"cost": 0, "window": "day"}', "at least"),
        (b'{"cost": -2, "window": "day"}', "negative"),
        (b'{"cost": "lots", "window": "day"}', "number"),
        (b'{"cost": 1e10, "window": "day"}', "over"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            SetBudget.parse(raw)
    b = Budget(scope="agent:a", tokens=0, cost=5_000_000, window="1h")
    assert Budget.decode(b.encode()) == b
    assert b.meters() == [("usd:agent:a", "usd", 5_000_000)]
    with pytest.raises(RecordError, match="token limit, a cost limit or both"):
        Budget(scope="agent:a", tokens=0, window="1h")
    assert split_meter(meter_id("tenant:t", "usd")) == ("tenant:t", "usd")
    assert split_meter("global") == ("global", "tokens")
    with pytest.raises(RecordError):
        split_meter("usd:nonsense")
    q = Quotas(scope="usd:agent:a", window="1h@1", limit=5_000_000, grants={"h": 10})
    assert Quotas.decode(q.encode()) == q
    r = SpendReport(scope="usd:agent:a", holder="h", window="1h@1", used=3)
    assert KS.spend(r.scope, r.holder).endswith("/spend/h/usd:agent:a")


def test_a_spend_report_counts_only_under_its_own_key() -> None:
    report = SpendReport(scope="agent:a", holder="a.h1.x", window="1h@1", used=3)
    own = KeyValue(KS.spend("agent:a", "a.h1.x"), report.encode(), 2, 2, 1)
    assert spend_report(KS, own) == report
    # etcd roles let a sidecar write only keys of its own id: the value must not claim another
    forged = KeyValue(KS.spend("agent:a", "b.h9.x"), report.encode(), 2, 2, 1)
    other_scope = KeyValue(KS.spend("global", "a.h1.x"), report.encode(), 2, 2, 1)
    garbage = KeyValue(KS.spend("agent:a", "a.h1.x"), b"\x93junk", 2, 2, 1)
    assert [spend_report(KS, kv) for kv in (forged, other_scope, garbage)] == [None] * 3


def test_cost_and_tokens_are_reserved_together_or_not_at_all() -> None:
    ledger = Ledger()
    both = Budget(scope="session:s", tokens=1000, cost=100, window="1h")  # 100 micro-dollars
    ledger.sync({both.scope: both}, NOW)
    meters = ledger.applicable(["session:s"], NOW)
    assert [(m.scope, m.unit) for m in meters] == [("session:s", "tokens"), ("session:s", "usd")]
    r1, refused = ledger.admit(meters, 100, NOW, micros=60)
    assert r1 is not None and not refused
    r2, refused = ledger.admit(meters, 100, NOW, micros=60)  # tokens fit, cost does not
    assert r2 is None and [r.meter.unit for r in refused] == ["usd"]
    assert meters[0].tally.reserved == 100  # the token meter was not touched by the refusal
    message = refused[0].message()
    assert "cost budget session:s is exhausted: limit 0.0001 USD per 1h (rolling)" in message
    assert "0.00006 USD used" in message and "needs up to 0.00006 USD" in message
    Ledger.settle(r1, 40, estimated=False, micros=17)
    assert (meters[0].tally.spent, meters[1].tally.spent) == (40, 17)
    assert (meters[0].tally.reserved, meters[1].tally.reserved) == (0, 0)
    assert meters[1].remaining == 83


def test_one_lookup_fleet_table_first_then_the_file() -> None:
    config = ConfigState(KS, "support", kinds=CONFIG_KINDS)
    file = parse_prices(
        {"r1": {"input_per_1m": 9, "output_per_1m": 9}, "m2": {"input_per_1m": 1}}
    ).with_fleet(config)
    assert file.price("r1", "m1") == Price(9_000_000, 9_000_000)  # no fleet table yet
    fleet = PriceTable(prices={"m1": Price(2_000_000, 4_000_000)})
    key = KS.prices()
    config.apply_reset(3, {key: KeyValue(key, fleet.encode(), 3, 3, 1)}, "etcd")
    assert file.price("r1", "m1") == Price(2_000_000, 4_000_000)  # the fleet's model entry wins
    assert file.price("r2", "m2") == Price(1_000_000, 0)  # the file fills in what it lacks
    assert file.price("r3", "m3") is None and file.cost("r3", "m3", 5, 5) == 0.0
    assert file.cost("r1", "m1", 1_000_000, 1_000_000) == pytest.approx(6.0)
    bad = KeyValue(key, b"\x93junk", 4, 4, 1)
    config.apply_reset(4, {key: bad}, "etcd")  # a bad table is refused: the good one stays
    assert file.price("r1", "m1") == Price(2_000_000, 4_000_000)
