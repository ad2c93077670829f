"""Releases and routes: create a release (its prompts and contracts resolved), set stable,
aliases, rollback, and the warm-up probe."""
