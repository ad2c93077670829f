"""Managed prompts on the request path: which version a session uses, substituted into its
request."""

from __future__ import annotations

from sidecar.prompts.filter import VERSION_HEADER, PromptFilter

__all__ = ["VERSION_HEADER", "PromptFilter"]
