"""Secrets never leak: a full run with canary secrets -- the provider key, configsvc's admin
token, a rejected token and the agent's own key -- through successes and failures, then every
output is searched for them: all process logs, every HTTP answer (bodies and headers),
/status, /metrics, configsvc's API and history, and the CLI's stdout and stderr."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import aiohttp
import pytest

from holdfast.devtools import procs
from holdfast.devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd

AGENT = "support"
KEY_VAR = "CANARY_PROVIDER_KEY"
PROVIDER_KEY = "sk-canary-provider-" + secrets.token_hex(8)
ADMIN_TOKEN = "canary-admin-" + secrets.token_hex(8)
BAD_TOKEN = "canary-rejected-" + secrets.token_hex(8)
AGENT_KEY = "sk-canary-agent-" + secrets.token_hex(8)
CANARIES = (PROVIDER_KEY, ADMIN_TOKEN, BAD_TOKEN, AGENT_KEY)


def ctl(svc: procs.ManagedProcess, token: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")}
    result = subprocess.run(
        [procs.script("holdfastctl"), "--server", svc.url, *args],
        env={**env, "HOLDFAST_TOKEN": token, "HOLDFAST_ACTOR": "ops"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return f"{result.returncode}\n{result.stdout}\n{result.stderr}"


async def grab(http: aiohttp.ClientSession, method: str, url: str, **kw: object) -> str:
    async with http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        return f"{resp.status}\n{dict(resp.headers)}\n{await resp.text()}"


async def test_no_secret_reaches_any_output(
    tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    logs = tmp_path / "logs"
    fake = procs.fakellm(logs, "--require-key", PROVIDER_KEY).start()
    svc = procs.configsvc(logs, [etcd_node.client_url], etcd_env, ADMIN_TOKEN).start()
    side = None
    seen: list[str] = []
    try:
        base = f"{fake.url}/v1"
        for name, model, var in (("r1", "m-one", KEY_VAR), ("r2", "m-two", "CANARY_UNSET_VAR")):
            seen.append(ctl(svc, ADMIN_TOKEN, "release", "create", AGENT, name, "--model", model,
                            "--base-url", base, "--api-key-env", var))  # fmt: skip
        seen.append(ctl(svc, ADMIN_TOKEN, "route", "set-stable", AGENT, "r1"))
        seen.append(ctl(svc, BAD_TOKEN, "route", "set-stable", AGENT, "r2"))  # 401
        assert seen[-1].startswith("1\n")
        side = procs.sidecar(
            logs, AGENT, [etcd_node.client_url], etcd_env, tmp_path / "state",
            extra_env={KEY_VAR: PROVIDER_KEY},
        ).start()  # fmt: skip
        agent_auth = {"Authorization": f"Bearer {AGENT_KEY}"}
        chat = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession() as http:
            seen.append(await grab(http, "GET", f"{side.url}/readyz"))
            for stream in (False, True):
                body = chat | {"stream": stream}
                seen.append(await grab(http, "POST", f"{side.url}/v1/chat/completions",
                                       json=body, headers=agent_auth))  # fmt: skip
            # provider failure: the fake refuses every request to m-one
            await grab(http, "PUT", f"{fake.url}/_control/models/m-one", json={"error_rate": 1.0})
            seen.append(await grab(http, "POST", f"{side.url}/v1/chat/completions",
                                   json=chat, headers=agent_auth))  # fmt: skip
            # the key variable is missing in the sidecar for r2
            seen.append(ctl(svc, ADMIN_TOKEN, "switch", AGENT, "r2", "--no-probe"))
            for _ in range(50):
                reply = await grab(http, "POST", f"{side.url}/v1/chat/completions",
                                   json=chat, headers=agent_auth)  # fmt: skip
                seen.append(reply)
                if "provider_key_missing" in reply:
                    break
            assert "provider_key_missing" in seen[-1]
            # a switch whose probe fails names the reason, not the key
            seen.append(ctl(svc, ADMIN_TOKEN, "switch", AGENT, "r1"))
            for path in ("/status", "/metrics", "/v1/models"):
                seen.append(await grab(http, "GET", f"{side.url}{path}"))
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            for path in ("/v1/agents/support/releases", "/v1/agents/support/route", "/v1/history"):
                seen.append(await grab(http, "GET", f"{svc.url}{path}", headers=admin))
            # the fake's own record of what reached the provider (it holds the key by design)
            received = await grab(http, "GET", f"{fake.url}/_control/requests?limit=200")
        seen.append(ctl(svc, ADMIN_TOKEN, "--json", "history", "--agent", AGENT))
    finally:
        for proc in (side, svc, fake):
            if proc is not None:
                proc.stop()
    outputs = {f"output {i}": text for i, text in enumerate(seen)}
    outputs |= {str(p): p.read_text(errors="replace") for p in logs.glob("*.log")}
    assert any("provider_key_missing" in t for t in outputs.values())  # the failures happened
    assert sum(len(t) for t in outputs.values()) > 10_000
    leaks = [(where, c[:20]) for where, text in outputs.items() for c in CANARIES if c in text]
    assert leaks == [], leaks
    # the key did travel where it belongs, and the agent's own key never did
    assert f"Bearer {PROVIDER_KEY}" in received
    assert AGENT_KEY not in received
