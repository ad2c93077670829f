"""Who takes part in a fleet budget, end to end (real etcd, configsvc, sidecar processes, the
fake upstream, holdfastctl): sidecars that restart or crash mid-window leave the rest of the
budget usable; only an agent's own sidecars hold slices of its budget; the budget CLI and HTTP
API, their audit entries, and what a sidecar shows in /status and /metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack, get_json, stable_is, wait_for

SCOPE = f"agent:{AGENT}"
FAST = ("--budget-report-interval", "0.2")
CAP = 20


def holds_slice(scope: str) -> Any:
    return lambda b: any(
        x["scope"] == scope and x["allowance"] > 0
        for x in (b.get("budgets") or {}).get("scopes", [])
    )


async def scope_of(sidecar: procs.ManagedProcess, scope: str = SCOPE) -> dict[str, Any]:
    _, body = await get_json(f"{sidecar.url}/status")
    [found] = [
        s for s in body["budgets"]["scopes"] if s["scope"] == scope and s["unit"] == "tokens"
    ]
    return dict(found)


def usage(stack: Stack, scope: str = SCOPE) -> dict[str, Any]:
    return dict(json.loads(stack.ctl("--json", "budget", "usage", scope).stdout)["usage"])


async def settle_usage(stack: Stack, check: Any, scope: str = SCOPE) -> dict[str, Any]:
    """``budget usage`` once ``check`` holds (the controller ticks every 0.5 s)."""
    last: dict[str, Any] = {}
    for _ in range(150):
        last = usage(stack, scope)
        if check(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"budget usage never got there: {last}")


async def spend_all(sidecar: procs.ManagedProcess, tag: str, *, model: str = AGENT) -> int:
    """Non-streamed requests until the *window* is exhausted: a refusal that only says this
    sidecar's slice is short (Retry-After: 1) waits for the next top-up. Returns the 200s."""
    ok = 0
    async with aiohttp.ClientSession() as http:
        for i in range(1000):
            async with http.post(
                f"{sidecar.url}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": f"{tag} {i}"}]},
            ) as resp:
                if resp.status == 200:
                    ok += 1
                    continue
                body = await resp.json()
                assert resp.status == 429 and body["error"]["code"] == "budget_exhausted", body
                if resp.headers["Retry-After"] != "1":
                    return ok  # the fleet has no room left in this window
                await asyncio.sleep(0.2)
    raise AssertionError("the budget never ran out")


