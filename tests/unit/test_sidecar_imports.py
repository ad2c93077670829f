"""What a sidecar keeps resident: the Python jsonschema package (~4 MB) is loaded only when a
contract's schema or a flag file is checked, never by starting a sidecar without contracts; and
the libraries only some configurations need (bench/memory.py measures each) are not loaded by a
sidecar that serves without them."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import sidecar.main
before = sorted(m for m in sys.modules if m.split('.')[0] in ('jsonschema', 'referencing'))
from holdfast.contracts.schema import check_schema
check_schema({'type': 'object', 'properties': {'q': {'$ref': '#/$defs/q'}},
              '$defs': {'q': {'type': 'string'}}}, what='args schema', object_args=True)
after = 'jsonschema' in sys.modules
print(json.dumps([before, after]))
"""


def test_a_sidecar_starts_without_the_python_jsonschema_package() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before == []
    assert after  # loaded on first use, and the check still runs


# Loaded only by the configurations that need them (bench/memory.py measures each): a contract's
# schema (jsonschema_rs, ~6.5 MB), a category rule's pattern (RE2, ~1.2 MB), a budget window in
# a zone other than UTC (zoneinfo and sysconfig's build data, ~0.9 MB).
OPTIONAL = ("jsonschema_rs", "re2", "zoneinfo")
# Not loaded while serving either: difflib (shadow comparisons), statistics (configsvc's
# experiment analyses); psutil not at all (/status reads the process through prometheus_client).
UNUSED = ("difflib", "psutil", "statistics")

SERVING_PROBE = """
import asyncio, json, sys
import aiohttp
from aiohttp import web
WATCHED = tuple(sys.argv[1:])

def loaded():
    return sorted(m for m in WATCHED if m in sys.modules)

async def serve(app):  # not aiohttp.test_utils: it imports unittest, which imports difflib
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner

def url(runner, path):
    return f"http://127.0.0.1:{runner.addresses[0][1]}{path}"

async def main():
    upstream = web.Application()
    async def chat(request):
        return web.json_response({"choices": [{"message": {"content": "hi"}}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    upstream.router.add_post("/v1/chat/completions", chat)
    provider = await serve(upstream)
    from sidecar.settings import SidecarSettings
    from sidecar.app import Sidecar
    from holdfast.keyspace import Release, Route
    from holdfast.keyspace.budget import Budget
    from holdfast.store import KeyValue
    at_import = loaded()
    sidecar = Sidecar(SidecarSettings(agent="a", etcd_endpoints=("http://127.0.0.1:1",)), {})
    ks = sidecar.keyspace
    records = (
        (ks.release("a", "r1"), Release(agent="a", name="r1", model="m",
                                        base_url=url(provider, "/v1"))),
        (ks.route("a"), Route(agent="a", stable="r1")),
        # a rolling window in UTC, the default zone: no tz database needed
        (ks.budget("agent:a"), Budget(scope="agent:a", tokens=10**9, window="1d")),
    )
    kvs = {key: KeyValue(key, record.encode(), 5, 1, 1) for key, record in records}
    sidecar.config.apply_reset(5, kvs, "etcd")
    await sidecar.upstream.start()
    app = await serve(sidecar.build_app())
    async with aiohttp.ClientSession() as client:
        resp = await client.post(url(app, "/v1/chat/completions"), json={
            "model": "a", "messages": [{"role": "user", "content": "hi"}]})
        status = resp.status
        metrics = (await client.get(url(app, "/metrics"))).status
        process = (await (await client.get(url(app, "/status"))).json())["process"]
    serving = loaded()
    await app.cleanup()
    await sidecar.upstream.close()
    await provider.cleanup()
    # each is loaded on first use, and works
    from holdfast.contracts.schema import compile_validator
    from holdfast.signals.categories import compile_pattern
    from holdfast.budgets.window import check_zone, span_at
    assert compile_validator({"type": "object", "required": ["q"]}).errors({}) != []
    assert compile_pattern("order [0-9]+").search("my order 1234") is not None
    assert check_zone("Europe/Paris") == "Europe/Paris"
    paris = span_at("day", "Europe/Paris", 1_700_000_000.0)
    print(json.dumps({"status": status, "metrics": metrics, "at_import": at_import,
                      "process": process,
                      "serving": serving, "used": loaded(), "paris_hours":
                      (paris.end - paris.start) / 3600}))

asyncio.run(main())
"""


def test_a_sidecar_without_those_features_never_loads_their_libraries() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVING_PROBE, *OPTIONAL, *UNUSED],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["at_import"] == []
    assert seen["metrics"] == 200
    assert seen["serving"] == []  # served (or refused by the budget) without any of them
    assert seen["status"] in (200, 429, 503), seen
    assert seen["used"] == sorted(OPTIONAL)
    assert seen["paris_hours"] == 24.0
    assert seen["process"]["rss_bytes"] > 0  # /status read it, without psutil
