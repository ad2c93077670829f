"""The processes under test, started the real way and stopped on the way out.

etcd (a real single node), ``holdfastctl serve``, the fake upstream, the sidecar configured
through ``holdfastctl release create`` / ``route set-stable`` (so its config arrives by its etcd
watch, as in production), and the bare relay. The proxies are pinned to one core, the fake
upstream to the other (with the load generator: the harness pins itself before starting
anything, and children inherit that).
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.peers import Peer
from bench.peers import prepare as prepare_peers
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode

AGENT: Final = "bench"
ENV: Final = "bench"
FAST_RELEASE: Final = "fast"
STREAM_RELEASE: Final = "stream"
FAST_MODEL: Final = "bench-fast"
STREAM_MODEL: Final = "bench-stream"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
SESSION_HEADER: Final = "X-Holdfast-Session"  # the sidecar's session header (DESIGN.md)
BUDGET_TOKENS: Final = 10**12  # the agent's budget: never exhausted, always metered
# The sidecar waits its turn while the other paths run their rounds, and behind a peer that
# cannot keep up (LiteLLM) that can take longer than the 30 s after which an idle sidecar hands
# its budget slice back, and its first request after that waits for a regrant through etcd
# (bench/README.md, "Budget"). Idleness is an artefact of the interleaving here, so it is kept
# from triggering; the failed-requests target still catches any refusal.
SIDECAR_ARGS: Final = ("--budget-idle-after", "3600")


@dataclass(frozen=True, slots=True)
class Cores:
    """Where things run: ``proxy`` for the process under test, ``load`` for everything else.

    ``None`` for both on a one-core machine, where pinning would only serialise things."""

    proxy: int | None
    load: int | None
    usable: int

    @classmethod
    def detect(cls) -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None, len(cores))
        return cls(cores[0], cores[1], len(cores))

    def pin_self(self) -> None:
        if self.load is not None:
            os.sched_setaffinity(0, {self.load})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way to reach the fake upstream; ``pid`` is the relay in between, if any.

    ``headers``: sent with every request (a session id, a peer's routing headers);
    ``metrics_url``: a ``/metrics`` with the event-loop lag (a Holdfast sidecar's, the bare
    relay's), None for others;
    ``first_turns``: every request opens a new session (bench.phases.first_turns)."""

    name: str
    base_url: str
    fast_model: str
    stream_model: str
    pid: int | None
    headers: tuple[tuple[str, str], ...] = ()
    metrics_url: str | None = None
    first_turns: bool = False


DIRECT: Final = "direct"
BARE: Final = "bare relay"
SIDECAR: Final = "sidecar"
BASELINE: Final = "sidecar (baseline)"
FIRST: Final = "first turns"
LATER: Final = "later turns"


def turn_path(sidecar: str, turns: str) -> str:
    """The name of a sidecar's first- or later-turn path in the first-turn phase."""
    return f"{sidecar}, {turns}"


