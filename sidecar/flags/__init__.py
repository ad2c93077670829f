"""Feature flags evaluated locally: the evaluator over the config snapshot, and OFREP for agents."""
