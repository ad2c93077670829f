"""Where new sessions go: canary, blue-green switch, shadow, category rules, and deliberate
migration of pinned sessions."""
