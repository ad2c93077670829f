"""Command-line options every Holdfast process parses the same way (listen, etcd, TLS, auth)."""
