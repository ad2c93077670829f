"""Managed prompts on the request path: which version a session uses, substituted into its
request."""

from __future__ import annotations

from sidecar.prompts.filter import PromptFilter

__all__ = ["PromptFilter"]
