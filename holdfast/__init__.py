"""Shared core of Holdfast: keyspace and records, the etcd adapter, logging, the fake upstream."""

__version__ = "0.1.0"
