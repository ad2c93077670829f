"""Cost limits on the real sidecar app against the real fake upstream: the worst case priced
and reserved, settlement at the real usage, the 429 in USD, and a release with no price."""

from __future__ import annotations

from decimal import Decimal

from holdfast.keyspace.budget import Budget
from holdfast.keyspace.price import MICROS, Price, PriceTable
from sidecar.budgets.ledger import Ledger
from tests.servers.conftest import KS, SidecarUnderTest
from tests.servers.test_budget_filter import SESSION, budgeted, chat, fake, put_budget, settled

__all__ = ["budgeted"]  # the fixture, shared with the token tests

COST_METER = f"usd:session:{SESSION}"
# model-one: $2 per 1M input tokens, $8 per 1M output tokens
PRICE = Price(2 * MICROS, 8 * MICROS)


def put_prices(sut: SidecarUnderTest, prices: dict[str, Price]) -> None:
    sut._put(KS.prices(), PriceTable(prices=prices).encode())


async def test_cost_reserved_settled_to_real_usage_then_refused_in_usd(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_prices(sut, {"model-one": PRICE})
    put_budget(sut, tokens=0, cost=5_000)  # $0.005 per rolling hour
    await fake(sut, "PUT", "/_control/models/model-one", {"completion_tokens": 12})
    ok = await chat(sut, max_tokens=40)
    assert ok.status == 200
    usage = (await ok.json())["usage"]
    m = await settled(ledger, COST_METER)
    exact = Decimal(usage["prompt_tokens"] * 2 + usage["completion_tokens"] * 8)  # micro-USD
    assert m.tally.spent == int(exact) and m.tally.reserved == 0 and m.tally.estimated == 0
    assert f"session:{SESSION}" not in ledger.meters  # cost only: no token meter
    # Admission reserves prompt estimate x input + max_tokens x output: one request whose
    # worst case does not fit is refused although what it would really cost would.
    left = m.remaining
    refused = await chat(sut, max_tokens=left // 8)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "budget_exhausted" and error["param"] == f"session:{SESSION}"
    message = error["message"]
    assert message.startswith(f"cost budget session:{SESSION} is exhausted: limit 0.005 USD")
    spent_usd = f"{Decimal(m.tally.spent) / MICROS:f}".rstrip("0")
    assert f"{spent_usd} USD used" in message and "Retry after" in message
    assert int(refused.headers["Retry-After"]) >= 1
    again = await chat(sut, max_tokens=10)
    assert again.status == 200
    assert (await settled(ledger, COST_METER)).remaining < left


async def test_tokens_and_cost_both_meter_and_the_soft_header_names_the_tighter(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_prices(sut, {"r1": PRICE})  # the release's own entry
    put_budget(sut, tokens=100_000, cost=2_000, soft=0.5)
    resp = await chat(sut, max_tokens=30)
    assert resp.status == 200
    usage = (await resp.json())["usage"]
    tokens = await settled(ledger)
    cost = await settled(ledger, COST_METER)
    assert tokens.tally.spent == usage["total_tokens"]
    assert cost.tally.spent == usage["prompt_tokens"] * 2 + usage["completion_tokens"] * 8
    cost.tally.charge(cost.tally.buckets.current if cost.tally.buckets else 0, 1_200)
    resp = await chat(sut, max_tokens=5)
    left, scope = resp.headers["X-Holdfast-Budget-Remaining"].split("; scope=")
    assert scope == f"session:{SESSION}" and left.endswith(" USD")


async def test_unknown_price_under_a_cost_budget_is_a_503_naming_the_fix(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_prices(sut, {"model-two": PRICE})  # but the session is served by r1 / model-one
    put_budget(sut, tokens=0, cost=1_000_000)
    resp = await chat(sut, max_tokens=10)
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "price_unknown" and error["param"] == "model"
    assert "'r1'" in error["message"] and "holdfastctl price set model-one" in error["message"]
    assert ledger.meters[COST_METER].tally.reserved == 0
    requests = (await fake(sut, "GET", "/_control/requests"))["requests"]
    assert not requests  # nothing went upstream
    put_budget(sut, tokens=1000)  # a token-only budget needs no price
    assert (await chat(sut, max_tokens=10)).status == 200
    sut._put(
        KS.budget(f"session:{SESSION}"),
        Budget(scope=f"session:{SESSION}", tokens=0, cost=10, window="1h").encode(),
    )
    put_prices(sut, {"model-one": PRICE})
    assert (await chat(sut, max_tokens=10)).status == 429  # priced now: refused on cost
