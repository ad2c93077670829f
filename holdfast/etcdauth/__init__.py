"""Holdfast's etcd role layout, and applying it with ``etcdctl``."""
