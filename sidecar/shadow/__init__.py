"""Shadow traffic: a sample of requests sent to the shadow release too, and the comparison of
the two answers."""
