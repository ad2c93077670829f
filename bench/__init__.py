"""Benchmarks of the sidecar's overhead (``python -m bench.overhead``); see bench/README.md."""
