"""The sidecar's HTTP surface: the app and its middlewares (errors, hostile input), and the drain
on SIGTERM."""

from __future__ import annotations

from sidecar.http.app import Parts, build_http_app, new_shadow_runner
from sidecar.http.drain import drain, runner_shutdown_timeout

__all__ = ["Parts", "build_http_app", "drain", "new_shadow_runner", "runner_shutdown_timeout"]