@dataclass
class Stack:
    fake: procs.ManagedProcess
    sidecar: procs.ManagedProcess
    bare: procs.ManagedProcess
    configsvc: procs.ManagedProcess
    token: str
    etcd_url: str
    baseline: procs.ManagedProcess | None = None  # another build's sidecar, same config
    peers: list[Peer] = field(default_factory=list)
    release: str = ""  # the release the route serves now (set_stable)

    @property
    def fake_pid(self) -> int:
        return _pid(self.fake)

    def _sidecars(self) -> list[tuple[str, procs.ManagedProcess]]:
        found = [(SIDECAR, self.sidecar)]
        if self.baseline is not None:
            found.append((BASELINE, self.baseline))
        return found

    def _sidecar_path(self, name: str, proc: procs.ManagedProcess) -> Endpoint:
        # One session per release, pinned at its first request in the warm-up: every measured
        # request is a later turn, resolved through its pin. (A session pinned to one release
        # keeps it when the route moves on, so the streaming release gets a session of its own.)
        session = ((SESSION_HEADER, f"bench-later-{self.release}"),)
        return Endpoint(
            name, proc.url, AGENT, AGENT, _pid(proc), session, metrics_url=f"{proc.url}/metrics"
        )

    @property
    def paths(self) -> list[Endpoint]:
        """Every path of the run, for the release the route serves now."""
        paths = [
            Endpoint(DIRECT, self.fake.url, FAST_MODEL, STREAM_MODEL, None),
            Endpoint(
                BARE,
                self.bare.url,
                FAST_MODEL,
                STREAM_MODEL,
                _pid(self.bare),
                metrics_url=f"{self.bare.url}/metrics",
            ),
            *(self._sidecar_path(name, proc) for name, proc in self._sidecars()),
        ]
        for peer in self.peers:
            proc = peer.process
            paths.append(
                Endpoint(peer.name, proc.url, FAST_MODEL, STREAM_MODEL, _pid(proc), peer.headers)
            )
        return paths

    @property
    def first_turn_paths(self) -> list[Endpoint]:
        """direct, then each sidecar's first turns (a new session each) and later turns."""
        paths = [Endpoint(DIRECT, self.fake.url, FAST_MODEL, STREAM_MODEL, None)]
        for name, proc in self._sidecars():
            later = self._sidecar_path(name, proc)
            first = Endpoint(
                turn_path(name, FIRST), later.base_url, AGENT, AGENT, later.pid,
                metrics_url=later.metrics_url, first_turns=True,
            )  # fmt: skip
            paths += [first, dataclasses.replace(later, name=turn_path(name, LATER))]
        return paths

    def ctl(self, *args: str) -> str:
        """``holdfastctl`` as an operator runs it; raises with its stderr when it refuses."""
        result = subprocess.run(
            [procs.script("holdfastctl"), "--server", self.configsvc.url, *args],
            env={**os.environ, "HOLDFAST_TOKEN": self.token, "HOLDFAST_ACTOR": "bench"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"holdfastctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def set_stable(self, release: str, timeout: float = 20.0) -> None:
        """Point the agent at ``release`` and wait until the sidecar serves it."""
        self.ctl("route", "set-stable", AGENT, release, "--reason", "bench phase")
        deadline = time.monotonic() + timeout
        waiting = [s for s in (self.sidecar, self.baseline) if s is not None]
        while waiting and time.monotonic() < deadline:
            waiting = [s for s in waiting if not _serves(s, release)]
            time.sleep(0.05)
        if waiting:
            raise RuntimeError(f"sidecar did not switch to release {release!r} in {timeout:g}s")
        self.release = release

    def provider_latency(self, ms: float) -> None:
        """Make the fake provider answer the non-streaming model after ``ms`` (0: at once)."""
        _put_json(f"{self.fake.url}/_control/models/{FAST_MODEL}", {"latency_ms": ms})

    def check_budget(self) -> None:
        """Raise unless every sidecar has metered requests against the agent's budget (call
        after the warm-up): a budget that silently never applied would flatter the figures."""
        for name, proc in self._sidecars():
            status = _get_json(f"{proc.url}/status") or {}
            scopes = (status.get("budgets") or {}).get("scopes") or []
            if not any(s.get("scope") == f"agent:{AGENT}" and s.get("admitted") for s in scopes):
                raise RuntimeError(f"{name}: no request was metered against agent:{AGENT}")


def _serves(sidecar: procs.ManagedProcess, release: str) -> bool:
    status = _get_json(f"{sidecar.url}/status")
    return ((status or {}).get("route") or {}).get("stable") == release


def _pid(proc: procs.ManagedProcess) -> int:
    assert proc.proc is not None, f"{proc.name} is not running"
    return proc.proc.pid


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) else None


def _put_json(url: str, payload: dict[str, Any]) -> None:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def _started(stack: ExitStack, proc: procs.ManagedProcess) -> procs.ManagedProcess:
    stack.callback(proc.stop)
    return proc.start()


@contextmanager
def start_stack(
    base: Path,
    cores: Cores,
    *,
    stream_tokens: int,
    token_interval_ms: float,
    baseline: Path | None = None,
    peers: Sequence[str] = (),
    sidecar_env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """Everything up and configured: the sidecar serves release ``fast`` when this yields.

    ``baseline``: a checkout of another revision with its own ``.venv`` (``make setup`` there);
    its ``holdfast-sidecar`` runs beside ours on the same config, as one more path.
    ``peers``: bench.peers keys of the other gateways to run beside them.
    ``sidecar_env``: extra environment of our sidecar (bench.memory's "as deployed" run)."""
    logs = base / "logs"
    token = secrets.token_urlsafe(16)
    with ExitStack() as stack:
        etcd = stack.enter_context(EtcdNode(base_dir=base / "etcd"))
        fake = _started(stack, procs.fakellm(logs, cpu=cores.load))
        _put_json(
            f"{fake.url}/_control/models/{STREAM_MODEL}",
            {"completion_tokens": stream_tokens, "token_interval_ms": token_interval_ms},
        )
        started_peers = prepare_peers(
            peers, logs=logs, upstream_url=fake.url, models=(FAST_MODEL, STREAM_MODEL),
            cpu=cores.proxy,
        )  # fmt: skip
        for peer in started_peers:  # spawned now, awaited last: LiteLLM takes long to start
            stack.callback(peer.process.stop)
            peer.process.spawn()
        svc = _started(stack, procs.configsvc(logs, [etcd.client_url], ENV, token))
        bare = _started(
            stack,
            procs.ManagedProcess(
                name="bare_relay",
                argv=[sys.executable, "-m", "bench.bare_relay", "--upstream", fake.url],
                log_path=logs / "bare_relay.log",
                ready_event="bare_relay_listening",
                env={"PYTHONPATH": str(REPO_ROOT)},
                cpu=cores.proxy,
            ),
        )
        side = _started(
            stack,
            procs.sidecar(
                logs, AGENT, [etcd.client_url], ENV, base / "state", *SIDECAR_ARGS,
                cpu=cores.proxy, sidecar_token=token, extra_env=sidecar_env,
            ),
        )  # fmt: skip
        other = None
        if baseline is not None:
            program = baseline / ".venv" / "bin" / "holdfast-sidecar"
            if not program.exists():
                raise RuntimeError(f"no {program}: run `make setup` in {baseline} first")
            other = _started(
                stack,
                procs.sidecar(
                    logs, AGENT, [etcd.client_url], ENV, base / "state-baseline", *SIDECAR_ARGS,
                    cpu=cores.proxy, name="sidecar_baseline", program=str(program),
                    sidecar_token=token,
                ),
            )  # fmt: skip
        result = Stack(fake, side, bare, svc, token, etcd.client_url, other, started_peers)
        for release, model in ((FAST_RELEASE, FAST_MODEL), (STREAM_RELEASE, STREAM_MODEL)):
            result.ctl(
                "release", "create", AGENT, release, "--model", model,
                "--base-url", f"{fake.url}/v1",
            )  # fmt: skip
        result.set_stable(FAST_RELEASE)
        for peer in started_peers:
            peer.process.ready(peer.ready_timeout)
        # Last, so that the warm-up follows at once (see SIDECAR_ARGS).
        result.ctl(
            "budget", "set", f"agent:{AGENT}", "--tokens", str(BUDGET_TOKENS), "--window", "1d",
            "--reason", "bench: every feature on",
        )  # fmt: skip
        yield result
