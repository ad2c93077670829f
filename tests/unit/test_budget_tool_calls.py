"""Tool-call limits of session budgets: the record, the API's payload, and the sidecar's count
(one MCP tools/call is one unit, reserved before the call and settled after it)."""

from __future__ import annotations

import pytest

from configsvc.budgets.payloads import SetBudget
from configsvc.errors import InvalidRequest
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.budget import MAX_TOOL_CALLS_LIMIT, Budget
from holdfast.store import Change, KeyValue
from sidecar.budgets import ToolCallBudget, ToolCallRefused
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState

KS = Keyspace("dev")


def test_a_session_budget_may_limit_tool_calls_and_only_a_session_budget() -> None:
    calls = Budget(scope="session:conv-1", tokens=0, tool_calls=5, window="1h")
    assert Budget.decode(calls.encode()) == calls and calls.meters() == []
    both = Budget(scope="session:conv-1", tokens=1000, tool_calls=5, window="day")
    assert [m[0] for m in both.meters()] == ["session:conv-1"]  # tokens only: calls are apart
    assert Budget.decode(Budget(scope="global", tokens=9, window="1h").encode()).tool_calls == 0
    for scope in ("agent:support", "tenant:acme", "global"):
        with pytest.raises(RecordError, match="session scopes only"):
            Budget(scope=scope, tokens=10, tool_calls=5, window="1h")
    for bad in (-1, True, MAX_TOOL_CALLS_LIMIT + 1):
        with pytest.raises(RecordError, match="tool-call limit"):
            Budget(scope="session:x", tokens=10, tool_calls=bad, window="1h")
    with pytest.raises(RecordError, match="token limit, a cost limit or both"):
        Budget(scope="session:x", tokens=0, window="1h")


def test_the_api_takes_tool_calls() -> None:
    req = SetBudget.parse(b'{"tool_calls": 20, "window": "1h"}')
    assert (req.tool_calls, req.tokens, req.cost) == (20, 0, 0)
    assert SetBudget.parse(b'{"tokens": 5, "window": "1h"}').tool_calls == 0
    for raw in (b'{"tool_calls": 0, "window": "1h"}', b'{"tool_calls": "3", "window": "1h"}',
                b'{"tool_calls": 1.5, "window": "1h"}'):  # fmt: skip
        with pytest.raises(InvalidRequest) as bad:
            SetBudget.parse(raw)
        assert bad.value.param in ("tool_calls", "tokens")
    with pytest.raises(InvalidRequest, match="'tool_calls'"):
        SetBudget.parse(b'{"window": "1h"}')


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def state_with(*budgets: Budget) -> ConfigState:
    state = ConfigState(KS, "support", kinds=CONFIG_KINDS)
    kvs = {KS.budget(b.scope): KeyValue(KS.budget(b.scope), b.encode(), 1, 1, 1) for b in budgets}
    state.apply_reset(1, kvs, "etcd")
    return state


def test_calls_are_reserved_settled_and_refused_per_window() -> None:
    clock = Clock()
    state = state_with(
        Budget(scope="session:conv-1", tokens=10_000, tool_calls=2, window="1h"),
        Budget(scope="session:conv-2", tokens=10_000, window="1h"),  # tokens only
    )
    budget = ToolCallBudget(state, agent="support", clock=clock)
    assert budget.admit(None) is None  # no session: no session budget
    assert budget.admit("conv-2") is None and budget.admit("conv-9") is None
    first = budget.admit("conv-1")
    second = budget.admit("conv-1")  # in flight together: both reserved
    assert first is not None and not isinstance(first, ToolCallRefused)
    assert second is not None and not isinstance(second, ToolCallRefused)
    third = budget.admit("conv-1")
    assert isinstance(third, ToolCallRefused) and third.scope == "session:conv-1"
    assert third.message.startswith("the tool-call budget session:conv-1 is exhausted: limit 2 "
                                    "tool calls per 1h (rolling), 2 used")  # fmt: skip
    assert third.retry_after >= 1 and f"retry after {third.retry_after}s" in third.message
    budget.settle(first, called=True)
    budget.settle(second, called=False)  # the backend was never asked: no call spent
    budget.settle(second, called=True)  # settled once: a second settle changes nothing
    (status,) = budget.status()
    assert (status["scope"], status["limit"], status["used"], status["remaining"]) == (
        "session:conv-1", 2, 1, 1)  # fmt: skip
    assert status["refused"] == 1
    fourth = budget.admit("conv-1")
    assert fourth is not None and not isinstance(fourth, ToolCallRefused)
    budget.settle(fourth, called=True)
    assert isinstance(budget.admit("conv-1"), ToolCallRefused)
    clock.now += 3600 + 61  # the rolling hour (and its last sub-bucket) has passed
    again = budget.admit("conv-1")
    assert again is not None and not isinstance(again, ToolCallRefused)


def test_the_limit_follows_the_configured_budget() -> None:
    clock = Clock()
    state = state_with(Budget(scope="session:c", tokens=0, tool_calls=1, window="day"))
    budget = ToolCallBudget(state, agent="support", clock=clock)
    held = budget.admit("c")
    assert held is not None and not isinstance(held, ToolCallRefused)
    budget.settle(held, called=True)
    assert isinstance(budget.admit("c"), ToolCallRefused)
    raised = Budget(scope="session:c", tokens=0, tool_calls=3, window="day")
    state.apply_changes(2, [Change("put", KS.budget("session:c"), raised.encode(), 2)])
    assert not isinstance(budget.admit("c"), ToolCallRefused)  # same window: 1 of 3 spent
    state.apply_changes(3, [Change("delete", KS.budget("session:c"), b"", 3)])
    assert budget.admit("c") is None and budget.status() == []
