"""configsvc: the operators' HTTP API over etcd, and the ``holdfastctl`` CLI that talks to it.

Layers, outermost first: ``cli`` (argparse, exit codes) -> ``client`` (HTTP) -> ``api`` (aiohttp
handlers, auth, error shape) -> ``service`` (domain operations, CAS, audit) -> the etcd store.
"""
