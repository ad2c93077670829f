"""Versioned tool contracts: declared tools and model tool calls checked on the chat path, and
``POST /tools/{tool}`` with its backends and breakers."""
