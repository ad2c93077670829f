"""Managed prompt versions: create, evaluate against cases, activate behind the gate, roll back;
and resolving the prompt versions a new release names (``reads.PromptReads.for_release``).

No re-exports here on purpose: ``holdfastctl prompt eval`` imports ``prompts.settings`` (to wait
as long as the server's evaluation may take), and a face naming ``PromptOps`` or ``PromptsApi``
would load aiohttp, jsonschema and RE2 for every command. Import the modules directly:
``api.PromptsApi``, ``ops.PromptOps``, ``eval.Evaluator``, ``reads.PromptReads``.
"""
