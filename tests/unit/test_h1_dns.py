"""The provider client's DNS: every answer checked against the host policy, checked answers
cached for the TTL, failures never cached, concurrent lookups of one name share one query."""

from __future__ import annotations

import asyncio
import socket

import pytest

from holdfast.net.guard import AddressRefused, HostPolicy, refused_reason
from sidecar.upstream.h1.dns import Address, GuardedDns


class ScriptedDns(GuardedDns):
    def __init__(self, policy: HostPolicy, answers: list[str], *, ttl: float = 60.0) -> None:
        super().__init__(policy, ttl=ttl)
        self.answers = answers
        self.asked = 0
        self.gate: asyncio.Event | None = None

    async def query(  # type: ignore[override]
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> list[Address]:
        self.asked += 1
        if self.gate is not None:
            await self.gate.wait()
        if not self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "no such name")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in self.answers]


async def test_answers_are_filtered_by_the_policy() -> None:
    dns = ScriptedDns(HostPolicy(), ["169.254.169.254", "93.184.216.34", "10.0.0.1"])
    assert await dns.resolve("api.example.com", 443) == [(socket.AF_INET, "93.184.216.34")]


async def test_a_name_rebinding_only_to_forbidden_addresses_is_refused_with_the_reason() -> None:
    dns = ScriptedDns(HostPolicy(), ["169.254.169.254"])
    with pytest.raises(AddressRefused) as info:
        await dns.resolve("innocent.example.com", 80)
    assert "169.254.169.254" in info.value.reason
    wrapped = RuntimeError("connect failed")
    wrapped.__cause__ = info.value
    assert refused_reason(wrapped) == info.value.reason  # what Upstream reports


async def test_names_the_policy_refuses_are_never_looked_up() -> None:
    dns = ScriptedDns(HostPolicy(("api.openai.com",)), ["93.184.216.34"])
    with pytest.raises(AddressRefused, match="not in the allowed upstream hosts"):
        await dns.resolve("evil.example.com", 443)
    assert dns.asked == 0
    with pytest.raises(AddressRefused, match="metadata"):
        await ScriptedDns(HostPolicy(), []).resolve("metadata.google.internal", 80)


async def test_checked_answers_are_cached_for_the_ttl_and_failures_not_at_all() -> None:
    dns = ScriptedDns(HostPolicy(), [], ttl=0.05)
    with pytest.raises(socket.gaierror):
        await dns.resolve("api.example.com", 443)
    dns.answers = ["93.184.216.34"]
    await dns.resolve("api.example.com", 443)
    await dns.resolve("api.example.com", 443)
    assert dns.asked == 2  # the failure was asked again, the answer once
    dns.answers = ["169.254.169.254"]  # rebinds after the TTL: checked again, refused
    loop = asyncio.get_running_loop()
    expires = loop.time() + 0.05
    while loop.time() < expires:
        await asyncio.sleep(0.01)
    with pytest.raises(AddressRefused):
        await dns.resolve("api.example.com", 443)


async def test_concurrent_lookups_share_one_query_and_a_caller_giving_up_cancels_nobody() -> None:
    dns = ScriptedDns(HostPolicy(), ["93.184.216.34"])
    dns.gate = asyncio.Event()
    first = asyncio.ensure_future(dns.resolve("api.example.com", 443))
    second = asyncio.ensure_future(dns.resolve("api.example.com", 443))
    await asyncio.sleep(0)
    first.cancel()  # the agent that triggered the lookup hung up
    dns.gate.set()
    assert await second == [(socket.AF_INET, "93.184.216.34")]
    assert dns.asked == 1
    with pytest.raises(asyncio.CancelledError):
        await first
