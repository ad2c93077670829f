"""A/B experiments: mergeable outcome counts and their statistics (pure, no I/O)."""
