"""Listeners are loopback by default: another address needs an explicit opt-in (the sidecar's
--allow-non-loopback; configsvc's token) and the process then logs a warning saying so.

127.0.0.2 stands in for a non-loopback address: the code compares the listen host against the
loopback names, so it is treated exactly like a LAN address while the test stays on this host.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd

EXPOSED = "127.0.0.2"


def listening_on(proc: procs.ManagedProcess, host: str) -> procs.ManagedProcess:
    proc.argv[proc.argv.index("--listen") + 1] = f"{host}:0"
    return proc


def warnings_of(proc: procs.ManagedProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in proc.log_events() if e.get("event") == event]


def exits_with(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=60, check=False
    )  # fmt: skip


async def test_sidecar_non_loopback_listener_needs_the_flag_and_warns(
    tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    def sidecar(name: str, *args: str) -> procs.ManagedProcess:
        return procs.sidecar(
            tmp_path, "support", [etcd_node.client_url], etcd_env, tmp_path / name, *args,
            name=name,
        )  # fmt: skip

    refused = exits_with(listening_on(sidecar("refused"), EXPOSED).argv, dict(os.environ))
    assert refused.returncode == 2 and "--allow-non-loopback" in refused.stderr
    exposed = listening_on(sidecar("exposed", "--allow-non-loopback"), EXPOSED).start()
    quiet = sidecar("loopback").start()
    try:
        async with aiohttp.ClientSession() as http:  # it does serve there
            async with http.get(f"http://{EXPOSED}:{exposed.port}/healthz") as resp:
                assert resp.status == 200
    finally:
        exposed.stop()
        quiet.stop()
    (warning,) = warnings_of(exposed, "sidecar_non_loopback_listener")
    assert warning["level"] == "warning" and warning["host"] == EXPOSED
    assert warnings_of(quiet, "sidecar_non_loopback_listener") == []


async def test_configsvc_non_loopback_listener_needs_a_token_and_warns(
    tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    def configsvc(name: str, token: str, *args: str) -> procs.ManagedProcess:
        proc = procs.configsvc(tmp_path / name, [etcd_node.client_url], etcd_env, token, *args)
        return listening_on(proc, EXPOSED)

    no_token = configsvc("open", "", "--allow-no-token")
    env = {k: v for k, v in os.environ.items() if k != "HOLDFAST_TOKEN"}
    refused = exits_with(no_token.argv, env)
    assert refused.returncode == 2 and "only for a loopback listener" in refused.stderr
    exposed = configsvc("exposed", "exposed-token-0123456789").start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"http://{EXPOSED}:{exposed.port}/v1/agents/support/route/rollback"
            async with http.post(url, json={}) as resp:
                assert resp.status == 401  # it serves there, and changes need the token
    finally:
        exposed.stop()
    (warning,) = warnings_of(exposed, "configsvc_non_loopback_listener")
    assert warning["level"] == "warning" and warning["host"] == EXPOSED
