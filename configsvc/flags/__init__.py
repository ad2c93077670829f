"""Feature flags in configsvc: flagd files applied in one transaction, kill switches, history."""
