"""Prompt versions: templates, evaluation cases and their checks (pure, no I/O)."""
