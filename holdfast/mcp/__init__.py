"""The Model Context Protocol as both of Holdfast's processes speak it: JSON-RPC framing, the
protocol revisions and their eras (pure), and a client of MCP servers over Streamable HTTP
(the sidecar's backends; configsvc's ``contract import-mcp``)."""
