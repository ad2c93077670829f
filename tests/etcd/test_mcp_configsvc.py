"""Tier 3: MCP tool sets through holdfastctl and configsvc on a real etcd, against a real MCP
server built with the official SDK.

- ``contract import-mcp URL`` registers the server's tools with versions the compatibility
  classifier assigns (a changed schema is a new version of the right class, ``contract diff``
  explains it); tools whose names Holdfast cannot take are reported, not registered.
- It refuses a URL outside the upstream allowlist, and says clearly when the server is down or
  answers off-spec -- registering nothing.
- ``release create --mcp TOOLSET=URL`` validates the tool sets and their URLs and is audited.

holdfastctl runs in a thread: configsvc calls the MCP server, which answers on this test's
event loop.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack
from tests.servers.mcp_hostile import hostile_backend
from tests.servers.mcp_stack import McpBackend, mcp_backend


async def ctl(stack: Stack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(stack.ctl, *args, check=check)


async def ctl_json(stack: Stack, *args: str) -> Any:
    return json.loads((await ctl(stack, "--json", *args)).stdout)


def audited(stack: Stack, action: str) -> list[dict[str, Any]]:
    history = json.loads(stack.ctl("--json", "history", "--limit", "200").stdout)
    return [e for e in history["entries"] if e["action"] == action]


async def test_import_mcp_classifies_versions_and_refuses_what_it_cannot_use(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    async with mcp_backend() as backend:
        first = await ctl_json(stack, "contract", "import-mcp", backend.url, "--reason", "docs")
        assert first["server"]["name"] == "docs-backend"
        assert first["server"]["era"] in ("modern", "handshake")
        (search,) = first["tools"]
        assert (search["tool"], search["version"], search["created"], search["compat"]) == (
            "search", "1.0.0", True, "initial")  # fmt: skip
        shown = await ctl_json(stack, "contract", "show", "search", "1.0.0")
        contract = shown["contract"]
        assert contract["backend"] == backend.url and contract["description"]
        assert set(contract["args_schema"]["properties"]) == {"query", "limit", "lang"}
        assert contract["result_schema"]["properties"]["hits"]["type"] == "array"

        again = await ctl(stack, "contract", "import-mcp", backend.url)
        assert "search@1.0.0: unchanged (identical)" in again.stdout

        backend.reshape("optional")
        minor = await ctl(stack, "contract", "import-mcp", backend.url)
        assert "search@1.1.0: registered (compatible)" in minor.stdout
        backend.reshape("required")
        major = await ctl(stack, "contract", "import-mcp", backend.url, "--reason", "v2")
        assert "search@2.0.0: registered (breaking)" in major.stdout
        diff = (await ctl(stack, "contract", "diff", "search", "1.0.0", "2.0.0")).stdout
        assert diff.splitlines()[0] == "search 1.0.0 -> 2.0.0: breaking"
        changes = {tuple(line.split()[:3]) for line in diff.splitlines()}
        assert ("breaking", "args.region", "added") in changes, diff
        assert "new required field" in diff
        versions = await ctl_json(stack, "contract", "list", "search")
        assert [(v["version"], v["compat"], v["previous"]) for v in versions["versions"]] == [
            ("1.0.0", "initial", ""), ("1.1.0", "compatible", "1.0.0"),
            ("2.0.0", "breaking", "1.1.0")]  # fmt: skip
        registered = audited(stack, "contract.register")
        assert len(registered) == 3  # one per new version; "unchanged" wrote nothing
        assert {e["reason"] for e in registered} == {"docs", f"contract import-mcp {backend.url}",
                                                     "v2"}  # fmt: skip

        await rejects_unfit_names_and_picks_tools(stack, backend)
        await release_create_validates_and_audits(stack, backend)

    down = await ctl(stack, "--json", "contract", "import-mcp", backend.url, check=False)
    assert down.returncode == 1 and "mcp_import_failed" in down.stdout, down.stdout
    assert "unreachable" in json.loads(down.stdout)["error"]["message"]

    for url in ("http://169.254.169.254/mcp", "http://10.1.2.3/mcp",
                "http://metadata.google.internal/mcp"):  # fmt: skip
        refused = await ctl(stack, "--json", "contract", "import-mcp", url, check=False)
        assert refused.returncode == 1, url
        error = json.loads(refused.stdout)["error"]
        assert error["code"] == "upstream_host_refused" and error["param"] == "url", error

    async with hostile_backend() as hostile:
        for mode, words in (("html", "text/html"), ("not_json", "not JSON"),
                            ("stream_ends", "without answering")):  # fmt: skip
            hostile.list_mode = mode
            off = await ctl(stack, "--json", "contract", "import-mcp", hostile.url, check=False)
            error = json.loads(off.stdout)["error"]
            assert error["code"] == "mcp_import_failed" and words in error["message"], error
        hostile.list_mode = "rpc_error"
        off = await ctl(stack, "--json", "contract", "import-mcp", hostile.url, check=False)
        assert "refused tools/list: query too short" in json.loads(off.stdout)["error"]["message"]
    assert len(audited(stack, "contract.register")) == 4  # the failures registered nothing


async def rejects_unfit_names_and_picks_tools(stack: Stack, backend: McpBackend) -> None:
    assert backend.app is not None

    def GetWeather(city: str) -> str:  # a name Holdfast cannot take
        return city

    def fetch(url: str) -> str:
        return url

    backend.app.add_tool(GetWeather)
    backend.app.add_tool(fetch)
    picked = await ctl_json(stack, "contract", "import-mcp", backend.url, "--tool", "fetch")
    assert [t["tool"] for t in picked["tools"]] == ["fetch"]
    report = {t["tool"]: t for t in (await ctl_json(stack, "contract", "import-mcp",
                                                    backend.url))["tools"]}  # fmt: skip
    assert "does not fit Holdfast's names" in report["GetWeather"]["skipped"]
    assert report["fetch"]["created"] is False and report["search"]["version"] == "2.0.0"


async def release_create_validates_and_audits(stack: Stack, backend: McpBackend) -> None:
    base = ["release", "create", AGENT]
    model = ["--model", "model-one", "--base-url", f"{stack.fake.url}/v1"]
    created = await ctl_json(stack, *base, "m1", *model, "--mcp", f"docs={backend.url}",
                             "--mcp", f"docs={backend.url}", "--mcp", f"more={backend.url}",
                             "--contract", "search=1.0.0", "--reason", "mcp docs")  # fmt: skip
    release = created["release"]
    assert release["mcp"] == {"docs": [backend.url], "more": [backend.url]}  # duplicates folded
    assert release["contracts"] == {"search": "1.0.0"}
    (entry,) = [e for e in audited(stack, "release.create") if e["target"].endswith("/m1")]
    assert entry["reason"] == "mcp docs" and entry["after"]["mcp"] == release["mcp"]

    for bad, words in (
        ([f"Docs={backend.url}"], "invalid MCP tool set name"),
        (["docs=file:///etc/passwd"], "docs"),
        (["docs=http://169.254.169.254/mcp"], "refused"),
        (["docs"], "expected TOOLSET=URL"),
    ):
        args = [arg for pair in bad for arg in ("--mcp", pair)]
        refused = await ctl(stack, *base, "m9", *model, *args, check=False)
        assert refused.returncode != 0, bad
        assert words in refused.stderr, (bad, refused.stderr)
    shown = await ctl(stack, "release", "show", AGENT, "m9", check=False)
    assert shown.returncode != 0  # nothing was created by any refusal
