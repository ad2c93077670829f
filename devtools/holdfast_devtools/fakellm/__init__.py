"""``holdfast-fakellm``: a deterministic OpenAI-compatible upstream for tests, demo and benchmarks.

- ``generate``: what it says (replies, tool-call arguments, embeddings, token counts); pure.
- ``behaviour``: how each model behaves (delays, injected faults, usage) and per-model stats; pure.
- ``protocol``: OpenAI wire format (request validation, response bodies, SSE frames); pure.
- ``app``: the aiohttp handlers, ``/v1`` and ``/_control``.
- ``cli``: the console script.
"""
