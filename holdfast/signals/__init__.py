"""Health signals as people read them, shared by the sidecar and configsvc: category rules
compiled the one way both sides agree on (``categories``), and the per-release summary of a
release's signals (``summary``). The records themselves are ``holdfast.keyspace.signals``."""
