"""Sidecar settings: one frozen object built from the command line and the environment, with the
limits against hostile input."""
