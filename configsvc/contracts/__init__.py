"""Tool contracts in configsvc: register with the compatibility classifier, list, show, diff."""
