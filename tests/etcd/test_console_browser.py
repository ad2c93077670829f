"""A person on call, in a real browser: Debian's Chromium, driven over WebDriver (selenium and
Debian's chromedriver), watches the console through a live rollout and the health gate's abort.

Real processes around real etcd: the fake LLM, configsvc (tokens file, reads need a token, the
controller ticking every 0.1 s, the console sampling every second), two sidecars publishing
health every 0.5 s (one exporting OTLP traces to an in-process collector: the end-to-end check
of the sidecar process's ``--otlp-endpoint``), and new sessions at about 30 requests/s. The
person signs in with a viewer token, sees the rollout move, then -- without reloading -- the
canary fail and the gate abort it with its evidence, and the abort in the audit trail.

Screenshots go to ``$HOLDFAST_SCREENSHOTS`` when set (``make screenshots`` writes the docs'
``docs/operating/img/``), else to the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from configsvc.http import token_digest
from holdfast_devtools.etcd_local import EtcdNode
from holdfast_devtools.otlp_sink import CLIENT, OtlpSink
from tests.etcd.spine_stack import AGENT, Stack, start_stack
from tests.etcd.test_auto_rollback import Load

pytestmark = pytest.mark.etcd
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The network here is closed: without these, Chromium's background connections are refused
# (and slow it down); a fresh profile per run.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1360,1000")  # fmt: skip
VIEWER = "viewer-vera-0123456789abcdef"
T = TypeVar("T")


def browser(profile: Path) -> WebDriver:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Chromium is not installed: run scripts/bootstrap.sh (apt: chromium, "
                    "chromium-driver)", pytrace=False)  # fmt: skip
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except WebDriverException as exc:
            last = exc
        if last:
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r:.300}){SEEN[-1:]}")


SEEN: list[str] = []  # what the page said when a wait ran out


def text(driver: WebDriver, css: str) -> str:
    """The visible text of what ``css`` selects, read in one go inside the page: a live update
    may replace those elements at any moment, which would leave WebDriver's references stale."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(e => e.innerText).join(' ');"
    )
    found = str(driver.execute_script(script, css))
    SEEN[:] = [f"; {css} said: {found[:600]!r}"]
    return found


