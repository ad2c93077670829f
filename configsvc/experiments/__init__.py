"""A/B experiments in configsvc: start, stop, report."""
