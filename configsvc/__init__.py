"""configsvc: the operators' HTTP API over etcd, and the ``holdfastctl`` CLI that talks to it.

Packages, outermost first (pyproject.toml's import-linter contract ``configsvc-layers`` keeps
each importing only what is below it):

- ``cli``: ``holdfastctl`` (argparse, the stdlib HTTP client, exit codes); ``serve`` loads the
  server only when it runs.
- ``server``: settings, limits, the app assembled from every concern's route table, the process.
- the concerns, each with its ``api`` (handlers), its operations and a face naming what other
  packages may use: ``health`` > ``rollouts`` > ``traffic`` > ``experiments``, ``prompts``,
  ``flags``, ``budgets``, ``contracts`` > ``releases`` (``ConfigService``: every change one
  compare-and-swap with its audit entry).
- ``http`` (auth, the middleware, handler helpers, payload parsing), ``leader``, ``audit``.
- ``settings``, ``errors``, ``limits``: import nothing of configsvc.

This module imports nothing: ``holdfastctl`` loads it on every command.
"""
