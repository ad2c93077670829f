"""Which release serves a request: session ids, the route (stable, canary, colour), flags and
experiments. Pure."""