class Background:
    """The agents' traffic and the trace collector, on an event loop of their own."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sink = self.run(OtlpSink().start())
        self.load: Load | None = None
        self.runner: concurrent.futures.Future[None] | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start_load(self, urls: list[str]) -> Load:
        self.load = Load(urls, lambda i: "default")
        self.runner = asyncio.run_coroutine_threadsafe(self.load.run(), self.loop)
        return self.load

    def stop(self) -> None:
        if self.load is not None and self.runner is not None:
            self.load.running = False
            self.runner.result(timeout=30)
        self.run(self.sink.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("HOLDFAST_SCREENSHOTS", tmp_path / "screenshots"))
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    tokens = tmp_path / "tokens.jsonl"
    tokens.write_text(json.dumps({"subject": "vera", "role": "viewer",
                                  "sha256": token_digest(VIEWER).hex()}) + "\n")  # fmt: skip
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=(
        "--tokens-file", str(tokens), "--require-token-for-reads", "--rollout-tick", "0.1",
        "--console-interval", "1"))  # fmt: skip
    s.create_releases(("r1", "model-one"), ("r2", "model-two"))
    s.set_stable("r1")
    yield s
    s.stop()


def test_on_call_watches_a_rollout_and_its_abort_in_the_console(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path, shots: Path
) -> None:
    background = Background()
    driver: WebDriver | None = None
    try:
        traced = stack.start_sidecar([etcd_node.client_url], name="sc0", args=(
            "--health-interval", "0.5", "--otlp-endpoint", background.sink.url))  # fmt: skip
        plain = stack.start_sidecar([etcd_node.client_url], name="sc1",
                                    args=("--health-interval", "0.5"))  # fmt: skip
        load = background.start_load([traced.url, plain.url])
        driver = browser(tmp_path / "chromium")
        console = f"{stack.svc.url}/ui"

        # Signing in: the token goes once through the form; a cookie carries the session.
        driver.get(f"{console}/agents/{AGENT}")
        wait(lambda: "/ui/login" in driver.current_url, 30, "the login form")
        driver.save_screenshot(str(shots / "console-login.png"))
        driver.find_element(By.ID, "token").send_keys(VIEWER)
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        wait(lambda: driver.current_url.endswith(f"/ui/agents/{AGENT}"), 30, "the agent page")
        assert "vera (viewer)" in text(driver, "nav .who")
        wait(lambda: text(driver, "#live-state").startswith("live"), 30, "the live stream")

        # A rollout under the health gate: the page follows it without a reload.
        driver.execute_script("window.sameDocument = true")
        stack.ctl("rollout", "start", AGENT, "r2", "--steps", "50,100", "--interval", "1h",
                  "--max-error-rate-delta", "0.1", "--min-samples", "20",
                  "--fails-to-abort", "2",
                  # latency is not what goes bad here; on a loaded machine the default p95
                  # ratio (1.5) can abort a healthy canary, so it is set out of reach
                  "--max-p95-ratio", "100")  # fmt: skip
        wait(lambda: "r2 running · step 1/2 · 50%" in text(driver, "#route .rollout-text"), 30,
             "the rollout on the page")  # fmt: skip
        wait(lambda: "gate: pass" in text(driver, "#route .gate"), 60, "the gate's pass")
        wait(lambda: "canary" in text(driver, "#releases thead")
             and "2 live" in text(driver, "#fleet"), 30, "both releases and sidecars")  # fmt: skip
        time.sleep(3)  # a few more samples for the charts
        driver.save_screenshot(str(shots / "console-rollout-running.png"))
        driver.get(console)
        wait(lambda: "gate: pass" in text(driver, "table.agents"), 30, "the overview")
        assert "50%" in text(driver, "table.agents") and "r2" in text(driver, "table.agents")
        driver.save_screenshot(str(shots / "console-overview.png"))

        # The canary goes bad: the gate aborts it, and the open page says so by itself.
        driver.get(f"{console}/agents/{AGENT}")
        wait(lambda: text(driver, "#live-state").startswith("live"), 30, "the live stream")
        driver.execute_script("window.sameDocument = true")
        background.run(bad_canary(stack))
        wait(lambda: "aborted" in text(driver, "#route .rollout-text"), 60, "the abort")
        wait(lambda: "health gate" in text(driver, "#route .gate .reason"), 30, "the evidence")
        assert driver.execute_script("return window.sameDocument === true"), "the page reloaded"
        gate = text(driver, "#route .gate")
        assert "rollout.abort" in gate and "rollout-controller" in gate
        assert "max_error_rate_delta" in text(driver, "#route tr.verdict-fail")
        assert "(by the health gate)" in text(driver, "#route .state")
        driver.save_screenshot(str(shots / "console-rollout-aborted.png"))

        # The abort in the audit trail, filtered as on-call would look for it.
        driver.get(f"{console}/audit?kind=rollout&agent={AGENT}")
        rows = text(driver, "table.audit tbody")
        assert "rollout.abort" in rows and "rollout.start" in rows and "rollout-controller" in rows
        driver.save_screenshot(str(shots / "console-audit.png"))
        driver.get(f"{console}/agents/{AGENT}/sidecars")
        assert len(driver.find_elements(By.CSS_SELECTOR, "table.sidecars tbody tr")) == 2

        # The traced sidecar's process exported its spans over OTLP/HTTP as it ran.
        failed = {"holdfast.outcome": "upstream_5xx"}.items()
        spans = background.run(background.sink.wait_for(
            lambda s: s.name == "chat model-two" and failed <= s.attributes.items(),
            within=30))  # fmt: skip
        span = spans[0]
        assert span.kind == CLIENT and span.resource["service.name"] == "holdfast-sidecar"
        assert span.resource["service.instance.id"].startswith(f"{AGENT}.")
        assert span.attributes["holdfast.release"] == "r2"
        assert span.attributes["error.type"] == "upstream_5xx"
        assert load.served
    finally:
        if driver is not None:
            driver.quit()
        background.stop()


async def bad_canary(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{stack.fake.url}/_control/models/model-two"
        async with http.put(url, json={"error_rate": 1.0}) as resp:
            assert resp.status == 200, await resp.text()
