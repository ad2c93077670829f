"""The console's routes: pages, live updates, sign-in, and its two static files.

Pages of the fleet (overview, an agent, its sidecars) are drawn from memory -- the route watch,
the sampler's last tick, the fleet's sidecar list -- and stay cheap for an agent of thousands of
sidecars: figures are aggregated per release once per tick and sidecars come a page at a time.
Pages of one concern (budgets, flags, contracts, prompts and experiments, the audit trail) read
it through that concern's operations, one etcd read per page view, and say so when etcd is away.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric

from configsvc.audit import HistoryItem
from configsvc.budgets import BudgetOps
from configsvc.console import views
from configsvc.console.auth import IDENTITY, PREFIX, Guard, plain
from configsvc.console.feed import OVERVIEW, Feed
from configsvc.console.filters import AuditFilter, page_number
from configsvc.console.history import SERIES, History
from configsvc.console.render import HEADERS, page, render
from configsvc.console.sampler import INTERVAL_S, Sampler
from configsvc.console.session import Sessions
from configsvc.contracts import ContractOps
from configsvc.errors import ConfigsvcError, InvalidRequest, spec_for
from configsvc.experiments import ExperimentOps
from configsvc.flags import FlagOps
from configsvc.health import FleetHealth, OwnerHealth, PolicyGate, SidecarBeat
from configsvc.http import SELF_AUTHENTICATED_KEY, Authorizer
from configsvc.prompts.reads import PromptReads
from configsvc.releases import ConfigService
from configsvc.rollouts import RouteWatch
from holdfast.logs import get_logger
from holdfast.names import NAME_RE

log = get_logger(__name__)

KEEPALIVE_S: Final = 15.0
MAX_EXPERIMENT_REPORTS: Final = 20
STATIC: Final = {"console.css": "text/css", "console.js": "text/javascript"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConcernOps:
    """The operations the concern pages read through."""

    budgets: BudgetOps
    flags: FlagOps
    contracts: ContractOps
    prompts: PromptReads
    experiments: ExperimentOps


def _agent(request: web.Request) -> str:
    name = request.match_info["agent"]
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"{name[:80]!r} is not an agent name", param="agent")
    return name


class Console:
    def __init__(
        self,
        *,
        service: ConfigService,
        fleet: FleetHealth,
        gate: PolicyGate,
        routes: RouteWatch,
        authorizer: Authorizer,
        secret: bytes,
        ops: ConcernOps,
        sample_interval: float = INTERVAL_S,
        clock: Callable[[], float] = time.time,
        owners: OwnerHealth | None = None,
    ) -> None:
        self.service = service
        self.fleet = fleet
        self.routes = routes
        self.ops = ops
        self.clock = clock
        self.guard = Guard(authorizer, Sessions(authorizer.book.entries, secret))
        self.history = History()
        # Agents whose health other replicas hold are drawn from what their owners said.
        self.sampler = Sampler(
            fleet, gate, routes, self.history, sample_interval, clock, owners=owners
        )
        self.feed = Feed()
        routes.listen(self.feed.bump)
        self.sampler.listeners.append(self.feed.bump)
        self._fragments: dict[tuple[str, str], tuple[int, dict[str, str]]] = {}
        self._evidence: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._static = {
            name: (resources.files("configsvc.console").joinpath("static", name).read_bytes(),
                   kind)
            for name, kind in STATIC.items()
        }  # fmt: skip

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.sampler.start()

    async def close(self) -> None:
        self.feed.close()
        await self.sampler.close()

    def mount(self, app: web.Application) -> None:
        """Serve the console at ``/ui`` on ``app``, with its own sign-in (the API's middleware
        leaves ``/ui`` to it), ending its live pages when the app shuts down."""
        app[SELF_AUTHENTICATED_KEY] = (*app.get(SELF_AUTHENTICATED_KEY, ()), PREFIX)
        app.add_routes(self.routes_table())

        async def end_live_pages(_app: web.Application) -> None:
            self.feed.close()

        app.on_shutdown.append(end_live_pages)

    def metric_families(self) -> Iterator[Metric]:
        """The console's own gauges, for configsvc's ``/metrics``."""
        viewers = GaugeMetricFamily(
            "holdfast_console_live_viewers", "Console pages kept live by server-sent events."
        )
        viewers.add_metric([], self.feed.viewers)
        cost = GaugeMetricFamily(
            "holdfast_console_sample_seconds",
            "Time the console's last health sample took on the event loop (every agent).",
        )
        cost.add_metric([], self.sampler.last_cost_s)
        yield viewers
        yield cost

    def routes_table(self) -> list[web.RouteDef]:
        g = self.guard.guarded
        return [
            web.get(PREFIX, g(self._page(self.overview))),
            web.get(f"{PREFIX}/agents/{{agent}}", g(self._page(self.agent))),
            web.get(f"{PREFIX}/agents/{{agent}}/sidecars", g(self._page(self.sidecars))),
            web.get(f"{PREFIX}/budgets", g(self._page(self.budgets))),
            web.get(f"{PREFIX}/flags", g(self._page(self.flags))),
            web.get(f"{PREFIX}/contracts", g(self._page(self.contracts))),
            web.get(f"{PREFIX}/prompts", g(self._page(self.prompts))),
            web.get(f"{PREFIX}/audit", g(self._page(self.audit))),
            web.get(f"{PREFIX}/events", g(self.events, stream=True)),
            web.get(f"{PREFIX}/login", self.guard.login_form),
            web.post(f"{PREFIX}/login", self.guard.login),
            web.post(f"{PREFIX}/logout", self.guard.logout),
            web.get(f"{PREFIX}/static/{{name}}", self.static),
        ]

    # -- shared ----------------------------------------------------------------------------

    def _page(self, build: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
        """A page whose failures are pages too: a bad filter (400), an unknown agent (404),
        etcd away (503) -- each said in words, in the console's frame."""

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await build(request)
            except ConfigsvcError as exc:
                return self._error(request, spec_for(exc).status, exc.message)

        return handle

    def _error(self, request: web.Request, status: int, message: str) -> web.Response:
        return page("error.html", status=status, message=message, **self._base(request, ""))

    def _base(self, request: web.Request, active: str) -> dict[str, Any]:
        identity = request.get(IDENTITY)
        return {
            "active": active,
            "identity": identity,
            "auth_open": self.guard.open,
            "env": self.service.keyspace.env,
            "etcd_connected": self.routes.connected and self.fleet.connected,
            "now": self.clock(),
            "sampled_at": self.sampler.latest_at,
            "version": self.feed.version,
            "prefix": PREFIX,
        }

    def _beats_by_agent(self) -> dict[str, tuple[SidecarBeat, ...]]:
        return self.sampler.all_beats()

    # -- the fleet -------------------------------------------------------------------------

    def overview_context(self) -> dict[str, Any]:
        now = self.clock()
        beats = self._beats_by_agent()
        routes = self.routes.routes
        agents = sorted(set(routes) | set(beats) | set(self.sampler.latest))
        rows = [
            views.agent_row(a, routes.get(a), self.sampler.latest.get(a), beats.get(a, ()), now)
            | {"gate": self.sampler.gate_report(a)}
            for a in agents
        ]
        return {"rows": rows, "now": now}

    async def overview(self, request: web.Request) -> web.Response:
        return page("overview.html", **(self._base(request, "overview") | self.overview_context()))

    async def agent_context(self, agent: str) -> dict[str, Any]:
        now = self.clock()
        watched = self.routes.routes.get(agent)
        route = watched.route if watched else None
        sample = self.sampler.latest.get(agent)
        beats = self.sampler.beats(agent)
        rollout = views.rollout_view(route, now) if route is not None else None
        evidence = None
        ended = rollout is not None and rollout["state"] in ("aborted", "paused")
        if watched is not None and ended:
            evidence = await self._ended(agent, watched.mod_revision)
        return {
            "agent": agent,
            "route": route,
            "mod_revision": watched.mod_revision if watched else None,
            "rollout": rollout,
            "gate": self.sampler.gate_report(agent),
            "evidence": evidence,
            "columns": (columns := views.release_columns(agent, route, sample, self.history)),
            "shown": views.shown_series(columns),
            "series": SERIES,
            "fleet": views.fleet_of(beats, watched, now),
            "health_replica": sample.replica if sample else "",
            "health_unreachable": sample.unreachable if sample else "",
            "now": now,
        }

    async def _ended(self, agent: str, mod_revision: int) -> dict[str, Any] | None:
        """The audit entry of the abort or pause that left the route as it is (read once per
        route revision, not per viewer or tick)."""
        key = (agent, mod_revision)
        if key not in self._evidence:
            try:
                _, items, _ = await self.service.audit.search(
                    lambda i: (
                        i.entry.extra.get("agent") == agent
                        and i.entry.action in ("rollout.abort", "rollout.pause")
                    ),
                    limit=1,
                )
            except ConfigsvcError:
                return None  # etcd away: shown as unknown, asked again next time
            if len(self._evidence) > 1024:
                self._evidence.clear()
            self._evidence[key] = views.ended_evidence(items[0].to_json()) if items else None
        return self._evidence[key]

    def _known(self, agent: str) -> bool:
        return (
            agent in self.routes.routes
            or agent in self.sampler.latest
            or bool(self.sampler.beats(agent))
        )

    async def agent(self, request: web.Request) -> web.Response:
        agent = _agent(request)
        if not self._known(agent):
            return self._error(request, 404, f"no agent {agent!r}: it has no route and no sidecar")
        context = await self.agent_context(agent)
        recent: list[dict[str, Any]] = []
        recent_error = ""
        try:
            _, items, _ = await self.service.audit.search(
                lambda i: i.entry.extra.get("agent") == agent, limit=8
            )
            recent = [i.to_json() for i in items]
        except ConfigsvcError as exc:
            recent_error = exc.message
        context |= {"recent": recent, "recent_error": recent_error}
        return page("agent.html", **(self._base(request, "overview") | context))

    async def sidecars(self, request: web.Request) -> web.Response:
        agent = _agent(request)
        number = page_number(request.query)
        watched = self.routes.routes.get(agent)
        beats = self.sampler.beats(agent)
        now = self.clock()
        rows, pages = views.sidecar_rows(beats, watched, now, number)
        return page(
            "sidecars.html",
            **self._base(request, "overview"),
            agent=agent,
            rows=rows,
            page=number,
            pages=pages,
            fleet=views.fleet_of(beats, watched, now),
            route_revision=watched.mod_revision if watched else None,
        )

    # -- live updates ----------------------------------------------------------------------

    async def fragments(self, view: str, agent: str) -> tuple[int, dict[str, str]]:
        """The live parts of a page as of now, rendered once per version for every viewer."""
        version = self.feed.version
        key = (view, agent)
        cached = self._fragments.get(key)
        if cached is not None and cached[0] == version:
            return cached
        if view == "agent":
            ctx = await self.agent_context(agent)
            parts = {
                "route": render("_route.html", **ctx, prefix=PREFIX),
                "releases": render("_releases.html", **ctx, prefix=PREFIX),
                "fleet": render("_fleet.html", **ctx, prefix=PREFIX),
            }
        else:
            parts = {"agents": render("_agents.html", **self.overview_context(), prefix=PREFIX)}
        if len(self._fragments) > 1024:
            self._fragments.clear()
        self._fragments[key] = (version, parts)
        return version, parts

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the page's live parts each time they change."""
        view = request.query.get("view", "overview")
        agent = request.query.get("agent", "")
        if view not in ("overview", "agent") or (view == "agent" and not NAME_RE.fullmatch(agent)):
            return plain(400, "view=overview, or view=agent&agent=NAME")
        if self.feed.viewers >= self.feed.max_viewers:
            return plain(503, "too many live pages open on this configsvc")
        since = request.query.get("since", "")
        seen = int(since) if since.isdigit() else 0
        topic = agent if view == "agent" else OVERVIEW
        response = web.StreamResponse(
            headers={**HEADERS, "Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        self.feed.viewers += 1
        try:
            while not self.feed.closed:
                version = await self.feed.wait(topic, seen, KEEPALIVE_S)
                if self.guard.identity(request) is None:
                    break  # signed out, expired, or the token was revoked
                if version is None:
                    await response.write(b": keep-alive\n\n")
                    continue
                version, parts = await self.fragments(view, agent)
                data = json.dumps(parts, separators=(",", ":"))
                await response.write(f"id: {version}\nevent: fragments\ndata: {data}\n\n".encode())
                seen = version
        except ConnectionResetError:
            pass
        finally:
            self.feed.viewers -= 1
        return response

    # -- one concern each ------------------------------------------------------------------

    async def budgets(self, request: web.Request) -> web.Response:
        number = page_number(request.query)
        _, stored = await self.ops.budgets.list()
        stored.sort(key=lambda b: b.budget.scope)
        pages = max(1, -(-len(stored) // views.PAGE_SIZE))
        rows = []
        for item in stored[(number - 1) * views.PAGE_SIZE : number * views.PAGE_SIZE]:
            usage: dict[str, Any] | None
            try:
                usage = await self.ops.budgets.usage(item.budget.scope)
            except ConfigsvcError:
                usage = None
            rows.append({"budget": item.to_json(), "usage": usage})
        return page("budgets.html", **self._base(request, "budgets"), rows=rows, page=number,
                    pages=pages)  # fmt: skip

    async def flags(self, request: web.Request) -> web.Response:
        _, flags = await self.ops.flags.list_flags()
        routed: dict[str, list[str]] = {}
        for agent, watched in self.routes.routes.items():
            if watched.route.flag:
                routed.setdefault(watched.route.flag, []).append(agent)
        rows = sorted((f.to_json() for f in flags), key=lambda f: str(f["key"]))
        return page("flags.html", **self._base(request, "flags"), rows=rows, routed=routed)

    async def contracts(self, request: web.Request) -> web.Response:
        _, tools = await self.ops.contracts.list_tools()
        return page("contracts.html", **self._base(request, "contracts"), tools=tools)

    async def prompts(self, request: web.Request) -> web.Response:
        _, prompts = await self.ops.prompts.list_prompts()
        versions = {p["name"]: await self.ops.prompts.list_versions(p["name"]) for p in prompts}
        experiments = await self.ops.experiments.list_all()
        reports: dict[str, Mapping[str, Any]] = {}
        for exp in experiments[:MAX_EXPERIMENT_REPORTS]:
            try:
                reports[exp["name"]] = await self.ops.experiments.report(exp["name"])
            except ConfigsvcError as exc:
                reports[exp["name"]] = {"error": exc.message}
        return page("prompts.html", **self._base(request, "prompts"), prompts=prompts,
                    versions=versions, experiments=experiments, reports=reports)  # fmt: skip

    async def audit(self, request: web.Request) -> web.Response:
        wanted = AuditFilter.parse(request.query)
        revision, items, next_before = await self.service.audit.search(
            wanted.matches, before=wanted.before, limit=views.PAGE_SIZE
        )
        entries: list[HistoryItem] = items
        return page(
            "audit.html",
            **self._base(request, "audit"),
            filters=wanted,
            entries=[i.to_json() for i in entries],
            revision=revision,
            next_query=wanted.query(next_before) if next_before is not None else None,
            first_query=wanted.query(None),
        )

    async def static(self, request: web.Request) -> web.Response:
        found = self._static.get(request.match_info["name"])
        if found is None:
            return plain(404, "no such file")
        body, kind = found
        return web.Response(
            body=body,
            content_type=kind,
            headers={**HEADERS, "Cache-Control": "public, max-age=300"},
        )
