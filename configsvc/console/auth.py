"""Who is looking: the session cookie, else what the API itself accepts (a bearer token, or a
loopback reader when reads need no token), else nobody -- sent to the login form.

Every console route is wrapped here (``Guard.guarded``): configsvc's middleware leaves ``/ui``
to the console (a browser cannot send a bearer header on navigation), and this is the one place
that checks it. The console only reads, so the lowest role, viewer, is enough for every page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import quote, urlsplit

from aiohttp import web

from configsvc.console.render import HEADERS, page
from configsvc.console.session import COOKIE, Sessions
from configsvc.errors import Forbidden, Unauthorized
from configsvc.http import Authorizer, Identity
from holdfast.logs import get_logger

log = get_logger(__name__)

PREFIX: Final = "/ui"
IDENTITY: Final = web.RequestKey("console_identity", Identity)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path, never another site."""
    if not target or not target.startswith(PREFIX) or target.startswith("//"):
        return PREFIX
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return PREFIX
    return target


def see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


def plain(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, headers=HEADERS)


def same_origin(request: web.Request) -> bool:
    """A form post made by a page of this console (browsers send Origin on every POST)."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == request.host
    if origin == "null":  # a sandboxed or privacy-stripped origin: only the browser's own word
        return site == "same-origin"
    return site in (None, "same-origin", "none")


class Guard:
    def __init__(self, authorizer: Authorizer, sessions: Sessions) -> None:
        self.authorizer = authorizer
        self.sessions = sessions

    @property
    def open(self) -> bool:
        """No tokens configured (``--allow-no-token``): anyone on the host may look."""
        return not self.authorizer.enabled

    def identity(self, request: web.Request) -> Identity | None:
        cookie = request.cookies.get(COOKIE)
        if cookie and self.authorizer.enabled:
            found = self.sessions.identity(cookie)
            if found is not None:
                return found
        try:
            return self.authorizer.check(
                mutation=False, remote=request.remote, headers=request.headers
            )
        except (Unauthorized, Forbidden):
            return None

    def guarded(self, handler: Handler, *, stream: bool = False) -> Handler:
        """``handler`` for signed-in viewers; others go to the login form (a stream: 401)."""

        async def check(request: web.Request) -> web.StreamResponse:
            identity = self.identity(request)
            if identity is None:
                if stream:
                    return plain(401, "sign in at /ui/login")
                return see_other(f"{PREFIX}/login?next={quote(request.path_qs, safe='/?=&')}")
            request[IDENTITY] = identity
            return await handler(request)

        return check

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        target = safe_next(request.query.get("next"))
        if self.identity(request) is not None and not self.open:
            return see_other(target)
        return page("login.html", next=target, error="", open=self.open)

    async def login(self, request: web.Request) -> web.StreamResponse:
        if not same_origin(request):
            log.warning("console_login_cross_origin", origin=request.headers.get("Origin", ""))
            return page("login.html", status=403, next=PREFIX, open=self.open,
                        error="Sign in from the console's own page.")  # fmt: skip
        form = await request.post()
        token, target = form.get("token"), safe_next(str(form.get("next") or ""))
        issued = self.sessions.issue(token.strip()) if isinstance(token, str) else None
        if issued is None:
            log.info("console_login_refused", remote=request.remote)
            return page("login.html", status=401, next=target, open=self.open,
                        error="That token is not accepted here.")  # fmt: skip
        cookie, identity = issued
        log.info("console_login", subject=identity.subject, role=identity.role.label)
        response = see_other(target)
        response.set_cookie(
            COOKIE,
            cookie,
            path=PREFIX,
            max_age=int(self.sessions.ttl_s),
            secure=True,
            httponly=True,
            samesite="Strict",
        )
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        response = see_other(f"{PREFIX}/login")
        response.del_cookie(COOKIE, path=PREFIX, secure=True, httponly=True, samesite="Strict")
        return response