async def test_restarted_and_crashed_sidecars_leave_the_rest_of_the_budget_usable(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    """A graceful restart hands back what it did not use at once; a crash (SIGKILL) costs the
    fleet only the crashed sidecar's claim -- its slice less what it was seen giving back --
    not its whole slice; the survivors spend all the rest, and never more than the limit."""
    limit = 4000
    stack.ctl(
        "budget", "set", SCOPE, "--tokens", str(limit), "--window", "day",
        "--request-cap", str(CAP),
    )  # fmt: skip
    args = (*FAST, "--budget-idle-after", "1")
    a = stack.start_sidecar([etcd_node.client_url], name="a", args=args)
    b = stack.start_sidecar([etcd_node.client_url], name="b", args=args)
    for s in (a, b):
        await wait_for(f"{s.url}/status", holds_slice(SCOPE))
    a_id, b_id = [(await get_json(f"{s.url}/status"))[1]["budgets"]["holder"] for s in (a, b)]
    async with aiohttp.ClientSession() as http:
        for i in range(8):  # a spends a little of its slice, then restarts
            async with http.post(
                f"{a.url}/v1/chat/completions",
                json={"model": AGENT, "messages": [{"role": "user", "content": f"a {i}"}]},
            ) as resp:
                assert resp.status == 200
    a_spent = (await scope_of(a))["spent"]
    a_grant = (await scope_of(a))["allowance"]
    assert 0 < a_spent < a_grant
    assert a.stop() == 0
    handed = [e for e in a.log_events() if e.get("event") == "budget_slices_handed_back"]
    assert handed and handed[0]["used"] == a_spent
    gone = await settle_usage(stack, lambda u: u["departed_used"] == a_spent)
    assert gone["used"] == a_spent  # its unused slice is free: not its whole grant again
    assert a_id not in {h["holder"] for h in gone["holders"]}

    b_ok = await spend_all(b, "b")  # the one sidecar left can spend all the rest
    b_spent = (await scope_of(b))["spent"]
    assert b_ok > 0 and a_spent + b_spent <= limit
    assert limit - (a_spent + b_spent) < 200  # less than one request's worst case is left
    stack.ctl(
        "budget", "set", SCOPE, "--tokens", str(2 * limit), "--window", "day",
        "--request-cap", str(CAP),
    )  # fmt: skip
    c = stack.start_sidecar([etcd_node.client_url], name="c", args=args)
    await wait_for(f"{c.url}/status", holds_slice(SCOPE))
    await asyncio.sleep(1.5)  # b idles: it gives back what it does not use
    before_kill = await scope_of(b)
    b.kill()  # no final report: its spend key lasts until its lease expires (6 s)
    crashed = await settle_usage(
        stack,
        lambda u: any(h["holder"] == b_id and not h["live"] for h in u["holders"]),
    )
    [b_holder] = [h for h in crashed["holders"] if h["holder"] == b_id]
    b_claim = b_holder["grant"] - b_holder["returned"]
    assert b_holder["returned"] > 0 and b_claim < b_holder["grant"]  # remembered after its key
    assert b_holder["used"] >= before_kill["spent"] == b_spent
    await spend_all(c, "c")
    c_spent = (await scope_of(c))["spent"]
    total = a_spent + b_spent + c_spent
    assert total <= 2 * limit  # never beyond the limit
    # All but the crashed sidecar's claim (its unused slice may have been spent: it might only
    # be cut off) and less than one request's worst case was usable.
    assert 2 * limit - (a_spent + b_claim + c_spent) < 200
    _, stats = await get_json(f"{stack.fake.url}/_control/stats")
    model = stats["models"]["model-one"]
    assert model["prompt_tokens"] + model["completion_tokens"] == total  # charged = produced


async def test_only_the_agents_own_sidecars_take_slices_of_its_budget(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    stack.ctl(
        "release", "create", "billing", "b1", "--model", "model-one",
        "--base-url", f"{stack.fake.url}/v1", "--api-key-env", KEY_VAR,
    )  # fmt: skip
    stack.ctl("route", "set-stable", "billing", "b1")
    for scope, tokens in ((SCOPE, 3000), ("agent:billing", 1000), ("global", 9000)):
        stack.ctl(
            "budget", "set", scope, "--tokens", str(tokens), "--window", "day",
            "--request-cap", str(CAP),
        )  # fmt: skip
    stack.ctl("budget", "set", "session:sess-x", "--tokens", "500", "--window", "day")
    support = stack.start_sidecar([etcd_node.client_url], name="support", args=FAST)
    billing = procs.sidecar(
        stack.base / "logs",
        "billing",
        [etcd_node.client_url],
        stack.env,
        stack.base / "state-billing",
        "--stale-after",
        "1",
        *FAST,
        name="billing",
        extra_env={KEY_VAR: stack.provider_key},
    ).start()
    stack.sidecars.append(billing)
    await wait_for(f"{support.url}/status", holds_slice(SCOPE))
    await wait_for(f"{billing.url}/status", holds_slice("agent:billing"))
    _, body = await get_json(f"{billing.url}/status")
    assert SCOPE not in {s["scope"] for s in body["budgets"]["scopes"]}
    _, body = await get_json(f"{support.url}/status")
    assert "agent:billing" not in {s["scope"] for s in body["budgets"]["scopes"]}
    ours = await settle_usage(stack, lambda u: len(u["holders"]) == 1)
    assert ours["holders"][0]["holder"].startswith("support.")
    theirs = await settle_usage(stack, lambda u: len(u["holders"]) == 1, scope="agent:billing")
    assert theirs["holders"][0]["holder"].startswith("billing.")
    both = await settle_usage(stack, lambda u: len(u["holders"]) == 2, scope="global")
    assert all(h["live"] for h in both["holders"])
    # a session budget is per sidecar: never sliced, reported only by a sidecar that served it
    assert usage(stack, "session:sess-x")["holders"] == []
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{support.url}/v1/chat/completions",
            json={"model": AGENT, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Holdfast-Session": "sess-x"},
        ) as resp:
            assert resp.status == 200
            spent = (await resp.json())["usage"]["total_tokens"]
    served = await settle_usage(stack, lambda u: u["used"] == spent, scope="session:sess-x")
    assert [h["holder"].split(".")[0] for h in served["holders"]] == ["support"]
    assert not usage(stack, "session:sess-x")["fleet"]
    # billing's traffic is metered by its own agent budget and global, never by support's
    await spend_all(billing, "billing", model="billing")
    after = usage(stack, "agent:billing")
    assert 1000 - 200 < after["used"] <= 1000
    assert usage(stack)["used"] == spent


async def test_budget_cli_api_audit_and_what_a_sidecar_shows(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    headers = {"Authorization": f"Bearer {stack.token}", "X-Holdfast-Actor": "e2e"}
    url = f"{stack.svc.url}/v1/budgets"
    async with aiohttp.ClientSession(headers=headers) as http:
        for body, param in [
            ({"tokens": 0, "window": "day"}, "tokens"),
            ({"tokens": -5, "window": "day"}, "tokens"),
            ({"tokens": 1.5, "window": "day"}, "tokens"),
            ({"tokens": 10, "window": "fortnight"}, "window"),
            ({"tokens": 10, "window": "day", "zone": "Mars/Olympus"}, "zone"),
            ({"tokens": 10, "window": "day", "soft": 1.5}, "soft"),
            ({"tokens": 10, "window": "day", "on_exhausted": "explode"}, "on_exhausted"),
            ({"cost": "abc", "window": "day"}, "cost"),
            ({"window": "day"}, "tokens"),
        ]:
            async with http.put(f"{url}/{SCOPE}", json=body) as resp:
                error = (await resp.json())["error"]
                assert resp.status == 400 and error["code"] == "invalid_request", (body, error)
                assert error["param"] == param, (body, error)
        async with http.put(f"{url}/{SCOPE}", json={"tokens": 10, "window": "day", "x": 1}) as r:
            assert r.status == 400 and "x" in (await r.json())["error"]["message"]
        async with http.put(
            f"{url}/agent:Not%20A%20Name", json={"tokens": 10, "window": "day"}
        ) as r:
            assert r.status == 400 and (await r.json())["error"]["param"] == "scope"
        body = {"tokens": 10, "window": "day", "on_exhausted": "degrade:nope"}
        async with http.put(f"{url}/{SCOPE}", json=body) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 404 and error["code"] == "release_not_found", error
        for method in ("GET", "DELETE"):
            async with http.request(method, f"{url}/tenant:nobody") as resp:
                error = (await resp.json())["error"]
                assert resp.status == 404 and error["code"] == "budget_not_found"
        async with http.get(f"{url}/tenant:nobody/usage") as resp:
            assert resp.status == 404
    assert "no budgets" in stack.ctl("budget", "list").stdout  # nothing was written

    stack.ctl("budget", "set", SCOPE, "--tokens", "5000", "--window", "day", "--reason", "first")
    stack.ctl(
        "budget", "set", SCOPE, "--tokens", "6000", "--window", "1h", "--soft", "0.5",
        "--on-exhausted", "degrade:r2", "--request-cap", "32", "--reason", "q3",
    )  # fmt: skip
    stack.ctl("budget", "set", "tenant:acme", "--tokens", "900", "--window", "month")
    got = json.loads(stack.ctl("--json", "budget", "get", SCOPE).stdout)["budget"]
    assert (got["tokens"], got["window"], got["soft"], got["on_exhausted"]) == (
        6000,
        "1h",
        0.5,
        "degrade:r2",
    )
    human = stack.ctl("budget", "get", SCOPE).stdout
    assert "degrade:r2" in human and "6000" in human and "32" in human
    listed = stack.ctl("budget", "list").stdout
    assert SCOPE in listed and "tenant:acme" in listed and "month" in listed
    scopes = [
        b["scope"] for b in json.loads(stack.ctl("--json", "budget", "list").stdout)["budgets"]
    ]
    assert sorted(scopes) == sorted([SCOPE, "tenant:acme"])
    stack.ctl("budget", "delete", "tenant:acme", "--reason", "done")
    missing = stack.ctl("budget", "get", "tenant:acme", check=False)
    assert missing.returncode == 1 and "no budget for scope 'tenant:acme'" in missing.stderr
    again = stack.ctl("budget", "delete", "tenant:acme", check=False)
    assert again.returncode != 0
    entries = json.loads(stack.ctl("--json", "history").stdout)["entries"]
    sets = [e for e in entries if e["action"] == "budget.set"]
    assert len(sets) == 3 and len([e for e in entries if e["action"] == "budget.delete"]) == 1
    change = next(e for e in sets if e["reason"] == "q3")
    assert change["actor"].endswith("e2e") and change["before"]["tokens"] == 5000
    assert change["after"]["tokens"] == 6000 and change["after"]["degrade_to"] == "r2"

    # What the sidecar shows: a provider without usage is charged an estimate, marked so.
    await fake_behaviour(stack, "model-one", omit_usage=True)
    sidecar = stack.start_sidecar([etcd_node.client_url], name="shows", args=FAST)
    await wait_for(f"{sidecar.url}/status", holds_slice(SCOPE))
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sidecar.url}/v1/chat/completions",
            json={"model": AGENT, "messages": [{"role": "user", "content": "no usage, please"}]},
        ) as resp:
            assert resp.status == 200 and "usage" not in await resp.json()
        scope = await scope_of(sidecar)
        assert scope["spent"] == scope["estimated"] > 0 and scope["reserved"] == 0
        async with http.get(f"{sidecar.url}/metrics") as resp:
            metrics = await resp.text()
    labels = f'{{agent="{AGENT}",scope="{SCOPE}"}}'
    for name, value in (
        ("spent", scope["spent"]),
        ("estimated", scope["estimated"]),
        ("limit", 6000),
        ("allowance", scope["allowance"]),
        ("remaining", scope["remaining"]),
        ("reserved", 0),
    ):
        assert f"holdfast_budget_{name}_tokens{labels} {float(value)}" in metrics, name
    charged = [
        line
        for line in metrics.splitlines()
        if line.startswith("holdfast_budget_charged_tokens_total{") and 'estimated="true"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in charged) == scope["spent"]
    fleet = await settle_usage(stack, lambda u: u["estimated"] == scope["spent"])
    assert fleet["used"] == scope["spent"]


async def fake_behaviour(stack: Stack, model: str, **behaviour: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{stack.fake.url}/_control/models/{model}", json=behaviour) as r:
            assert r.status == 200, await r.text()


async def test_a_sidecar_without_its_first_slice_waits_for_it_instead_of_refusing(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    """A sidecar holds no slice of a fleet budget until the controller's next tick after its
    first report (at start, after `budget set`, at a window turn). Requests arriving then wait
    for the slice (bounded by --budget-first-slice-wait) instead of a 429 saying "this sidecar
    holds 0"; with configsvc away the wait runs out and the refusal says why."""
    args = ("--budget-first-slice-wait", "3")
    first = stack.start_sidecar([etcd_node.client_url], name="first", args=args)
    await wait_for(f"{first.url}/status", stable_is("r1"))
    stack.ctl("budget", "set", SCOPE, "--tokens", "200000", "--window", "1h")
    statuses: list[int] = []
    async with aiohttp.ClientSession() as http:

        async def ask(i: int) -> None:
            body = {"model": AGENT, "messages": [{"role": "user", "content": f"q {i}"}]}
            async with http.post(f"{first.url}/v1/chat/completions", json=body) as resp:
                statuses.append(resp.status)

        # a burst every 20 ms from the moment the budget is set until the slice is held
        for i in range(200):
            await asyncio.gather(*(ask(i * 4 + k) for k in range(4)))
            _, body = await get_json(f"{first.url}/status")
            if holds_slice(SCOPE)(body):
                break
            await asyncio.sleep(0.02)
        async with http.get(f"{first.url}/metrics") as resp:
            metrics = await resp.text()
    assert statuses and set(statuses) == {200}, statuses
    waits = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("holdfast_budget_first_slice_waits_total{")
    ]
    assert waits and waits[0] >= 1, "no request had to wait: the test did not hit the window"

    # configsvc away: a new sidecar can get no slice; its request waits, then is refused
    stack.svc.stop()
    late = stack.start_sidecar(
        [etcd_node.client_url], name="late", args=("--budget-first-slice-wait", "0.5")
    )
    await wait_for(f"{late.url}/status", stable_is("r1"))
    async with aiohttp.ClientSession() as http:
        started = asyncio.get_running_loop().time()
        body = {"model": AGENT, "messages": [{"role": "user", "content": "late"}]}
        async with http.post(f"{late.url}/v1/chat/completions", json=body) as resp:
            waited = asyncio.get_running_loop().time() - started
            answer = await resp.json()
    assert resp.status == 429 and "this sidecar holds 0" in answer["error"]["message"], answer
    assert resp.headers["Retry-After"] == "1" and 0.5 <= waited < 3, waited
