"""Helpers for tests, the demo and benchmarks: real etcd processes and Holdfast's own processes."""
