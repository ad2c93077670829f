"""The real ``holdfastctl`` console script against a ``holdfastctl serve`` process and etcd."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holdfast_devtools import procs
from holdfast_devtools.etcd_host import free_port
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd

TOKEN = "cli-test-token-0123456789"
AGENT = "support"
BASE_URL = "http://127.0.0.1:9/v1"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLDFAST_")}
    return {**env, **extra}


class Ctl:
    def __init__(self, server: str, token: str = TOKEN) -> None:
        self.env = clean_env(HOLDFAST_SERVER=server, HOLDFAST_TOKEN=token, HOLDFAST_ACTOR="ops")

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [procs.script("holdfastctl"), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok("--json", *args))

    def refused(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 1, (result.stdout, result.stderr)
        return result.stderr


@pytest.fixture
def server(etcd_node: EtcdNode, etcd_env: str, tmp_path: Path) -> Iterator[procs.ManagedProcess]:
    proc = procs.configsvc(tmp_path, [etcd_node.client_url], etcd_env, TOKEN).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_full_flow(server: procs.ManagedProcess) -> None:
    ctl = Ctl(server.url)
    out = ctl.ok(
        "release", "create", AGENT, "r1", "--model", "gpt-4o-mini", "--base-url", BASE_URL,
        "--api-key-env", "PROVIDER_KEY", "--description", "small", "--reason", "launch",
    )  # fmt: skip
    assert out.startswith(f"created release {AGENT}/r1: model gpt-4o-mini at {BASE_URL}")
    body = ctl.json("release", "create", AGENT, "r2", "--model", "gpt-4.1", "--base-url", BASE_URL)
    assert (body["release"]["model"], body["release"]["created_by"]) == ("gpt-4.1", "token:ops")

    err = ctl.refused("release", "create", AGENT, "r1", "--model", "other", "--base-url", BASE_URL)
    assert "release exists; releases are immutable" in err

    listing = ctl.ok("release", "list", AGENT).splitlines()
    assert listing[0].split()[:3] == ["RELEASE", "MODEL", "BASE_URL"]
    assert [line.split()[0] for line in listing[1:]] == ["r1", "r2"]
    assert "model:        gpt-4o-mini" in ctl.ok("release", "show", AGENT, "r1")
    assert ctl.json("release", "show", AGENT, "r2")["release"]["release"] == "r2"

    assert "has no route" in ctl.refused("route", "show", AGENT)
    out = ctl.ok("route", "set-stable", AGENT, "r1", "--reason", "start")
    assert out.splitlines()[0].startswith(f"route {AGENT}: stable - → r1 (revision ")
    route = ctl.json("route", "show", AGENT)
    assert route["route"]["stable"] == "r1"
    seen = route["mod_revision"]

    out = ctl.ok("route", "set-stable", AGENT, "r2", "--reason", "try", "--if-revision", str(seen))
    assert out.splitlines()[0].startswith(f"route {AGENT}: stable r1 → r2")
    err = ctl.refused("route", "set-stable", AGENT, "r1", "--if-revision", str(seen))
    assert f"not {seen}; nothing was written" in err
    assert "no release 'r9'" in ctl.refused("route", "set-stable", AGENT, "r9")

    out = ctl.ok("route", "rollback", AGENT, "--reason", "bad answers")
    assert out.splitlines()[0].startswith(f"route {AGENT}: rolled back r2 → r1")
    body = ctl.json("route", "aliases", AGENT, "gpt-4o", "helper")
    assert body["route"]["aliases"] == ["gpt-4o", "helper"]
    shown = ctl.ok("route", "show", AGENT)
    assert "stable:          r1" in shown and "aliases:         gpt-4o,helper" in shown
    assert ctl.json("route", "aliases", AGENT, "--clear")["route"]["aliases"] == []

    history = ctl.ok("history", "--agent", AGENT).splitlines()
    assert history[0].split() == [
        "REVISION", "WHEN", "ACTOR", "ACTION", "TARGET", "REASON", "CHANGE"
    ]  # fmt: skip
    assert "route.rollback" in history[3] and "bad answers" in history[3]
    assert history[3].endswith("stable r2→r1, previous_stable r1→r2")
    entries = ctl.json("history", "--limit", "3")["entries"]
    assert [e["action"] for e in entries] == [
        "route.set_aliases",
        "route.set_aliases",
        "route.rollback",
    ]
    assert all(e["actor"] == "token:ops" for e in entries)
    revisions = [e["revision"] for e in ctl.json("history")["entries"]]
    assert revisions == sorted(revisions, reverse=True) and len(revisions) == 7

    # --json on a refusal prints the API's error body on stdout as well.
    result = ctl.run("--json", "route", "set-stable", AGENT, "r9")
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "release_not_found"


def test_exit_codes(server: procs.ManagedProcess) -> None:
    ctl = Ctl(server.url)
    usage = ctl.run("route", "set-stable", AGENT)
    assert usage.returncode == 2 and "usage:" in usage.stderr
    assert ctl.run("route", "aliases", AGENT).returncode == 2
    assert ctl.run("--server", "no-scheme:1", "history").returncode == 2

    wrong = ctl.run(
        "release", "create", AGENT, "r1", "--model", "m", "--base-url", BASE_URL,
        HOLDFAST_TOKEN="wrong",
    )  # fmt: skip
    assert wrong.returncode == 1 and "wrong token" in wrong.stderr
    missing = ctl.run("route", "rollback", AGENT, HOLDFAST_TOKEN="")
    assert missing.returncode == 1 and "need the configsvc token" in missing.stderr
    assert "invalid model" in ctl.refused(
        "release", "create", AGENT, "r1", "--model", "bad model", "--base-url", BASE_URL
    )

    down = ctl.run("--server", f"http://127.0.0.1:{free_port()}", "history")
    assert down.returncode == 3 and "cannot reach configsvc" in down.stderr


def test_serve_needs_a_token_unless_told_otherwise(
    etcd_node: EtcdNode, etcd_env: str, tmp_path: Path
) -> None:
    argv = [procs.script("holdfastctl"), "serve", "--listen", "127.0.0.1:0", "--env", etcd_env]
    refused = subprocess.run(
        argv, env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2
    assert "no token" in refused.stderr and "--allow-no-token" in refused.stderr

    proc = procs.ManagedProcess(
        name="configsvc-open",
        argv=[*argv, "--etcd", etcd_node.client_url, "--allow-no-token"],
        log_path=tmp_path / "open.log",
        ready_event="configsvc_listening",
        env={"HOLDFAST_TOKEN": ""},
    ).start()
    try:
        events = {e["event"]: e for e in proc.log_events()}
        assert events["configsvc_auth_disabled"]["level"] == "warning"
        assert events["configsvc_listening"]["host"] == "127.0.0.1"
        assert events["configsvc_listening"]["port"] == proc.port > 0
        ctl = Ctl(proc.url, token="")
        body = ctl.json("release", "create", AGENT, "r1", "--model", "m", "--base-url", BASE_URL)
        assert body["release"]["created_by"] == "unauthenticated:ops"
    finally:
        assert proc.stop() == 0  # SIGTERM: graceful stop, exit 0
    names = [e["event"] for e in proc.log_events()]
    assert names[-1] == "configsvc_stopped"
    assert names.index("configsvc_stopping") < len(names) - 1


def test_sigterm_stops_gracefully_and_logs_no_token(server: procs.ManagedProcess) -> None:
    Ctl(server.url).ok("history")
    assert server.stop() == 0
    log_text = server.log_path.read_text()
    assert TOKEN not in log_text
    assert '"event": "configsvc_stopped"' in log_text
