"""The HTTP client ``holdfastctl`` uses: blocking, stdlib only, one request per command."""

from __future__ import annotations

import http.client
import json
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from configsvc.cli.settings import ClientSettings
from configsvc.settings import ACTOR_HEADER

USER_AGENT: Final = "holdfastctl"


class ClientError(Exception):
    """Base of what a command can fail with after its arguments were accepted."""


class Refused(ClientError):
    """configsvc answered with an error; ``message`` is the API's own message."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


class Unreachable(ClientError):
    """configsvc could not be reached, did not answer in time, or is not configsvc."""


def segment(value: str) -> str:
    """One URL path segment, escaped."""
    return quote(value, safe="")


class Client:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.server)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._base = parts.path.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One request; ``timeout`` (seconds) overrides --timeout for a call known to be long."""
        wait = self.settings.timeout if timeout is None else timeout
        url = self._base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        headers[ACTOR_HEADER] = self.settings.actor
        if self.settings.token:
            headers["Authorization"] = f"Bearer {self.settings.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = conn_cls(self._host, self._port, timeout=wait)
        mutation = method != "GET"
        try:
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except TimeoutError as exc:
            raise Unreachable(self._timeout_message(mutation, wait)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"cannot reach configsvc at {self.settings.server}: {exc}") from exc
        finally:
            conn.close()
        return self._decode(response.status, raw)

    def _timeout_message(self, mutation: bool, wait: float) -> str:
        text = f"configsvc at {self.settings.server} did not answer in {wait:g}s"
        if mutation:
            text += "; the change may or may not have been applied: check `holdfastctl history`"
        return text

    def _decode(self, status: int, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise Unreachable(
                f"{self.settings.server} answered HTTP {status} with a body that is not "
                "configsvc's JSON; is --server right?"
            )
        if status >= 400:
            error = body.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise Refused(status, str(message or f"HTTP {status}"), body)
        return body

    # -- one method per API operation ----------------------------------------------------------

    def create_release(self, agent: str, fields: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/v1/agents/{segment(agent)}/releases", fields)

    def list_releases(self, agent: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/agents/{segment(agent)}/releases")

    def show_release(self, agent: str, release: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/agents/{segment(agent)}/releases/{segment(release)}")

    def show_route(self, agent: str) -> dict[str, Any]:
        return self.call("GET", f"/v1/agents/{segment(agent)}/route")

    def set_stable(
        self,
        agent: str,
        release: str,
        reason: str,
        if_revision: int | None,
        allow_provider_change: bool = False,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"release": release, "reason": reason}
        if if_revision is not None:
            body["if_revision"] = if_revision
        if allow_provider_change:
            body["allow_provider_change"] = True
        return self.call("PUT", f"/v1/agents/{segment(agent)}/route/stable", body)

    def rollback(self, agent: str, reason: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/agents/{segment(agent)}/route/rollback", {"reason": reason})

    def set_aliases(self, agent: str, aliases: list[str], reason: str) -> dict[str, Any]:
        body = {"aliases": aliases, "reason": reason}
        return self.call("PUT", f"/v1/agents/{segment(agent)}/route/aliases", body)

    def history(self, agent: str | None, limit: int | None) -> dict[str, Any]:
        query: dict[str, str] = {}
        if agent:
            query["agent"] = agent
        if limit is not None:
            query["limit"] = str(limit)
        return self.call("GET", "/v1/history", query=query or None)
