"""Added latency of an MCP ``tools/call`` through the sidecar versus straight to the backend.

One run, side by side: a backend built with the official MCP SDK (uvicorn, loopback), the
sidecar's MCP surface in front of it (contract checks both ways, breakers, pinned session), and
one client (``holdfast.mcp.client``) alternating a direct call and a call through the sidecar,
so machine noise hits both alike. ``python -m bench.mcp [--calls N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from holdfast.mcp.client import McpClient
from tests.servers.mcp_stack import TOOLSET, live_tool, mcp_backend, mcp_sidecar


async def run(calls: int, *, stateless: bool) -> dict[str, float]:
    async with mcp_backend(stateless=stateless) as backend, mcp_sidecar("http://127.0.0.1:9") as sc:
        sc.contract("search", "1.0.0", await live_tool(backend.url, "search"), backend.url)
        sc.release("r1", {"search": "1.0.0"}, {TOOLSET: [backend.url]})
        sc.stable("r1")
        client = McpClient()
        direct = await client.connect(backend.url, timeout_s=5)
        proxied = await client.connect(sc.mcp_url(), timeout_s=5)
        args = {"name": "search", "arguments": {"query": "pins", "limit": 2}}
        times: dict[str, list[float]] = {"direct": [], "sidecar": []}
        for i in range(calls + 20):
            for name, conn in (("direct", direct), ("sidecar", proxied)):
                started = time.perf_counter()
                answer = await client.call(conn, "tools/call", args, timeout_s=10)
                elapsed = time.perf_counter() - started
                assert answer.get("isError") is False, answer
                if i >= 20:  # warm-up
                    times[name].append(elapsed)
        await client.close()
    direct_ms = statistics.median(times["direct"]) * 1000
    sidecar_ms = statistics.median(times["sidecar"]) * 1000
    return {
        "direct_p50_ms": direct_ms,
        "sidecar_p50_ms": sidecar_ms,
        "added_p50_ms": sidecar_ms - direct_ms,
        "direct_p95_ms": statistics.quantiles(times["direct"], n=20)[18] * 1000,
        "sidecar_p95_ms": statistics.quantiles(times["sidecar"], n=20)[18] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    a = parser.parse_args()
    for stateless in (True, False):
        label = f"SDK backend, stateless_http={stateless}"
        result = asyncio.run(run(a.calls, stateless=stateless))
        print(
            f"{label}: direct p50 {result['direct_p50_ms']:.2f} ms, through the sidecar p50 "
            f"{result['sidecar_p50_ms']:.2f} ms, added {result['added_p50_ms']:.2f} ms; "
            f"p95 {result['direct_p95_ms']:.2f} / {result['sidecar_p95_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
